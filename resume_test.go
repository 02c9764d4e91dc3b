package anytls_test

import (
	"crypto/tls"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// TestSessionsResumeTLS: with a ClientSessionCache in TLSConfig, once a
// session has received the server's ticket, the client's later sessions
// resume its TLS session (no certificate, no signature) and still check the
// pin. Sessions are not reused here, so every stream dials one.
func TestSessionsResumeTLS(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	var mu sync.Mutex
	var resumed []bool
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.TLSConfig = c.TLSConfig.Clone()
		c.TLSConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			mu.Lock()
			resumed = append(resumed, cs.DidResume)
			mu.Unlock()
			return nil
		}
	})
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) {
		cfg.DisableReuse = true
		cfg.TLSConfig = &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	})
	ctx := testContext(t, 30*time.Second)
	for i := range 3 {
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		// the round trip also makes the session read the server's ticket
		echoRoundTrip(t, conn, []byte("resume"))
		conn.Close()
		mu.Lock()
		n := len(resumed)
		mu.Unlock()
		if n != i+1 {
			t.Fatalf("after %d connections the server saw %d handshakes", i+1, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if resumed[0] || !resumed[1] || !resumed[2] {
		t.Fatalf("resumed per session = %v, want [false true true]", resumed)
	}
}
