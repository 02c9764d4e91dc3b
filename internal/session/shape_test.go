package session

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/anytls-suite/anytls/internal/wire"
)

// recConn records the size of every Write and everything written.
type recConn struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
	all   bytes.Buffer
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(p))
	c.all.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// take returns the sizes recorded since the last call.
func (c *recConn) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sizes
	c.sizes = nil
	return s
}

func (c *recConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.all.Bytes())
}

// shapeScheme uses exact sizes so that every write is predictable:
//
//	write 1: 100, c, 200
//	write 2: 50, c, 300, c, 400
//	write 3: 10, 20          (no check mark: padding even without data)
//	write 4: 30
//	write 5: line missing    (sent as is)
//	write 6 on: past stop    (sent as is, one write per frame)
const shapeScheme = "stop=6\n1=100-100,c,200-200\n2=50-50,c,300-300,c,400-400\n3=10-10,20-20\n4=30-30"

// shapeClient is short so that the first write's size is easy to reckon:
// Settings "v=2\nclient=t\npadding-md5=<32>" is 57 bytes, 64 with its header;
// SYN is 7; so write 1 is 71 + the destination's PSH frame.
const shapeClient = "t"

func TestShapeWrites(t *testing.T) {
	ipv4 := wire.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80} // PSH 7+7 = 14
	// a domain of n bytes: PSH 7+1+1+n+2 = 11+n
	name := func(n int) wire.Addr {
		return wire.Addr{Name: strings.Repeat("d", n), Port: 443}
	}
	type op struct {
		n    int   // bytes of user data for one stream.Write
		want []int // the writes it must make
	}
	tests := []struct {
		name string
		dst  wire.Addr
		open []int // writes made by OpenStream (write 1)
		ops  []op  // writes 2, 3, ...
	}{
		{
			// write 1: 71+14 = 85 < 100, pad 15 > 7: a Waste frame fills it
			// to 100; then c with no data left stops.
			name: "padded-then-check",
			dst:  ipv4,
			open: []int{100},
			ops: []op{
				{10, []int{50}},               // 17 < 50: padded to 50; c stops
				{1, []int{8, 27}},             // 8 < 10, pad 2 <= 7: data alone; no data for 20 and no c: Waste 7+20
				{1, []int{30}},                // 8 < 30: padded to 30
				{100, []int{107}},             // line 5 missing: as is
				{100, []int{107}},             // past stop: as is
				{100000, []int{65536, 34478}}, // past stop: one write per frame
			},
		},
		{
			// write 1: 71+31 = 102 > 100: cut at 100; c with data left goes
			// on; the 2 bytes left are padded to 200.
			name: "cut-then-padded",
			dst:  name(20),
			open: []int{100, 200},
			ops: []op{
				{100, []int{50, 300}},   // 107: 50, then 57 padded to 300; c stops
				{50, []int{10, 20, 27}}, // 57: 10, 20, then the 27 left after the list
				{0, nil},                // an empty Write writes nothing and uses no write number
				{2000, []int{30, 1977}}, // 2007: 30, then the rest as is
			},
		},
		{
			// write 1: 71+29 = 100 exactly: one write, no Waste; c stops.
			name: "exact",
			dst:  name(18),
			open: []int{100},
			ops: []op{
				{43, []int{50}},    // 50 exactly
				{3, []int{10, 27}}, // 10 exactly, then Waste 7+20
			},
		},
		{
			// write 1: 71+22 = 93: a pad of 7 is not > 7, so the data goes alone.
			name: "pad-7-not-added",
			dst:  name(11),
			open: []int{93},
			ops: []op{
				{36, []int{43}},           // 43: pad 7: alone
				{343, []int{10, 20, 320}}, // 350: 10, 20, then 320 as is
			},
		},
		{
			// write 1: 71+21 = 92: a pad of 8 > 7: Waste with 1 byte of data.
			name: "pad-8-added",
			dst:  name(10),
			open: []int{100},
			ops: []op{
				{35, []int{50}},     // 42: pad 8: padded to 50
				{13, []int{10, 20}}, // 20: 10, then 10 padded to 20
			},
		},
		{
			name: "exactly-two-sizes",
			dst:  ipv4,
			open: []int{100},
			ops: []op{
				{343, []int{50, 300}}, // 350: 50, then 300 exactly; c stops
				{1, []int{8, 27}},
			},
		},
		{
			name: "every-size-of-write-2",
			dst:  ipv4,
			open: []int{100},
			ops: []op{
				{344, []int{50, 300, 400}}, // 351: 50, 300, then 1 padded to 400
				{5, []int{10, 20}},         // 12: 10, then 2 padded to 20
			},
		},
		{
			name: "data-left-after-list",
			dst:  ipv4,
			open: []int{100},
			ops: []op{
				{2000, []int{50, 300, 400, 1257}}, // 2007: the list, then 1257 as is
			},
		},
		{
			// A write larger than one frame is split into frames first; each
			// frame is one shaped write: 65536 as write 2, 34478 as write 3.
			name: "large-write-while-shaping",
			dst:  ipv4,
			open: []int{100},
			ops: []op{
				{100000, []int{50, 300, 400, 65536 - 750, 10, 20, 34478 - 30}},
				{1, []int{30}},
			},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			sc, pc := net.Pipe()
			rc := &recConn{Conn: sc}
			drained := make(chan struct{})
			go func() {
				io.Copy(io.Discard, pc)
				close(drained)
			}()
			scheme := mustScheme(t, shapeScheme)
			// probes off: no opening HeartRequest, so write 1 has the size
			// worked out above
			sess := NewClient(rc, Config{Scheme: scheme, ClientName: shapeClient, ProbeTimeout: -1, Logger: testLogger()})
			defer func() {
				sess.Close()
				pc.Close()
				<-drained
			}()

			st, err := sess.OpenStream(t.Context(), tt.dst, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSizes(t, "OpenStream (write 1)", rc.take(), tt.open)
			var user []byte
			for i, o := range tt.ops {
				data := pattern(o.n, byte(i))
				n, err := st.Write(data)
				if err != nil || n != len(data) {
					t.Fatalf("op %d: Write(%d) = %d, %v", i, len(data), n, err)
				}
				user = append(user, data...)
				checkSizes(t, fmt.Sprintf("op %d (Write of %d bytes)", i, o.n), rc.take(), o.want)
			}
			checkShapedContent(t, rc.bytes(), scheme.Raw(), tt.dst, st.ID(), user)
		})
	}
}

