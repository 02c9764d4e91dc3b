package anytls_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// probeSizes are the byte counts a prober sends after the TLS handshake:
// around the 34-byte fixed part of the preamble, one record, more.
var probeSizes = []int{0, 1, 33, 34, 35, 100, 1000, 16384, 20000}

const (
	httpRequest      = "GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: probe/1\r\nAccept: */*\r\n\r\n"
	shortHTTPRequest = "GET / HTTP/1.0\r\n\r\n" // shorter than the preamble's fixed part
	goBadRequest     = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
	goHTTPOnTLS      = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

// The preamble may come in any number of TLS records, down to one byte
// each, and still opens a session.
func TestPreambleSplitAcrossRecords(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	addr, _, _ := startServer(t, nil)
	for _, c := range []struct{ padLen, chunk int }{{30, 1}, {0, 1}, {300, 1}, {30, 33}, {30, 35}, {1000, 7}} {
		t.Run(fmt.Sprintf("pad%d-chunk%d", c.padLen, c.chunk), func(t *testing.T) {
			r := dialRaw(t, addr)
			r.writeChunks(preamble(testPassword, c.padLen), c.chunk)
			r.settings()
			r.echoStream(1, echo, "split preamble accepted")
		})
	}
}

// probe is one prober connection: what it sends after the TLS handshake
// (or instead of it), what comes back, and when.
type probe struct {
	name     string
	send     []byte
	plainTCP bool // no TLS handshake: send the bytes as they are
	noTLS    bool // connect and wait, without a handshake
	slow     time.Duration
	closeW   bool // shut down the sending side after the bytes

	got       []byte
	err       error
	elapsed   time.Duration // from connect to the close
	afterSend time.Duration // from the last byte sent to the close
}

func randomProbes() []*probe {
	var ps []*probe
	for _, n := range probeSizes {
		b := randomBytes(n)
		if n > 0 {
			b[0] = 0 // never the start of a request line ("x " would be one)
		}
		ps = append(ps, &probe{name: fmt.Sprintf("%d random bytes", n), send: b})
	}
	return ps
}

// run makes the probe against addr and reads until the server closes.
func (p *probe) run(addr string, limit time.Duration) {
	start := time.Now()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		p.err = err
		return
	}
	defer raw.Close()
	raw.SetDeadline(start.Add(limit))
	var conn net.Conn = raw
	if !p.plainTCP && !p.noTLS {
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "www.example.com"})
		if err := tc.Handshake(); err != nil {
			p.err = fmt.Errorf("handshake: %w", err)
			return
		}
		conn = tc
	}
	for i := 0; i < len(p.send); {
		n := len(p.send) - i
		if p.slow > 0 {
			n = 1
			time.Sleep(p.slow)
		}
		if _, err := conn.Write(p.send[i : i+n]); err != nil {
			break // the server may close while a slow probe still writes
		}
		i += n
	}
	if p.closeW {
		conn.(interface{ CloseWrite() error }).CloseWrite()
	}
	sent := time.Now()
	p.got, p.err = io.ReadAll(conn)
	if errors.Is(p.err, io.ErrUnexpectedEOF) || errors.Is(p.err, net.ErrClosed) || isReset(p.err) {
		p.err = nil // closed without close_notify or with a reset: closed all the same
	}
	p.elapsed, p.afterSend = time.Since(start), time.Since(sent)
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func runProbes(addr string, ps []*probe, limit time.Duration) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(addr, limit)
		}()
	}
	wg.Wait()
}

// keepClientBusy makes echo round trips through a real client until the
// returned function is called; it returns how many succeeded.
func keepClientBusy(t *testing.T, addr string, pin []byte, echo string) (stop func() int) {
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 120*time.Second)
	done := make(chan struct{})
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			conn, err := c.DialContext(ctx, "tcp", echo)
			if err != nil {
				t.Errorf("real client, round %d: %v", i, err)
				return
			}
			echoRoundTrip(t, conn, []byte(fmt.Sprintf("round %d", i)))
			conn.Close()
			n.Add(1)
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		if n.Load() == 0 {
			t.Error("the real client made no round trip")
		}
		return int(n.Load())
	}
}

