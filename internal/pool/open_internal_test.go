package pool

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

// gatedConn blocks its writes while the gate is shut, and says when a write
// is waiting at it.
type gatedConn struct {
	net.Conn
	mu      sync.Mutex
	shut    bool
	open    chan struct{} // closed when the gate opens again
	waiting chan struct{} // receives when a write waits at the gate
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	shut, open := g.shut, g.open
	g.mu.Unlock()
	if shut {
		g.waiting <- struct{}{}
		<-open
	}
	return g.Conn.Write(p)
}

func (g *gatedConn) setShut(shut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if shut && !g.shut {
		g.open = make(chan struct{})
	}
	if !shut && g.shut {
		close(g.open)
	}
	g.shut = shut
}

// A session whose stream failed to open (the caller gave up waiting for
// the session's write lock) is aborted, and it is never back in the idle
// list meanwhile, where another caller could take it and lose its stream
// to the abort.
func TestFailedOpenNotHandedOut(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var gate *gatedConn
	dial := func(ctx context.Context, onClose func(error)) (*session.Session, error) {
		cc, sc := testnet.Pair(t)
		server := session.NewServer(sc, session.Config{OnStream: func(st *session.Stream) {
			go func() {
				defer st.Close()
				io.Copy(io.Discard, st)
			}()
		}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			server.Serve()
		}()
		gate = &gatedConn{Conn: cc, waiting: make(chan struct{}, 1)}
		return session.NewClient(gate, session.Config{OnClose: onClose, ProbeTimeout: -1}), nil
	}
	p, err := New(Config{CheckInterval: time.Hour, IdleTimeout: time.Hour}, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dst := wire.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))

	st, err := p.OpenStream(t.Context(), dst)
	if err != nil {
		t.Fatal(err)
	}
	sess := st.Session()
	st.Close()
	if _, idle := p.Stats(); idle != 1 {
		t.Fatalf("%d idle sessions after the first stream, want 1", idle)
	}

	// a write that holds the session's write lock, stuck at the gate
	gate.setShut(true)
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		sess.Ping(context.Background())
	}()
	defer func() {
		gate.setShut(false)
		sess.Abort()
		<-pinged
	}()
	<-gate.waiting

	var idleAtFailure = -1
	testHookOpenFailed = func() { _, idleAtFailure = p.Stats() }
	defer func() { testHookOpenFailed = nil }()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond) // any wait will do
	defer cancel()
	if _, err := p.OpenStream(ctx, dst); err == nil {
		t.Fatal("OpenStream succeeded past a held write lock")
	}
	if idleAtFailure != 0 {
		t.Fatalf("%d idle sessions while the failed one was about to be aborted, want 0", idleAtFailure)
	}
}
