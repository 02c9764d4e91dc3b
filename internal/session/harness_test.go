package session

// Test harness: a hand-written peer that speaks the AnyTLS frame format with
// raw bytes, so that the tests assert what goes over the wire rather than what
// our own client and server agree on.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
	"go.uber.org/goleak"
)

// testTimeout bounds every wait; a test that hits it has failed.
const testTimeout = 10 * time.Second

// leakCheck registers a goroutine-leak check that runs after every other
// cleanup of the test. Call it first.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure is the news; a leak report would bury it
		}
		goleak.VerifyNone(t)
	})
}

func testLogger() *slog.Logger {
	if os.Getenv("ANYTLS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// ---- connection kinds ----

type connKind struct {
	name string
	// pair returns the session's side and the peer's side of a connection.
	pair func(t *testing.T) (sess, peer net.Conn)
}

var connKinds = []connKind{
	{"pipe", pipePair},
	{"tcp", tcpPair},
}

func pipePair(t *testing.T) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	d, a := testnet.Pair(t)
	return a, d
}

func forEachConn(t *testing.T, f func(t *testing.T, kind connKind)) {
	for _, k := range connKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// ---- frames ----

type frame struct {
	cmd  wire.Cmd
	sid  uint32
	data []byte
}

func (f frame) String() string {
	d := f.data
	suffix := ""
	if len(d) > 40 {
		d, suffix = d[:40], "..."
	}
	return fmt.Sprintf("%v sid=%d len=%d %q%s", f.cmd, f.sid, len(f.data), d, suffix)
}

func frameBytes(cmd wire.Cmd, sid uint32, data []byte) []byte {
	b, err := wire.AppendFrame(nil, cmd, sid, data)
	if err != nil {
		panic(err)
	}
	return b
}

// rawFrame builds a frame whose header claims n bytes and that carries n bytes
// of filler, for any command byte.
func rawFrame(cmd byte, sid uint32, n int) []byte {
	b, _ := wire.AppendHeader(nil, wire.Cmd(cmd), sid, n)
	return append(b, bytes.Repeat([]byte{0xA5}, n)...)
}

// pshFrames splits data into PSH frames of at most chunk bytes.
func pshFrames(sid uint32, data []byte, chunk int) []byte {
	var out []byte
	for len(data) > 0 {
		n := min(len(data), chunk)
		out, _ = wire.AppendFrame(out, wire.CmdPSH, sid, data[:n])
		data = data[n:]
	}
	return out
}

// parseFrames splits b into frames; it fails on a truncated one.
func parseFrames(b []byte) ([]frame, error) {
	var out []frame
	for len(b) > 0 {
		if len(b) < wire.HeaderLen {
			return out, fmt.Errorf("%d trailing bytes, too short for a header", len(b))
		}
		var h wire.Header
		copy(h[:], b)
		b = b[wire.HeaderLen:]
		if h.Length() > len(b) {
			return out, fmt.Errorf("frame %v claims %d bytes, %d left", &h, h.Length(), len(b))
		}
		out = append(out, frame{h.Cmd(), h.StreamID(), bytes.Clone(b[:h.Length()])})
		b = b[h.Length():]
	}
	return out, nil
}

func settingsBody(kv ...string) []byte {
	var s wire.Settings
	for i := 0; i+1 < len(kv); i += 2 {
		s = append(s, wire.Setting{Key: kv[i], Value: kv[i+1]})
	}
	return s.Append(nil)
}

// pattern returns n bytes of a recognisable, position-dependent pattern.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i>>8) ^ seed
	}
	return b
}