// Without a fallback the server behaves like a plain web server: an HTTP
// request gets net/http's answer to a request it cannot parse, plain HTTP on
// the TLS port net/http's answer to that; everything else is read until the
// one deadline after accept and closed then, whatever the byte count.
func TestPreTrustWithoutFallback(t *testing.T) {
	checkLeaks(t)
	const deadline = 2 * time.Second
	echo := startEcho(t)
	rec := newLogRecorder()
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.AuthTimeout = deadline
		c.Logger = rec.logger()
	})
	stop := keepClientBusy(t, addr, pin, echo)

	atDeadline := append(randomProbes(),
		&probe{name: "TCP only", noTLS: true},
		&probe{name: "slow bytes", send: randomBytes(40), slow: deadline / 8},
		&probe{name: "password hash only", send: preamble(testPassword, 30)[:33]},
	)
	answered := []*probe{
		{name: "HTTP request", send: []byte(httpRequest)},
		{name: "unknown method", send: []byte("FOO / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")},
		{name: "lower-case method", send: []byte("get / HTTP/1.1\r\nHost: www.example.com\r\n\r\n")},
		{name: "short HTTP request", send: []byte(shortHTTPRequest)},
		{name: "plain HTTP on the TLS port", send: []byte(httpRequest), plainTCP: true},
	}
	runProbes(addr, append(append([]*probe(nil), atDeadline...), answered...), deadline+20*time.Second)
	t.Logf("real client: %d round trips during the probes", stop())

	for _, p := range atDeadline {
		t.Logf("%-22s closed after %v, %d bytes back", p.name, p.elapsed.Round(time.Millisecond), len(p.got))
		if p.err != nil || len(p.got) != 0 {
			t.Errorf("%s: got %q, %v; want nothing and a close", p.name, p.got, p.err)
		}
		// the deadline runs from accept, which comes after the probe's
		// connect: the close cannot come earlier
		if p.elapsed < deadline || p.elapsed > deadline+10*time.Second {
			t.Errorf("%s: closed after %v, want at the %v deadline", p.name, p.elapsed, deadline)
		}
	}
	for _, p := range answered {
		want := goBadRequest
		if p.plainTCP {
			want = goHTTPOnTLS
		}
		t.Logf("%-22s answered and closed %v after the request", p.name, p.afterSend.Round(time.Millisecond))
		if p.err != nil || string(p.got) != want {
			t.Errorf("%s: got %q, %v; want %q and a close", p.name, p.got, p.err, want)
		}
		if p.afterSend >= deadline {
			t.Errorf("%s: answered after %v, want before the deadline", p.name, p.afterSend)
		}
	}
	if n := rec.count("authentication failed", "reason", "timeout"); n < len(probeSizes)-5 {
		t.Errorf("%d timeouts logged", n)
	}
}

// origin is a stand-in web site for the fallback: it reads a request until
// its blank line, the peer's EOF or originIdle of silence, answers with a
// digest of what it received, and closes.
type origin struct {
	addr string
}

const originIdle = 300 * time.Millisecond

func startOrigin(t *testing.T) *origin {
	return &origin{addr: serveTCP(t, func(c net.Conn) {
		var got []byte
		buf := make([]byte, 32<<10)
		for !bytes.Contains(got, []byte("\r\n\r\n")) {
			c.SetReadDeadline(time.Now().Add(originIdle))
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, originAnswer(got))
	})}
}

// originAnswer is the origin's answer to a connection that sent got.
func originAnswer(got []byte) string {
	sum := sha256.Sum256(got)
	if bytes.HasPrefix(got, []byte("GET ")) && bytes.Contains(got, []byte("\r\n\r\n")) {
		body := fmt.Sprintf("<html>welcome; your request had %d bytes</html>", len(got))
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	}
	return fmt.Sprintf("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n%d bytes, sha256 %x", len(got), sum[:8])
}

