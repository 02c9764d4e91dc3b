package inbound

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startCountingServer is startServer with an accept counter.
func startCountingServer(t *testing.T, cfg Config, d Dialer) (*Server, *countingListener) {
	t.Helper()
	cfg.Logger = testLogger(t)
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	done := make(chan error, 1)
	go func() { done <- s.Serve(cl) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
	return s, cl
}

// upstream is the origin server behind the proxy.
func startUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	return startUpstreamConnState(t, nil)
}

func startUpstreamConnState(t *testing.T, cs func(net.Conn, http.ConnState)) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/get/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-URI", r.RequestURI)
		w.Header().Set("X-Saw-Proxy-Authorization", r.Header.Get("Proxy-Authorization"))
		w.Header().Set("X-Saw-Proxy-Connection", r.Header.Get("Proxy-Connection"))
		w.Header().Set("X-Saw-Hop", r.Header.Get("X-Hop"))
		w.Header().Set("X-Saw-User-Agent", r.Header.Get("User-Agent"))
		io.WriteString(w, "got "+r.URL.Path)
	})
	// /duplex echoes the request body as it arrives, flushing every read.
	mux.HandleFunc("/duplex", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Error(err)
			return
		}
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Length", r.Header.Get("Content-Length"))
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", "42")
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ConnState = cs
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// proxyClient returns an HTTP client that uses the proxy at addr.
func proxyClient(t *testing.T, addr string, user *url.Userinfo) *http.Client {
	t.Helper()
	tr := &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr, User: user}),
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHTTPForward(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t)
	d := &fakeDialer{}
	s, ln := startCountingServer(t, Config{}, d)
	client := proxyClient(t, ln.Addr().String(), nil)

	var reused []bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
	})
	do := func(req *http.Request) *http.Response {
		t.Helper()
		resp, err := client.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	// GET, twice on one connection.
	for _, path := range []string{"/get/one", "/get/two?q=1"} {
		req, _ := http.NewRequest("GET", up.URL+path, nil)
		req.Header.Set("X-Hop", "dropped")
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("Proxy-Connection", "keep-alive")
		resp := do(req)
		if body := readBody(t, resp); resp.StatusCode != 200 || body != "got "+strings.Split(path, "?")[0] {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Request-URI"); got != path {
			t.Errorf("upstream saw request-target %q, want origin form %q", got, path)
		}
		for _, h := range []string{"X-Saw-Hop", "X-Saw-Proxy-Connection", "X-Saw-User-Agent"} {
			if v := resp.Header.Get(h); h != "X-Saw-User-Agent" && v != "" {
				t.Errorf("%s = %q, want hop-by-hop header removed", h, v)
			}
		}
		if ua := resp.Header.Get("X-Saw-User-Agent"); ua != "Go-http-client/1.1" {
			t.Errorf("user agent %q not passed through", ua)
		}
	}
	if got := d.lastDial(); got.String() != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("dialled %v, want %s", got, up.URL)
	}

	// POST with a known length.
	payload := strings.Repeat("0123456789", 50_000)
	req, _ := http.NewRequest("POST", up.URL+"/echo", strings.NewReader(payload))
	resp := do(req)
	if body := readBody(t, resp); body != payload {
		t.Fatalf("POST echo: %d bytes, want %d", len(body), len(payload))
	}
	if got := resp.Header.Get("X-Content-Length"); got != "500000" {
		t.Errorf("upstream saw Content-Length %q", got)
	}

	// Full-duplex streaming: each part's echo arrives before the next part is
	// sent, so neither body is buffered whole.
	pr, pw := io.Pipe()
	req, _ = http.NewRequest("POST", up.URL+"/duplex", pr)
	resp = do(req)
	for _, part := range []string{"first part", "second part", strings.Repeat("z", 10_000)} {
		if _, err := io.WriteString(pw, part); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(part))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != part {
			t.Fatalf("duplex: %q, %v", got, err)
		}
	}
	pw.Close()
	if rest := readBody(t, resp); rest != "" {
		t.Fatalf("duplex trailing data %q", rest)
	}

	// Trailers survive re-chunking.
	req, _ = http.NewRequest("GET", up.URL+"/trailer", nil)
	resp = do(req)
	if body := readBody(t, resp); body != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer: %q %v", body, resp.Trailer)
	}

	// HEAD keeps the entity's Content-Length and has no body.
	req, _ = http.NewRequest("HEAD", up.URL+"/get/head", nil)
	resp = do(req)
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("got /get/head")) {
		t.Fatalf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}

	// Every request went over the first connection.
	if n := ln.n.Load(); n != 1 {
		t.Errorf("%d proxy connections, want 1", n)
	}
	for i, r := range reused {
		if r != (i > 0) {
			t.Errorf("request %d: reused = %v", i, r)
		}
	}
	client.CloseIdleConnections()
	// Left: the server's idle upstream connection, until Close.
	deadline := time.Now().Add(testTimeout)
	for s.numConns() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want the idle upstream one", s.numConns())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHTTPForwardRaw(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t)
	_, addr := startServer(t, Config{}, &fakeDialer{})
	host := strings.TrimPrefix(up.URL, "http://")

	t.Run("HTTP/1.0 client", func(t *testing.T) {
		c := dialProxy(t, addr)
		io.WriteString(c, "GET http://"+host+"/duplex HTTP/1.0\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.TransferEncoding) != 0 || !resp.Close {
			t.Fatalf("HTTP/1.0 client got chunked or keep-alive: %v close=%v", resp.TransferEncoding, resp.Close)
		}
		readBody(t, resp)
		expectEOF(t, br)
	})
	t.Run("Connection: close", func(t *testing.T) {
		c := dialProxy(t, addr)
		io.WriteString(c, "GET http://"+host+"/get/x HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); body != "got /get/x" || !resp.Close {
			t.Fatalf("%q close=%v", body, resp.Close)
		}
		expectEOF(t, br)
	})
	t.Run("pipelined with body and expect", func(t *testing.T) {
		c := dialProxy(t, addr)
		io.WriteString(c, "POST http://"+host+"/echo HTTP/1.1\r\nHost: "+host+
			"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"+
			"GET http://"+host+"/get/2 HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 100 {
			t.Fatalf("want 100 Continue: %v %v", resp, err)
		}
		for _, want := range []string{"hello", "got /get/2"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); body != want {
				t.Fatalf("got %q, want %q", body, want)
			}
		}
	})
}

