package anytls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/inbound"
	"github.com/anytls-suite/anytls/internal/session"
	M "github.com/sagernet/sing/common/metadata"
)

// fastLiveness shortens every liveness timer so that the tests take seconds.
func fastLiveness(cfg *anytls.ClientConfig) {
	cfg.SYNACKTimeout = 500 * time.Millisecond
	cfg.HeartbeatTimeout = 500 * time.Millisecond
	cfg.QuietTimeout = time.Second
}

// readErrWithin reads from conn until an error, which must come within d.
func readErrWithin(t *testing.T, conn net.Conn, d time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, conn)
	if err == nil {
		err = io.EOF
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no error within %v: the stream hangs", d)
	}
	return time.Since(start), err
}

// A stream in flight on a session whose path freezes (both ways, or in one
// direction only) fails once a probe goes unanswered (QuietTimeout + HeartbeatTimeout), the dead session leaves the
// pool, and the next connection works on a fresh session.
func TestFrozenSessionDetected(t *testing.T) {
	for _, tc := range []struct {
		name string
		dirs int
	}{{"both-ways", bothWays}, {"upstream", upstream}, {"downstream", downstream}} {
		t.Run(tc.name, func(t *testing.T) { testFrozenSession(t, tc.dirs) })
	}
}

// dialThroughMiddlebox starts our server behind a middlebox and an echo
// destination, and dials one stream through a client with fast liveness
// timers (leaks checked).
func dialThroughMiddlebox(t *testing.T) (*middlebox, *anytls.Client, context.Context, string, net.Conn) {
	t.Helper()
	checkLeaks(t)
	echo := startEcho(t)
	addr, _, pin := startServer(t, nil)
	mb := startMiddlebox(t, addr)
	c := newClient(t, mb.addr(), pin, fastLiveness)
	ctx := testContext(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	return mb, c, ctx, echo, conn
}

func testFrozenSession(t *testing.T, dirs int) {
	mb, c, ctx, echo, conn := dialThroughMiddlebox(t)
	defer conn.Close()
	echoRoundTrip(t, conn, []byte("before the freeze"))
	mb.freezeExisting(dirs)

	took, err := readErrWithin(t, conn, 10*time.Second)
	if !errors.Is(err, anytls.ErrSessionClosed) || !errors.Is(err, anytls.ErrHeartbeatTimeout) {
		t.Fatalf("stream error = %v, want the session closed for an unanswered heartbeat", err)
	}
	t.Logf("in-flight stream failed %v after the freeze (quiet 1s + probe 0.5s)", took.Round(10*time.Millisecond))
	if open, _ := c.Sessions(); open != 0 {
		t.Fatalf("%d sessions still pooled after the session died", open)
	}

	conn2, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	echoRoundTrip(t, conn2, []byte("after the freeze, on a new session"))
	if n := mb.connections(); n != 2 {
		t.Fatalf("%d TCP connections, want 2 (the frozen one and its replacement)", n)
	}
}

// A request made on a pooled session that froze while idle fails within the
// SYNACK timeout instead of hanging; the session is then found dead, and once
// the path works again the next request succeeds at once.
func TestRequestOnFrozenPooledSession(t *testing.T) {
	mb, c, ctx, echo, conn := dialThroughMiddlebox(t)
	echoRoundTrip(t, conn, []byte("warm up"))
	conn.Close()
	mb.freezeExisting(bothWays)

	start := time.Now()
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("request into the void"))
	_, err = readErrWithin(t, conn, 10*time.Second)
	conn.Close()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("request on the frozen session: %v, want a timeout", err)
	}
	t.Logf("request on the frozen pooled session failed after %v: %v", time.Since(start).Round(10*time.Millisecond), err)

	// the probe sent with the SYN gets no answer: the session goes
	deadline := time.Now().Add(10 * time.Second)
	for {
		if open, _ := c.Sessions(); open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the frozen session was never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mb.thaw()
	start = time.Now()
	conn, err = c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, conn, []byte("served at once"))
	t.Logf("next request served in %v", time.Since(start).Round(time.Millisecond))
}

