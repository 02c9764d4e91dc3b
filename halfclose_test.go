package anytls_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/relay"
)

// The half-close tests run the whole stack the way the client program uses
// it: a local TCP listener whose connections are relayed, by
// relay.Relay(local, stream), into streams dialed through our client, to our
// server over real TLS, which relays them to a TCP destination.
//
// AnyTLS has no half-close: a FIN ends a stream both ways. So when the local
// application shuts down its sending side (`nc -N`, `curl` with HTTP/1.0,
// `printf ... | nc -N host port`), the client cannot tell the destination; it
// can only keep the stream open so that the answer still arrives. What is
// proved here is that the answer does arrive, whole and followed by EOF,
// where implementations that end the relay on the first EOF lose it.

// startProxy starts the local listener. Each accepted connection is relayed
// to dest through c with opt.
func startProxy(t *testing.T, c *anytls.Client, dest string, opt relay.Options) string {
	t.Helper()
	ln := listen(t)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(cs ...net.Conn) {
		mu.Lock()
		conns = append(conns, cs...)
		mu.Unlock()
	}
	ctx := testContext(t, 60*time.Second)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			local, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream, err := c.DialContext(ctx, "tcp", dest)
				if err != nil {
					t.Errorf("dial through the client: %v", err)
					local.Close()
					return
				}
				track(local, stream)
				relay.Relay(local, stream, opt)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// startDest runs a TCP destination that handles each connection with serve
// and then closes it.
func startDest(t *testing.T, serve func(*net.TCPConn)) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		serve(c.(*net.TCPConn))
	})
}

func dialLocal(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return c.(*net.TCPConn)
}

// readRequest reads an HTTP/1.0-style request head, up to the blank line.
func readRequest(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(r, 16)
	var req []byte
	for !bytes.HasSuffix(req, []byte("\r\n\r\n")) {
		b, err := br.ReadByte()
		if err != nil {
			return req, err
		}
		req = append(req, b)
	}
	if br.Buffered() > 0 {
		return req, errors.New("bytes after the request")
	}
	return req, nil
}

// The `nc -N` case: the client sends a request and shuts down writing at
// once; an HTTP/1.0 server answers and closes. The client must get the whole
// answer, then EOF.
func TestHalfCloseRequestThenShutdown(t *testing.T) {
	checkLeaks(t)
	request := []byte("GET / HTTP/1.0\r\nHost: example\r\n\r\n")
	response := append([]byte("HTTP/1.0 200 OK\r\n\r\n"), randomBytes(1<<20)...)
	gotReq := make(chan []byte, 1)
	dest := startDest(t, func(c *net.TCPConn) {
		req, err := readRequest(c)
		if err != nil {
			t.Errorf("destination reading the request: %v", err)
			return
		}
		gotReq <- req
		if _, err := c.Write(response); err != nil {
			t.Errorf("destination writing: %v", err)
		}
	})
	addr, _, pin := startServer(t, nil)
	client := newClient(t, addr, pin, nil)
	local := dialLocal(t, startProxy(t, client, dest, relay.Options{}))

	if _, err := local.Write(request); err != nil {
		t.Fatal(err)
	}
	if err := local.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(local)
	if err != nil {
		t.Fatalf("reading the response: %v after %d bytes", err, len(got))
	}
	if !bytes.Equal(got, response) {
		t.Fatalf("got %d bytes, want the %d-byte response", len(got), len(response))
	}
	if req := <-gotReq; !bytes.Equal(req, request) {
		t.Fatalf("destination got %q", req)
	}
}

// The same with several exchanges on one client: each stream is relayed on
// a reused session, and each local client gets its own answer.
func TestHalfCloseSequentialExchanges(t *testing.T) {
	checkLeaks(t)
	dest := startDest(t, func(c *net.TCPConn) {
		req, err := readRequest(c)
		if err != nil {
			t.Errorf("destination reading the request: %v", err)
			return
		}
		c.Write(bytes.Repeat(req, 1000))
	})
	addr, _, pin := startServer(t, nil)
	client := newClient(t, addr, pin, nil)
	proxy := startProxy(t, client, dest, relay.Options{})
	for i := 0; i < 5; i++ {
		request := []byte("GET /" + string(rune('a'+i)) + " HTTP/1.0\r\n\r\n")
		local := dialLocal(t, proxy)
		if _, err := local.Write(request); err != nil {
			t.Fatal(err)
		}
		if err := local.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(local)
		if err != nil || !bytes.Equal(got, bytes.Repeat(request, 1000)) {
			t.Fatalf("exchange %d: got %d bytes, %v", i, len(got), err)
		}
		local.Close()
	}
}

// A destination that reads until EOF before it answers cannot be served over
// AnyTLS: the client's shutdown has no way to reach it. The relay must still
// end such a connection after HalfCloseIdle rather than hold it forever: the
// destination then sees EOF (the stream's FIN, passed on by the server), and
// the local client sees EOF.
func TestHalfCloseDestinationWaitingForEOFIsBounded(t *testing.T) {
	checkLeaks(t)
	const idle = 200 * time.Millisecond
	sawEOF := make(chan []byte, 1)
	dest := startDest(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("destination reading until EOF: %v", err)
		}
		sawEOF <- req
		c.Write([]byte("too late")) // lost: the stream is gone both ways
	})
	addr, _, pin := startServer(t, nil)
	client := newClient(t, addr, pin, nil)
	local := dialLocal(t, startProxy(t, client, dest, relay.Options{HalfCloseIdle: idle}))
	request := []byte("request")
	start := time.Now()
	local.Write(request)
	local.CloseWrite()
	got, err := io.ReadAll(local)
	if err != nil {
		t.Fatalf("local read: %v", err)
	}
	if el := time.Since(start); el < idle {
		t.Fatalf("ended after %v, before HalfCloseIdle %v", el, idle)
	}
	t.Logf("local client got %q after %v", got, time.Since(start))
	select {
	case req := <-sawEOF:
		if !bytes.Equal(req, request) {
			t.Fatalf("destination got %q", req)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the destination never saw EOF")
	}
}

// The reverse: the destination answers and finishes while the client is
// still sending. The client must get the whole answer and EOF, not a
// connection cut short when its next write meets the ended stream.
func TestHalfCloseDestinationFinishesFirst(t *testing.T) {
	checkLeaks(t)
	response := randomBytes(1 << 20)
	dest := startDest(t, func(c *net.TCPConn) {
		// make sure the client is in the middle of sending
		if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
			t.Errorf("destination reading: %v", err)
			return
		}
		if _, err := c.Write(response); err != nil {
			t.Errorf("destination writing: %v", err)
			return
		}
		// finish like net/http's closeWriteAndWait: shut down writing, then
		// drain, so that the kernel does not reset the connection (and drop
		// the unsent answer) over unread input
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	addr, _, pin := startServer(t, nil)
	client := newClient(t, addr, pin, nil)
	local := dialLocal(t, startProxy(t, client, dest, relay.Options{}))

	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		chunk := randomBytes(16 << 10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := local.Write(chunk); err != nil {
				return // expected once the relay has ended
			}
		}
	}()
	got, err := io.ReadAll(local)
	close(stop)
	local.Close() // unblocks a write the relay no longer reads
	<-sent
	if err != nil {
		t.Fatalf("reading the response: %v after %d bytes", err, len(got))
	}
	if !bytes.Equal(got, response) {
		t.Fatalf("got %d bytes, want the %d-byte response", len(got), len(response))
	}
}
