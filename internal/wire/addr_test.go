package wire

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

type addrCase struct {
	name  string
	addr  Addr
	socks string // hex of the SOCKS encoding
	uot   string // hex of the UoT encoding
}

var addrCases = []addrCase{
	{
		name:  "ipv4",
		addr:  Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80},
		socks: "01" + "01020304" + "0050",
		uot:   "00" + "01020304" + "0050",
	},
	{
		name:  "ipv4-zero-port",
		addr:  Addr{IP: netip.MustParseAddr("0.0.0.0"), Port: 0},
		socks: "01" + "00000000" + "0000",
		uot:   "00" + "00000000" + "0000",
	},
	{
		name:  "ipv4-max-port",
		addr:  Addr{IP: netip.MustParseAddr("255.255.255.255"), Port: 65535},
		socks: "01" + "ffffffff" + "ffff",
		uot:   "00" + "ffffffff" + "ffff",
	},
	{
		name:  "ipv6",
		addr:  Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 443},
		socks: "04" + "20010db8000000000000000000000001" + "01bb",
		uot:   "01" + "20010db8000000000000000000000001" + "01bb",
	},
	{
		name:  "ipv6-loopback",
		addr:  Addr{IP: netip.MustParseAddr("::1"), Port: 53},
		socks: "04" + "00000000000000000000000000000001" + "0035",
		uot:   "01" + "00000000000000000000000000000001" + "0035",
	},
	{
		name:  "domain",
		addr:  Addr{Name: "example.com", Port: 8080},
		socks: "03" + "0b" + "6578616d706c652e636f6d" + "1f90",
		uot:   "02" + "0b" + "6578616d706c652e636f6d" + "1f90",
	},
	{
		name:  "domain-1",
		addr:  Addr{Name: "a", Port: 1},
		socks: "03" + "01" + "61" + "0001",
		uot:   "02" + "01" + "61" + "0001",
	},
	{
		name:  "uot-magic",
		addr:  Addr{Name: "sp.v2.udp-over-tcp.arpa", Port: 0},
		socks: "03" + "17" + "73702e76322e7564702d6f7665722d7463702e61727061" + "0000",
		uot:   "02" + "17" + "73702e76322e7564702d6f7665722d7463702e61727061" + "0000",
	},
	{
		name:  "domain-255",
		addr:  Addr{Name: strings.Repeat("x", 255), Port: 0x1234},
		socks: "03" + "ff" + strings.Repeat("78", 255) + "1234",
		uot:   "02" + "ff" + strings.Repeat("78", 255) + "1234",
	},
}

func encodings(c addrCase) []struct {
	enc  AddrEncoding
	name string
	hex  string
} {
	return []struct {
		enc  AddrEncoding
		name string
		hex  string
	}{{SOCKS, "socks", c.socks}, {UoT, "uot", c.uot}}
}

func TestAppendAddr(t *testing.T) {
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			want := mustHex(t, e.hex)
			got, err := AppendAddr([]byte("pfx"), c.addr, e.enc)
			if err != nil {
				t.Errorf("%s/%s: %v", c.name, e.name, err)
				continue
			}
			if !bytes.Equal(got, append([]byte("pfx"), want...)) {
				t.Errorf("%s/%s: AppendAddr = %x, want 706678%x", c.name, e.name, got, want)
			}
			if c.addr.Len() != len(want) {
				t.Errorf("%s: Len() = %d, want %d", c.name, c.addr.Len(), len(want))
			}
			if len(want) > MaxAddrLen {
				t.Errorf("%s: encoding longer than MaxAddrLen", c.name)
			}
		}
	}
}

func TestAppendAddrErrors(t *testing.T) {
	tests := []struct {
		name string
		addr Addr
		want error
	}{
		{"empty", Addr{Port: 80}, ErrInvalidAddr},
		{"name-256", Addr{Name: strings.Repeat("y", 256), Port: 80}, ErrNameTooLong},
	}
	for _, tt := range tests {
		for _, enc := range []AddrEncoding{SOCKS, UoT} {
			got, err := AppendAddr([]byte{1, 2}, tt.addr, enc)
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			}
			if !bytes.Equal(got, []byte{1, 2}) {
				t.Errorf("%s: dst modified to %x", tt.name, got)
			}
		}
		if tt.addr.Len() != 0 {
			t.Errorf("%s: Len() = %d, want 0", tt.name, tt.addr.Len())
		}
	}
}

