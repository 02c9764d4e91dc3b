package anytls_test

// Interoperability with github.com/anytls/sing-anytls v0.0.11, the AnyTLS
// implementation that sing-box ships: our client through its server, and its
// client through our server, over real TLS on loopback.

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/testnet"
	singanytls "github.com/anytls/sing-anytls"
	"github.com/sagernet/sing/common/logger"
	M "github.com/sagernet/sing/common/metadata"
	N "github.com/sagernet/sing/common/network"
	"github.com/sagernet/sing/common/uot"
)

// singHandler is the outbound side of a sing-anytls server: it dials the
// destination, reports the result with SYNACK and relays. UDP over TCP
// streams go to serveUoT (interop_udp_test.go).
type singHandler struct {
	wg sync.WaitGroup
}

func (h *singHandler) NewConnectionEx(ctx context.Context, conn net.Conn, source, dst M.Socksaddr, onClose N.CloseHandlerFunc) {
	h.wg.Add(1)
	defer h.wg.Done()
	defer conn.Close()
	if dst.Fqdn == uot.MagicAddress {
		h.serveUoT(conn)
		return
	}
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		N.ReportHandshakeFailure(conn, err)
		return
	}
	defer out.Close()
	if err := N.ReportConnHandshakeSuccess(conn, conn); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(out, conn)
		out.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(conn, out)
	conn.Close()
	<-done
}

// startSingServer runs a sing-anytls server behind a TLS listener on
// loopback. scheme may be nil for the default.
func startSingServer(t *testing.T, scheme []byte) (addr string, pin []byte) {
	t.Helper()
	tc, pin := serverTLS(t)
	h := &singHandler{}
	if scheme == nil {
		scheme = []byte(anytls.DefaultPaddingScheme)
	}
	svc, err := singanytls.NewService(singanytls.ServiceConfig{
		PaddingScheme: scheme,
		Users:         []singanytls.User{{Name: "tester", Password: testPassword}},
		Handler:       h,
		Logger:        logger.NOP(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { // runs after ServeOn's: its connections are closed
		cancel()
		h.wg.Wait()
	})
	testnet.ServeOn(t, ln, func(c net.Conn) {
		tconn := tls.Server(c, tc)
		if tconn.HandshakeContext(ctx) != nil {
			return
		}
		svc.NewConnection(ctx, tconn, M.SocksaddrFromNet(c.RemoteAddr()), nil)
	})
	return ln.Addr().String(), pin
}

// newSingClient returns a sing-anytls client that dials our server over TLS.
func newSingClient(t *testing.T, server string) *singanytls.Client {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	c, err := singanytls.NewClient(context.Background(), singanytls.ClientConfig{
		Password: testPassword,
		DialOut: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			raw, err := d.DialContext(ctx, "tcp", server)
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, tc)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		},
		Logger: logger.NOP(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const interopBulk = 10 << 20

// interopTraffic runs sequential and concurrent echo streams through dial,
// comparing every byte: a few small ones, then 10 MiB each way.
func interopTraffic(t *testing.T, dial func(ctx context.Context, addr string) (net.Conn, error)) {
	echo := startEcho(t)
	ctx := testContext(t, 120*time.Second)
	for i := 0; i < 20; i++ {
		conn, err := dial(ctx, echo)
		if err != nil {
			t.Fatalf("sequential dial %d: %v", i, err)
		}
		echoRoundTrip(t, chunkedWriter{conn}, randomBytes(1+i*997))
		conn.Close()
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := dial(ctx, echo)
			if err != nil {
				t.Errorf("concurrent dial: %v", err)
				return
			}
			defer conn.Close()
			echoRoundTrip(t, chunkedWriter{conn}, randomBytes(512<<10))
		}()
	}
	wg.Wait()
	conn, err := dial(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, chunkedWriter{conn}, randomBytes(interopBulk))
}

// chunkedWriter keeps writes at 32 KiB: sing-anytls corrupts frames for
// single writes above 65535 bytes, a fault we must not provoke from its side.
type chunkedWriter struct{ net.Conn }

func (c chunkedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 32<<10)
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func TestInteropOurClientSingServer(t *testing.T) {
	checkLeaks(t)
	addr, pin := startSingServer(t, nil)
	c := newClient(t, addr, pin, nil)
	interopTraffic(t, func(ctx context.Context, a string) (net.Conn, error) {
		return c.DialContext(ctx, "tcp", a)
	})
}

func TestInteropSingClientOurServer(t *testing.T) {
	checkLeaks(t)
	addr, _, _ := startServer(t, nil)
	c := newSingClient(t, addr)
	interopTraffic(t, func(ctx context.Context, a string) (net.Conn, error) {
		return c.CreateProxy(ctx, M.ParseSocksaddr(a))
	})
}

func TestInteropDialErrorFromSingServer(t *testing.T) {
	checkLeaks(t)
	ln := listen(t)
	dead := ln.Addr().String()
	ln.Close()
	addr, pin := startSingServer(t, nil)
	c := newClient(t, addr, pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", dead)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !anytls.IsRemoteError(err) {
		t.Fatalf("read = %v, want the sing server's dial error", err)
	}
}

const customScheme = "stop=5\n0=40-60\n1=200-300\n2=300-400,c,700-800\n3=9-9,100-200\n4=100-200"

// A scheme pushed by our server is taken by the sing-anytls client: its next
// session announces the new md5 and so gets no second push.
func TestInteropSchemePushedToSingClient(t *testing.T) {
	checkLeaks(t)
	var pushes countingServerLog
	addr, srv, _ := startServer(t, func(cfg *anytls.ServerConfig) {
		cfg.PaddingScheme = []byte(customScheme)
		cfg.Logger = pushes.logger()
	})
	_ = srv
	c := newSingClient(t, addr)
	echo := startEcho(t)
	ctx := testContext(t, 30*time.Second)
	// two sessions at once: the first carries the push
	a, err := c.CreateProxy(ctx, M.ParseSocksaddr(echo))
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, a, []byte("first session"))
	b, err := c.CreateProxy(ctx, M.ParseSocksaddr(echo))
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, b, []byte("second session"))
	a.Close()
	b.Close()
	if got := pushes.md5s(); len(got) != 2 || got[0] == got[1] {
		t.Fatalf("client md5s seen by the server = %v, want the default then the pushed one", got)
	}
}

// A scheme pushed by a sing-anytls server is taken by our client for its later
// sessions only.
func TestInteropSchemePushedBySingServer(t *testing.T) {
	checkLeaks(t)
	addr, pin := startSingServer(t, []byte(customScheme))
	c := newClient(t, addr, pin, nil)
	def := c.PaddingSchemeMD5()
	echo := startEcho(t)
	ctx := testContext(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("hello"))
	conn.Close()
	if got := c.PaddingSchemeMD5(); got == def || got != md5hex(customScheme) {
		t.Fatalf("client scheme md5 = %s, want the pushed %s", got, md5hex(customScheme))
	}
}
