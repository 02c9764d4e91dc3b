package relay_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/testnet"
	"go.uber.org/goleak"
)

// waitLimit bounds every wait for an event; it is only reached on failure.
const waitLimit = 20 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	c, s := testnet.Pair(t)
	for _, x := range []net.Conn{c, s} {
		x.SetDeadline(time.Now().Add(waitLimit))
	}
	return c, s
}

// chain builds client <-> a [relay] b <-> server and starts the relay. The
// relay's result arrives on the returned channel.
type chain struct {
	client, server *net.TCPConn
	a, b           *net.TCPConn
	done           chan result
}

type result struct {
	stats relay.Stats
	err   error
}

func newChain(t *testing.T) *chain {
	t.Helper()
	c := &chain{done: make(chan result, 1)}
	c.client, c.a = tcpPair(t)
	c.b, c.server = tcpPair(t)
	return c
}

// useStart makes chain.start use relay.Start instead of relay.Relay (see
// TestStart); usePoller gives it a Poller without a sweep, so that a parked
// pump resumes only on an event or when the relay wakes it.
var useStart, usePoller bool

func (c *chain) start(t *testing.T, a, b net.Conn, opt relay.Options) {
	t.Helper()
	if usePoller {
		opt.Poller = &sockio.Poller{Sweep: time.Hour}
	}
	if useStart {
		relay.Start(a, b, opt, func(st relay.Stats, err error) { c.done <- result{st, err} })
	} else {
		go func() {
			st, err := relay.Relay(a, b, opt)
			c.done <- result{st, err}
		}()
	}
	t.Cleanup(func() {
		c.client.Close()
		c.server.Close()
		select { // never leave the relay running
		case <-c.done:
		case <-time.After(waitLimit):
			t.Error("the relay did not end once both ends were closed")
		}
	})
}

func (c *chain) wait(t *testing.T) result {
	t.Helper()
	select {
	case r := <-c.done:
		c.done <- r // for the cleanup
		return r
	case <-time.After(waitLimit):
		t.Fatal("Relay did not return")
		return result{}
	}
}

// noCloseWrite hides CloseWrite (and everything but net.Conn), like an AnyTLS
// stream, which has no half-close.
type noCloseWrite struct{ net.Conn }

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// readAll reads until EOF and reports what it got on a channel.
func readAll(r io.Reader) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(r)
		ch <- readResult{b, err}
	}()
	return ch
}

type readResult struct {
	b   []byte
	err error
}

func recv(t *testing.T, ch <-chan readResult, what string) readResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitLimit):
		t.Fatalf("timed out reading %s", what)
		return readResult{}
	}
}

func TestRelayBothWays(t *testing.T) {
	c := newChain(t)
	c.start(t, c.a, c.b, relay.Options{})
	up, down := random(1<<20), random(1<<20)
	errc := make(chan error, 2)
	send := func(conn *net.TCPConn, data []byte) {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.CloseWrite()
		}
		errc <- err
	}
	go send(c.client, up)
	go send(c.server, down)
	atServer := readAll(c.server)
	atClient := readAll(c.client)
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if r := recv(t, atServer, "at the server"); r.err != nil || !bytes.Equal(r.b, up) {
		t.Fatalf("server got %d bytes (err %v), want the %d sent", len(r.b), r.err, len(up))
	}
	if r := recv(t, atClient, "at the client"); r.err != nil || !bytes.Equal(r.b, down) {
		t.Fatalf("client got %d bytes (err %v), want the %d sent", len(r.b), r.err, len(down))
	}
	r := c.wait(t)
	if r.err != nil {
		t.Fatalf("Relay: %v", r.err)
	}
	if r.stats != (relay.Stats{AToB: 1 << 20, BToA: 1 << 20}) {
		t.Fatalf("stats %+v", r.stats)
	}
}

// The `nc -N` case: the client sends its request and shuts down writing. With
// a TCP destination the shutdown is passed on, the server reads to EOF and
// answers, and the client gets the whole answer and then EOF.
func TestRelayHalfCloseTCP(t *testing.T) {
	c := newChain(t)
	c.start(t, c.a, c.b, relay.Options{})
	req, resp := []byte("request"), random(300<<10)
	if _, err := c.client.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	atClient := readAll(c.client)
	got, err := io.ReadAll(c.server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %q, %v; want the request then EOF", got, err)
	}
	if _, err := c.server.Write(resp); err != nil {
		t.Fatal(err)
	}
	c.server.Close()
	if r := recv(t, atClient, "the response"); r.err != nil || !bytes.Equal(r.b, resp) {
		t.Fatalf("client got %d bytes (err %v), want %d then EOF", len(r.b), r.err, len(resp))
	}
	r := c.wait(t)
	if r.err != nil {
		t.Fatalf("Relay: %v", r.err)
	}
	if r.stats != (relay.Stats{AToB: int64(len(req)), BToA: int64(len(resp))}) {
		t.Fatalf("stats %+v", r.stats)
	}
}

