// Package testnet holds TCP helpers for tests: servers on loopback that end
// with the test. Only tests import it.
package testnet

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve runs a TCP server on 127.0.0.1 until the test ends and returns its
// address: handle serves each connection, which is closed after it. See
// ServeOn for the cleanup.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeOn(t, ln, handle)
	return ln.Addr().String()
}

// ServeOn serves ln until the test ends: handle serves each connection,
// which is closed after it. The cleanup closes the listener and the
// connections still open, then waits for every handler to return.
func ServeOn(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Echo runs a TCP echo server: each connection gets back what it sends
// until EOF, then is closed.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) { io.Copy(c, c) })
}

// Pair returns both ends of a TCP connection on 127.0.0.1: the dialing end
// and the accepted end. Both are closed when the test ends.
func Pair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// the kernel completed the handshake: Accept does not wait
	a, err := ln.Accept()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}