func TestAppendAddrMapped(t *testing.T) {
	// An Addr built by hand with a 4in6 IP is sent as IPv6; decoding unmaps it.
	a := Addr{IP: netip.MustParseAddr("::ffff:1.2.3.4"), Port: 80}
	b, err := AppendAddr(nil, a, SOCKS)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex(t, "04"+"00000000000000000000ffff01020304"+"0050")
	if !bytes.Equal(b, want) {
		t.Fatalf("AppendAddr(4in6) = %x, want %x", b, want)
	}
	got, n, err := DecodeAddr(b, SOCKS)
	if err != nil || n != len(b) {
		t.Fatalf("DecodeAddr = %v, %d, %v", got, n, err)
	}
	if !got.IP.Is4() || got.IP != netip.MustParseAddr("1.2.3.4") || got.Port != 80 {
		t.Fatalf("DecodeAddr(4in6) = %v, want unmapped 1.2.3.4:80", got)
	}
	r := bytes.NewReader(b)
	got2, err := ReadAddr(r, SOCKS)
	if err != nil || got2 != got {
		t.Fatalf("ReadAddr(4in6) = %v, %v", got2, err)
	}
}

func TestDecodeAddr(t *testing.T) {
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			enc := mustHex(t, e.hex)
			// Trailing bytes must be left alone.
			buf := append(bytes.Clone(enc), 0xde, 0xad)
			got, n, err := DecodeAddr(buf, e.enc)
			if err != nil {
				t.Errorf("%s/%s: %v", c.name, e.name, err)
				continue
			}
			if n != len(enc) {
				t.Errorf("%s/%s: n = %d, want %d", c.name, e.name, n, len(enc))
			}
			if got != c.addr {
				t.Errorf("%s/%s: got %+v, want %+v", c.name, e.name, got, c.addr)
			}
		}
	}
}

func TestDecodeAddrTruncated(t *testing.T) {
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			enc := mustHex(t, e.hex)
			for i := 0; i < len(enc); i++ {
				a, n, err := DecodeAddr(enc[:i], e.enc)
				if err != io.ErrUnexpectedEOF {
					t.Errorf("%s/%s: prefix %d: err = %v, want io.ErrUnexpectedEOF", c.name, e.name, i, err)
				}
				if n != 0 || a != (Addr{}) {
					t.Errorf("%s/%s: prefix %d: got %+v, %d on error", c.name, e.name, i, a, n)
				}
			}
		}
	}
}

func TestReadAddr(t *testing.T) {
	trailer := []byte("REST")
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			enc := mustHex(t, e.hex)
			r := bytes.NewReader(append(bytes.Clone(enc), trailer...))
			got, err := ReadAddr(r, e.enc)
			if err != nil {
				t.Errorf("%s/%s: %v", c.name, e.name, err)
				continue
			}
			if got != c.addr {
				t.Errorf("%s/%s: got %+v, want %+v", c.name, e.name, got, c.addr)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, trailer) {
				t.Errorf("%s/%s: reader left %q, want %q", c.name, e.name, rest, trailer)
			}
		}
	}
}

// oneByteReader returns at most one byte per Read, to exercise short reads.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestReadAddrShortReads(t *testing.T) {
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			enc := mustHex(t, e.hex)
			br := bytes.NewReader(append(bytes.Clone(enc), 'X'))
			got, err := ReadAddr(oneByteReader{br}, e.enc)
			if err != nil || got != c.addr {
				t.Errorf("%s/%s: got %+v, %v", c.name, e.name, got, err)
			}
			if br.Len() != 1 {
				t.Errorf("%s/%s: %d bytes left, want 1", c.name, e.name, br.Len())
			}
		}
	}
}

