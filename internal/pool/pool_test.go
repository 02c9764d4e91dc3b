package pool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/pool"
	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/wire"
	"go.uber.org/goleak"
)

// waitLimit bounds every wait for an event; it is only reached on failure.
const waitLimit = 20 * time.Second

var dst = wire.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))

// pair is one session the harness dialed: the pool's client side and the
// server side that serves it over a loopback TCP connection.
type pair struct {
	client, server *session.Session
	// serverConn is the server's end of the connection. Closing it kills
	// the session from the server side. (The server Session's Close is not
	// used: run before its Serve goroutine has begun, its WaitGroup Wait
	// would race with Serve's Add from zero.)
	serverConn net.Conn
	// died is closed after the pool's onClose callback has returned, so the
	// pool has certainly forgotten the session.
	died chan struct{}
}

// harness is a pool whose DialFunc makes real sessions over loopback TCP. The
// server sides accept streams and drain them until they end.
type harness struct {
	t *testing.T
	p *pool.Pool

	mu      sync.Mutex
	dialed  []*pair // in dial order, which is seq order
	dialErr error

	wg sync.WaitGroup // server goroutines
}

func newHarness(t *testing.T, cfg pool.Config) *harness {
	t.Helper()
	// registered first, so it runs after every other cleanup
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t)
		}
	})
	h := &harness{t: t}
	p, err := pool.New(cfg, h.dial)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	t.Cleanup(func() {
		p.Close()
		h.mu.Lock()
		pairs := append([]*pair(nil), h.dialed...)
		h.mu.Unlock()
		for _, pr := range pairs {
			pr.client.Close()
			pr.serverConn.Close() // ends Serve, whether it has begun or not
		}
		h.wg.Wait()
	})
	return h
}

func tcpPair() (net.Conn, net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

func (h *harness) dial(ctx context.Context, onClose func(error)) (*session.Session, error) {
	h.mu.Lock()
	err := h.dialErr
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	cc, sc, err := tcpPair()
	if err != nil {
		return nil, err
	}
	pr := &pair{serverConn: sc, died: make(chan struct{})}
	pr.server = session.NewServer(sc, session.Config{
		OnStream: func(st *session.Stream) {
			h.wg.Add(1) // Serve is running, so the counter is not zero
			go func() {
				defer h.wg.Done()
				defer st.Close()
				io.Copy(io.Discard, st)
			}()
		},
	})
	pr.client = session.NewClient(cc, session.Config{
		OnClose: func(err error) {
			onClose(err)
			close(pr.died)
		},
	})
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		pr.server.Serve()
	}()
	h.mu.Lock()
	h.dialed = append(h.dialed, pr)
	h.mu.Unlock()
	return pr.client, nil
}

func (h *harness) setDialErr(err error) {
	h.mu.Lock()
	h.dialErr = err
	h.mu.Unlock()
}

// pairs returns the sessions dialed so far, oldest first.
func (h *harness) pairs() []*pair {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*pair(nil), h.dialed...)
}

func (h *harness) open() *session.Stream {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := h.p.OpenStream(ctx, dst)
	if err != nil {
		h.t.Fatalf("OpenStream: %v", err)
	}
	return st
}

func (h *harness) wantStats(sessions, idle int) {
	h.t.Helper()
	if s, i := h.p.Stats(); s != sessions || i != idle {
		h.t.Fatalf("Stats() = %d sessions, %d idle; want %d, %d", s, i, sessions, idle)
	}
}

