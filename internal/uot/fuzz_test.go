package uot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/anytls-suite/anytls/internal/wire"
)

func FuzzDecodeRequest(f *testing.F) {
	for _, c := range requestCases {
		b, _ := AppendRequest(nil, c.req)
		f.Add(b)
	}
	f.Add([]byte{1, 3, 0})
	f.Add([]byte{0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, err := DecodeRequest(b)
		rreq, rerr := NewReader(&flakyReader{r: bytes.NewReader(b)}).readRequestRetrying()
		if err != nil {
			if n != 0 || req != (Request{}) {
				t.Fatalf("error %v with %+v, %d", err, req, n)
			}
			switch {
			case err == io.ErrUnexpectedEOF:
				if rerr != io.ErrUnexpectedEOF && !(len(b) == 0 && rerr == io.EOF) {
					t.Fatalf("Decode: truncated; Reader: %v", rerr)
				}
			case errors.Is(err, ErrMalformed):
				if !errors.Is(rerr, ErrMalformed) {
					t.Fatalf("Decode: %v; Reader: %v", err, rerr)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if rerr != nil || rreq != req {
			t.Fatalf("Decode %+v; Reader %+v, %v", req, rreq, rerr)
		}
		if n < 1+1+1+1+2 || n > len(b) || n > MaxRequestLen {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		re, err := AppendRequest(nil, req)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", req, err)
		}
		again, m, err := DecodeRequest(re)
		if err != nil || again != req || m != len(re) {
			t.Fatalf("round trip of %+v: %+v %d %v", req, again, m, err)
		}
	})
}

// readRequestRetrying retries reads cut by deadlines.
func (r *Reader) readRequestRetrying() (Request, error) {
	for {
		req, err := r.ReadRequest()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return req, err
		}
	}
}

type decoded struct {
	addr    wire.Addr
	payload string
}

// FuzzDecodePacket checks DecodePacket against the Reader on the same bytes
// (fed one byte at a time between deadline errors) and the encoder against
// both.
func FuzzDecodePacket(f *testing.F) {
	for _, c := range packetCases {
		b, _ := AppendPacket(nil, c.connect, c.addr, []byte(c.payload))
		b, _ = AppendPacket(b, c.connect, c.addr, []byte("second"))
		f.Add(b, c.connect)
	}
	f.Add([]byte{2, 0, 0, 0}, false)
	f.Add([]byte{0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, b []byte, connect bool) {
		// the decoder, packet after packet
		var want []decoded
		var end error
		for rest := b; ; {
			addr, p, n, err := DecodePacket(rest, connect)
			if errors.Is(err, ErrPacketTooLarge) {
				if n <= 0 || n > len(rest) {
					t.Fatalf("oversized packet with n = %d of %d", n, len(rest))
				}
				rest = rest[n:]
				continue
			}
			if err != nil {
				if n != 0 {
					t.Fatalf("error %v with n = %d", err, n)
				}
				if len(rest) == 0 && err == io.ErrUnexpectedEOF {
					err = io.EOF
				}
				end = err
				break
			}
			if n > len(rest) || len(p) > MaxPacketSize {
				t.Fatalf("n = %d of %d, payload %d", n, len(rest), len(p))
			}
			want = append(want, decoded{addr, string(p)})
			re, err := AppendPacket(nil, connect, addr, p)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", addr, err)
			}
			a2, p2, n2, err := DecodePacket(re, connect)
			if err != nil || a2 != addr || !bytes.Equal(p2, p) || n2 != len(re) {
				t.Fatalf("round trip: %+v %q %d %v", a2, p2, n2, err)
			}
			rest = rest[n:]
		}
		switch {
		case end == io.EOF, end == io.ErrUnexpectedEOF, errors.Is(end, ErrMalformed):
		default:
			t.Fatalf("unexpected error %v", end)
		}
		// the reader, over a stream that times out before every byte
		rd := NewReader(&flakyReader{r: bytes.NewReader(b)})
		var got []decoded
		for {
			addr, p, err := rd.Next(connect)
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrPacketTooLarge) {
				continue
			}
			if err != nil {
				if err != end && !(errors.Is(err, ErrMalformed) && errors.Is(end, ErrMalformed)) {
					t.Fatalf("Reader ended with %v, decoder with %v", err, end)
				}
				break
			}
			got = append(got, decoded{addr, string(p)})
		}
		if len(got) != len(want) {
			t.Fatalf("Reader read %d packets, decoder %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("packet %d: Reader %+v, decoder %+v", i, got[i], want[i])
			}
		}
	})
}
