package inbound

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

// testTimeout bounds every blocking step of a test.
const testTimeout = 10 * time.Second

// fakeDialer dials loopback targets directly. Domain names resolve through
// names; unknown names fail with a *net.DNSError. fail, when set, may fail a
// dial with a chosen error first.
type fakeDialer struct {
	mu    sync.Mutex
	names map[string]string
	fail  func(wire.Addr) error
	dials []wire.Addr
}

func (d *fakeDialer) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	d.mu.Lock()
	d.dials = append(d.dials, dst)
	fail := d.fail
	ip, known := d.names[dst.Name]
	d.mu.Unlock()
	if fail != nil {
		if err := fail(dst); err != nil {
			return nil, err
		}
	}
	host := dst.Host()
	if dst.IsName() {
		if !known {
			return nil, &net.DNSError{Err: "no such host", Name: dst.Name, IsNotFound: true}
		}
		host = ip
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(dst.Port))))
}

func (d *fakeDialer) setFail(f func(wire.Addr) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = f
}

func (d *fakeDialer) lastDial() wire.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.dials) == 0 {
		return wire.Addr{}
	}
	return d.dials[len(d.dials)-1]
}

// failWith returns a fail function that always fails with err.
func failWith(err error) func(wire.Addr) error {
	return func(wire.Addr) error { return err }
}

// startEcho starts a TCP echo server on addr ("127.0.0.1:0", "[::1]:0") that
// echoes until the client half-closes, then closes.
func startEcho(t *testing.T, addr string) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	testnet.ServeOn(t, ln, func(c net.Conn) { io.Copy(c, c) })
	return ln.Addr()
}

// testLogger logs through t at Debug level.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startServer serves cfg on a loopback listener until the test ends.
func startServer(t *testing.T, cfg Config, d Dialer) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Serve returned %v, want net.ErrClosed", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after Close")
		}
	})
	return s, ln.Addr().String()
}

// dialProxy connects to the proxy; the connection has a test deadline.
func dialProxy(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// expectEOF reads until the peer closes and fails on a timeout.
func expectEOF(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("want EOF, got %v after %q", err, b)
	}
	return b
}

