package session

import (
	"errors"
	"testing"
	"time"

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
