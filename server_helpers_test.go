package anytls_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

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
}

func newLogRecorder() *logRecorder {
	r := &logRecorder{changed: make(chan struct{})}
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
	if r.print != nil {
		r.print.WithAttrs(h.attrs).Handle(ctx, rec)
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
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