// The same when the destination cannot half-close (an AnyTLS stream): the
// server never sees EOF, but the relay keeps the way back open, so the answer
// still reaches the client.
func TestRelayHalfCloseWithoutCloseWrite(t *testing.T) {
	c := newChain(t)
	c.start(t, c.a, noCloseWrite{c.b}, relay.Options{HalfCloseIdle: time.Minute})
	req, resp := []byte("request"), random(300<<10)
	if _, err := c.client.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	atClient := readAll(c.client)
	got := make([]byte, len(req))
	if _, err := io.ReadFull(c.server, got); err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %q, %v", got, err)
	}
	// nothing must end the server's reading side: the relay has nobody to
	// pass the shutdown to. (A premature close would show as EOF here.)
	c.server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server read after the request: %d, %v; want a timeout", n, err)
	}
	c.server.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c.server.Write(resp); err != nil {
		t.Fatal(err)
	}
	c.server.Close()
	if r := recv(t, atClient, "the response"); r.err != nil || !bytes.Equal(r.b, resp) {
		t.Fatalf("client got %d bytes (err %v), want %d then EOF", len(r.b), r.err, len(resp))
	}
	r := c.wait(t)
	if r.err != nil {
		t.Fatalf("Relay: %v", r.err)
	}
	if r.stats != (relay.Stats{AToB: int64(len(req)), BToA: int64(len(resp))}) {
		t.Fatalf("stats %+v", r.stats)
	}
}

// After a half-close, silence on the remaining direction for HalfCloseIdle
// closes both connections.
func TestRelayHalfCloseIdleCloses(t *testing.T) {
	const idle = 100 * time.Millisecond
	c := newChain(t)
	c.start(t, c.a, c.b, relay.Options{HalfCloseIdle: idle})
	start := time.Now()
	if err := c.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %d, %v; want EOF", n, err)
	}
	r := c.wait(t)
	if el := time.Since(start); el < idle {
		t.Fatalf("relay closed after %v, before the idle time %v", el, idle)
	}
	if r.err != nil || r.stats != (relay.Stats{}) {
		t.Fatalf("Relay = %+v, %v", r.stats, r.err)
	}
	// both sides were closed by the relay
	if n, err := c.client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
	// the server's writes fail once the reset for the first one is back
	c.server.SetWriteDeadline(time.Now().Add(waitLimit))
	var err error
	for err == nil {
		_, err = c.server.Write([]byte("late"))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("server can still write after the relay closed")
	}
}

// While the remaining direction keeps moving, the idle limit does not fire,
// even when the whole exchange lasts much longer than it.
func TestRelayHalfCloseIdleNotWhileFlowing(t *testing.T) {
	const (
		idle    = 400 * time.Millisecond
		spacing = idle / 8
		chunks  = 16 // 2×idle in all
	)
	c := newChain(t)
	c.start(t, c.a, c.b, relay.Options{HalfCloseIdle: idle})
	if err := c.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %d, %v; want EOF", n, err)
	}
	start := time.Now()
	chunk := make([]byte, 1000)
	for i := 0; i < chunks; i++ {
		copy(chunk, bytes.Repeat([]byte{byte(i)}, len(chunk)))
		if _, err := c.server.Write(chunk); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		got := make([]byte, len(chunk))
		if _, err := io.ReadFull(c.client, got); err != nil || !bytes.Equal(got, chunk) {
			t.Fatalf("chunk %d at the client: %v", i, err)
		}
		<-time.After(spacing) // the pace of a slow but live sender
	}
	if el := time.Since(start); el <= idle {
		t.Fatalf("the exchange took %v, not longer than the idle time %v: test is meaningless", el, idle)
	}
	c.server.Close()
	if n, err := c.client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
	r := c.wait(t)
	if r.err != nil || r.stats != (relay.Stats{BToA: chunks * int64(len(chunk))}) {
		t.Fatalf("Relay = %+v, %v", r.stats, r.err)
	}
}