func TestHTTPConnect(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	dst := wire.AddrFromAddrPort(echo.AddrPort())
	d := &fakeDialer{names: map[string]string{"echo.test": "127.0.0.1"}}
	s, addr := startServer(t, Config{}, d)

	for _, target := range []string{dst.String(), wire.Addr{Name: "echo.test", Port: dst.Port}.String()} {
		t.Run(target, func(t *testing.T) {
			c := dialProxy(t, addr)
			// The payload follows the head in the same write.
			io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nping")
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil || line != "HTTP/1.1 200 Connection established\r\n" {
				t.Fatalf("status %q, %v", line, err)
			}
			if blank, _ := br.ReadString('\n'); blank != "\r\n" {
				t.Fatalf("unexpected header %q", blank)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo %q, %v", got, err)
			}
			io.WriteString(c, "pong")
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "pong" {
				t.Fatalf("echo %q, %v", got, err)
			}
			c.CloseWrite()
			if rest := expectEOF(t, br); len(rest) != 0 {
				t.Fatalf("trailing %q", rest)
			}
		})
	}
	waitConns(t, s)
}

// TestHTTPConnectEarlyDataPipe puts the head and the payload into the
// server's read buffer in one read, deterministically.
func TestHTTPConnectEarlyDataPipe(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	s, err := New(Config{Logger: testLogger(t)}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(server)
	}()
	client.SetDeadline(time.Now().Add(testTimeout))
	target := echo.String()
	head := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
	if _, err := io.WriteString(client, head+"early bytes"); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 Connection established\r\n\r\nearly bytes"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v", got, err)
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("ServeConn did not return")
	}
}

