package session

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/wire"
)

func TestClientAlert(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		env := startClient(t, kind, Config{})
		s1 := env.open(t, testDst)
		s2 := env.open(t, testDst)
		env.p.send(wire.CmdPSH, s1.ID(), []byte("unread data"))
		env.p.send(wire.CmdAlert, 0, []byte("go away"))
		got := env.p.expectEnd()
		if len(got) != 0 {
			t.Errorf("client sent %v after an Alert, want nothing (no FINs)", got)
		}
		cause := waitErr(t, env.closed, "OnClose")
		var ae *AlertError
		if !errors.As(cause, &ae) || ae.Text != "go away" {
			t.Fatalf("OnClose(%v), want *AlertError with the text", cause)
		}
		waitDone(t, env.sess.Done(), "session death")
		err := env.sess.Err()
		if !errors.Is(err, ErrSessionClosed) || !errors.As(err, &ae) || ae.Text != "go away" {
			t.Fatalf("Err() = %v, want ErrSessionClosed and *AlertError(go away)", err)
		}
		for _, st := range []*Stream{s1, s2} {
			waitDone(t, st.Done(), "stream end")
			if _, err := st.Read(make([]byte, 10)); !errors.Is(err, ErrSessionClosed) {
				t.Errorf("stream %d Read = %v, want ErrSessionClosed", st.ID(), err)
			}
			if _, err := st.Write([]byte("x")); !errors.Is(err, ErrSessionClosed) {
				t.Errorf("stream %d Write = %v, want ErrSessionClosed", st.ID(), err)
			}
			if err := st.Err(); !errors.Is(err, ErrSessionClosed) {
				t.Errorf("stream %d Err = %v", st.ID(), err)
			}
		}
		if _, err := env.sess.OpenStream(t.Context(), testDst, nil); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("OpenStream after Alert = %v, want ErrSessionClosed", err)
		}
		if _, err := env.sess.Ping(t.Context()); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("Ping after Alert = %v, want ErrSessionClosed", err)
		}
	})
}

func TestClientServerSettings(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		env := startClient(t, kind, Config{})
		st := env.open(t, testDst)
		if v := env.sess.PeerVersion(); v != 1 {
			t.Fatalf("PeerVersion before ServerSettings = %d, want 1", v)
		}
		select {
		case <-st.SYNACK():
			t.Fatal("SYNACK channel closed without a SYNACK")
		default:
		}
		env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
		env.p.expectQuiet("ServerSettings")
		if v := env.sess.PeerVersion(); v != 2 {
			t.Fatalf("PeerVersion = %d, want 2", v)
		}
		env.p.send(wire.CmdSYNACK, st.ID(), nil)
		waitDone(t, st.SYNACK(), "SYNACK")
		// A SYNACK for a stream that does not exist is ignored.
		env.p.send(wire.CmdSYNACK, 99, nil)
		env.p.send(wire.CmdSYNACK, 98, []byte("nope"))
		env.p.expectQuiet("SYNACK for unknown streams")
		sendAndRead(t, env.p, st, "hi")
	})
}

func TestClientSYNACKError(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		env := startClient(t, kind, Config{})
		env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
		bad := env.open(t, testDst)
		good := env.open(t, testDst)
		env.p.send(wire.CmdSYNACK, good.ID(), nil)
		env.p.send(wire.CmdSYNACK, bad.ID(), []byte("dial tcp: connection refused"))
		// The client closes the failed stream: one FIN for it, nothing else.
		got := env.p.barrier()
		if len(got) != 1 || got[0].cmd != wire.CmdFIN || got[0].sid != bad.ID() {
			t.Fatalf("frames after a SYNACK error: %v, want one FIN %d", got, bad.ID())
		}
		waitDone(t, bad.Done(), "failed stream")
		_, err := bad.Read(make([]byte, 1))
		var re *RemoteError
		if !errors.As(err, &re) || re.Text != "dial tcp: connection refused" {
			t.Fatalf("Read on the failed stream = %v, want *RemoteError with the text", err)
		}
		if errors.Is(err, ErrSessionClosed) {
			t.Fatalf("a stream error reads as a session error: %v", err)
		}
		if _, err := bad.Write([]byte("x")); !errors.As(err, &re) {
			t.Fatalf("Write on the failed stream = %v, want *RemoteError", err)
		}
		if !errors.As(bad.Err(), &re) {
			t.Fatalf("Err = %v", bad.Err())
		}
		select {
		case <-bad.SYNACK():
			t.Fatal("SYNACK channel closed for a failed stream")
		default:
		}
		bad.Close()
		env.p.expectQuiet("Close of a failed stream")

		// The sibling is untouched, in both directions.
		waitDone(t, good.SYNACK(), "good SYNACK")
		sendAndRead(t, env.p, good, "response")
		if _, err := good.Write([]byte("request")); err != nil {
			t.Fatalf("sibling write: %v", err)
		}
		f := env.p.expect(wire.CmdPSH, good.ID())
		if string(f.data) != "request" {
			t.Fatalf("sibling wrote %q", f.data)
		}
		if env.sess.IsClosed() {
			t.Fatal("session closed by a stream's SYNACK error")
		}
		// A later SYNACK error for a stream that already ended changes nothing.
		env.p.send(wire.CmdSYNACK, bad.ID(), []byte("again"))
		env.p.expectQuiet("SYNACK for an ended stream")
	})
}

