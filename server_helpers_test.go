package anytls_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

// waitFor polls cond until it holds, or fails the test after timeout; for
// states that no event announces (counters).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serveTCP runs a TCP server on loopback until the test ends: handle serves
// each connection, which is closed after it.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	return testnet.Serve(t, handle)
}

// newServer builds a server as startServer does, without serving it.
func newServer(t testing.TB, mod func(*anytls.ServerConfig)) (*anytls.Server, []byte) {
	t.Helper()
	tc, pin := serverTLS(t)
	cfg := anytls.ServerConfig{
		Users:     []anytls.User{{Name: "tester", Password: testPassword}},
		TLSConfig: tc,
		Logger:    testLogger(t).With("side", "server"),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := anytls.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, pin
}

// serveOn runs srv.Serve(ln) until the test ends, then closes the server.
func serveOn(t testing.TB, srv *anytls.Server, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// logEvent is one record seen by a logRecorder.
type logEvent struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (e logEvent) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", e.level, e.msg)
	for k, v := range e.attrs {
		fmt.Fprintf(&b, " %s=%q", k, v)
	}
	return b.String()
}

// logRecorder is a slog handler that keeps every record, so that tests can
// wait for what the server reports instead of sleeping. With
// ANYTLS_TEST_LOG set it also prints them.
type logRecorder struct {
	mu      sync.Mutex
	events  []logEvent
	changed chan struct{} // closed and replaced at every record
	print   slog.Handler
	// tally lists messages that are only counted, not kept (floods);
	// count and wait ignore attributes for them.
	tally   map[string]bool
	tallied map[string]int
}

func newLogRecorder(tally ...string) *logRecorder {
	r := &logRecorder{changed: make(chan struct{}), tally: map[string]bool{}, tallied: map[string]int{}}
	for _, m := range tally {
		r.tally[m] = true
	}
	if os.Getenv("ANYTLS_TEST_LOG") != "" {
		r.print = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return r
}

func (r *logRecorder) logger() *slog.Logger { return slog.New(&recorderHandler{r: r}) }

type recorderHandler struct {
	r     *logRecorder
	attrs []slog.Attr
}

func (h *recorderHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorderHandler) WithGroup(string) slog.Handler            { return h }
func (h *recorderHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recorderHandler) Handle(ctx context.Context, rec slog.Record) error {
	ev := logEvent{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		ev.attrs[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		ev.attrs[a.Key] = a.Value.String()
		return true
	})
	r := h.r
	if r.print != nil && !r.tally[rec.Message] {
		r.print.WithAttrs(h.attrs).Handle(ctx, rec)
	}
	r.mu.Lock()
	if r.tally[ev.msg] {
		r.tallied[ev.msg]++
	} else {
		r.events = append(r.events, ev)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// count returns how many records have the message msg and, for each pair in
// kv, the attribute kv[i] with a value containing kv[i+1].
func (r *logRecorder) count(msg string, kv ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.countLocked(msg, kv)
}

func (r *logRecorder) countLocked(msg string, kv []string) int {
	if r.tally[msg] {
		return r.tallied[msg]
	}
	n := 0
	for _, e := range r.events {
		if e.msg == msg && e.match(kv) {
			n++
		}
	}
	return n
}

func (e logEvent) match(kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if !strings.Contains(e.attrs[kv[i]], kv[i+1]) {
			return false
		}
	}
	return true
}

// find returns the kept records with message msg (and attributes as in
// count).
func (r *logRecorder) find(msg string, kv ...string) []logEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logEvent
	for _, e := range r.events {
		if e.msg == msg && e.match(kv) {
			out = append(out, e)
		}
	}
	return out
}

// wait blocks until at least n records match (see count), or fails the test
// after timeout.
func (r *logRecorder) wait(t testing.TB, timeout time.Duration, n int, msg string, kv ...string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got := r.countLocked(msg, kv)
		ch := r.changed
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %v for %d log records %q %v, saw %d", timeout, n, msg, kv, got)
		}
	}
}

