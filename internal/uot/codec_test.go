package uot

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/anytls-suite/anytls/internal/wire"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	v4   = wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 53}
	v6   = wire.Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}
	name = wire.Addr{Name: "example.com", Port: 8080}
)

var requestCases = []struct {
	name string
	req  Request
	hex  string
}{
	{"connect ipv4", Request{Connect: true, Destination: v4}, "01 01 7f000001 0035"},
	{"connect ipv6", Request{Connect: true, Destination: v6}, "01 04 20010db8000000000000000000000001 01bb"},
	{"connect domain", Request{Connect: true, Destination: name}, "01 03 0b 6578616d706c652e636f6d 1f90"},
	{"non-connect unspecified", Request{Destination: unspecified}, "00 01 00000000 0000"},
	{"non-connect domain", Request{Destination: name}, "00 03 0b 6578616d706c652e636f6d 1f90"},
}

func TestRequestBytes(t *testing.T) {
	for _, c := range requestCases {
		t.Run(c.name, func(t *testing.T) {
			want := mustHex(t, c.hex)
			got, err := AppendRequest([]byte{0xAA}, c.req)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], want) || got[0] != 0xAA {
				t.Fatalf("AppendRequest = %x, want aa%x", got, want)
			}
			req, n, err := DecodeRequest(append(want, 0xEE))
			if err != nil || n != len(want) || req != c.req {
				t.Fatalf("DecodeRequest = %+v, %d, %v; want %+v, %d", req, n, err, c.req, len(want))
			}
			for i := range want {
				if _, _, err := DecodeRequest(want[:i]); err != io.ErrUnexpectedEOF {
					t.Fatalf("DecodeRequest of %d/%d bytes: %v, want io.ErrUnexpectedEOF", i, len(want), err)
				}
			}
			rreq, err := NewReader(bytes.NewReader(want)).ReadRequest()
			if err != nil || rreq != c.req {
				t.Fatalf("ReadRequest = %+v, %v", rreq, err)
			}
		})
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	for _, c := range []struct {
		name, hex string
		want      error
	}{
		{"uot code for ipv4", "01 00 7f000001 0035", ErrMalformed},
		{"unknown type", "00 05 00", ErrMalformed},
		{"empty domain", "01 03 00 0035", ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := DecodeRequest(mustHex(t, c.hex))
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if _, err := NewReader(bytes.NewReader(mustHex(t, c.hex))).ReadRequest(); !errors.Is(err, c.want) {
				t.Fatalf("ReadRequest err = %v, want %v", err, c.want)
			}
		})
	}
	// any non-zero isConnect byte means connect mode, as sing reads it
	req, _, err := DecodeRequest(mustHex(t, "02 01 7f000001 0035"))
	if err != nil || !req.Connect {
		t.Fatalf("isConnect 2: %+v, %v", req, err)
	}
	// a domain that is an IP literal is read as that IP
	req, _, err = DecodeRequest(mustHex(t, "01 03 09 3132372e302e302e31 0035"))
	if err != nil || req.Destination != v4 {
		t.Fatalf("IP literal as domain: %+v, %v", req, err)
	}
	if _, err := NewReader(bytes.NewReader(nil)).ReadRequest(); err != io.EOF {
		t.Fatalf("ReadRequest(empty) = %v, want io.EOF", err)
	}
}

var packetCases = []struct {
	name    string
	connect bool
	addr    wire.Addr
	payload string
	hex     string
}{
	{"connect", true, wire.Addr{}, "abc", "0003 616263"},
	{"connect empty", true, wire.Addr{}, "", "0000"},
	{"ipv4", false, v4, "abc", "00 7f000001 0035 0003 616263"},
	{"ipv6", false, v6, "hi", "01 20010db8000000000000000000000001 01bb 0002 6869"},
	{"domain", false, name, "x", "02 0b 6578616d706c652e636f6d 1f90 0001 78"},
	{"ipv4 empty", false, v4, "", "00 7f000001 0035 0000"},
}

