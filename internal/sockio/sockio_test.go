//go:build unix

package sockio

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/tlsutil"
)

const testTimeout = 10 * time.Second

func tcpPair(t *testing.T) (a, b *net.TCPConn) { return testnet.Pair(t) }

func TestTryWriterNeverBlocks(t *testing.T) {
	w, r := tcpPair(t)
	w.SetWriteBuffer(16 << 10)
	r.SetReadBuffer(16 << 10)
	tw := NewTryWriter(w)
	if tw == nil {
		t.Fatal("no TryWriter for a TCP connection")
	}
	if n, err := tw([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("first write = %d, %v", n, err)
	}
	// Nobody reads r: the socket fills, and TryWriter returns short.
	chunk := make([]byte, 64<<10)
	total := 5
	for i := 0; ; i++ {
		n, err := tw(chunk)
		total += n
		if err != nil {
			t.Fatal(err)
		}
		if n < len(chunk) {
			break
		}
		if i > 1000 {
			t.Fatal("64 MiB went into an unread socket")
		}
	}
	if n, err := tw(chunk); n != 0 || err != nil {
		t.Fatalf("write to a full socket = %d, %v; want 0, nil", n, err)
	}
	// Everything it said it wrote arrives.
	r.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, total)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if string(got[:5]) != "hello" {
		t.Fatalf("got %q", got[:5])
	}
}

func TestTryWriterErrors(t *testing.T) {
	w, r := tcpPair(t)
	tw := NewTryWriter(w)
	r.SetLinger(0)
	r.Close()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = tw([]byte("x"))
		if err == nil {
			time.Sleep(time.Millisecond) // the reset travels through the kernel
		}
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		t.Fatalf("write to a reset connection: %v", err)
	}
	w.Close()
	if _, err := tw([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
	if NewTryWriter(&bytes.Buffer{}) != nil {
		t.Fatal("a TryWriter for a buffer")
	}
}

func TestReaderWait(t *testing.T) {
	a, b := tcpPair(t)
	r, ok := NewReader(a)
	if !ok {
		t.Fatal("no Reader for a TCP connection")
	}
	wait := r.Wait
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		t.Fatalf("returned before data: %v", err)
	case <-time.After(20 * time.Millisecond): // only to give a wrong answer the chance to show
	}
	b.Write([]byte("x"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("no wake-up on data")
	}
	buf := make([]byte, 1)
	if _, err := a.Read(buf); err != nil || buf[0] != 'x' {
		t.Fatalf("the byte was consumed by the wait: %v", err)
	}
	go func() { done <- wait() }()
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close did not end the wait")
	}
}

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return len(p), nil
}

func TestBatcher(t *testing.T) {
	a, _ := tcpPair(t)
	cc := &countConn{Conn: a}
	b := NewBatcher(cc)
	b.Write([]byte("direct"))
	b.Hold()
	for _, s := range []string{"one ", "two ", "three"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("held write = %d, %v", n, err)
		}
	}
	done := make(chan struct{})
	go func() { b.Write([]byte(" four")); close(done) }() // another goroutine, while held
	<-done
	if len(cc.writes) != 1 {
		t.Fatalf("%d writes reached the socket while held", len(cc.writes))
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("after"))
	want := []string{"direct", "one two three four", "after"}
	if len(cc.writes) != len(want) {
		t.Fatalf("writes %q, want %q", cc.writes, want)
	}
	for i, w := range want {
		if string(cc.writes[i]) != w {
			t.Fatalf("writes %q, want %q", cc.writes, want)
		}
	}
	if b.buf != nil {
		t.Fatal("the buffer is kept after Flush")
	}
	if err := b.Flush(); err != nil { // a Flush without Hold sends nothing
		t.Fatal(err)
	}
	if len(cc.writes) != 3 {
		t.Fatalf("empty Flush wrote: %q", cc.writes)
	}
}

// waitOn waits on c with a Reader.
func waitOn(c net.Conn) error {
	r, _ := NewReader(c)
	return r.Wait()
}

