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
// address: handle serves each connection, which is closed after it. The
// cleanup waits for every handler to return.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// Echo runs a TCP echo server: each connection gets back what it sends
// until EOF, then is closed.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) { io.Copy(c, c) })
}