func TestPacketBytes(t *testing.T) {
	for _, c := range packetCases {
		t.Run(c.name, func(t *testing.T) {
			want := mustHex(t, c.hex)
			got, err := AppendPacket([]byte{0xAA}, c.connect, c.addr, []byte(c.payload))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], want) {
				t.Fatalf("AppendPacket = %x, want aa%x", got, want)
			}
			if hl := HeaderLen(c.connect, c.addr); hl != len(want)-len(c.payload) {
				t.Fatalf("HeaderLen = %d, want %d", hl, len(want)-len(c.payload))
			}
			addr, payload, n, err := DecodePacket(append(want, 0xEE), c.connect)
			if err != nil || n != len(want) || addr != c.addr || string(payload) != c.payload {
				t.Fatalf("DecodePacket = %+v %q %d %v", addr, payload, n, err)
			}
			for i := range want {
				if _, _, _, err := DecodePacket(want[:i], c.connect); err != io.ErrUnexpectedEOF {
					t.Fatalf("DecodePacket of %d/%d bytes: %v, want io.ErrUnexpectedEOF", i, len(want), err)
				}
			}
		})
	}
}

func TestPacketLimits(t *testing.T) {
	big := make([]byte, MaxPacketSize)
	for _, connect := range []bool{true, false} {
		b, err := AppendPacket(nil, connect, name, big)
		if err != nil {
			t.Fatalf("connect=%v: max packet: %v", connect, err)
		}
		if _, p, n, err := DecodePacket(b, connect); err != nil || len(p) != MaxPacketSize || n != len(b) {
			t.Fatalf("connect=%v: decode max packet: %d %d %v", connect, len(p), n, err)
		}
		if _, err := AppendPacket(nil, connect, name, make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooLarge) {
			t.Fatalf("connect=%v: oversized packet: %v", connect, err)
		}
	}
	// an oversized packet on the wire is reported with its size, to be skipped
	over := append(mustHex(t, "00 7f000001 0035 ffff"), make([]byte, 0xFFFF)...)
	addr, p, n, err := DecodePacket(over, false)
	if !errors.Is(err, ErrPacketTooLarge) || n != len(over) || p != nil || addr != v4 {
		t.Fatalf("oversized: %+v, %d bytes, n=%d, %v", addr, len(p), n, err)
	}
	if _, err := AppendPacket(nil, false, wire.Addr{Port: 1}, nil); !errors.Is(err, wire.ErrInvalidAddr) {
		t.Fatalf("invalid address: %v", err)
	}
	if HeaderLen(false, wire.Addr{}) != 0 {
		t.Fatal("HeaderLen of an invalid address is not 0")
	}
}

func TestDecodePacketErrors(t *testing.T) {
	for _, c := range []struct{ name, hex string }{
		{"socks code for ipv4", "01 7f000001"},
		{"socks code for domain", "03 01 61 0001 0000"},
		{"unknown type", "07"},
		{"empty domain", "02 00 0035 0000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := mustHex(t, c.hex)
			_, _, n, err := DecodePacket(b, false)
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if n != 0 {
				t.Fatalf("n = %d after an error", n)
			}
		})
	}
	// type 1 is IPv6 in the UoT codes: 5 bytes are a truncation, not an error
	if _, _, _, err := DecodePacket(mustHex(t, "01 7f000001"), false); err != io.ErrUnexpectedEOF {
		t.Fatalf("short ipv6: %v", err)
	}
	if _, _, _, err := DecodePacket(mustHex(t, "07"), false); !errors.Is(err, ErrMalformed) {
		t.Fatalf("type 7: %v", err)
	}
	// a domain that is an IP literal is read as that IP
	a, _, _, err := DecodePacket(mustHex(t, "02 03 3a3a31 0035 0000"), false)
	if err != nil || a != (wire.Addr{IP: netip.IPv6Loopback(), Port: 53}) {
		t.Fatalf("IP literal as domain: %+v %v", a, err)
	}
}
