package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

func TestCmdString(t *testing.T) {
	tests := []struct {
		c    Cmd
		want string
	}{
		{CmdWaste, "Waste"},
		{CmdSYN, "SYN"},
		{CmdPSH, "PSH"},
		{CmdFIN, "FIN"},
		{CmdSettings, "Settings"},
		{CmdAlert, "Alert"},
		{CmdUpdatePaddingScheme, "UpdatePaddingScheme"},
		{CmdSYNACK, "SYNACK"},
		{CmdHeartRequest, "HeartRequest"},
		{CmdHeartResponse, "HeartResponse"},
		{CmdServerSettings, "ServerSettings"},
		{11, "Cmd(11)"},
		{42, "Cmd(42)"},
		{255, "Cmd(255)"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("Cmd(%d).String() = %q, want %q", uint8(tt.c), got, tt.want)
		}
	}
}

func TestCmdValues(t *testing.T) {
	// The numeric values are the wire contract (PROTOCOL.md section 2).
	want := []Cmd{CmdWaste, CmdSYN, CmdPSH, CmdFIN, CmdSettings, CmdAlert,
		CmdUpdatePaddingScheme, CmdSYNACK, CmdHeartRequest, CmdHeartResponse, CmdServerSettings}
	for i, c := range want {
		if int(c) != i {
			t.Errorf("%v = %d, want %d", c, c, i)
		}
	}
}

func TestCmdKnown(t *testing.T) {
	for c := 0; c < 256; c++ {
		if got, want := Cmd(c).Known(), c <= 10; got != want {
			t.Errorf("Cmd(%d).Known() = %v, want %v", c, got, want)
		}
	}
}