func checkSizes(t *testing.T, what string, got, want []int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: write sizes %v, want %v", what, got, want)
	}
	// the sizes must also add up to a whole number of frames; checked later
}

// checkShapedContent parses everything the client wrote: Settings, SYN, the
// destination, then the user's data, with nothing but Waste in between.
func checkShapedContent(t *testing.T, all []byte, schemeText []byte, dst wire.Addr, sid uint32, user []byte) {
	t.Helper()
	frames, err := parseFrames(all)
	if err != nil {
		t.Fatalf("client output does not parse as frames: %v", err)
	}
	var real []frame
	for _, f := range frames {
		if f.cmd == wire.CmdWaste {
			if f.sid != 0 {
				t.Errorf("Waste frame on stream %d", f.sid)
			}
			continue
		}
		real = append(real, f)
	}
	// a probing client announces itself with a HeartRequest after Settings
	if len(real) > 1 && real[1].cmd == wire.CmdHeartRequest {
		if hr := real[1]; hr.sid != 0 || len(hr.data) != 0 {
			t.Errorf("second frame %v, want HeartRequest sid=0", hr)
		}
		real = append(real[:1], real[2:]...)
	}
	if len(real) < 3 {
		t.Fatalf("frames %v: want Settings, SYN, PSH...", real)
	}
	sum := md5.Sum(schemeText)
	set := wire.ParseSettings(real[0].data)
	if real[0].cmd != wire.CmdSettings || real[0].sid != 0 || len(set) != 3 {
		t.Errorf("first frame %v, want Settings with 3 keys", real[0])
	}
	for k, want := range map[string]string{
		"v":           "2",
		"client":      shapeClient,
		"padding-md5": hex.EncodeToString(sum[:]),
	} {
		if got, _ := set.Get(k); got != want {
			t.Errorf("Settings %s=%q, want %q", k, got, want)
		}
	}
	if real[1].cmd != wire.CmdSYN || real[1].sid != sid || len(real[1].data) != 0 {
		t.Errorf("second frame %v, want SYN sid=%d", real[1], sid)
	}
	addr, _ := wire.AppendAddr(nil, dst, wire.SOCKS)
	if real[2].cmd != wire.CmdPSH || real[2].sid != sid || !bytes.Equal(real[2].data, addr) {
		t.Errorf("third frame %v, want PSH sid=%d %x", real[2], sid, addr)
	}
	var got []byte
	for _, f := range real[3:] {
		if f.cmd != wire.CmdPSH || f.sid != sid {
			t.Fatalf("unexpected frame %v among the data", f)
		}
		if len(f.data) == 0 {
			t.Errorf("empty PSH frame")
		}
		got = append(got, f.data...)
	}
	if !bytes.Equal(got, user) {
		t.Errorf("user data: got %d bytes, want %d (equal prefix %d)", len(got), len(user), commonPrefix(got, user))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestShapeWasteOnly checks the Waste frames themselves: a write with no data
// left and no check mark gets a Waste frame carrying exactly `size` bytes.
func TestShapeWasteOnly(t *testing.T) {
	leakCheck(t)
	sc, pc := net.Pipe()
	rc := &recConn{Conn: sc}
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, pc)
		close(drained)
	}()
	// write 1 is 85 bytes: 5, 7 and 73 carry it exactly; no data is left
	// for 9 and 300 and there is no check mark, so each becomes a Waste frame
	// carrying that many bytes (16 and 307 on the wire).
	scheme := mustScheme(t, "stop=2\n1=5-5,7-7,73-73,9-9,300-300")
	sess := NewClient(rc, Config{Scheme: scheme, ClientName: shapeClient, ProbeTimeout: -1})
	defer func() {
		sess.Close()
		pc.Close()
		<-drained
	}()
	dst := wire.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80}
	if _, err := sess.OpenStream(t.Context(), dst, nil); err != nil {
		t.Fatal(err)
	}
	checkSizes(t, "write 1", rc.take(), []int{5, 7, 73, 16, 307})
	all := rc.bytes()
	tail := all[85:]
	frames, err := parseFrames(tail)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0].cmd != wire.CmdWaste || len(frames[0].data) != 9 ||
		frames[1].cmd != wire.CmdWaste || len(frames[1].data) != 300 {
		t.Fatalf("padding-only writes: %v, want Waste(9), Waste(300)", frames)
	}
	if !bytes.Equal(frames[1].data, make([]byte, 300)) {
		t.Errorf("Waste data is not zeros")
	}
}