func TestReadAddrTruncated(t *testing.T) {
	for _, c := range addrCases {
		for _, e := range encodings(c) {
			enc := mustHex(t, e.hex)
			for i := 0; i < len(enc); i++ {
				r := bytes.NewReader(enc[:i])
				a, err := ReadAddr(r, e.enc)
				want := io.ErrUnexpectedEOF
				if i == 0 {
					want = io.EOF
				}
				if err != want {
					t.Errorf("%s/%s: prefix %d: err = %v, want %v", c.name, e.name, i, err, want)
				}
				if a != (Addr{}) {
					t.Errorf("%s/%s: prefix %d: got %+v on error", c.name, e.name, i, a)
				}
			}
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestReadAddrReaderError(t *testing.T) {
	boom := errors.New("boom")
	// An error other than EOF is passed through, at any position.
	_, err := ReadAddr(errReader{boom}, SOCKS)
	if err != boom {
		t.Errorf("err = %v, want boom", err)
	}
	for _, prefix := range [][]byte{{1}, {1, 2, 3}, {3}, {3, 5}, {3, 5, 'a'}, {4}} {
		r := io.MultiReader(bytes.NewReader(prefix), errReader{boom})
		_, err := ReadAddr(r, SOCKS)
		if err != boom {
			t.Errorf("prefix %x: err = %v, want boom", prefix, err)
		}
	}
}

func TestAddrBadType(t *testing.T) {
	tests := []struct {
		enc AddrEncoding
		typ byte
	}{
		{SOCKS, 0}, {SOCKS, 2}, {SOCKS, 5}, {SOCKS, 0xff},
		{UoT, 3}, {UoT, 4}, {UoT, 0x80}, {UoT, 0xff},
	}
	for _, tt := range tests {
		b := []byte{tt.typ, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
		_, n, err := DecodeAddr(b, tt.enc)
		if !errors.Is(err, ErrAddrType) || n != 0 {
			t.Errorf("DecodeAddr(type %d, enc %d) = %d, %v; want ErrAddrType", tt.typ, tt.enc, n, err)
		}
		r := bytes.NewReader(b)
		_, err = ReadAddr(r, tt.enc)
		if !errors.Is(err, ErrAddrType) {
			t.Errorf("ReadAddr(type %d, enc %d) err = %v; want ErrAddrType", tt.typ, tt.enc, err)
		}
		if r.Len() != len(b)-1 {
			t.Errorf("ReadAddr(type %d) read %d bytes, want only the type", tt.typ, len(b)-r.Len())
		}
	}
}

func TestAddrEmptyName(t *testing.T) {
	for _, tt := range []struct {
		enc AddrEncoding
		b   []byte
	}{
		{SOCKS, []byte{3, 0, 0, 80}},
		{UoT, []byte{2, 0, 0, 80}},
		{SOCKS, []byte{3, 0}}, // empty name is reported even before the port arrives
		{UoT, []byte{2, 0}},
	} {
		_, _, err := DecodeAddr(tt.b, tt.enc)
		if !errors.Is(err, ErrEmptyName) {
			t.Errorf("DecodeAddr(%x) err = %v, want ErrEmptyName", tt.b, err)
		}
		_, err = ReadAddr(bytes.NewReader(tt.b), tt.enc)
		if !errors.Is(err, ErrEmptyName) {
			t.Errorf("ReadAddr(%x) err = %v, want ErrEmptyName", tt.b, err)
		}
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in   string
		want Addr
	}{
		{"1.2.3.4:80", Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}},
		{"[::1]:443", Addr{IP: netip.MustParseAddr("::1"), Port: 443}},
		{"[2001:db8::1]:0", Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 0}},
		{"example.com:8080", Addr{Name: "example.com", Port: 8080}},
		{"example.com:65535", Addr{Name: "example.com", Port: 65535}},
		{"[::ffff:1.2.3.4]:80", Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}},
		{"[::ffff:0102:0304]:81", Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 81}},
		{"localhost:1", Addr{Name: "localhost", Port: 1}},
		{"[" + strings.Repeat("n", 255) + "]:2", Addr{Name: strings.Repeat("n", 255), Port: 2}},
		{strings.Repeat("n", 255) + ":2", Addr{Name: strings.Repeat("n", 255), Port: 2}},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.in)
		if err != nil {
			t.Errorf("ParseAddr(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseAddr(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if got.IP.IsValid() && (got.IP.Is4In6() || got.IP.Zone() != "") {
			t.Errorf("ParseAddr(%q) kept a mapped or zoned IP: %v", tt.in, got.IP)
		}
	}
}

func TestParseAddrErrors(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"1.2.3.4", ErrInvalidAddr},             // no port
		{"example.com:", ErrInvalidAddr},        // empty port
		{"example.com:65536", ErrInvalidAddr},   // port too large
		{"example.com:-1", ErrInvalidAddr},      // negative
		{"example.com:+80", ErrInvalidAddr},     // sign
		{"example.com:http", ErrInvalidAddr},    // name
		{"example.com:8 0", ErrInvalidAddr},     // space
		{"::1:80", ErrInvalidAddr},              // unbracketed IPv6
		{"[fe80::1%eth0]:80", ErrInvalidAddr},   // zone
		{"[fe80::1%25eth0]:80", ErrInvalidAddr}, // zone, URL-escaped style
		{":80", ErrEmptyName},
		{"[]:80", ErrEmptyName},
		{strings.Repeat("n", 256) + ":80", ErrNameTooLong},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.in)
		if !errors.Is(err, tt.want) {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %v", tt.in, got, err, tt.want)
		}
		if err != nil && got != (Addr{}) {
			t.Errorf("ParseAddr(%q) returned %+v with an error", tt.in, got)
		}
	}
}