// index returns the dial order of the session carrying st.
func (h *harness) index(st *session.Stream) int {
	h.t.Helper()
	for i, pr := range h.pairs() {
		if pr.client == st.Session() {
			return i
		}
	}
	h.t.Fatalf("stream %d is on a session the pool did not dial", st.ID())
	return -1
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// noChecker keeps the periodic checker out of tests that do not study it.
var noChecker = pool.Config{CheckInterval: time.Hour, IdleTimeout: time.Hour}

func TestSequentialStreamsReuseOneSession(t *testing.T) {
	h := newHarness(t, noChecker)
	var first *session.Session
	for i := 0; i < 5; i++ {
		st := h.open()
		if first == nil {
			first = st.Session()
		} else if st.Session() != first {
			t.Fatalf("stream %d on a new session, want the idle one reused", i)
		}
		h.wantStats(1, 0)
		st.Close()
		h.wantStats(1, 1)
	}
	if n := len(h.pairs()); n != 1 {
		t.Fatalf("dialed %d sessions, want 1", n)
	}
}

func TestBusySessionIsNotShared(t *testing.T) {
	h := newHarness(t, noChecker)
	st1 := h.open()
	st2 := h.open()
	if st1.Session() == st2.Session() {
		t.Fatal("two live streams share a session")
	}
	if h.index(st1) != 0 || h.index(st2) != 1 {
		t.Fatalf("dial order %d, %d", h.index(st1), h.index(st2))
	}
	h.wantStats(2, 0)
	st1.Close()
	st2.Close()
	h.wantStats(2, 2)
}

func TestNewestIdleSessionFirst(t *testing.T) {
	h := newHarness(t, noChecker)
	st1, st2 := h.open(), h.open()
	// the newer session becomes idle first: the choice must follow seq, not
	// the time a session became idle
	st2.Close()
	st1.Close()
	h.wantStats(2, 2)

	a := h.open()
	if got := h.index(a); got != 1 {
		t.Fatalf("took session #%d, want the newest (#1)", got)
	}
	b := h.open()
	if got := h.index(b); got != 0 {
		t.Fatalf("took session #%d while #1 is busy, want #0", got)
	}
	h.wantStats(2, 0)
	b.Close()
	a.Close()
	c := h.open()
	if got := h.index(c); got != 1 {
		t.Fatalf("took session #%d, want the newest (#1)", got)
	}
	c.Close()
	if n := len(h.pairs()); n != 2 {
		t.Fatalf("dialed %d sessions, want 2", n)
	}
}

func TestDisableReuse(t *testing.T) {
	h := newHarness(t, pool.Config{CheckInterval: time.Hour, IdleTimeout: time.Hour, DisableReuse: true})
	var prev *session.Session
	for i := 0; i < 3; i++ {
		st := h.open()
		sess := st.Session()
		if sess == prev {
			t.Fatalf("stream %d reused a session with DisableReuse", i)
		}
		h.wantStats(1, 0)
		st.Close()
		waitClosed(t, sess.Done(), "the session to close after its stream")
		waitClosed(t, h.pairs()[i].died, "the pool to drop the session")
		h.wantStats(0, 0)
		prev = sess
	}
	if n := len(h.pairs()); n != 3 {
		t.Fatalf("dialed %d sessions, want 3", n)
	}
}

// threeIdle leaves three idle sessions, #0 to #2 in seq order, made idle in
// an order unrelated to seq.
func threeIdle(h *harness) {
	h.t.Helper()
	st := []*session.Stream{h.open(), h.open(), h.open()}
	for i, s := range st {
		if got := h.index(s); got != i {
			h.t.Fatalf("stream %d on session #%d", i, got)
		}
	}
	st[1].Close()
	st[2].Close()
	st[0].Close()
	h.wantStats(3, 3)
}

func TestCloseIdleKeepsNewest(t *testing.T) {
	for _, minIdle := range []int{0, 1, 2} {
		t.Run("MinIdle="+strconv.Itoa(minIdle), func(t *testing.T) {
			h := newHarness(t, pool.Config{CheckInterval: time.Hour, IdleTimeout: time.Hour, MinIdle: minIdle})
			threeIdle(h)
			if n := h.p.CloseIdle(time.Now().Add(-time.Hour)); n != 0 {
				t.Fatalf("CloseIdle before every idle time closed %d, want 0", n)
			}
			h.wantStats(3, 3)

			want := 3 - minIdle
			if n := h.p.CloseIdle(time.Now().Add(time.Hour)); n != want {
				t.Fatalf("CloseIdle closed %d, want %d", n, want)
			}
			for i, pr := range h.pairs() {
				victim := i < want // the oldest go first
				if got := pr.client.IsClosed(); got != victim {
					t.Errorf("session #%d closed = %v, want %v", i, got, victim)
				}
				if victim {
					// CloseIdle closes synchronously: the pool already knows
					if !isClosed(pr.died) {
						t.Errorf("session #%d closed but the pool was not told", i)
					}
				}
			}
			h.wantStats(minIdle, minIdle)
			// the survivors are kept again on the next pass
			if n := h.p.CloseIdle(time.Now().Add(time.Hour)); n != 0 {
				t.Fatalf("second CloseIdle closed %d, want 0", n)
			}
			h.wantStats(minIdle, minIdle)

			st := h.open()
			if minIdle > 0 {
				if got := h.index(st); got != 2 {
					t.Fatalf("took session #%d, want the newest survivor #2", got)
				}
			} else if got := h.index(st); got != 3 {
				t.Fatalf("took session #%d, want a new one (#3)", got)
			}
			st.Close()
		})
	}
}

func TestIdleSessionDeathLeavesPool(t *testing.T) {
	h := newHarness(t, noChecker)
	st1, st2 := h.open(), h.open()
	st1.Close()
	st2.Close()
	h.wantStats(2, 2)

	// the server ends the newest idle session
	dead := h.pairs()[1]
	dead.serverConn.Close()
	waitClosed(t, dead.client.Done(), "the client session to see its server go")
	waitClosed(t, dead.died, "the pool to be told")
	h.wantStats(1, 1)

	st := h.open()
	if got := h.index(st); got != 0 {
		t.Fatalf("took session #%d, want the surviving #0", got)
	}
	if n := len(h.pairs()); n != 2 {
		t.Fatalf("dialed %d sessions, want 2", n)
	}
	st.Close()
}

func TestIdleSessionDeathWithoutCallbackWait(t *testing.T) {
	// the same, observed only through Done and Stats, as a user would
	h := newHarness(t, noChecker)
	st := h.open()
	st.Close()
	h.wantStats(1, 1)
	pr := h.pairs()[0]
	pr.serverConn.Close()
	waitClosed(t, st.Session().Done(), "the session to die")
	deadline := time.Now().Add(waitLimit)
	for {
		if s, i := h.p.Stats(); s == 0 && i == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dead session still counted by Stats")
		}
		time.Sleep(time.Millisecond)
	}
	st2 := h.open()
	if st2.Session() == st.Session() {
		t.Fatal("OpenStream handed out a dead session")
	}
	st2.Close()
}