func TestConstants(t *testing.T) {
	if HeaderLen != 7 || MaxPayload != 65535 || MaxFrameLen != 65542 {
		t.Fatalf("HeaderLen=%d MaxPayload=%d MaxFrameLen=%d", HeaderLen, MaxPayload, MaxFrameLen)
	}
	if AuthHashLen != 32 || AuthPrefixLen != 34 {
		t.Fatalf("AuthHashLen=%d AuthPrefixLen=%d", AuthHashLen, AuthPrefixLen)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

var headerTests = []struct {
	cmd  Cmd
	sid  uint32
	n    int
	want string // hex
}{
	{CmdWaste, 0, 0, "00000000000000"},
	{CmdSYN, 1, 0, "01000000010000"},
	{CmdPSH, 1, 1, "02000000010001"},
	{CmdPSH, 0xdeadbeef, 65535, "02deadbeefffff"},
	{CmdFIN, 0xdeadbeef, 0, "03deadbeef0000"},
	{CmdSettings, 0, 1, "04000000000001"},
	{CmdAlert, 1, 65535, "0500000001ffff"},
	{CmdUpdatePaddingScheme, 0, 65535, "0600000000ffff"},
	{CmdSYNACK, 0xdeadbeef, 1, "07deadbeef0001"},
	{CmdHeartRequest, 0, 0, "08000000000000"},
	{CmdHeartResponse, 1, 0, "09000000010000"},
	{CmdServerSettings, 0, 300, "0a00000000012c"},
	{Cmd(0xff), 0x01020304, 0x0506, "ff010203040506"},
}

func TestAppendHeader(t *testing.T) {
	for _, tt := range headerTests {
		want := mustHex(t, tt.want)
		prefix := []byte("xy")
		got, err := AppendHeader(bytes.Clone(prefix), tt.cmd, tt.sid, tt.n)
		if err != nil {
			t.Errorf("AppendHeader(%v, %#x, %d): %v", tt.cmd, tt.sid, tt.n, err)
			continue
		}
		if !bytes.Equal(got, append(prefix, want...)) {
			t.Errorf("AppendHeader(%v, %#x, %d) = %x, want 7879%x", tt.cmd, tt.sid, tt.n, got, want)
		}
	}
}

func TestHeaderSet(t *testing.T) {
	for _, tt := range headerTests {
		want := mustHex(t, tt.want)
		var h Header
		for i := range h {
			h[i] = 0xaa // Set must overwrite every byte
		}
		h.Set(tt.cmd, tt.sid, tt.n)
		if !bytes.Equal(h[:], want) {
			t.Errorf("Set(%v, %#x, %d) = %x, want %x", tt.cmd, tt.sid, tt.n, h[:], want)
		}
		if h.Cmd() != tt.cmd || h.StreamID() != tt.sid || h.Length() != tt.n {
			t.Errorf("accessors of %x = %v %#x %d, want %v %#x %d",
				h[:], h.Cmd(), h.StreamID(), h.Length(), tt.cmd, tt.sid, tt.n)
		}
		// Decoding raw wire bytes gives the same values.
		var h2 Header
		copy(h2[:], want)
		if h2.Cmd() != tt.cmd || h2.StreamID() != tt.sid || h2.Length() != tt.n {
			t.Errorf("decode %x = %v %#x %d", want, h2.Cmd(), h2.StreamID(), h2.Length())
		}
	}
}

func TestHeaderString(t *testing.T) {
	var h Header
	h.Set(CmdPSH, 0xdeadbeef, 65535)
	if got, want := h.String(), "PSH sid=3735928559 len=65535"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	h.Set(Cmd(77), 0, 0)
	if got, want := h.String(), "Cmd(77) sid=0 len=0"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		cmd  Cmd
		sid  uint32
		data []byte
		want []byte
	}{
		{CmdSYN, 1, nil, mustHex(t, "01000000010000")},
		{CmdPSH, 1, []byte{0x42}, mustHex(t, "0200000001000142")},
		{CmdAlert, 0, []byte("bad"), append(mustHex(t, "05000000000003"), "bad"...)},
		{CmdSettings, 0, []byte("v=2"), append(mustHex(t, "04000000000003"), "v=2"...)},
		{CmdPSH, 0xdeadbeef, bytes.Repeat([]byte{7}, 65535),
			append(mustHex(t, "02deadbeefffff"), bytes.Repeat([]byte{7}, 65535)...)},
	}
	for _, tt := range tests {
		got, err := AppendFrame([]byte{0xee}, tt.cmd, tt.sid, tt.data)
		if err != nil {
			t.Errorf("AppendFrame(%v, %d, len %d): %v", tt.cmd, tt.sid, len(tt.data), err)
			continue
		}
		if !bytes.Equal(got, append([]byte{0xee}, tt.want...)) {
			t.Errorf("AppendFrame(%v, %d, len %d) wrong (got %d bytes)", tt.cmd, tt.sid, len(tt.data), len(got))
		}
	}
}

func TestPayloadTooLarge(t *testing.T) {
	for _, n := range []int{65536, -1, 1 << 20, -65536} {
		dst := []byte{1, 2, 3}
		got, err := AppendHeader(dst, CmdPSH, 1, n)
		if !errors.Is(err, ErrPayloadTooLarge) {
			t.Errorf("AppendHeader(n=%d) err = %v, want ErrPayloadTooLarge", n, err)
		}
		if !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Errorf("AppendHeader(n=%d) modified dst: %x", n, got)
		}

		func() {
			defer func() {
				r := recover()
				if r == nil {
					t.Errorf("Header.Set(n=%d) did not panic", n)
					return
				}
				if err, ok := r.(error); !ok || !errors.Is(err, ErrPayloadTooLarge) {
					t.Errorf("Header.Set(n=%d) panicked with %v, want ErrPayloadTooLarge", n, r)
				}
			}()
			var h Header
			h.Set(CmdPSH, 1, n)
		}()
	}

	got, err := AppendFrame([]byte{9}, CmdPSH, 1, make([]byte, 65536))
	if !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("AppendFrame(65536 bytes) err = %v", err)
	}
	if !bytes.Equal(got, []byte{9}) {
		t.Errorf("AppendFrame(65536 bytes) modified dst: %d bytes", len(got))
	}
}

// parseFrames splits b into frames, failing on a truncated one.
func parseFrames(t *testing.T, b []byte) (hdrs []Header) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < HeaderLen {
			t.Fatalf("%d trailing bytes, too short for a header", len(b))
		}
		var h Header
		copy(h[:], b)
		b = b[HeaderLen:]
		if h.Length() > len(b) {
			t.Fatalf("frame %v claims %d bytes, %d left", &h, h.Length(), len(b))
		}
		b = b[h.Length():]
		hdrs = append(hdrs, h)
	}
	return hdrs
}

