//go:build linux

package inbound

import (
	"net"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

// TestCloseWakesParkedRelays: Close closes the local connections of relays
// whose pumps are parked in the Poller (no goroutine waits on them) and
// wakes them, so that it returns without waiting for the Poller's sweep
// (off here).
func TestCloseWakesParkedRelays(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0")
	p := &sockio.Poller{Sweep: time.Hour}
	s, err := New(Config{
		Logger: testLogger(t),
		Poller: p,
		StartRelay: func(local, remote net.Conn, done func()) {
			relay.Start(local, remote, relay.Options{Poller: p}, func(relay.Stats, error) { done() })
		},
	}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	dst := wire.AddrFromAddrPort(echo.(*net.TCPAddr).AddrPort())
	for i := range 3 {
		c := dialProxy(t, ln.Addr().String())
		defer c.Close()
		if rep, err := socksHandshake(c, "", "", socksCmdConnect, dst); err != nil || rep != 0 {
			t.Fatalf("handshake %d: rep %d, %v", i, rep, err)
		}
		echoRoundTrip(t, c, "relay")
	}
	deadline := time.Now().Add(testTimeout)
	for p.Parked() != 6 { // both pumps of three relays
		if time.Now().After(deadline) {
			t.Fatalf("Parked = %d, want 6", p.Parked())
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close did not return while relays were parked")
	}
	p.Wait()
}