func TestDialErrorReturned(t *testing.T) {
	h := newHarness(t, noChecker)
	boom := errors.New("boom")
	h.setDialErr(boom)
	_, err := h.p.OpenStream(context.Background(), dst)
	if !errors.Is(err, boom) {
		t.Fatalf("OpenStream error = %v, want %v", err, boom)
	}
	h.wantStats(0, 0)
	h.setDialErr(nil)
	st := h.open()
	st.Close()
	h.wantStats(1, 1)
}

func TestCloseClosesAll(t *testing.T) {
	h := newHarness(t, pool.Config{CheckInterval: 10 * time.Millisecond, IdleTimeout: time.Hour})
	busy := h.open()
	idle := h.open()
	idle.Close()
	h.wantStats(2, 1)

	if err := h.p.Close(); err != nil {
		t.Fatal(err)
	}
	for i, pr := range h.pairs() {
		if !pr.client.IsClosed() {
			t.Errorf("session #%d open after Close", i)
		}
	}
	if !isClosed(busy.Done()) {
		t.Error("a live stream survived Close")
	}
	h.wantStats(0, 0)
	if _, err := h.p.OpenStream(context.Background(), dst); !errors.Is(err, pool.ErrClosed) {
		t.Fatalf("OpenStream after Close = %v, want ErrClosed", err)
	}
	if err := h.p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// the checker has exited: goleak in the cleanup proves it
}

func TestCheckerClosesIdleBeyondMinIdle(t *testing.T) {
	h := newHarness(t, pool.Config{CheckInterval: 20 * time.Millisecond, IdleTimeout: 50 * time.Millisecond, MinIdle: 1})
	threeIdle(h)
	prs := h.pairs()
	for i := 0; i < 2; i++ {
		waitClosed(t, prs[i].client.Done(), "the checker to close an old idle session")
		waitClosed(t, prs[i].died, "the pool to be told")
	}
	if prs[2].client.IsClosed() {
		t.Fatal("the newest session was closed although MinIdle is 1")
	}
	h.wantStats(1, 1)
	st := h.open()
	if got := h.index(st); got != 2 {
		t.Fatalf("took session #%d, want #2", got)
	}
	st.Close()
}

func TestConfigValidate(t *testing.T) {
	dial := func(context.Context, func(error)) (*session.Session, error) {
		return nil, errors.New("unused")
	}
	bad := pool.Config{CheckInterval: -time.Second, IdleTimeout: -1}
	err := bad.Validate()
	if err == nil {
		t.Fatal("negative durations accepted")
	}
	if j, ok := err.(interface{ Unwrap() []error }); !ok || len(j.Unwrap()) != 2 {
		t.Errorf("Validate = %v, want both problems reported", err)
	}
	if p, err := pool.New(bad, dial); err == nil || p != nil {
		t.Fatalf("New with a bad config = %v, %v", p, err)
	}
	for _, c := range []pool.Config{{}, {MinIdle: -3}, {CheckInterval: time.Second, IdleTimeout: time.Second}} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	p, err := pool.New(pool.Config{}, dial)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	goleak.VerifyNone(t)
}

// Close cuts short a dial in progress: its OpenStream returns ErrClosed
// at once, not when the dial would have timed out.
func TestCloseCutsDialShort(t *testing.T) {
	defer goleak.VerifyNone(t)
	dialing := make(chan struct{})
	p, err := pool.New(noChecker, func(ctx context.Context, _ func(error)) (*session.Session, error) {
		close(dialing)
		<-ctx.Done() // a server that never answers
		return nil, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := p.OpenStream(context.Background(), dst)
		res <- err
	}()
	<-dialing
	p.Close()
	select {
	case err := <-res:
		if !errors.Is(err, pool.ErrClosed) {
			t.Fatalf("OpenStream = %v, want ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("OpenStream still dialing after Close")
	}
}