// A reset on one side closes the other: the client sees the end at once.
func TestRelayErrorClosesBoth(t *testing.T) {
	c := newChain(t)
	c.start(t, c.a, c.b, relay.Options{HalfCloseIdle: time.Minute})
	if _, err := c.client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c.server, got); err != nil {
		t.Fatal(err)
	}
	c.server.SetLinger(0)
	c.server.Close() // RST
	r := c.wait(t)
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Fatalf("Relay error = %v, want ECONNRESET", r.err)
	}
	if r.stats != (relay.Stats{AToB: 5}) {
		t.Fatalf("stats %+v", r.stats)
	}
	if n, err := c.client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
}

// failWriter fails every Write once armed, like a destination that closed.
type failWriter struct {
	net.Conn
	err error
}

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

// A destination that can no longer be written to may still have something to
// say: a write error ends only its own direction, and the answer already on
// its way back is delivered in full, even while the client keeps sending
// (closing a connection with unread input would reset it and drop the end of
// the answer).
func TestRelayWriteErrorKeepsOtherDirection(t *testing.T) {
	boom := errors.New("boom")
	c := newChain(t)
	c.start(t, c.a, failWriter{c.b, boom}, relay.Options{HalfCloseIdle: time.Minute})
	// far more than the socket buffers hold: the relay is still busy with
	// the answer when the client's write fails on the other side
	resp := random(16 << 20)
	sent := make(chan error, 1)
	go func() {
		_, err := c.server.Write(resp)
		c.server.Close()
		sent <- err
	}()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		chunk := random(16 << 10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.client.Write(chunk); err != nil {
				return
			}
		}
	}()
	r := recv(t, readAll(c.client), "the response")
	close(stop)
	// a client done with the exchange closes; the relay, which has been
	// dropping its input, then ends
	c.client.Close()
	<-stopped
	if r.err != nil || !bytes.Equal(r.b, resp) {
		t.Fatalf("client got %d bytes (err %v), want %d then EOF", len(r.b), r.err, len(resp))
	}
	if err := <-sent; err != nil {
		t.Fatalf("server write: %v", err)
	}
	res := c.wait(t)
	if !errors.Is(res.err, boom) {
		t.Fatalf("Relay error = %v, want %v", res.err, boom)
	}
	if res.stats != (relay.Stats{BToA: int64(len(resp))}) {
		t.Fatalf("stats %+v", res.stats)
	}
}

// After a failed write the relay keeps reading the client (and dropping what
// it sends) only while the other direction is alive: silence there for
// HalfCloseIdle ends everything.
func TestRelayWriteErrorBoundedByIdle(t *testing.T) {
	const idle = 100 * time.Millisecond
	boom := errors.New("boom")
	c := newChain(t)
	c.start(t, c.a, failWriter{c.b, boom}, relay.Options{HalfCloseIdle: idle})
	start := time.Now()
	if _, err := c.client.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	res := c.wait(t)
	if el := time.Since(start); el < idle {
		t.Fatalf("relay ended after %v, before the idle time %v", el, idle)
	}
	if !errors.Is(res.err, boom) || res.stats != (relay.Stats{}) {
		t.Fatalf("Relay = %+v, %v; want no bytes and %v", res.stats, res.err, boom)
	}
	if n, err := c.client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
	if n, err := c.server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %d, %v; want EOF", n, err)
	}
}

// TestStart runs the relay tests again through relay.Start, which must
// behave as Relay does, with and without a Poller for its idle pumps.
func TestStart(t *testing.T) {
	useStart = true
	defer func() { useStart = false }()
	t.Run("goroutines", testStart)
	usePoller = true
	defer func() { usePoller = false }()
	t.Run("poller", testStart)
}

func testStart(t *testing.T) {
	for name, test := range map[string]func(*testing.T){
		"BothWays":                      TestRelayBothWays,
		"HalfCloseTCP":                  TestRelayHalfCloseTCP,
		"HalfCloseWithoutCloseWrite":    TestRelayHalfCloseWithoutCloseWrite,
		"HalfCloseIdleCloses":           TestRelayHalfCloseIdleCloses,
		"HalfCloseIdleNotWhileFlowing":  TestRelayHalfCloseIdleNotWhileFlowing,
		"ErrorClosesBoth":               TestRelayErrorClosesBoth,
		"WriteErrorKeepsOtherDirection": TestRelayWriteErrorKeepsOtherDirection,
		"WriteErrorBoundedByIdle":       TestRelayWriteErrorBoundedByIdle,
	} {
		t.Run(name, test)
	}
}

