package anytls

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/tlsutil"
)

// Strangers relayed to the fallback at once are bounded: beyond the limit
// one is closed at once, while those relayed go on.
func TestFallbackRelaysBounded(t *testing.T) {
	cert, err := tlsutil.SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 4)
	release := make(chan struct{})
	defer close(release)
	site := testnet.Serve(t, func(c net.Conn) {
		c.Read(make([]byte, 64)) // the replayed bytes
		got <- struct{}{}
		<-release // then silence, the connection open
	})
	s, err := NewServer(ServerConfig{
		Users:     []User{{Name: "a", Password: "pa"}},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Fallback:  site,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.maxFallbacks = 1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(ln)
	}()
	defer func() { s.Close(); <-served }()

	stranger := func() *tls.Conn {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		c.Write(make([]byte, 40)) // not a password hash
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		return c
	}
	first := stranger()
	defer first.Close()
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the first stranger was not relayed")
	}
	if n := s.Stats().Pending; n != 1 {
		t.Errorf("Stats().Pending = %d with one stranger relayed, want 1", n)
	}
	second := stranger()
	defer second.Close()
	if _, err := io.Copy(io.Discard, second); err != nil {
		t.Fatalf("the second stranger: %v, want a close", err)
	}
	select {
	case <-got:
		t.Fatal("the second stranger was relayed past the limit")
	default:
	}
	first.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := first.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("the first stranger's relay: %v, want it still open", err)
	}
}