func TestMakeAddr(t *testing.T) {
	tests := []struct {
		host string
		port uint16
		want Addr
		err  error
	}{
		{"1.2.3.4", 80, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}, nil},
		{"::ffff:1.2.3.4", 80, Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}, nil},
		{"::ffff:7f00:1", 5, Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 5}, nil},
		{"::1", 443, Addr{IP: netip.MustParseAddr("::1"), Port: 443}, nil},
		{"example.com", 8080, Addr{Name: "example.com", Port: 8080}, nil},
		{strings.Repeat("a", 255), 1, Addr{Name: strings.Repeat("a", 255), Port: 1}, nil},
		{strings.Repeat("a", 256), 1, Addr{}, ErrNameTooLong},
		{"", 1, Addr{}, ErrEmptyName},
		{"fe80::1%eth0", 1, Addr{}, ErrInvalidAddr},
		{"::ffff:1.2.3.4%eth0", 1, Addr{}, ErrInvalidAddr},
	}
	for _, tt := range tests {
		got, err := MakeAddr(tt.host, tt.port)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("MakeAddr(%.20q) err = %v, want %v", tt.host, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("MakeAddr(%.20q, %d) = %+v, %v; want %+v", tt.host, tt.port, got, err, tt.want)
		}
	}
}

func TestAddrMethods(t *testing.T) {
	v4 := Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 80}
	v6 := Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}
	name := Addr{Name: "example.com", Port: 8080}
	var zero Addr

	if v4.String() != "1.2.3.4:80" || v6.String() != "[2001:db8::1]:443" || name.String() != "example.com:8080" {
		t.Errorf("String: %q %q %q", v4, v6, name)
	}
	if v6.Host() != "2001:db8::1" || name.Host() != "example.com" {
		t.Errorf("Host: %q %q", v6.Host(), name.Host())
	}
	if v4.IsName() || v6.IsName() || !name.IsName() || zero.IsName() {
		t.Error("IsName wrong")
	}
	if !v4.Valid() || !v6.Valid() || !name.Valid() || zero.Valid() {
		t.Error("Valid wrong")
	}
	if v4.AddrPort() != netip.MustParseAddrPort("1.2.3.4:80") || name.AddrPort().IsValid() {
		t.Errorf("AddrPort: %v %v", v4.AddrPort(), name.AddrPort())
	}
	if got := AddrFromAddrPort(netip.MustParseAddrPort("[::ffff:1.2.3.4]:9")); got != (Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 9}) {
		t.Errorf("AddrFromAddrPort did not unmap: %+v", got)
	}
	if zero.Len() != 0 || v4.Len() != 7 || v6.Len() != 19 || name.Len() != 15 {
		t.Errorf("Len: %d %d %d %d", zero.Len(), v4.Len(), v6.Len(), name.Len())
	}
	// String round-trips through ParseAddr.
	for _, a := range []Addr{v4, v6, name} {
		b, err := ParseAddr(a.String())
		if err != nil || b != a {
			t.Errorf("ParseAddr(%q) = %+v, %v", a.String(), b, err)
		}
	}
}

func TestAddrZeroAllocs(t *testing.T) {
	buf := make([]byte, 0, MaxAddrLen)
	enc := mustHex(t, addrCases[0].socks)
	a := addrCases[0].addr
	allocs := testing.AllocsPerRun(1000, func() {
		buf, _ = AppendAddr(buf[:0], a, SOCKS)
		a, _, _ = DecodeAddr(enc, SOCKS)
	})
	if allocs != 0 {
		t.Errorf("AppendAddr/DecodeAddr of an IP: %v allocs, want 0", allocs)
	}
}

func addrSeeds(f *testing.F) {
	for _, c := range addrCases {
		f.Add(mustHex(f, c.socks), false)
		f.Add(mustHex(f, c.uot), true)
	}
	f.Add(mustHex(f, "0400000000000000000000ffff010203040050"), false)
	f.Add(mustHex(f, "0100000000000000000000ffff010203040050"), true)
	f.Add([]byte{3, 0, 0, 80}, false)
	f.Add([]byte{2, 0, 0, 80}, true)
	f.Add([]byte{}, false)
	f.Add([]byte{9}, true)
	f.Add([]byte{3, 200, 'a'}, false)
}

func encOf(uot bool) AddrEncoding {
	if uot {
		return UoT
	}
	return SOCKS
}