// With a fallback, every probe gets the fallback site's answer to exactly
// the bytes it sent, and its close: at once when the bytes cannot be a
// preamble (a wrong hash, an HTTP request, an early EOF), at the deadline
// when fewer than 34 bytes came.
func TestPreTrustFallbackProbes(t *testing.T) {
	checkLeaks(t)
	const deadline = 3 * time.Second
	echo := startEcho(t)
	site := startOrigin(t)
	rec := newLogRecorder()
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.AuthTimeout = deadline
		c.Fallback = site.addr
		c.Logger = rec.logger()
	})
	stop := keepClientBusy(t, addr, pin, echo)
	ps := append(randomProbes(),
		&probe{name: "HTTP request", send: []byte(httpRequest)},
		&probe{name: "short HTTP request", send: []byte(shortHTTPRequest)},
		&probe{name: "10 bytes then EOF", send: randomBytes(10), closeW: true},
		&probe{name: "wrong password", send: preamble("not the password", 30)},
	)
	runProbes(addr, ps, deadline+20*time.Second)
	t.Logf("real client: %d round trips during the probes", stop())

	// the same bytes sent straight to the site, for comparison
	directs := make([]*probe, len(ps))
	for i, p := range ps {
		directs[i] = &probe{name: p.name, send: p.send, plainTCP: true, closeW: p.closeW}
	}
	runProbes(site.addr, directs, 20*time.Second)
	for i, p := range ps {
		direct := directs[i]
		want := originAnswer(p.send)
		t.Logf("%-20s via server: closed %v after sending; direct: %v", p.name,
			p.afterSend.Round(time.Millisecond), direct.afterSend.Round(time.Millisecond))
		if p.err != nil || string(p.got) != want || string(direct.got) != want {
			t.Errorf("%s: got %q, %v; want the site's %q (direct: %q)", p.name, p.got, p.err, want, direct.got)
		}
		short := len(p.send) < 34 && !p.closeW && !strings.HasPrefix(string(p.send), "GET ")
		switch {
		case short && p.elapsed < deadline:
			t.Errorf("%s: answered after %v, before the %v deadline", p.name, p.elapsed, deadline)
		case !short && p.afterSend >= deadline:
			t.Errorf("%s: answered %v after sending, want before the %v deadline", p.name, p.afterSend, deadline)
		}
	}
	if n := rec.count("relaying to the fallback"); n != len(ps) {
		t.Errorf("%d connections relayed to the fallback, want %d", n, len(ps))
	}
}

// Close (and Shutdown) end a fallback relay whose prober has half-closed
// while the fallback origin stays silent: closing the prober's side alone
// left the relay waiting on the origin for HalfCloseIdle (2 minutes).
func TestCloseEndsHalfClosedFallback(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			checkLeaks(t)
			gotEOF := make(chan struct{}, 1)
			release := make(chan struct{})
			site := serveTCP(t, func(c net.Conn) {
				io.Copy(io.Discard, c) // the replayed bytes, then the prober's end
				gotEOF <- struct{}{}
				<-release // and silence, the connection open
			})
			defer close(release)
			addr, srv, _ := startServer(t, func(c *anytls.ServerConfig) { c.Fallback = site })
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(randomBytes(64)) // not a password hash
			conn.CloseWrite()
			select {
			case <-gotEOF:
			case <-time.After(20 * time.Second):
				t.Fatal("the fallback origin never saw the prober's end")
			}
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				if how == "Close" {
					srv.Close()
				} else {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					srv.Shutdown(ctx)
				}
			}()
			select {
			case <-ended:
			case <-time.After(20 * time.Second):
				t.Fatalf("%s still waiting on the silent fallback origin", how)
			}
		})
	}
}

// A fallback origin that is down costs one warning per interval, with the
// count, not one per stranger (a scanner would flood the log).
func TestFallbackDownWarnsOnce(t *testing.T) {
	checkLeaks(t)
	ln := listen(t)
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	rec := newLogRecorder()
	addr, _, _ := startServer(t, func(c *anytls.ServerConfig) {
		c.Fallback = down
		c.Logger = rec.logger()
	})
	const strangers = 5
	for range strangers {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(randomBytes(64))
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, conn) // closed once the fallback dial failed
		conn.Close()
	}
	rec.wait(t, 20*time.Second, strangers-1, "fallback origin unreachable (warned already)")
	if n := rec.count("fallback origin unreachable"); n != 1 {
		t.Errorf("%d warnings for %d strangers, want 1", n, strangers)
	}
}

// Like a web server, the server agrees "http/1.1" with a client that offers
// it, and no protocol with one that offers none or only others (the
// handshake must not fail: AnyTLS clients may offer anything).
func TestALPNLikeAWebServer(t *testing.T) {
	checkLeaks(t)
	addr, _, _ := startServer(t, nil)
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{nil, ""},
		{[]string{"h2", "http/1.1"}, "http/1.1"},
		{[]string{"http/1.1"}, "http/1.1"},
		{[]string{"h2"}, ""},
		{[]string{"spdy/3", "x"}, ""},
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: tc.offer})
		if err != nil {
			t.Errorf("offering %q: %v", tc.offer, err)
			continue
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("offering %q: agreed %q, want %q", tc.offer, got, tc.want)
		}
		conn.Close()
	}
}
