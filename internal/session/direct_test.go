package session

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// socketPair returns the two ends of a loopback TCP connection with small
// kernel buffers, so that a writer meets a full socket quickly.
func socketPair(t *testing.T) (w, r *net.TCPConn) {
	t.Helper()
	a, b := tcpPair(t)
	w, r = a.(*net.TCPConn), b.(*net.TCPConn)
	w.SetWriteBuffer(16 << 10)
	r.SetReadBuffer(16 << 10)
	return w, r
}

type writeToResult struct {
	n   int64
	err error
}

func writeToAsync(st *Stream, w io.Writer) <-chan writeToResult {
	ch := make(chan writeToResult, 1)
	go func() {
		n, err := st.WriteTo(w)
		ch <- writeToResult{n, err}
	}()
	return ch
}

// startDirect opens stream 1 on a server session and runs its WriteTo on a
// fresh socket; it returns the socket's reading end too.
func startDirect(t *testing.T) (*serverEnv, *Stream, *net.TCPConn, *net.TCPConn, <-chan writeToResult) {
	t.Helper()
	leakCheck(t)
	env := startServer(t, connKinds[1], Config{})
	env.hello(t, "2")
	st := env.open(t, 1, wire.Addr{})
	w, r := socketPair(t)
	return env, st, w, r, writeToAsync(st, w)
}

func waitWriteTo(t *testing.T, res <-chan writeToResult) writeToResult {
	t.Helper()
	select {
	case wr := <-res:
		return wr
	case <-time.After(testTimeout):
		t.Fatal("WriteTo did not return")
	}
	return writeToResult{}
}

func sunk(st *Stream) int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sunk
}

// TestDirectDeliveryKeepsOrder: WriteTo on a socket whose reader is slower
// than the sender. The read loop writes what the socket takes, the rest is
// queued and written by WriteTo, and the bytes arrive whole and in order.
func TestDirectDeliveryKeepsOrder(t *testing.T) {
	env, st, _, r, res := startDirect(t)

	data := pattern(6<<20, 7)
	sent := make(chan error, 1)
	go func() {
		sent <- env.p.tryWrite(append(pshFrames(1, data, 65535), frameBytes(wire.CmdFIN, 1, nil)...))
	}()
	r.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, 0, len(data))
	buf := make([]byte, 3000) // small reads: the socket is often full
	for len(got) < len(data) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("data differs from byte %d", commonPrefix(got, data))
	}
	if err := waitErr(t, sent, "peer write"); err != nil {
		t.Fatal(err)
	}
	if wr := waitWriteTo(t, res); wr.err != nil || wr.n != int64(len(data)) {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", wr.n, wr.err, len(data))
	}
	direct := sunk(st)
	if direct == 0 || direct == int64(len(data)) {
		t.Fatalf("read loop wrote %d of %d bytes: want both paths used", direct, len(data))
	}
	t.Logf("read loop wrote %d of %d bytes directly", direct, len(data))
}

// TestDirectDeliveryIdleSocket: with an idle reader, every frame goes
// straight to the socket from the read loop.
func TestDirectDeliveryIdleSocket(t *testing.T) {
	env, st, _, r, res := startDirect(t)
	r.SetReadDeadline(time.Now().Add(testTimeout))
	for i := range 20 {
		msg := pattern(1000, byte(i))
		env.p.send(wire.CmdPSH, 1, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if n := sunk(st); n != 20*1000 {
		t.Fatalf("read loop wrote %d bytes directly, want all 20000", n)
	}
	env.p.send(wire.CmdFIN, 1, nil)
	if wr := waitWriteTo(t, res); wr.err != nil || wr.n != 20*1000 {
		t.Fatalf("WriteTo = %d, %v", wr.n, wr.err)
	}
}

// TestDirectDeliveryStuckSocket: a socket that is never read cannot hold up
// the read loop: a sibling stream gets all its data, and the stuck stream
// is reset once its buffer is full.
func TestDirectDeliveryStuckSocket(t *testing.T) {
	leakCheck(t)
	env := startServer(t, connKinds[1], Config{StreamBuffer: 256 << 10})
	env.hello(t, "2")
	stuck := env.open(t, 1, wire.Addr{})
	other := env.open(t, 3, wire.Addr{})
	w, _ := socketPair(t)
	res := writeToAsync(stuck, w)
	otherData := pattern(512<<10, 9)
	got := readAllAsync(other)

	b := pshFrames(1, pattern(2<<20, 1), 16384)
	b = append(b, pshFrames(3, otherData, 16384)...)
	b = append(b, frameBytes(wire.CmdFIN, 3, nil)...)
	if err := env.p.tryWrite(b); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != io.EOF || !bytes.Equal(r.data, otherData) {
			t.Fatalf("sibling: %d bytes, %v", len(r.data), r.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("sibling stream stalled behind a stuck socket")
	}
	waitDone(t, stuck.Done(), "stuck stream's reset")
	if !errors.Is(stuck.Err(), ErrBufferOverflow) {
		t.Fatalf("stuck stream ended with %v, want ErrBufferOverflow", stuck.Err())
	}
	w.Close() // WriteTo may be blocked writing to it, as any writer would be
	if wr := waitWriteTo(t, res); wr.err == nil {
		t.Fatalf("stuck stream's WriteTo = %d, nil; want an error", wr.n)
	}
}

// TestDirectDeliveryWriteError: when the socket fails under the read loop's
// write, WriteTo returns that write error and the session carries on.
func TestDirectDeliveryWriteError(t *testing.T) {
	env, st, _, r, res := startDirect(t)
	r.SetLinger(0)
	r.Close() // the reader resets the connection
	var wr writeToResult
	for i := 0; ; i++ {
		env.p.send(wire.CmdPSH, 1, pattern(1000, 1))
		select {
		case wr = <-res:
		case <-time.After(10 * time.Millisecond):
			if i < 1000 {
				continue
			}
			t.Fatal("WriteTo did not report the failed socket")
		}
		break
	}
	var op *net.OpError
	if !errors.As(wr.err, &op) || op.Op != "write" ||
		!(errors.Is(wr.err, syscall.ECONNRESET) || errors.Is(wr.err, syscall.EPIPE)) {
		t.Fatalf("WriteTo = %d, %v; want a write error (reset or broken pipe)", wr.n, wr.err)
	}
	st.Close()
	env.p.expect(wire.CmdFIN, 1)
	other := env.open(t, 3, wire.Addr{})
	env.p.send(wire.CmdPSH, 3, []byte("still here"))
	if got := readN(t, other, 10); string(got) != "still here" {
		t.Fatalf("sibling read %q", got)
	}
}