func FuzzDecodeAddr(f *testing.F) {
	addrSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, uot bool) {
		enc := encOf(uot)
		a, n, err := DecodeAddr(b, enc)
		if err != nil {
			if n != 0 || a != (Addr{}) {
				t.Fatalf("error %v with %+v, %d", err, a, n)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrAddrType) && !errors.Is(err, ErrEmptyName) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n < 1 || n > len(b) || n > MaxAddrLen {
			t.Fatalf("n = %d for %d input bytes", n, len(b))
		}
		if !a.Valid() || (a.IsName() && a.IP.IsValid()) {
			t.Fatalf("decoded invalid address %+v", a)
		}
		if a.IP.Is4In6() || a.IP.Zone() != "" {
			t.Fatalf("decoded IP not unmapped: %v", a.IP)
		}
		if a.Len() != n && !(a.IP.Is4() && n == 19) {
			t.Fatalf("Len() = %d, consumed %d", a.Len(), n)
		}
		re, err := AppendAddr(nil, a, enc)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", a, err)
		}
		consumed := b[:n]
		if n == 19 && a.IP.Is4() {
			// IPv4-mapped IPv6 was unmapped: the re-encoding is the IPv4
			// form, and the mapped form of it must be the consumed bytes.
			_, _, v6 := enc.codes()
			m := netip.AddrFrom16(a.IP.As16())
			mapped, err := AppendAddr(nil, Addr{IP: m, Port: a.Port}, enc)
			if err != nil || !bytes.Equal(mapped, consumed) || consumed[0] != v6 {
				t.Fatalf("4in6: consumed %x, mapped re-encoding %x", consumed, mapped)
			}
			if len(re) != 7 {
				t.Fatalf("4in6 re-encoded as %x", re)
			}
			return
		}
		if !bytes.Equal(re, consumed) {
			t.Fatalf("re-encoding %x != consumed %x", re, consumed)
		}
		// Every strict prefix of a valid encoding is reported as truncated.
		for i := 0; i < n; i++ {
			if _, _, err := DecodeAddr(b[:i], enc); err != io.ErrUnexpectedEOF {
				t.Fatalf("prefix %d of %x: err = %v", i, consumed, err)
			}
		}
	})
}

func FuzzReadAddr(f *testing.F) {
	addrSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, uot bool) {
		enc := encOf(uot)
		da, n, derr := DecodeAddr(b, enc)
		r := bytes.NewReader(b)
		ra, rerr := ReadAddr(r, enc)
		if (derr == nil) != (rerr == nil) {
			t.Fatalf("DecodeAddr err %v, ReadAddr err %v", derr, rerr)
		}
		if derr != nil {
			if len(b) == 0 {
				if rerr != io.EOF {
					t.Fatalf("ReadAddr(empty) = %v, want io.EOF", rerr)
				}
				return
			}
			if derr != rerr && !(errors.Is(derr, ErrAddrType) && errors.Is(rerr, ErrAddrType)) {
				t.Fatalf("DecodeAddr err %v, ReadAddr err %v", derr, rerr)
			}
			return
		}
		if da != ra {
			t.Fatalf("DecodeAddr %+v, ReadAddr %+v", da, ra)
		}
		if consumed := len(b) - r.Len(); consumed != n {
			t.Fatalf("ReadAddr consumed %d bytes, DecodeAddr %d", consumed, n)
		}
	})
}

// FuzzParseAddr: what ParseAddr accepts has a host, no zone and no
// IPv4-mapped IPv6; its String form parses back the same; and it encodes
// and decodes back the same when it fits the wire.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"1.2.3.4:80", "[::1]:443", "example.com:0", "[::ffff:1.2.3.4]:1",
		"[fe80::1%eth0]:1", ":80", "a:b", "[a:b]:65535", "host:65536", "x:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			return
		}
		if !a.Valid() || (a.IsName() && a.IP.IsValid()) || a.IP.Zone() != "" || a.IP.Is4In6() {
			t.Fatalf("ParseAddr(%q) = %+v", s, a)
		}
		back, err := ParseAddr(a.String())
		if err != nil || back != a {
			t.Fatalf("ParseAddr(%q) = %+v; its String %q parses as %+v, %v", s, a, a.String(), back, err)
		}
		for _, enc := range []AddrEncoding{SOCKS, UoT} {
			b, err := AppendAddr(nil, a, enc)
			if err != nil {
				if a.IsName() && len(a.Name) > 255 {
					continue
				}
				t.Fatalf("AppendAddr(%+v): %v", a, err)
			}
			got, n, err := DecodeAddr(b, enc)
			if err != nil || n != len(b) || got != a {
				t.Fatalf("%+v encodes as %x, which decodes as %+v, %d, %v", a, b, got, n, err)
			}
		}
	})
}