func TestClientUpdatePaddingScheme(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		leakCheck(t)
		pushed := make(chan *padding.Scheme, 10)
		env := startClient(t, kind, Config{OnScheme: func(s *padding.Scheme) { pushed <- s }})
		env.open(t, testDst)

		valid := "stop=2\n0=10-10\n1=50-60"
		env.p.send(wire.CmdUpdatePaddingScheme, 0, []byte(valid))
		env.p.expectQuiet("valid scheme")
		select {
		case sc := <-pushed:
			if string(sc.Raw()) != valid || sc.Stop() != 2 {
				t.Fatalf("OnScheme got %q", sc.Raw())
			}
		default:
			t.Fatal("OnScheme not called for a valid scheme")
		}

		// items that do not parse are skipped, as sing-anytls's client
		// skips them: the scheme is taken all the same
		for _, odd := range []string{"stop=1\n0=0-9", "stop=2\n1=1-2,"} {
			env.p.send(wire.CmdUpdatePaddingScheme, 0, []byte(odd))
			env.p.expectQuiet("scheme with odd items")
			select {
			case sc := <-pushed:
				if string(sc.Raw()) != odd {
					t.Fatalf("OnScheme got %q, want %q", sc.Raw(), odd)
				}
			default:
				t.Fatalf("OnScheme not called for %q", odd)
			}
		}

		for _, invalid := range []string{"", "0=1-2", "stop=x"} {
			env.p.send(wire.CmdUpdatePaddingScheme, 0, []byte(invalid))
		}
		env.p.expectQuiet("invalid schemes")
		select {
		case sc := <-pushed:
			t.Fatalf("OnScheme called with %q from an invalid scheme", sc.Raw())
		default:
		}
		if env.sess.IsClosed() {
			t.Fatal("an invalid scheme closed the session")
		}
	})
}

// TestClientNilOnScheme: a pushed scheme without OnScheme is harmless.
func TestClientNilOnScheme(t *testing.T) {
	leakCheck(t)
	env := startClient(t, connKinds[0], Config{})
	env.p.send(wire.CmdUpdatePaddingScheme, 0, []byte(padding.DefaultText))
	// The barrier's answer is the session's first write: Settings come first.
	got := env.p.barrier()
	if len(got) != 2 || got[0].cmd != wire.CmdSettings || got[1].cmd != wire.CmdHeartRequest {
		t.Fatalf("frames %v, want only the Settings and the opening HeartRequest", got)
	}
	env.first = false
	env.open(t, testDst)
}

// TestClientOpenStreamIDs: ids start at 1 and grow by one; OpenStream
// honours its context and rejects an invalid destination.
func TestClientOpenStreamIDs(t *testing.T) {
	leakCheck(t)
	env := startClient(t, connKinds[0], Config{})
	for want := uint32(1); want <= 5; want++ {
		if st := env.open(t, testDst); st.ID() != want {
			t.Fatalf("stream id %d, want %d", st.ID(), want)
		}
	}
	if _, err := env.sess.OpenStream(t.Context(), wire.Addr{}, nil); !errors.Is(err, wire.ErrInvalidAddr) {
		t.Fatalf("OpenStream(invalid) = %v", err)
	}
	if n := env.sess.NumStreams(); n != 5 {
		t.Fatalf("NumStreams = %d after a failed OpenStream", n)
	}
	// onClose runs once when the stream ends.
	closed := make(chan struct{}, 2)
	st, err := env.sess.OpenStream(t.Context(), testDst, func() { closed <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	env.p.expect(wire.CmdSYN, st.ID())
	env.p.expect(wire.CmdPSH, st.ID())
	env.p.send(wire.CmdFIN, st.ID(), nil)
	waitDone(t, st.Done(), "FIN")
	st.Close()
	select { // onClose runs on the read loop right after Done is closed
	case <-closed:
	case <-time.After(testTimeout):
		t.Fatal("onClose not called")
	}
	env.p.expectQuiet("Close after FIN")
	if len(closed) != 0 {
		t.Fatal("onClose called twice")
	}
}

// TestClientOpenStreamBlocked: OpenStream gives up on its context while the
// connection does not take its write.
func TestClientOpenStreamBlocked(t *testing.T) {
	leakCheck(t)
	sc, _ := pipePair(t)
	sess := NewClient(sc, Config{Scheme: mustScheme(t, noShaping)})
	defer sess.Close()
	// Nobody reads pc, so the first write blocks inside conn.Write while
	// holding the write token; a second OpenStream must give up on ctx.
	first := make(chan error, 1)
	go func() {
		_, err := sess.OpenStream(context.Background(), testDst, nil)
		first <- err
	}()
	// Wait until the first OpenStream holds the write token.
	deadline := time.Now().Add(testTimeout)
	for len(sess.wtoken) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("first OpenStream never took the write token")
		}
		time.Sleep(time.Millisecond) // polling with a deadline: no event to wait for
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := sess.OpenStream(ctx, testDst, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("OpenStream with an expiring context = %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("context error reported as os.ErrDeadlineExceeded")
	}
	if n := sess.NumStreams(); n != 1 {
		t.Fatalf("NumStreams = %d, want 1 (the failed stream must be removed)", n)
	}
	sess.Close()
	if err := waitErr(t, first, "first OpenStream"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("blocked OpenStream after Close = %v, want ErrSessionClosed", err)
	}
}
