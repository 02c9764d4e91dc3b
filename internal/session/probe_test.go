package session

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

// With probes off (a negative ProbeTimeout), a late SYNACK fails only its
// stream: the session sends no HeartRequest, neither after its Settings nor
// as a probe, and is not marked suspected (which would keep the pool from
// reusing it, with no probe verdict ever to clear it).
func TestNoProbesWhenProbeTimeoutNegative(t *testing.T) {
	forEachConn(t, testNoProbes)
}

func testNoProbes(t *testing.T, kind connKind) {
	leakCheck(t)
	env := startClient(t, kind, Config{ProbeTimeout: -1, SYNACKTimeout: 50 * time.Millisecond})
	env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
	// the answer to the barrier carries the queued Settings, and nothing
	// else: no HeartRequest announcing a probing client
	if got := env.p.barrier(); len(got) != 1 || got[0].cmd != wire.CmdSettings {
		t.Fatalf("before the barrier's answer: %v, want Settings alone", got)
	}
	if v := env.sess.PeerVersion(); v != 2 {
		t.Fatalf("peer version %d, want 2", v)
	}
	st, err := env.sess.OpenStream(t.Context(), testDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.p.expect(wire.CmdSYN, st.ID())
	env.p.expect(wire.CmdPSH, st.ID())
	if _, err := readUntilErr(t, st); !errors.Is(err, ErrSYNACKTimeout) {
		t.Fatalf("stream error %v, want ErrSYNACKTimeout", err)
	}
	env.p.expect(wire.CmdFIN, st.ID())
	env.p.expectQuiet("after the SYNACK timeout with probes off")
	if env.sess.Suspected() {
		t.Fatal("session suspected although it never probes")
	}
}

// A stream failed by the SYNACK deadline ends with its session already
// suspected: its end hands the session back to a client's pool, which must
// pass it over until the probe is answered.
func TestSYNACKTimeoutSuspectsBeforeStreamEnds(t *testing.T) {
	leakCheck(t)
	env := startClient(t, connKinds[0], Config{SYNACKTimeout: 50 * time.Millisecond})
	env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
	env.p.barrier()
	suspected := make(chan bool, 1)
	st, err := env.sess.OpenStream(t.Context(), testDst, func() { suspected <- env.sess.Suspected() })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readUntilErr(t, st); !errors.Is(err, ErrSYNACKTimeout) {
		t.Fatalf("stream error %v, want ErrSYNACKTimeout", err)
	}
	select {
	case s := <-suspected:
		if !s {
			t.Fatal("the stream ended before its session was suspected")
		}
	case <-time.After(testTimeout):
		t.Fatal("onClose did not run")
	}
}

// A peer that stops reading while it holds back an upload (sing-anytls's
// server does: its read loop waits for the destination) is not a dead
// peer: the quiet probe cannot even be written. Its verdict counts from
// when it is written, so the session survives the pause and the upload
// completes. (It failed with ErrHeartbeatTimeout one QuietTimeout +
// ProbeTimeout into the pause.)
func TestProbeWaitsBehindBlockedWrite(t *testing.T) {
	leakCheck(t)
	cc, pc := testnet.Pair(t)
	cc.SetWriteBuffer(32 << 10)
	pc.SetReadBuffer(32 << 10)
	const quiet, probe = 100 * time.Millisecond, 100 * time.Millisecond
	sess := NewClient(cc, Config{Scheme: mustScheme(t, noShaping), QuietTimeout: quiet, ProbeTimeout: probe,
		SYNACKTimeout: -1, Logger: testLogger()})
	defer sess.Close()
	pc.Write(frameBytes(wire.CmdServerSettings, 0, []byte("v=2")))
	st, err := sess.OpenStream(t.Context(), testDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, size))
		wrote <- err
	}()
	// the peer reads nothing for several quiet periods and probe timeouts
	time.Sleep(4 * (quiet + probe)) // the pause under test
	select {
	case err := <-wrote:
		t.Fatalf("the upload ended during the peer's pause: %v", err)
	default:
	}
	if err := sess.Err(); err != nil {
		t.Fatalf("session failed during the peer's pause: %v", err)
	}
	// the peer reads again, answering HeartRequests
	go func() {
		var h wire.Header
		for {
			if _, err := io.ReadFull(pc, h[:]); err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, pc, int64(h.Length())); err != nil {
				return
			}
			if h.Cmd() == wire.CmdHeartRequest {
				pc.Write(frameBytes(wire.CmdHeartResponse, h.StreamID(), nil))
			}
		}
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the upload did not complete")
	}
	if err := sess.Err(); err != nil {
		t.Fatalf("session failed: %v", err)
	}
}

