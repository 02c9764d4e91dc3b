package anytls_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"go.uber.org/goleak"
)

const testPassword = "correct horse battery staple"

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ANYTLS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		goleak.VerifyNone(t, goleak.IgnoreCurrent(),
			// sing-anytls's client checks for idle sessions in a loop that
			// sleeps 30s before it looks at whether the client was closed
			goleak.IgnoreAnyFunction("github.com/anytls/sing-anytls/session.NewClient.func1"))
	})
}

// serverTLS returns a server TLS config with a fresh self-signed certificate
// and its SHA-256 pin.
func serverTLS(t testing.TB) (*tls.Config, []byte) {
	t.Helper()
	cert, err := tlsutil.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pin, _ := tlsutil.ParsePin(tlsutil.Fingerprint(cert.Certificate[0]))
	return &tls.Config{Certificates: []tls.Certificate{cert}}, pin
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startServer runs our server on loopback with real TLS.
func startServer(t testing.TB, mod func(*anytls.ServerConfig)) (addr string, srv *anytls.Server, pin []byte) {
	t.Helper()
	srv, pin = newServer(t, mod)
	ln := listen(t)
	serveOn(t, srv, ln)
	return ln.Addr().String(), srv, pin
}

func newClient(t testing.TB, server string, pin []byte, mod func(*anytls.ClientConfig)) *anytls.Client {
	t.Helper()
	cfg := anytls.ClientConfig{
		Server:     server,
		Password:   testPassword,
		ServerName: "localhost",
		PinSHA256:  pin,
		Logger:     testLogger(t).With("side", "client"),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := anytls.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startEcho runs a TCP echo server on loopback. Each connection echoes until
// EOF, then closes.
func startEcho(t testing.TB) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) { io.Copy(c, c) })
}

// echoClient checks the test for leaks and starts an echo server, a server
// and a client of it; ctx ends after d.
func echoClient(t *testing.T, d time.Duration) (c *anytls.Client, echo string, ctx context.Context) {
	t.Helper()
	checkLeaks(t)
	echo = startEcho(t)
	addr, _, pin := startServer(t, nil)
	return newClient(t, addr, pin, nil), echo, testContext(t, d)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoRoundTrip writes data through conn to an echo server concurrently with
// reading it back, and checks every byte.
func echoRoundTrip(t testing.TB, conn net.Conn, data []byte) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		errc <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo mismatch over %d bytes", len(data))
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// countingServerLog records the padding md5 each client announced, from the
// server's debug log.
type countingServerLog struct {
	mu   sync.Mutex
	seen []string
}

func (c *countingServerLog) logger() *slog.Logger { return slog.New(c) }

func (c *countingServerLog) md5s() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

func (c *countingServerLog) Enabled(context.Context, slog.Level) bool { return true }
func (c *countingServerLog) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *countingServerLog) WithGroup(string) slog.Handler            { return c }
func (c *countingServerLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "client settings" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "padding_md5" {
			c.mu.Lock()
			c.seen = append(c.seen, a.Value.String())
			c.mu.Unlock()
		}
		return true
	})
	return nil
}

// holdAccepted accepts one connection on ln and holds it, never reading or
// answering; the cleanup closes both. The channel gets the connection.
func holdAccepted(t testing.TB, ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
	})
	return accepted
}
