package bench

// Microbenchmarks of the session layer's hot paths, over in-memory
// connections so that only our code is measured (no TLS, no syscalls):
//
//	go test -run '^$' -bench . -benchmem ./bench
//
// BenchmarkStreamWrite: Stream.Write of 1 KiB and 32 KiB on a client
// session (past its padding phase) and on a server session, into a
// connection that discards. BenchmarkStreamRead: PSH frames of 1 KiB and
// 32 KiB fed from memory through a session's read loop into Stream.Read.
// One op is one frame; MB/s counts payload.
//
// TestSteadyStateAllocs asserts zero allocations per frame on both paths.

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/wire"
)

// memConn is a net.Conn in memory. Writes are counted and dropped. Reads
// return prefix, then wait for start, then return loop over and over (a
// frame repeated for ever); with no loop they block until Close.
type memConn struct {
	prefix  []byte
	loop    []byte
	off     int
	start   chan struct{}
	closed  chan struct{}
	once    sync.Once
	written atomic.Int64
}

func newMemConn(prefix, loop []byte) *memConn {
	return &memConn{prefix: prefix, loop: loop, start: make(chan struct{}), closed: make(chan struct{})}
}

func (c *memConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	if len(c.loop) == 0 {
		<-c.closed
		return 0, net.ErrClosed
	}
	select {
	case <-c.start:
	case <-c.closed:
		return 0, net.ErrClosed
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n := 0
	for n < len(p) {
		m := copy(p[n:], c.loop[c.off:])
		n += m
		c.off = (c.off + m) % len(c.loop)
	}
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.written.Add(int64(len(p)))
	return len(p), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

var benchDst = wire.Addr{Name: "example.com", Port: 443}

// clientStream opens stream 1 on a client session over conn and takes the
// session past its padding phase, so that writes are steady state.
func clientStream(tb testing.TB, conn *memConn) *session.Stream {
	tb.Helper()
	sess := session.NewClient(conn, session.Config{})
	tb.Cleanup(func() { sess.Close() })
	st, err := sess.OpenStream(context.Background(), benchDst, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for range padding.Default().Stop() + 2 {
		if _, err := st.Write([]byte("x")); err != nil {
			tb.Fatal(err)
		}
	}
	return st
}

// clientHello is what a v2 client sends first: Settings and a SYN for
// stream 1.
func clientHello(tb testing.TB) []byte {
	tb.Helper()
	body := wire.Settings{
		{Key: wire.KeyVersion, Value: "2"},
		{Key: wire.KeyClient, Value: "bench"},
		{Key: wire.KeyPaddingMD5, Value: padding.Default().MD5()},
	}.Append(nil)
	b, err := wire.AppendFrame(nil, wire.CmdSettings, 0, body)
	if err == nil {
		b, err = wire.AppendFrame(b, wire.CmdSYN, 1, nil)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// serverStream runs a server session over conn and returns stream 1.
func serverStream(tb testing.TB, conn *memConn) *session.Stream {
	tb.Helper()
	got := make(chan *session.Stream, 1)
	sess := session.NewServer(conn, session.Config{OnStream: func(st *session.Stream) { got <- st }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Serve()
	}()
	tb.Cleanup(func() {
		sess.Close()
		<-done
	})
	select {
	case st := <-got:
		return st
	case <-time.After(5 * time.Second):
		tb.Fatal("no stream")
		return nil
	}
}

// pshFrame is one PSH frame for stream 1 with size bytes of data.
func pshFrame(tb testing.TB, size int) []byte {
	tb.Helper()
	b, err := wire.AppendFrame(nil, wire.CmdPSH, 1, make([]byte, size))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// writeStream returns stream 1 of a client or server session whose
// connection discards what is written.
func writeStream(tb testing.TB, side string) *session.Stream {
	if side == "client" {
		return clientStream(tb, newMemConn(nil, nil))
	}
	return serverStream(tb, newMemConn(clientHello(tb), nil))
}

// readStream returns stream 1 of a client or server session whose
// connection delivers PSH frames of size bytes for it without end.
func readStream(tb testing.TB, side string, size int) *session.Stream {
	frame := pshFrame(tb, size)
	if side == "client" {
		conn := newMemConn(nil, frame)
		st := clientStream(tb, conn)
		close(conn.start)
		return st
	}
	conn := newMemConn(clientHello(tb), frame)
	close(conn.start)
	return serverStream(tb, conn)
}

var sizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"32KiB", 32 << 10}}

func BenchmarkStreamWrite(b *testing.B) {
	for _, side := range []string{"client", "server"} {
		for _, sz := range sizes {
			b.Run(side+"/"+sz.name, func(b *testing.B) {
				st := writeStream(b, side)
				p := make([]byte, sz.n)
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := st.Write(p); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkStreamRead(b *testing.B) {
	for _, side := range []string{"client", "server"} {
		for _, sz := range sizes {
			b.Run(side+"/"+sz.name, func(b *testing.B) {
				st := readStream(b, side, sz.n)
				p := make([]byte, sz.n)
				if _, err := io.ReadFull(st, p); err != nil { // the read loop is running
					b.Fatal(err)
				}
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := io.ReadFull(st, p); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestSteadyStateAllocs asserts that the write path (Stream.Write) and the
// read path (read loop to Stream.Read) allocate nothing per frame once warm,
// counted across all goroutines.
//
// The read loop runs ahead of the reader by up to the stream buffer, so the
// buffer pool grows whenever the queue reaches a new high, which may happen
// in any window of frames. A per-frame allocation shows in every window, so
// the smallest of a few windows is what is asserted. Skipped under the race
// detector, whose sync.Pool drops items on purpose.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	const runs, windows = 1000, 5
	for _, side := range []string{"client", "server"} {
		for _, sz := range sizes {
			w := writeStream(t, side)
			p := make([]byte, sz.n)
			writes := testing.AllocsPerRun(runs, func() {
				if _, err := w.Write(p); err != nil {
					t.Fatal(err)
				}
			})
			r := readStream(t, side, sz.n)
			if _, err := io.CopyN(io.Discard, r, 2*session.DefaultStreamBuffer); err != nil {
				t.Fatal(err)
			}
			var reads []float64
			for range windows {
				reads = append(reads, testing.AllocsPerRun(runs, func() {
					if _, err := io.ReadFull(r, p); err != nil {
						t.Fatal(err)
					}
				}))
				if reads[len(reads)-1] == 0 {
					break
				}
			}
			t.Logf("%s %s: %.0f allocs per written frame; per read frame, by window: %v", side, sz.name, writes, reads)
			if writes != 0 {
				t.Errorf("%s %s: %.0f allocs per written frame, want 0", side, sz.name, writes)
			}
			if slices.Min(reads) != 0 {
				t.Errorf("%s %s: %v allocs per read frame in %d windows, want 0", side, sz.name, reads, len(reads))
			}
		}
	}
}