// A slow but alive session is never closed: high latency on the path, and a
// server whose outbound dial is slower than the SYNACK timeout (that stream
// fails, the session does not).
func TestSlowButAliveSessionSurvives(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	var slowDials atomic.Int32
	addr, _, pin := startServer(t, func(cfg *anytls.ServerConfig) {
		cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			if address == "127.0.0.1:1" { // the "slow" destination
				slowDials.Add(1)
				select {
				case <-time.After(2500 * time.Millisecond):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				address = echo
			}
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		}
	})
	mb := startMiddlebox(t, addr)
	mb.setDelay(150 * time.Millisecond) // 300ms round trips
	c := newClient(t, mb.addr(), pin, func(cfg *anytls.ClientConfig) {
		cfg.SYNACKTimeout = time.Second // > 300ms round trips, < the slow dial
		cfg.HeartbeatTimeout = time.Second
		cfg.QuietTimeout = 400 * time.Millisecond
	})
	ctx := testContext(t, 30*time.Second)

	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	// quiet gaps longer than QuietTimeout: probes go out and are answered
	for i := 0; i < 4; i++ {
		echoRoundTrip(t, conn, []byte("ping over a slow path"))
		time.Sleep(700 * time.Millisecond) // simulated user think time
	}
	conn.Close()

	slow, err := c.DialContext(ctx, "tcp", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	slow.Write([]byte("x"))
	_, err = readErrWithin(t, slow, 10*time.Second)
	slow.Close()
	if !errors.Is(err, anytls.ErrSYNACKTimeout) {
		t.Fatalf("slow dial: %v, want ErrSYNACKTimeout", err)
	}
	conn, err = c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, conn, []byte("same session still"))
	// the session that saw the late SYNACK was probed and passed over while
	// the probe was out, but never closed
	if open, _ := c.Sessions(); open != mb.connections() {
		t.Fatalf("%d sessions open of %d made: a slow but alive session was closed", open, mb.connections())
	}
	if slowDials.Load() != 1 {
		t.Fatalf("slow destination dialed %d times", slowDials.Load())
	}
}

// pausedDestination accepts one connection and reads nothing until release
// is closed, then reads want bytes and reports them.
func pausedDestination(t *testing.T, want int) (addr string, release chan struct{}, got chan []byte) {
	release, got = make(chan struct{}), make(chan []byte, 1)
	ln := listen(t)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-release
		b := make([]byte, want)
		n, _ := io.ReadFull(c, b)
		got <- b[:n]
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), release, got
}

// uploadThroughPause uploads data through conn to a destination that does
// not read for pause, and checks that everything arrives.
func uploadThroughPause(t *testing.T, dial func(addr string) (net.Conn, error), pause time.Duration) {
	data := randomBytes(24 << 20)
	dest, release, got := pausedDestination(t, len(data))
	conn, err := dial(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := chunkedWriter{conn}.Write(data)
		wrote <- err
	}()
	time.Sleep(pause) // the destination's pause: nothing to wait for but time
	close(release)
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("destination got %d bytes, want %d", len(b), len(data))
	}
	if err := <-wrote; err != nil {
		t.Fatalf("upload failed while the destination paused: %v", err)
	}
}

// A lone stream uploading to a destination that stops reading is held back by
// the server (backpressure), and the server's heartbeats keep the client from
// taking the quiet session for dead.
func TestBackpressureIsNotDeath(t *testing.T) {
	checkLeaks(t)
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) {
		cfg.HeartbeatTimeout = 3 * time.Second
		cfg.QuietTimeout = 2 * time.Second
	})
	ctx := testContext(t, 60*time.Second)
	// long enough for the client to probe (quiet 2s) and give up (3s more)
	// if nothing answered
	uploadThroughPause(t, func(a string) (net.Conn, error) { return c.DialContext(ctx, "tcp", a) }, 7*time.Second)
	if open, _ := c.Sessions(); open != 1 {
		t.Fatalf("%d sessions after the upload, want the one that carried it", open)
	}
}

// A sing-anytls client, which never probes, gets no heartbeats from our
// server while it holds a slow stream: its control-frame writes time out
// after 5s when the server is not reading, and would kill its session.
func TestInteropSingClientUploadThroughPause(t *testing.T) {
	checkLeaks(t)
	addr, _, _ := startServer(t, nil)
	sc := newSingClient(t, addr)
	ctx := testContext(t, 60*time.Second)
	uploadThroughPause(t, func(a string) (net.Conn, error) { return sc.CreateProxy(ctx, M.ParseSocksaddr(a)) }, 7*time.Second)
}