func TestAppendWaste(t *testing.T) {
	tests := []struct {
		total  int
		frames []int // expected payload lengths, in order
	}{
		{7, []int{0}},
		{8, []int{1}},
		{100, []int{93}},
		{65542, []int{65535}},
		{65543, []int{65528, 1}},
		{65548, []int{65528, 6}},
		{65549, []int{65535, 0}},
		{65550, []int{65535, 1}},
		{131084, []int{65535, 65535}},
		{200000, []int{65535, 65535, 65535, 3367}}, // 200000 = 3*65542 + 7+3367
	}
	for _, tt := range tests {
		got := AppendWaste([]byte("pre"), tt.total)
		if !bytes.HasPrefix(got, []byte("pre")) {
			t.Fatalf("total %d: prefix lost", tt.total)
		}
		body := got[3:]
		if len(body) != tt.total {
			t.Errorf("AppendWaste(%d) appended %d bytes", tt.total, len(body))
			continue
		}
		hdrs := parseFrames(t, body)
		sum := 0
		var lens []int
		for _, h := range hdrs {
			if h.Cmd() != CmdWaste || h.StreamID() != 0 {
				t.Errorf("AppendWaste(%d): frame %v is not Waste sid=0", tt.total, &h)
			}
			sum += HeaderLen + h.Length()
			lens = append(lens, h.Length())
		}
		if sum != tt.total {
			t.Errorf("AppendWaste(%d): frames add up to %d", tt.total, sum)
		}
		if tt.frames != nil && fmt.Sprint(lens) != fmt.Sprint(tt.frames) {
			t.Errorf("AppendWaste(%d): payload lengths %v, want %v", tt.total, lens, tt.frames)
		}
		// padding is zeros
		for i := 0; i < len(body); {
			var h Header
			copy(h[:], body[i:])
			i += HeaderLen
			if !allZero(body[i : i+h.Length()]) {
				t.Errorf("AppendWaste(%d): non-zero padding", tt.total)
			}
			i += h.Length()
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestAppendWasteAllTotals checks every total around the frame boundaries and
// that the padding is zeroed even when dst has dirty spare capacity.
func TestAppendWasteAllTotals(t *testing.T) {
	check := func(total int) {
		dirty := bytes.Repeat([]byte{0xff}, total+16)
		for _, dst := range [][]byte{nil, dirty[:0]} {
			got := AppendWaste(dst, total)
			want := total
			if total < HeaderLen {
				want = 0
			}
			if len(got) != want {
				t.Fatalf("AppendWaste(%d) = %d bytes, want %d", total, len(got), want)
			}
			sum := 0
			for _, h := range parseFrames(t, got) {
				if h.Cmd() != CmdWaste || h.StreamID() != 0 {
					t.Fatalf("AppendWaste(%d): bad frame %v", total, &h)
				}
				sum += HeaderLen + h.Length()
			}
			if sum != want {
				t.Fatalf("AppendWaste(%d): frames total %d", total, sum)
			}
			for i := 0; i < len(got); {
				var h Header
				copy(h[:], got[i:])
				i += HeaderLen
				if !allZero(got[i : i+h.Length()]) {
					t.Fatalf("AppendWaste(%d): padding not zeroed", total)
				}
				i += h.Length()
			}
		}
	}
	for total := -3; total <= 40; total++ {
		check(total)
	}
	for total := MaxFrameLen - 10; total <= MaxFrameLen+20; total++ {
		check(total)
	}
	for total := 2*MaxFrameLen - 10; total <= 2*MaxFrameLen+20; total++ {
		check(total)
	}
	check(200000)
	check(3*MaxFrameLen + 3)
}

var passwordHash = mustHexConst("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8")

func mustHexConst(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestAppendAuth(t *testing.T) {
	hash := sha256.Sum256([]byte("password"))
	if !bytes.Equal(hash[:], passwordHash) {
		t.Fatalf("sha256(password) = %x", hash)
	}
	got, err := AppendAuth(nil, &hash, 30)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(passwordHash), 0x00, 0x1e)
	want = append(want, make([]byte, 30)...)
	if len(got) != 64 || !bytes.Equal(got, want) {
		t.Fatalf("AppendAuth(password, 30) = %x (%d bytes), want %x", got, len(got), want)
	}

	for _, tt := range []struct {
		pad    int
		lenHex string
	}{{0, "0000"}, {1, "0001"}, {300, "012c"}, {65535, "ffff"}} {
		dirty := bytes.Repeat([]byte{0xff}, 3+AuthPrefixLen+tt.pad)
		dst := append(dirty[:0], "abc"...)
		got, err := AppendAuth(dst, &hash, tt.pad)
		if err != nil {
			t.Fatalf("pad %d: %v", tt.pad, err)
		}
		if len(got) != 3+AuthPrefixLen+tt.pad {
			t.Fatalf("pad %d: len %d", tt.pad, len(got))
		}
		if string(got[:3]) != "abc" || !bytes.Equal(got[3:35], passwordHash) ||
			hex.EncodeToString(got[35:37]) != tt.lenHex || !allZero(got[37:]) {
			t.Errorf("pad %d: wrong preamble %x", tt.pad, got[:min(len(got), 48)])
		}
	}

	for _, pad := range []int{-1, 65536} {
		got, err := AppendAuth([]byte{1}, &hash, pad)
		if !errors.Is(err, ErrPayloadTooLarge) {
			t.Errorf("pad %d: err = %v", pad, err)
		}
		if !bytes.Equal(got, []byte{1}) {
			t.Errorf("pad %d: dst modified", pad)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	var h Header
	var sink int
	allocs := testing.AllocsPerRun(1000, func() {
		h.Set(CmdPSH, 0xdeadbeef, 1234)
		sink += int(h.Cmd()) + int(h.StreamID()) + h.Length()
	})
	if allocs != 0 {
		t.Errorf("Header.Set + accessors: %v allocs, want 0", allocs)
	}

	buf := make([]byte, 0, 64)
	allocs = testing.AllocsPerRun(1000, func() {
		var err error
		buf, err = AppendHeader(buf[:0], CmdSYN, 7, 0)
		if err != nil {
			panic(err)
		}
		buf, _ = AppendHeader(buf, CmdPSH, 7, 65535)
	})
	if allocs != 0 {
		t.Errorf("AppendHeader into preallocated slice: %v allocs, want 0", allocs)
	}

	big := make([]byte, 0, 2*MaxFrameLen+100)
	allocs = testing.AllocsPerRun(100, func() {
		big = AppendWaste(big[:0], 2*MaxFrameLen+50)
	})
	if allocs != 0 {
		t.Errorf("AppendWaste into preallocated slice: %v allocs, want 0", allocs)
	}

	hash := sha256.Sum256([]byte("password"))
	allocs = testing.AllocsPerRun(100, func() {
		big, _ = AppendAuth(big[:0], &hash, 300)
	})
	if allocs != 0 {
		t.Errorf("AppendAuth into preallocated slice: %v allocs, want 0", allocs)
	}
	_ = sink
}

func FuzzHeader(f *testing.F) {
	f.Add(uint8(CmdSYN), uint32(1), uint16(0))
	f.Add(uint8(CmdPSH), uint32(0xdeadbeef), uint16(65535))
	f.Add(uint8(CmdSettings), uint32(0), uint16(42))
	f.Add(uint8(200), uint32(1<<31), uint16(1))
	f.Fuzz(func(t *testing.T, cmd uint8, sid uint32, n uint16) {
		var h Header
		h.Set(Cmd(cmd), sid, int(n))
		if h.Cmd() != Cmd(cmd) || h.StreamID() != sid || h.Length() != int(n) {
			t.Fatalf("Set(%d, %d, %d) read back %d %d %d", cmd, sid, n, h.Cmd(), h.StreamID(), h.Length())
		}
		b, err := AppendHeader(nil, Cmd(cmd), sid, int(n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, h[:]) {
			t.Fatalf("AppendHeader %x != Set %x", b, h[:])
		}
		want := []byte{cmd, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(want[1:], sid)
		binary.BigEndian.PutUint16(want[5:], n)
		if !bytes.Equal(b, want) {
			t.Fatalf("header %x, want %x", b, want)
		}
		// The reverse direction: any 7 bytes decode and re-encode identically.
		var h2 Header
		copy(h2[:], want)
		h3 := Header{}
		h3.Set(h2.Cmd(), h2.StreamID(), h2.Length())
		if h3 != h2 {
			t.Fatalf("re-encode %x != %x", h3[:], h2[:])
		}
	})
}