// TestStartParksIdlePumps: with a Poller, once both directions of a TCP
// relay have been idle, no goroutine copies or waits for them; traffic
// resumes both ways, and a Close from outside (the peer's FIN) ends it.
func TestStartParksIdlePumps(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a Poller parks only on Linux")
	}
	p := &sockio.Poller{Sweep: time.Hour}
	c := newChain(t)
	useStart = true
	c.start(t, c.a, c.b, relay.Options{Poller: p})
	useStart = false
	for round := range 3 {
		msg := random(100_000)
		up, down := readAll(io.LimitReader(c.server, int64(len(msg)))), readAll(io.LimitReader(c.client, int64(len(msg))))
		c.client.Write(msg)
		c.server.Write(msg)
		for _, ch := range []<-chan readResult{up, down} {
			if r := recv(t, ch, "echo"); !bytes.Equal(r.b, msg) {
				t.Fatalf("round %d: %d bytes arrived, want %d", round, len(r.b), len(msg))
			}
		}
		deadline := time.Now().Add(waitLimit)
		for p.Parked() != 2 || strings.Contains(goroutines(), "relay.(*copier).copy") ||
			strings.Contains(goroutines(), "relay.(*relay).waitAsync") {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: pumps not parked (Parked = %d):\n%s", round, p.Parked(), goroutines())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.client.Close()
	c.server.Close()
	r := c.wait(t)
	if r.stats.AToB != 300_000 || r.stats.BToA != 300_000 {
		t.Fatalf("stats %+v", r.stats)
	}
}

// slowWriter delays every write by d: a destination that takes its time.
type slowWriter struct {
	*net.TCPConn
	d time.Duration
}

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.d) // the slowness under test, not a synchronisation
	return s.TCPConn.Write(p)
}

// TestStartIdleDeadlinePassesDuringSlowWrite: Start's pump waits for its
// source under a read deadline that it renews only now and then; when that
// deadline passes while the pump is busy writing to a slow destination, the
// next read fails with a timeout, which must not end the relay: every byte
// arrives, and the relay ends cleanly at EOF.
func TestStartIdleDeadlinePassesDuringSlowWrite(t *testing.T) {
	useStart = true
	defer func() { useStart = false }()
	c := newChain(t)
	c.start(t, c.a, slowWriter{TCPConn: c.b, d: 2 * sockio.IdleAfter}, relay.Options{})
	chunks := make(chan []byte, 16)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 64)
			n, err := c.server.Read(buf)
			if n > 0 {
				chunks <- buf[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	var got []byte
	next := func() bool {
		select {
		case b, ok := <-chunks:
			got = append(got, b...)
			return ok
		case <-time.After(waitLimit):
			t.Fatal("the destination got nothing more")
			return false
		}
	}
	waitUntil := func(fn, what string) {
		deadline := time.Now().Add(waitLimit)
		for !strings.Contains(goroutines(), fn) {
			if time.Now().After(deadline) {
				t.Fatal("the pump never " + what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// from a known start: the pump's first wait ran out, its deadline is
	// cleared, and it waits on a goroutine of its own
	waitUntil("(*relay).waitAsync", "handed its first wait over")
	c.client.Write([]byte("one"))
	for len(got) < 3 && next() {
	}
	// the pump has written "one": wait until it waits under its deadline
	waitUntil("(*copier).waitIdle", "waited under its idle deadline")
	// "two" is written for 2*IdleAfter, past the deadline; "three" waits
	c.client.Write([]byte("two"))
	c.client.Write([]byte("three"))
	c.client.CloseWrite()
	for next() {
	}
	if want := "onetwothree"; string(got) != want {
		t.Fatalf("destination got %q, want %q", got, want)
	}
	c.server.Close()
	if res := c.wait(t); res.err != nil {
		t.Fatalf("relay error %v", res.err)
	}
}

// goroutines returns the stacks of all goroutines.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// endingDeliverer is a source that delivers by itself (like an AnyTLS
// stream) and whose delivery ends at once, on another goroutine: a session
// that dies while Start is still setting up.
type endingDeliverer struct{ net.Conn }

func (d endingDeliverer) Deliver(w io.Writer, onWriteErr, onEnd func(error)) bool {
	go onEnd(errors.New("test: session died"))
	return true
}

// TestStartStreamEndsAtOnce: a stream that ends while Start sets up the
// other direction's pump ends the relay (under -race: without a data race
// on the relay's parking state).
func TestStartStreamEndsAtOnce(t *testing.T) {
	for range 20 {
		x, _ := tcpPair(t)
		b, _ := tcpPair(t)
		done := make(chan struct{})
		relay.Start(endingDeliverer{x}, b, relay.Options{Poller: &sockio.Poller{Sweep: time.Hour}},
			func(relay.Stats, error) { close(done) })
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Fatal("the relay did not end")
		}
	}
}
