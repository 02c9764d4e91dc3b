package session

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// A Write waiting for the write token, which makes no deadline channel
// until it has to wait, is still ended by a later SetWriteDeadline, to a
// time ahead or already past.
func TestWriteDeadlineWhileWaitingForToken(t *testing.T) {
	for _, name := range []string{"ahead", "past"} {
		t.Run(name, func(t *testing.T) {
			env, st := serverStream(t, connKinds[1], Config{})
			if err := env.sess.lockWrite(canceller{}); err != nil {
				t.Fatal(err)
			}
			defer env.sess.unlockWrite()
			done := make(chan error, 1)
			go func() { _, err := st.Write([]byte("x")); done <- err }()
			waitFor(t, "the write to wait for the token", func() bool {
				return strings.Contains(allStacks(), "(*Session).lockWrite")
			})
			if name == "ahead" {
				st.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
			} else {
				st.SetWriteDeadline(time.Now().Add(-time.Second))
			}
			if err := waitErr(t, done, "Write"); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Write = %v, want a deadline error", err)
			}
		})
	}
}

// A server stream's SYNACK channel, made only when asked for, is not closed
// by an error SYNACK (nor by any SYNACK the server sends: it is the
// client's confirmation).
func TestServerSYNACKChannelStaysOpen(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	go func() {
		for {
			if _, err := env.p.nextAny(); err != nil {
				return
			}
		}
	}()
	if err := st.SendSYNACK(errors.New("test: dial refused")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.SYNACK():
		t.Fatal("SYNACK() closed after an error SYNACK")
	default:
	}
}

// Concurrent Pings all get their answer (the pong channel is made by the
// first of them and remade after each answer), and a Ping after all the
// answers waits for its own.
func TestConcurrentPings(t *testing.T) {
	env := startServer(t, connKinds[1], Config{})
	env.hello(t, "2")
	const n = 20
	res := make(chan error, n)
	for range n {
		go func() { _, err := env.sess.Ping(t.Context()); res <- err }()
	}
	go func() {
		for {
			f, err := env.p.nextAny()
			if err != nil {
				return
			}
			if f.cmd == wire.CmdHeartRequest {
				env.p.send(wire.CmdHeartResponse, 0, nil)
			}
		}
	}()
	for range n {
		if err := waitErr(t, res, "Ping"); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		if _, err := env.sess.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// mono is never 0, follows durations added to a time, and saturates
// instead of overflowing for a time far ahead (a huge WriteTimeout).
func TestMono(t *testing.T) {
	now := time.Now()
	a := monoAt(now)
	if a == 0 || mono() < a {
		t.Fatalf("mono went back or is 0: %d then %d", a, mono())
	}
	if d := monoAt(now.Add(time.Hour)) - a; d < int64(time.Hour)-1 || d > int64(time.Hour)+1 {
		t.Fatalf("an hour later is %v later", time.Duration(d))
	}
	if far := monoAt(now.Add(math.MaxInt64)); far <= a {
		t.Fatalf("a time far ahead gives %d, not after %d", far, a)
	}
}