func isReset(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// checkGoroutines fails the test if the number of goroutines does not drop
// back to its value at the call within testTimeout after the test. Call it
// first so that its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(testTimeout)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines, want <= %d:\n%s", n, base, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitConns waits until the server tracks no connection.
func waitConns(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for s.numConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", s.numConns())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		cfg  Config
		errs int
	}{
		{"zero", Config{}, 0},
		{"auth", Config{Username: "u", Password: "p"}, 0},
		{"user only", Config{Username: "u"}, 1},
		{"pass only", Config{Password: "p"}, 1},
		{"too long", Config{Username: long, Password: long}, 2},
		{"colon", Config{Username: "a:b", Password: "p"}, 1},
		{"negative timeout", Config{HandshakeTimeout: -1}, 1},
		{"all", Config{Username: long + ":", HandshakeTimeout: -1}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.errs == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != tt.errs {
				t.Fatalf("Validate = %v, want %d problems", err, tt.errs)
			}
			if _, err := New(tt.cfg, &fakeDialer{}); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := New(Config{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New(nil Dialer) = %v, want ErrInvalidConfig", err)
	}
}

// TestCloseWaitsForGoroutines closes a server with connections in every state
// and checks that nothing it started survives Close.
func TestCloseWaitsForGoroutines(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0")
	d := &fakeDialer{}
	s, err := New(Config{Logger: testLogger(t)}, d)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- s.Serve(ln) }()
	addr := ln.Addr().String()
	dst := wire.AddrFromAddrPort(echo.(*net.TCPAddr).AddrPort())

	// A SOCKS5 relay in progress.
	relay := dialProxy(t, addr)
	if rep, err := socksHandshake(relay, "", "", socksCmdConnect, dst); err != nil || rep != 0 {
		t.Fatalf("handshake: rep %d, %v", rep, err)
	}
	echoRoundTrip(t, relay, "relay")

	// An HTTP CONNECT relay in progress.
	hc := dialProxy(t, addr)
	io.WriteString(hc, "CONNECT "+dst.String()+" HTTP/1.1\r\nHost: "+dst.String()+"\r\n\r\n")
	hbr := bufio.NewReader(hc)
	if line, err := hbr.ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("CONNECT: %q, %v", line, err)
	}

	// A handshake in progress: the server has read the greeting's first byte.
	partial := dialProxy(t, addr)
	partial.Write([]byte{5, 1})

	// A connection handed to ServeConn directly.
	p1, p2 := net.Pipe()
	defer p2.Close()
	serveConnDone := make(chan struct{})
	go func() {
		defer close(serveConnDone)
		s.ServeConn(p1)
	}()
	p2.SetDeadline(time.Now().Add(testTimeout))
	p2.Write([]byte{5, 1, 0})
	if _, err := io.ReadFull(p2, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}

	// Wait until the partial handshake is being served.
	deadline := time.Now().Add(testTimeout)
	for s.numConns() < 6 { // relay+remote, connect+remote, partial, pipe
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want 6", s.numConns())
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := s.numConns(); n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
	select {
	case err := <-serveDone:
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	select {
	case <-serveConnDone:
	case <-time.After(testTimeout):
		t.Fatal("ServeConn did not return")
	}
	for _, c := range []net.Conn{relay, partial} {
		expectEOF(t, c)
	}
	expectEOF(t, hbr)

	// Closed for good.
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln2); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v", err)
	}
	if _, err := ln2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener not closed by Serve after Close: %v", err)
	}
	q1, q2 := net.Pipe()
	s.ServeConn(q1)
	if _, err := q2.Write([]byte{5}); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("ServeConn after Close left the conn open: %v", err)
	}
}

// tempErrListener fails Accept with a temporary error n times.
type tempErrListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

type tempError struct{}

func (tempError) Error() string   { return "temporary accept failure" }
func (tempError) Timeout() bool   { return false }
func (tempError) Temporary() bool { return true }

func (l *tempErrListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.n > 0 {
		l.n--
		l.mu.Unlock()
		return nil, tempError{}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestServeSurvivesTemporaryAcceptErrors(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0")
	s, err := New(Config{Logger: testLogger(t)}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(&tempErrListener{Listener: ln, n: 4}) }()
	c := dialProxy(t, ln.Addr().String())
	dst := wire.AddrFromAddrPort(echo.(*net.TCPAddr).AddrPort())
	if rep, err := socksHandshake(c, "", "", socksCmdConnect, dst); err != nil || rep != 0 {
		t.Fatalf("handshake: rep %d, %v", rep, err)
	}
	echoRoundTrip(t, c, "still serving")
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
}

func TestServePermanentAcceptError(t *testing.T) {
	s, err := New(Config{}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // Accept fails with net.ErrClosed, but not because of s.Close
	if err := s.Serve(ln); err == nil || errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want the accept error", err)
	}
}

func TestCustomRelay(t *testing.T) {
	echo := startEcho(t, "127.0.0.1:0")
	called := make(chan struct{})
	relay := func(local, remote net.Conn) {
		close(called)
		io.WriteString(local, "custom")
	}
	_, addr := startServer(t, Config{Relay: relay}, &fakeDialer{})
	c := dialProxy(t, addr)
	dst := wire.AddrFromAddrPort(echo.(*net.TCPAddr).AddrPort())
	if rep, err := socksHandshake(c, "", "", socksCmdConnect, dst); err != nil || rep != 0 {
		t.Fatalf("handshake: rep %d, %v", rep, err)
	}
	if got := string(expectEOF(t, c)); got != "custom" {
		t.Fatalf("got %q", got)
	}
	<-called
}