func mustScheme(t testing.TB, text string) *padding.Scheme {
	t.Helper()
	s, err := padding.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noShaping is a scheme that shapes nothing, so that client tests see plain
// frames.
const noShaping = "stop=0"

// ---- the raw peer ----

// peer reads every frame the session writes (so that the session never blocks
// on a synchronous pipe) and writes hand-built frames to it.
type peer struct {
	t    testing.TB
	conn net.Conn

	mu     sync.Mutex
	frames []frame // received, not yet taken
	rerr   error   // why the reader stopped
	wake   chan struct{}
	done   chan struct{}

	hb uint32 // heartbeat ids used by barrier
}

func newPeer(t testing.TB, conn net.Conn) *peer {
	p := &peer{t: t, conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.readLoop()
	t.Cleanup(func() {
		conn.Close()
		<-p.done
	})
	return p
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (p *peer) readLoop() {
	defer close(p.done)
	var h wire.Header
	for {
		_, err := io.ReadFull(p.conn, h[:])
		var data []byte
		if err == nil && h.Length() > 0 {
			data = make([]byte, h.Length())
			if _, err = io.ReadFull(p.conn, data); err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
		}
		p.mu.Lock()
		if err != nil {
			p.rerr = err
		} else {
			p.frames = append(p.frames, frame{h.Cmd(), h.StreamID(), data})
		}
		p.mu.Unlock()
		poke(p.wake)
		if err != nil {
			return
		}
	}
}

var errPeerTimeout = errors.New("peer: timed out waiting for a frame")

// nextAny returns the next frame the session sent, Waste included, or the
// error that ended the connection.
func (p *peer) nextAny() (frame, error) {
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		if len(p.frames) > 0 {
			f := p.frames[0]
			p.frames = p.frames[1:]
			p.mu.Unlock()
			return f, nil
		}
		err := p.rerr
		p.mu.Unlock()
		if err != nil {
			return frame{}, err
		}
		select {
		case <-p.wake:
		case <-timer.C:
			return frame{}, errPeerTimeout
		}
	}
}

// nextFrame is nextAny without Waste frames.
func (p *peer) nextFrame() (frame, error) {
	for {
		f, err := p.nextAny()
		if err != nil || f.cmd != wire.CmdWaste {
			return f, err
		}
	}
}

// next returns the next non-Waste frame; anything else fails the test.
func (p *peer) next() frame {
	p.t.Helper()
	f, err := p.nextFrame()
	if err != nil {
		p.t.Fatalf("peer: want a frame, got %v", err)
	}
	return f
}

// expect takes the next non-Waste frame and checks its command and stream.
func (p *peer) expect(cmd wire.Cmd, sid uint32) frame {
	p.t.Helper()
	f := p.next()
	if f.cmd != cmd || f.sid != sid {
		p.t.Fatalf("peer: got %v, want %v sid=%d", f, cmd, sid)
	}
	return f
}

// expectEnd reads until the connection ends and returns the non-Waste frames
// seen on the way. The connection must end with EOF (or be closed).
func (p *peer) expectEnd() []frame {
	p.t.Helper()
	var got []frame
	for {
		f, err := p.nextFrame()
		if err != nil {
			if err == errPeerTimeout {
				p.t.Fatalf("peer: connection still open after %v (frames %v)", testTimeout, got)
			}
			if err != io.EOF && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				p.t.Fatalf("peer: connection ended with %v, want EOF", err)
			}
			return got
		}
		got = append(got, f)
	}
}

func (p *peer) tryWrite(b []byte) error {
	p.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	_, err := p.conn.Write(b)
	return err
}

func (p *peer) write(b []byte) {
	p.t.Helper()
	if err := p.tryWrite(b); err != nil {
		p.t.Fatalf("peer: write: %v", err)
	}
}

func (p *peer) send(cmd wire.Cmd, sid uint32, data []byte) {
	p.t.Helper()
	p.write(frameBytes(cmd, sid, data))
}

// barrier sends a HeartRequest with a fresh stream id and returns the
// non-Waste frames that arrive before its HeartResponse. Everything the
// session queued before it read the request comes first, so a barrier proves
// that a frame was not sent.
func (p *peer) barrier() []frame {
	p.t.Helper()
	p.hb++
	sid := 0x7f000000 + p.hb
	p.send(wire.CmdHeartRequest, sid, nil)
	var got []frame
	for {
		f := p.next()
		if f.cmd == wire.CmdHeartResponse && f.sid == sid {
			return got
		}
		got = append(got, f)
	}
}

// expectQuiet runs a barrier and fails if any frame came before its answer.
func (p *peer) expectQuiet(what string) {
	p.t.Helper()
	if got := p.barrier(); len(got) > 0 {
		p.t.Fatalf("%s: session sent %v, want nothing", what, got)
	}
}

// ---- session fixtures ----

type serverEnv struct {
	sess    *Session
	p       *peer
	streams chan *Stream // from OnStream
	served  chan error   // Serve's result
	closed  chan error   // OnClose's argument
	conn    net.Conn     // the session's side
	peerRaw net.Conn     // the peer's side
	scheme  *padding.Scheme
}

// startServer runs a server session on the session side of a fresh
// connection. A nil cfg.OnStream delivers streams on env.streams.
func startServer(t *testing.T, kind connKind, cfg Config) *serverEnv {
	t.Helper()
	sc, pc := kind.pair(t)
	return startServerOn(t, sc, pc, cfg)
}

func startServerOn(t *testing.T, sc, pc net.Conn, cfg Config) *serverEnv {
	t.Helper()
	env := &serverEnv{
		streams: make(chan *Stream, 4096),
		served:  make(chan error, 1),
		closed:  make(chan error, 1),
		conn:    sc,
		peerRaw: pc,
	}
	if cfg.OnStream == nil {
		cfg.OnStream = func(st *Stream) {
			select {
			case env.streams <- st:
			default:
				panic("test: too many streams")
			}
		}
	}
	cfg.OnClose = func(err error) { env.closed <- err }
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	env.scheme = padding.Default()
	if cfg.ServerScheme != nil {
		env.scheme = cfg.ServerScheme()
	}
	env.sess = NewServer(sc, cfg)
	go func() { env.served <- env.sess.Serve() }()
	t.Cleanup(func() {
		env.sess.Close()
		select {
		case <-env.served:
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return after Close")
		}
	})
	env.p = newPeer(t, pc)
	return env
}

// serverStream starts a server session on kind with cfg (leak-checked),
// sends the client's v2 settings and opens stream 1 without a destination.
func serverStream(t *testing.T, kind connKind, cfg Config) (*serverEnv, *Stream) {
	t.Helper()
	leakCheck(t)
	env := startServer(t, kind, cfg)
	env.hello(t, "2")
	return env, env.open(t, 1, wire.Addr{})
}

// hello sends the client's Settings with version v ("" for none) and the md5
// of the server's scheme, so that no UpdatePaddingScheme is pushed, and
// consumes the ServerSettings that a v2 client gets.
func (e *serverEnv) hello(t *testing.T, v string) {
	t.Helper()
	kv := []string{"client", "raw-peer/1"}
	if v != "" {
		kv = append([]string{"v", v}, kv...)
	}
	kv = append(kv, "padding-md5", e.scheme.MD5())
	e.p.send(wire.CmdSettings, 0, settingsBody(kv...))
	if v == "2" {
		f := e.p.expect(wire.CmdServerSettings, 0)
		if string(f.data) != "v=2" {
			t.Fatalf("ServerSettings %q, want v=2", f.data)
		}
	}
}

// open sends SYN (and, if dst is valid, the destination) and returns the
// stream the session handed to OnStream.
func (e *serverEnv) open(t *testing.T, sid uint32, dst wire.Addr) *Stream {
	t.Helper()
	b := frameBytes(wire.CmdSYN, sid, nil)
	if dst.Valid() {
		a, err := wire.AppendAddr(nil, dst, wire.SOCKS)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, frameBytes(wire.CmdPSH, sid, a)...)
	}
	e.p.write(b)
	select {
	case st := <-e.streams:
		if st.ID() != sid {
			t.Fatalf("OnStream got stream %d, want %d", st.ID(), sid)
		}
		return st
	case <-time.After(testTimeout):
		t.Fatalf("OnStream not called for stream %d", sid)
	}
	return nil
}