// With WaitSYNACK, a destination the server cannot reach becomes a SOCKS5
// "connection refused" reply and an HTTP 502 carrying the server's reason.
func TestWaitSYNACKRefusedReplies(t *testing.T) {
	checkLeaks(t)
	dead := listen(t)
	deadAddr := dead.Addr().(*net.TCPAddr)
	dead.Close()
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) { cfg.WaitSYNACK = true })

	_, err := c.DialContext(testContext(t, 20*time.Second), "tcp", deadAddr.String())
	if !anytls.IsRemoteError(err) {
		t.Fatalf("DialContext = %v, want the server's RemoteError", err)
	}

	proxy, err := inbound.New(inbound.Config{Logger: testLogger(t)}, tunnelDialer{c})
	if err != nil {
		t.Fatal(err)
	}
	pln := listen(t)
	go proxy.Serve(pln)
	t.Cleanup(func() { proxy.Close() })

	// SOCKS5 by hand: no auth, CONNECT to the dead port
	s, err := net.Dial("tcp", pln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(20 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, 1}
	req = append(req, deadAddr.IP.To4()...)
	req = append(req, byte(deadAddr.Port>>8), byte(deadAddr.Port))
	if _, err := s.Write(req); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 2+10)
	if _, err := io.ReadFull(s, reply); err != nil {
		t.Fatal(err)
	}
	if reply[0] != 5 || reply[1] != 0 || reply[3] != 0x05 {
		t.Fatalf("SOCKS5 reply % x, want REP 0x05 (connection refused)", reply)
	}

	proxyURL, _ := url.Parse("http://" + pln.Addr().String())
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 20 * time.Second}
	resp, err := hc.Get("http://" + deadAddr.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "refused") {
		t.Fatalf("HTTP proxy answered %d %q, want 502 with the server's reason", resp.StatusCode, body)
	}
}

// Heartbeats work with sing-anytls in both roles: its server answers our
// probes, so quiet gaps never kill the session; its client answers our
// server's hold pings (exercised by the sing interop bulk tests).
func TestInteropHeartbeatsWithSingServer(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	addr, pin := startSingServer(t, nil)
	mb := startMiddlebox(t, addr)
	c := newClient(t, mb.addr(), pin, func(cfg *anytls.ClientConfig) {
		cfg.HeartbeatTimeout = time.Second
		cfg.QuietTimeout = 200 * time.Millisecond
		cfg.IdleHeartbeat = 200 * time.Millisecond
	})
	ctx := testContext(t, 30*time.Second)
	for i := 0; i < 3; i++ {
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		echoRoundTrip(t, conn, []byte("quiet periods in between"))
		time.Sleep(600 * time.Millisecond) // several probe periods, stream open
		echoRoundTrip(t, conn, []byte("still here"))
		conn.Close()
		time.Sleep(600 * time.Millisecond) // idle heartbeats on the pooled session
	}
	if n := mb.connections(); n != 1 {
		t.Fatalf("%d connections: probes to the sing-anytls server went unanswered", n)
	}
}

// A server that accepts TCP but never completes the TLS handshake fails the
// user's request within the dial timeout.
func TestServerThatNeverHandshakes(t *testing.T) {
	checkLeaks(t)
	ln := listen(t)
	holdAccepted(t, ln) // held open, never answered
	c := newClient(t, ln.Addr().String(), nil, func(cfg *anytls.ClientConfig) {
		cfg.InsecureSkipVerify = true
		cfg.DialTimeout = time.Second
	})
	start := time.Now()
	_, err := c.DialContext(testContext(t, 30*time.Second), "tcp", "127.0.0.1:9")
	took := time.Since(start)
	if err == nil {
		t.Fatal("dial through a server that never handshakes succeeded")
	}
	if took > 5*time.Second {
		t.Fatalf("failed after %v, want about the 1s dial timeout", took)
	}
	t.Logf("failed after %v: %v", took.Round(time.Millisecond), err)
}

// The server closes a session that has no streams and sends nothing for its
// idle timeout; the client drops it from its pool at once.
func TestServerClosesIdleSession(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	addr, _, pin := startServer(t, func(cfg *anytls.ServerConfig) {
		cfg.SessionIdleTimeout = 300 * time.Millisecond
	})
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) { cfg.IdleHeartbeat = -1 })
	conn, err := c.DialContext(testContext(t, 20*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("then silence"))
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if open, _ := c.Sessions(); open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never closed the idle session")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The sing-anytls client answers a HeartRequest from the server side too.
func TestInteropSingClientAnswersHeartbeat(t *testing.T) {
	checkLeaks(t)
	tc, _ := serverTLS(t)
	ln := listen(t)
	sessions := make(chan *session.Session, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		conn := tls.Server(raw, tc)
		// the preamble: hash, padding length, padding
		pre := make([]byte, 34)
		if _, err := io.ReadFull(conn, pre); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, conn, int64(pre[32])<<8|int64(pre[33])); err != nil {
			return
		}
		sess := session.NewServer(conn, session.Config{
			OnStream: func(st *session.Stream) { go st.SendSYNACK(nil) },
		})
		sessions <- sess
		sess.Serve()
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	sc := newSingClient(t, ln.Addr().String())
	ctx := testContext(t, 20*time.Second)
	conn, err := sc.CreateProxy(ctx, M.ParseSocksaddr("127.0.0.1:9"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess := <-sessions
	defer sess.Close()
	rtt, err := sess.Ping(ctx)
	if err != nil {
		t.Fatalf("ping to the sing-anytls client: %v", err)
	}
	t.Logf("sing-anytls client answered a heartbeat in %v", rtt)
}
