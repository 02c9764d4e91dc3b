package anytls_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// recordingConn records every byte the client writes to the TCP connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// appDataSizes parses TLS 1.3 records from the recorded bytes and returns the
// plaintext size of each application-data record, skipping the client's
// Finished (the first one): record length minus the inner content type and
// the 16-byte AEAD tag.
func (r *recordingConn) appDataSizes(t *testing.T) []int {
	r.mu.Lock()
	b := bytes.Clone(r.out.Bytes())
	r.mu.Unlock()
	var sizes []int
	for len(b) >= 5 {
		typ, n := b[0], int(binary.BigEndian.Uint16(b[3:5]))
		if len(b) < 5+n {
			t.Fatalf("truncated TLS record")
		}
		if typ == 23 {
			sizes = append(sizes, n-1-16)
		}
		b = b[5+n:]
	}
	if len(sizes) == 0 {
		t.Fatal("no application data records")
	}
	return sizes[1:]
}

// The sizes of the client's TLS records follow the padding scheme exactly:
// cut where the data is longer, padded with Waste where it is shorter,
// stopped at a check mark once the data is used up, unshaped after stop.
func TestShapedTLSRecordSizes(t *testing.T) {
	checkLeaks(t)
	const scheme = "stop=4\n0=30-30\n1=100-100,c,200-200\n2=50-50,c,300-300,c,400-400\n3=10-10"
	echo := startEcho(t)
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) { c.PaddingScheme = []byte(scheme) })
	var rec *recordingConn
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) {
		cfg.PaddingScheme = []byte(scheme)
		cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			rec = &recordingConn{Conn: conn}
			return rec, nil
		}
	})
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	writes := [][]byte{randomBytes(20), randomBytes(5000), randomBytes(30)}
	var all []byte
	for _, w := range writes {
		if _, err := conn.Write(w); err != nil {
			t.Fatal(err)
		}
		all = append(all, w...)
	}
	got := make([]byte, len(all))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, all) {
		t.Fatalf("echo through shaped session: %v", err)
	}
	want := []int{
		64,       // write 0: hash 32 + length 2 + padding0 30
		100, 200, // write 1: Settings+SYN+destination (>100 bytes) cut at 100, the rest padded to 200
		50,       // write 2: 27-byte PSH padded to 50, then the check mark stops the write
		10, 4997, // write 3: 5007-byte PSH cut at 10, the rest as is
		7 + 30, // write 4: past stop, unshaped
	}
	if sizes := rec.appDataSizes(t); !slices.Equal(sizes, want) {
		t.Fatalf("TLS record plaintext sizes = %v, want %v", sizes, want)
	}
}