func TestHTTPBadGateway(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t)
	d := &fakeDialer{fail: failWith(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})}
	_, addr := startServer(t, Config{}, d)

	client := proxyClient(t, addr, nil)
	resp, err := client.Get(up.URL + "/get/x")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "connection refused") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}

	c := dialProxy(t, addr)
	io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway ||
		!strings.Contains(body, "example.com:443") || !strings.Contains(body, "connection refused") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	expectEOF(t, br)
}

func TestHTTPProxyAuth(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	_, addr := startServer(t, Config{Username: "alice", Password: "s3cret"}, &fakeDialer{})

	for name, user := range map[string]*url.Userinfo{
		"none":  nil,
		"wrong": url.UserPassword("alice", "nope"),
		"empty": url.UserPassword("", ""),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := proxyClient(t, addr, user).Get(up.URL + "/get/x")
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if resp.StatusCode != http.StatusProxyAuthRequired ||
				resp.Header.Get("Proxy-Authenticate") != `Basic realm="anytls"` {
				t.Fatalf("%d %v", resp.StatusCode, resp.Header)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		resp, err := proxyClient(t, addr, url.UserPassword("alice", "s3cret")).Get(up.URL + "/get/x")
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != 200 || body != "got /get/x" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if v := resp.Header.Get("X-Saw-Proxy-Authorization"); v != "" {
			t.Fatalf("credentials leaked upstream: %q", v)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		for _, auth := range []string{"", "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"} {
			c := dialProxy(t, addr)
			io.WriteString(c, "CONNECT "+echo.String()+" HTTP/1.1\r\nHost: x\r\n"+auth+"\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatal(err)
			}
			want := http.StatusProxyAuthRequired
			if auth != "" {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Fatalf("auth %q: %d, want %d", auth, resp.StatusCode, want)
			}
		}
	})
}

func TestHTTPBadRequests(t *testing.T) {
	checkGoroutines(t)
	d := &fakeDialer{fail: failWith(errors.New("no dialling in this test"))}
	_, addr := startServer(t, Config{}, d)
	tests := []struct {
		name, req string
		want      int
	}{
		{"https absolute form", "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 400},
		{"origin form", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 400},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400},
		{"bad port", "GET http://example.com:99999/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"CONNECT no port", "CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"CONNECT port 0", "CONNECT example.com:0 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"huge head", "GET http://example.com/ HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeadBytes+2*readBufferSize) + "\r\n\r\n", 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialProxy(t, addr)
			go io.WriteString(c, tt.req) // the server may stop reading early
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if resp.StatusCode != tt.want || !resp.Close {
				t.Fatalf("%d close=%v, want %d and close", resp.StatusCode, resp.Close, tt.want)
			}
		})
	}
}

// TestHTTPIdleUpstreamClosed checks that Close drops the transport's idle
// upstream connections.
func TestHTTPIdleUpstreamClosed(t *testing.T) {
	checkGoroutines(t)
	var upConns atomic.Int32
	up := startUpstreamConnState(t, func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			upConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			upConns.Add(-1)
		}
	})
	s, err := New(Config{Logger: testLogger(t)}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	client := proxyClient(t, ln.Addr().String(), nil)
	resp, err := client.Get(up.URL + "/get/x")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	client.CloseIdleConnections()
	if s.numConns() == 0 {
		t.Fatal("no upstream connection registered")
	}
	s.Close()
	<-done
	if n := s.numConns(); n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
	deadline := time.Now().Add(testTimeout)
	for upConns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections still open", upConns.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// silentOrigin accepts connections, reads a request head from each and
// never answers unless told to. It reports each request and, for each
// connection, when the proxy closed it.
type silentOrigin struct {
	addr    string
	got     chan net.Conn // a connection whose request head arrived
	dropped chan struct{} // one per connection the proxy closed
}

func startSilentOrigin(t *testing.T) *silentOrigin {
	o := &silentOrigin{got: make(chan net.Conn, 4), dropped: make(chan struct{}, 4)}
	o.addr = testnet.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		o.got <- c
		if _, err := br.ReadByte(); err != nil {
			o.dropped <- struct{}{}
		}
	})
	return o
}