type clientEnv struct {
	sess   *Session
	p      *peer
	closed chan error
	first  bool // Settings not yet seen by expectOpen
}

func startClient(t *testing.T, kind connKind, cfg Config) *clientEnv {
	t.Helper()
	sc, pc := kind.pair(t)
	return startClientOn(t, sc, pc, cfg)
}

func startClientOn(t *testing.T, sc, pc net.Conn, cfg Config) *clientEnv {
	t.Helper()
	env := &clientEnv{closed: make(chan error, 1), first: true}
	if cfg.Scheme == nil {
		cfg.Scheme = mustScheme(t, noShaping)
	}
	if cfg.ClientName == "" {
		cfg.ClientName = "session-test/1"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	cfg.OnClose = func(err error) { env.closed <- err }
	env.sess = NewClient(sc, cfg)
	t.Cleanup(func() { env.sess.Close() })
	env.p = newPeer(t, pc)
	return env
}

var testDst = wire.Addr{Name: "example.com", Port: 443}

// open opens a stream and checks the frames that carry it.
func (e *clientEnv) open(t *testing.T, dst wire.Addr) *Stream {
	t.Helper()
	ctx := t.Context()
	st, err := e.sess.OpenStream(ctx, dst, nil)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	if e.first {
		e.first = false
		e.p.expect(wire.CmdSettings, 0)
		e.p.expect(wire.CmdHeartRequest, 0) // announces a probing client
	}
	e.p.expect(wire.CmdSYN, st.ID())
	f := e.p.expect(wire.CmdPSH, st.ID())
	want, _ := wire.AppendAddr(nil, dst, wire.SOCKS)
	if !bytes.Equal(f.data, want) {
		t.Fatalf("destination %x, want %x", f.data, want)
	}
	return st
}

// ---- stream helpers ----

type readResult struct {
	data []byte
	err  error
}

// readN reads exactly n bytes from st within testTimeout.
func readN(t *testing.T, st *Stream, n int) []byte {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(testTimeout))
	defer st.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(st, b); err != nil {
		t.Fatalf("stream %d: read %d bytes: %v", st.ID(), n, err)
	}
	return b
}

// sendAndRead has the peer send msg on st's id and checks that st reads it.
func sendAndRead(t *testing.T, p *peer, st *Stream, msg string) {
	t.Helper()
	p.send(wire.CmdPSH, st.ID(), []byte(msg))
	if got := readN(t, st, len(msg)); string(got) != msg {
		t.Fatalf("stream %d read %q, want %q", st.ID(), got, msg)
	}
}

// readErr reads until an error and returns it with the bytes read.
func readUntilErr(t *testing.T, st *Stream) ([]byte, error) {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(testTimeout))
	defer st.SetReadDeadline(time.Time{})
	var out []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := st.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// readAllAsync reads st until an error in a goroutine.
func readAllAsync(st *Stream) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		st.SetReadDeadline(time.Now().Add(testTimeout))
		var out []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := st.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				ch <- readResult{out, err}
				return
			}
		}
	}()
	return ch
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("%s: timed out", what)
	}
	return nil
}

func waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("%s: timed out", what)
	}
}