// tryOn reads c with a Reader's TryRead.
func tryOn(c net.Conn, p []byte) (int, error) {
	r, _ := NewReader(c)
	return r.TryRead(p)
}

// TestReaderWaitReportsReset: a reset that arrives before or during the
// wait is reported, by the wait or by the read after it, never lost (a peek
// that consumed it unreported would leave a clean EOF for the read).
func TestReaderWaitReportsReset(t *testing.T) {
	for _, before := range []bool{true, false} {
		a, b := tcpPair(t)
		b.Write([]byte("data"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(a, buf); err != nil {
			t.Fatal(err)
		}
		reset := func() {
			b.SetLinger(0)
			b.Close()
		}
		if before {
			reset()
		}
		done := make(chan error, 1)
		go func() { done <- waitOn(a) }()
		if !before {
			reset()
		}
		select {
		case err := <-done:
			if err == nil {
				_, err = tryOn(a, buf)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("reset before the wait %v: wait and read gave %v, want ECONNRESET", before, err)
			}
		case <-time.After(testTimeout):
			t.Fatal("no wake-up on reset")
		}
	}
}

func TestReaderTryRead(t *testing.T) {
	a, b := tcpPair(t)
	try := func(p []byte) (int, error) { return tryOn(a, p) }
	buf := make([]byte, 16)
	if n, err := try(buf); n != 0 || err != ErrWouldBlock {
		t.Fatalf("empty socket: %d, %v; want ErrWouldBlock", n, err)
	}
	b.Write([]byte("hello"))
	if err := waitOn(a); err != nil {
		t.Fatal(err)
	}
	if n, err := try(buf); n != 5 || err != nil || string(buf[:5]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	b.Close()
	if err := waitOn(a); err != nil {
		t.Fatal(err)
	}
	if n, err := try(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's close: %d, %v; want io.EOF", n, err)
	}
	if _, ok := NewReader(&bytes.Buffer{}); ok {
		t.Fatal("a Reader for a buffer")
	}
}

// capture is the connection below a TLS server: while on, writes are kept
// instead of sent, so that the test can send a record in pieces.
type capture struct {
	net.Conn
	on  bool
	got []byte
}

func (c *capture) Write(p []byte) (int, error) {
	if c.on {
		c.got = append(c.got, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestTLSReadTimeoutKeepsRecord: a TLS read that times out with half a
// record arrived leaves the connection usable and keeps that half: the
// record reads whole once the rest arrives, after WaitRead on the Batcher
// below. The session's read loop relies on this to wait outside TLS.
func TestTLSReadTimeoutKeepsRecord(t *testing.T) {
	a, b := tcpPair(t)
	cert, err := tlsutil.SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	capt := &capture{Conn: b}
	srv := tls.Server(capt, &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true})
	batch := NewBatcher(a)
	if !batch.CanWaitRead() {
		t.Fatal("CanWaitRead false on TCP")
	}
	cli := tls.Client(batch, &tls.Config{InsecureSkipVerify: true})
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	shortRead := func() (int, error) {
		cli.SetReadDeadline(time.Now().Add(time.Millisecond))
		defer cli.SetReadDeadline(time.Time{})
		return cli.Read(buf)
	}
	if n, err := shortRead(); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("nothing sent: %d, %v; want a timeout", n, err)
	}
	capt.on = true
	if _, err := srv.Write([]byte("hello, world")); err != nil {
		t.Fatal(err)
	}
	record := capt.got
	half := len(record) / 2
	if _, err := b.Write(record[:half]); err != nil {
		t.Fatal(err)
	}
	if err := batch.WaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err := shortRead(); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half a record: %d, %v; want a timeout", n, err)
	}
	if _, err := b.Write(record[half:]); err != nil {
		t.Fatal(err)
	}
	if err := batch.WaitRead(); err != nil {
		t.Fatal(err)
	}
	n, err := cli.Read(buf)
	if err != nil || string(buf[:n]) != "hello, world" {
		t.Fatalf("whole record: %q, %v", buf[:n], err)
	}
	b.Close()
	if err := batch.WaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err := cli.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's close: %d, %v; want io.EOF", n, err)
	}
}