// rawClient speaks the protocol frame by frame over TLS, for tests that
// must control every byte a client sends.
type rawClient struct {
	t    testing.TB
	conn *tls.Conn
}

// dialRaw opens a TLS connection to the server and completes the handshake.
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		t.Fatalf("TLS handshake: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

// preamble returns the authentication preamble for password with padLen
// bytes of padding.
func preamble(password string, padLen int) []byte {
	hash := sha256.Sum256([]byte(password))
	b, _ := wire.AppendAuth(nil, &hash, padLen)
	return b
}

// writeChunks writes b in pieces of chunk bytes, one Write (one TLS record)
// each.
func (r *rawClient) writeChunks(b []byte, chunk int) {
	r.t.Helper()
	for len(b) > 0 {
		n := min(chunk, len(b))
		if _, err := r.conn.Write(b[:n]); err != nil {
			r.t.Fatalf("write: %v", err)
		}
		b = b[n:]
	}
}

func (r *rawClient) writeFrame(cmd wire.Cmd, sid uint32, data []byte) {
	r.t.Helper()
	b, err := wire.AppendFrame(nil, cmd, sid, data)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatalf("write %v: %v", cmd, err)
	}
}

// settings sends a v2 client's Settings with the default scheme's md5.
func (r *rawClient) settings() {
	body := wire.Settings{
		{Key: wire.KeyVersion, Value: "2"},
		{Key: wire.KeyClient, Value: "raw-test/1"},
		{Key: wire.KeyPaddingMD5, Value: md5hex(anytls.DefaultPaddingScheme)},
	}.Append(nil)
	r.writeFrame(wire.CmdSettings, 0, body)
}

// readFrame reads the next frame.
func (r *rawClient) readFrame() (wire.Cmd, uint32, []byte, error) {
	var h wire.Header
	if _, err := io.ReadFull(r.conn, h[:]); err != nil {
		return 0, 0, nil, err
	}
	data := make([]byte, h.Length())
	if _, err := io.ReadFull(r.conn, data); err != nil {
		return 0, 0, nil, err
	}
	return h.Cmd(), h.StreamID(), data, nil
}

// expect reads frames, skipping ServerSettings, until one with cmd for sid.
func (r *rawClient) expect(cmd wire.Cmd, sid uint32) []byte {
	r.t.Helper()
	for {
		c, id, data, err := r.readFrame()
		if err != nil {
			r.t.Fatalf("waiting for %v on stream %d: %v", cmd, sid, err)
		}
		if c == cmd && id == sid {
			return data
		}
		if c != wire.CmdServerSettings {
			r.t.Fatalf("waiting for %v on stream %d, got %v on %d (%q)", cmd, sid, c, id, data)
		}
	}
}

// openStream sends SYN and the destination address of a stream.
func (r *rawClient) openStream(sid uint32, dst string) {
	r.t.Helper()
	a, err := wire.ParseAddr(dst)
	if err != nil {
		r.t.Fatal(err)
	}
	addr, _ := wire.AppendAddr(nil, a, wire.SOCKS)
	r.writeFrame(wire.CmdSYN, sid, nil)
	r.writeFrame(wire.CmdPSH, sid, addr)
}

// echoStream opens stream sid to an echo server and checks one round trip.
func (r *rawClient) echoStream(sid uint32, echo string, msg string) {
	r.t.Helper()
	r.openStream(sid, echo)
	if e := r.expect(wire.CmdSYNACK, sid); len(e) != 0 {
		r.t.Fatalf("SYNACK error %q", e)
	}
	r.writeFrame(wire.CmdPSH, sid, []byte(msg))
	var got []byte
	for len(got) < len(msg) {
		got = append(got, r.expect(wire.CmdPSH, sid)...)
	}
	if string(got) != msg {
		r.t.Fatalf("echo %q, want %q", got, msg)
	}
}
