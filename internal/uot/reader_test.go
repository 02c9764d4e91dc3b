package uot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"

	"github.com/anytls-suite/anytls/internal/wire"
)

// flakyReader returns at most one byte per Read, and a deadline error before
// every other byte, like a stream read under a short deadline.
type flakyReader struct {
	r    io.Reader
	tick bool
}

func (f *flakyReader) Read(p []byte) (int, error) {
	f.tick = !f.tick
	if f.tick {
		return 0, os.ErrDeadlineExceeded
	}
	if len(p) > 1 {
		p = p[:1]
	}
	return f.r.Read(p)
}

type testPacket struct {
	addr    wire.Addr
	payload []byte
}

func packetStream(t *testing.T, connect bool, pkts []testPacket) []byte {
	t.Helper()
	var b []byte
	for _, p := range pkts {
		var err error
		if b, err = AppendPacket(b, connect, p.addr, p.payload); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// A packet is consumed only when complete: reads cut by deadlines anywhere
// inside one resume at the same boundary.
func TestReaderResumesAfterDeadlines(t *testing.T) {
	pkts := []testPacket{
		{v4, []byte("one")},
		{v6, bytes.Repeat([]byte{7}, 300)},
		{name, nil},
		{v4, []byte("last")},
	}
	for _, connect := range []bool{true, false} {
		stream := packetStream(t, connect, pkts)
		for _, mk := range []func() io.Reader{
			func() io.Reader { return bytes.NewReader(stream) },
			func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
			func() io.Reader { return &flakyReader{r: bytes.NewReader(stream)} },
		} {
			rd := NewReader(mk())
			var timeouts int
			for i, want := range pkts {
				for {
					addr, p, err := rd.Next(connect)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						timeouts++
						continue
					}
					if err != nil {
						t.Fatalf("connect=%v packet %d: %v", connect, i, err)
					}
					wantAddr := want.addr
					if connect {
						wantAddr = wire.Addr{} // connect-mode packets carry none
					}
					if addr != wantAddr {
						t.Fatalf("packet %d: addr %+v, want %+v", i, addr, wantAddr)
					}
					if !bytes.Equal(p, want.payload) {
						t.Fatalf("packet %d: payload %q", i, p)
					}
					break
				}
			}
			for {
				_, _, err := rd.Next(connect)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if err != io.EOF {
					t.Fatalf("after the last packet: %v, want io.EOF", err)
				}
				break
			}
		}
	}
}

func TestReaderDropsOversizedAndStops(t *testing.T) {
	stream := append(mustHex(t, "00 7f000001 0035 ffe4"), make([]byte, MaxPacketSize+1)...)
	stream = append(stream, mustHex(t, "00 7f000001 0035 0002 6f6b")...)
	stream = append(stream, mustHex(t, "05 00")...)
	rd := NewReader(iotest.HalfReader(bytes.NewReader(stream)))
	if _, _, err := rd.Next(false); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if addr, p, err := rd.Next(false); err != nil || string(p) != "ok" || addr != v4 {
		t.Fatalf("after oversized: %+v %q %v", addr, p, err)
	}
	for range 2 { // the error stays: nothing more can be read
		if _, _, err := rd.Next(false); !errors.Is(err, ErrMalformed) {
			t.Fatalf("malformed: %v", err)
		}
	}
	// the stream ends inside a packet
	rd = NewReader(bytes.NewReader(mustHex(t, "0005 6162")))
	if _, _, err := rd.Next(true); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
}

// A request and the first packet arrive in one write (sing's lazy client);
// the reader splits them.
func TestReaderRequestThenPackets(t *testing.T) {
	b, _ := AppendRequest(nil, Request{Connect: true, Destination: v6})
	b, _ = AppendPacket(b, true, wire.Addr{}, []byte("first"))
	rd := NewReader(bytes.NewReader(b))
	req, err := rd.ReadRequest()
	if err != nil || req.Destination != v6 || !req.Connect {
		t.Fatalf("request %+v %v", req, err)
	}
	if _, p, err := rd.Next(true); err != nil || string(p) != "first" {
		t.Fatalf("packet %q %v", p, err)
	}
}