// A client learns that its server speaks version 1, so that its later
// sessions take streams as open at once instead of waiting the SYNACK
// timeout for a SYNACK that will not come (with WaitSYNACK, every stream
// to a v1 server waited that long).
func TestPeerV1Learned(t *testing.T) {
	t.Run("from the SYNACK deadline", func(t *testing.T) {
		leakCheck(t)
		found := make(chan bool, 4)
		env := startClient(t, connKinds[0], Config{SYNACKTimeout: 50 * time.Millisecond,
			OnPeerVersion: func(v1 bool) { found <- v1 }})
		st := env.open(t, testDst) // the peer, a v1 server, says nothing
		if err := st.WaitSYNACK(t.Context()); err != nil {
			t.Fatalf("WaitSYNACK = %v", err)
		}
		if v1 := <-found; !v1 {
			t.Fatal("not found to be v1")
		}
	})
	t.Run("known already", func(t *testing.T) {
		leakCheck(t)
		env := startClient(t, connKinds[0], Config{SYNACKTimeout: time.Hour, PeerV1: true})
		st := env.open(t, testDst)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		if err := st.WaitSYNACK(ctx); err != nil {
			t.Fatalf("WaitSYNACK = %v, want the stream open at once", err)
		}
	})
	for _, v := range []string{"1", "2"} {
		t.Run("ServerSettings v="+v, func(t *testing.T) {
			leakCheck(t)
			found := make(chan bool, 4)
			env := startClient(t, connKinds[0], Config{SYNACKTimeout: time.Hour, PeerV1: v == "2",
				OnPeerVersion: func(v1 bool) { found <- v1 }})
			env.p.send(wire.CmdServerSettings, 0, []byte("v="+v))
			env.p.barrier() // Settings and the announcing HeartRequest come first
			if v1 := <-found; v1 != (v == "1") {
				t.Fatalf("v=%s: found v1 %v", v, v1)
			}
			st, err := env.sess.OpenStream(t.Context(), testDst, nil)
			if err != nil {
				t.Fatal(err)
			}
			env.p.expect(wire.CmdSYN, st.ID())
			env.p.expect(wire.CmdPSH, st.ID())
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			err = st.WaitSYNACK(ctx)
			if v == "1" && err != nil {
				t.Fatalf("v=1: WaitSYNACK = %v, want the stream open at once", err)
			}
			if v == "2" && err == nil {
				t.Fatal("v=2: the stream was taken as open without a SYNACK")
			}
		})
	}
}

// A write that carried a probe and completes after that probe was answered
// and a newer one queued does not mark the newer one as written: it still
// waits behind the next write, and its verdict must not run.
func TestStaleWriteLeavesNewProbeUnsent(t *testing.T) {
	leakCheck(t)
	const probe = 100 * time.Millisecond
	env := startClient(t, connKinds[0], Config{QuietTimeout: -1, ProbeTimeout: probe, SYNACKTimeout: -1})
	s := env.sess
	env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
	env.p.barrier()
	waitFor(t, "version 2", func() bool { return s.PeerVersion() == 2 })

	if err := s.lockWrite(canceller{}); err != nil { // a writer
		t.Fatal(err)
	}
	s.suspect(false)       // probe 1 queued
	buf := s.takeCtrl(nil) // the writer takes it
	env.p.send(wire.CmdHeartResponse, 0, nil)
	waitFor(t, "probe 1 answered", func() bool { return s.probeAt.Load() == 0 })
	s.suspect(true) // probe 2 queued behind the writer
	if err := s.sendLocked(buf); err != nil {
		t.Fatal(err)
	}
	if !s.probeUnsent.Load() {
		t.Fatal("probe 2 taken as written by the write that carried probe 1")
	}
	// the next write would be stuck behind a peer that does not read
	time.Sleep(4 * probe) // the wait under test
	err := s.Err()
	s.unlockWrite()
	if err != nil {
		t.Fatalf("session declared dead while its probe was never written: %v", err)
	}
}

// An OpenStream that claimed a probe but gave up waiting for the write lock
// releases the claim: later quiet checks probe again, and a silent peer is
// still found dead.
func TestAbandonedInlineProbeReleased(t *testing.T) {
	leakCheck(t)
	const quiet, probe = 50 * time.Millisecond, 50 * time.Millisecond
	env := startClient(t, connKinds[0], Config{QuietTimeout: quiet, ProbeTimeout: probe,
		IdleHeartbeat: time.Hour, SYNACKTimeout: -1})
	s := env.sess
	env.p.send(wire.CmdServerSettings, 0, []byte("v=2"))
	env.p.barrier()
	waitFor(t, "version 2", func() bool { return s.PeerVersion() == 2 })
	time.Sleep(2 * quiet) // quiet for longer than QuietTimeout: the next OpenStream probes

	if err := s.lockWrite(canceller{}); err != nil { // another writer holds the lock
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	_, err := s.OpenStream(ctx, testDst, nil)
	cancel()
	s.unlockWrite()
	if err == nil {
		t.Fatal("OpenStream succeeded past a held write lock")
	}
	if s.probeAt.Load() != 0 || s.probeUnsent.Load() {
		t.Fatal("the abandoned probe is still claimed")
	}
	// the peer says nothing from now on; a stream is open, writes pass
	if _, err := s.OpenStream(t.Context(), testDst, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the silent peer found dead", func() bool { return errors.Is(s.Err(), ErrHeartbeatTimeout) })
}
