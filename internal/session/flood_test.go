package session

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/wire"
)

// TestCtrlQueueBounded: a peer that asks for answers (HeartRequest, SYNs that
// are refused) and never reads them must not make the session buffer the
// answers without limit.
func TestCtrlQueueBounded(t *testing.T) {
	hello := frameBytes(wire.CmdSettings, 0, settingsBody("v", "2", "padding-md5", padding.Default().MD5()))
	heartbeats := bytes.Repeat(frameBytes(wire.CmdHeartRequest, 1, nil), 300000)
	var syns []byte
	for sid := uint32(1); sid <= 300000; sid++ {
		syns = append(syns, frameBytes(wire.CmdSYN, sid, nil)...)
	}
	for _, tt := range []struct {
		name   string
		client bool
		flood  []byte
	}{
		{"server-heartbeats", false, append(bytes.Clone(hello), heartbeats...)},
		{"server-refused-syns", false, append(bytes.Clone(hello), syns...)},
		{"client-heartbeats", true, heartbeats},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			sc, pc := pipePair(t) // nobody reads pc
			var sess *Session
			if tt.client {
				sess = NewClient(sc, Config{})
			} else {
				sess = NewServer(sc, Config{MaxStreams: 1, OnStream: func(*Stream) {}})
				served := make(chan error, 1)
				go func() { served <- sess.Serve() }()
				defer func() { <-served }()
			}
			defer sess.Close()
			pc.SetWriteDeadline(time.Now().Add(testTimeout))
			n, err := pc.Write(tt.flood)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("flood write timed out after %d bytes", n)
			}
			sess.ctrlMu.Lock()
			queued := len(sess.ctrl)
			sess.ctrlMu.Unlock()
			if queued > maxCtrlQueue+wire.MaxFrameLen {
				t.Fatalf("%d bytes of control frames queued for a peer that does not read", queued)
			}
			if err == nil {
				t.Fatalf("session read %d bytes of flood and lives on (queue %d)", n, queued)
			}
			waitDone(t, sess.Done(), "session death")
			if err := sess.Err(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("session died of %v, want ErrProtocol", err)
			}
		})
	}
}

// TestHeartbeatsAnsweredInBulk: a peer that reads gets every answer, and the
// queue bound does not trip.
func TestHeartbeatsAnsweredInBulk(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		env := startServer(t, kind, Config{})
		env.hello(t, "2")
		const n = 10000
		var b []byte
		for i := uint32(0); i < n; i++ {
			b = append(b, frameBytes(wire.CmdHeartRequest, i, nil)...)
		}
		env.p.write(b)
		for i := uint32(0); i < n; i++ {
			env.p.expect(wire.CmdHeartResponse, i)
		}
		if env.sess.IsClosed() {
			t.Fatal(env.sess.Err())
		}
	})
}

// recordHandler keeps the messages of the records it handles.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}

// find returns the records whose message contains text, with the value of
// their "refused" attribute.
func (h *recordHandler) find(text string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int64
	for _, r := range h.recs {
		if !strings.Contains(r.Message, text) {
			continue
		}
		var n int64 = -1
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "refused" {
				n = a.Value.Int64()
			}
			return true
		})
		out = append(out, n)
	}
	return out
}

// TestRefusedStreamsLogSparingly: a flood of SYNs over the limit gets every
// SYN answered with FIN but one warning, and a count when the session ends.
func TestRefusedStreamsLogSparingly(t *testing.T) {
	leakCheck(t)
	h := &recordHandler{}
	env := startServer(t, connKinds[1], Config{MaxStreams: 1, Logger: slog.New(h)})
	env.hello(t, "2")
	env.open(t, 1, wire.Addr{})
	var b []byte
	for sid := uint32(3); sid < 3+2*500; sid += 2 {
		b = append(b, frameBytes(wire.CmdSYN, sid, nil)...)
	}
	env.p.write(b)
	for sid := uint32(3); sid < 3+2*500; sid += 2 {
		env.p.expect(wire.CmdFIN, sid)
	}
	if got := h.find("refusing stream"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("warnings for 500 refused streams: %v, want one (refused=1)", got)
	}
	env.sess.Close()
	env.served <- waitErr(t, env.served, "Serve") // the summary is logged before Serve returns; put the result back for the cleanup
	if got := h.find("refused streams over the limit"); len(got) != 1 || got[0] != 499 {
		t.Fatalf("closing summary: %v, want one with refused=499", got)
	}
}