// A keep-alive client that leaves while the origin thinks ends its request:
// the upstream connection is closed and nothing stays behind, instead of
// waiting for an answer that may never come.
func TestHTTPClientLeavesBeforeResponse(t *testing.T) {
	checkGoroutines(t)
	o := startSilentOrigin(t)
	s, addr := startServer(t, Config{}, &fakeDialer{})
	for _, how := range []string{"close", "reset"} {
		t.Run(how, func(t *testing.T) {
			c := dialProxy(t, addr)
			io.WriteString(c, "GET http://"+o.addr+"/slow HTTP/1.1\r\nHost: "+o.addr+"\r\n\r\n")
			select {
			case <-o.got:
			case <-time.After(testTimeout):
				t.Fatal("the request did not reach the origin")
			}
			if how == "reset" {
				c.SetLinger(0)
			}
			c.Close()
			select {
			case <-o.dropped:
			case <-time.After(testTimeout):
				t.Fatal("the upstream request outlived its client")
			}
			waitConns(t, s)
		})
	}
}

// A client that only shuts down its sending side after an HTTP/1.0 (or
// "Connection: close") request still gets the answer.
func TestHTTPHalfCloseKeepsResponse(t *testing.T) {
	checkGoroutines(t)
	o := startSilentOrigin(t)
	_, addr := startServer(t, Config{}, &fakeDialer{})
	for _, head := range []string{"GET http://" + o.addr + "/ HTTP/1.0\r\n\r\n",
		"GET http://" + o.addr + "/ HTTP/1.1\r\nHost: " + o.addr + "\r\nConnection: close\r\n\r\n"} {
		c := dialProxy(t, addr)
		io.WriteString(c, head)
		c.CloseWrite()
		var up net.Conn
		select {
		case up = <-o.got:
		case <-time.After(testTimeout):
			t.Fatal("the request did not reach the origin")
		}
		// a wrong cancellation would close the upstream connection soon
		// after the client's FIN; give it that time
		select {
		case <-o.dropped:
			t.Fatalf("%q: the request was cancelled by the client's half-close", head)
		case <-time.After(200 * time.Millisecond):
		}
		io.WriteString(up, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		up.Close()
		<-o.dropped // our own close
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); body != "ok" {
			t.Fatalf("body %q", body)
		}
	}
}

// Failures a user can tell apart: a destination that hangs up without an
// answer, one that cannot be reached in time (504), and a stray empty line
// between keep-alive requests, which is skipped (RFC 9112 section 2.2).
func TestHTTPErrorsAndEmptyLine(t *testing.T) {
	checkGoroutines(t)
	t.Run("hang-up", func(t *testing.T) {
		hangup := testnet.Serve(t, func(c net.Conn) { http.ReadRequest(bufio.NewReader(c)) })
		_, addr := startServer(t, Config{}, &fakeDialer{})
		c := dialProxy(t, addr)
		io.WriteString(c, "GET http://"+hangup+"/ HTTP/1.1\r\nHost: "+hangup+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "without a complete answer") {
			t.Fatalf("%s %q", resp.Status, body)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		_, addr := startServer(t, Config{HandshakeTimeout: 300 * time.Millisecond}, blockingDialer{})
		c := dialProxy(t, addr)
		io.WriteString(c, "GET http://slow.test/ HTTP/1.1\r\nHost: slow.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if readBody(t, resp); resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%s, want 504", resp.Status)
		}
	})
	t.Run("empty line", func(t *testing.T) {
		up := startUpstream(t)
		host := strings.TrimPrefix(up.URL, "http://")
		_, addr := startServer(t, Config{}, &fakeDialer{})
		c := dialProxy(t, addr)
		io.WriteString(c, "POST http://"+host+"/echo HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 2\r\n\r\nhi\r\n"+
			"GET http://"+host+"/get/2 HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		br := bufio.NewReader(c)
		for _, want := range []string{"hi", "got /get/2"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); body != want {
				t.Fatalf("got %s %q, want %q", resp.Status, body, want)
			}
		}
	})
}
