package session

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

const (
	smallStreamBuf  = 64 << 10
	smallSessionBuf = 256 << 10
)

// TestSlowReaderSiblings: a stream whose reader never reads is reset once it
// holds more than StreamBuffer while a sibling shares the session; the read
// loop never waits for it, so the sibling gets all its data.
func TestSlowReaderSiblings(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("sequential", func(t *testing.T) {
			env, a := serverStream(t, kind, Config{StreamBuffer: smallStreamBuf, SessionBuffer: smallSessionBuf})
			b := env.open(t, 2, wire.Addr{})

			// A gets 16 times its buffer and never reads. Over a pipe this
			// write only completes if the read loop keeps reading.
			env.p.write(pshFrames(1, pattern(1<<20, 1), wire.MaxPayload))
			// B gets some data while its reader is not reading either: the
			// barrier proves the read loop got through all of it.
			first := pattern(32<<10, 2)
			env.p.write(pshFrames(2, first, 8<<10))
			got := env.p.barrier()
			if len(got) != 1 || got[0].cmd != wire.CmdFIN || got[0].sid != 1 {
				t.Fatalf("frames %v, want one FIN for the overflowing stream 1", got)
			}
			if !bytes.Equal(readN(t, b, len(first)), first) {
				t.Fatal("B's data corrupted")
			}
			// Then B, now alone, streams 1 MiB with its reader reading.
			rest := pattern(1<<20, 3)
			res := readAllAsync(b)
			env.p.write(append(pshFrames(2, rest, wire.MaxPayload), frameBytes(wire.CmdFIN, 2, nil)...))
			r := <-res
			if r.err != io.EOF || !bytes.Equal(r.data, rest) {
				t.Fatalf("B read %d bytes, %v; want %d bytes then EOF", len(r.data), r.err, len(rest))
			}
			checkOverflowed(t, a)
			a.Close()
			b.Close()
			// No second FIN for A, none for B: the peer closed it.
			env.p.expectQuiet("after B's FIN and the Closes")
			if n := env.sess.buffered.Load(); n != 0 {
				t.Fatalf("session still accounts %d buffered bytes", n)
			}
		})
		t.Run("interleaved", func(t *testing.T) {
			env, a := serverStream(t, kind, Config{StreamBuffer: smallStreamBuf, SessionBuffer: smallSessionBuf})
			b := env.open(t, 2, wire.Addr{})
			res := readAllAsync(b)
			bData := pattern(1<<20, 5)
			var w []byte
			for off := 0; off < len(bData); off += 32 << 10 {
				w = append(w, frameBytes(wire.CmdPSH, 1, pattern(32<<10, byte(off)))...)
				w = append(w, frameBytes(wire.CmdPSH, 2, bData[off:off+32<<10])...)
			}
			w = append(w, frameBytes(wire.CmdFIN, 2, nil)...)
			env.p.write(w)
			r := <-res
			if r.err != io.EOF || !bytes.Equal(r.data, bData) {
				t.Fatalf("B read %d bytes, %v", len(r.data), r.err)
			}
			got := env.p.barrier()
			if len(got) != 1 || got[0].cmd != wire.CmdFIN || got[0].sid != 1 {
				t.Fatalf("frames %v, want one FIN 1", got)
			}
			checkOverflowed(t, a)
		})
	})
}

func checkOverflowed(t *testing.T, st *Stream) {
	t.Helper()
	waitDone(t, st.Done(), "overflowed stream")
	if _, err := st.Read(make([]byte, 10)); !errors.Is(err, ErrBufferOverflow) {
		t.Fatalf("stream %d Read = %v, want ErrBufferOverflow", st.ID(), err)
	}
	if !errors.Is(st.Err(), ErrBufferOverflow) {
		t.Fatalf("stream %d Err = %v", st.ID(), st.Err())
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrBufferOverflow) {
		t.Fatalf("stream %d Write = %v, want ErrBufferOverflow", st.ID(), err)
	}
	if n, _ := st.held(); n != 0 {
		t.Fatalf("reset stream %d still holds %d bytes", st.ID(), n)
	}
}

// shrinkTCP makes the kernel buffers small so that backpressure shows after
// little data.
func shrinkTCP(t *testing.T, sc, pc net.Conn) {
	t.Helper()
	for _, c := range []net.Conn{sc, pc} {
		tc := c.(*net.TCPConn)
		if err := tc.SetReadBuffer(16 << 10); err != nil {
			t.Fatal(err)
		}
		if err := tc.SetWriteBuffer(16 << 10); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlowReaderAlone: a stream alone on its session is never reset for a
// slow reader; the read loop stops reading the connection instead, so the
// sender blocks (TCP backpressure), and everything arrives once the reader
// reads.
func TestSlowReaderAlone(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			leakCheck(t)
			sc, pc := tcpPair(t)
			shrinkTCP(t, sc, pc)
			cfg := Config{StreamBuffer: smallStreamBuf, SessionBuffer: smallSessionBuf}
			var (
				sess *Session
				p    *peer
				st   *Stream
			)
			if role == "server" {
				env := startServerOn(t, sc, pc, cfg)
				env.hello(t, "2")
				st = env.open(t, 1, wire.Addr{})
				sess, p = env.sess, env.p
			} else {
				env := startClientOn(t, sc, pc, cfg)
				st = env.open(t, testDst)
				sess, p = env.sess, env.p
			}
			data := pattern(8<<20, 7)
			frames := pshFrames(st.ID(), data, wire.MaxPayload)

			// The write must block: far more than the stream buffer plus the
			// kernel buffers, with nobody reading. A deadline is the only
			// way to see a write that does not finish.
			pc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := pc.Write(frames)
			var ne net.Error
			if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("peer wrote %d of %d bytes, err %v: want the write to block", n, len(frames), err)
			}
			if held, ended := st.held(); ended || held > smallStreamBuf+wire.MaxPayload {
				t.Fatalf("lone stream holds %d bytes (ended %v), want at most its limit plus a frame", held, ended)
			}
			if st.Err() != nil || sess.IsClosed() {
				t.Fatalf("lone stream reset: %v", st.Err())
			}

			// Now read: the rest of the write goes through and all data
			// arrives intact, followed by EOF.
			res := readAllAsync(st)
			pc.SetWriteDeadline(time.Now().Add(testTimeout))
			if _, err := pc.Write(append(frames[n:], frameBytes(wire.CmdFIN, st.ID(), nil)...)); err != nil {
				t.Fatalf("peer write after the reader started: %v", err)
			}
			r := <-res
			if r.err != io.EOF || !bytes.Equal(r.data, data) {
				t.Fatalf("read %d bytes, %v (equal prefix %d); want %d then EOF", len(r.data), r.err, commonPrefix(r.data, data), len(data))
			}
			p.expectQuiet("lone stream") // no FIN: it was never reset
		})
	}
}

// TestSessionBufferBound: many streams, each below its own limit, together
// pass the session's limit; streams are reset so that what the session holds
// stays within SessionBuffer, and the survivors keep their data intact.
func TestSessionBufferBound(t *testing.T) {
	const (
		streamBuf  = 64 << 10
		sessionBuf = 128 << 10
		perStream  = 48 << 10
		chunk      = 16 << 10
		nStreams   = 8
	)
	for _, order := range []string{"stream-by-stream", "round-robin"} {
		t.Run(order, func(t *testing.T) {
			leakCheck(t)
			env := startServer(t, connKinds[0], Config{StreamBuffer: streamBuf, SessionBuffer: sessionBuf})
			env.hello(t, "2")
			sts := map[uint32]*Stream{}
			for sid := uint32(1); sid <= nStreams; sid++ {
				sts[sid] = env.open(t, sid, wire.Addr{})
			}
			send := func(sid uint32, off int) {
				env.p.send(wire.CmdPSH, sid, pattern(perStream, byte(sid))[off:off+chunk])
			}
			fins := map[uint32]bool{}
			check := func(when string) {
				for _, f := range env.p.barrier() {
					if f.cmd != wire.CmdFIN || fins[f.sid] {
						t.Fatalf("%s: unexpected frame %v", when, f)
					}
					fins[f.sid] = true
				}
				if n := env.sess.buffered.Load(); n > sessionBuf {
					t.Fatalf("%s: session holds %d bytes, limit %d", when, n, sessionBuf)
				}
			}
			if order == "stream-by-stream" {
				for sid := uint32(1); sid <= nStreams; sid++ {
					for off := 0; off < perStream; off += chunk {
						send(sid, off)
					}
					check(fmt.Sprintf("after stream %d", sid))
				}
			} else {
				for off := 0; off < perStream; off += chunk {
					for sid := uint32(1); sid <= nStreams; sid++ {
						send(sid, off)
					}
					check(fmt.Sprintf("after round at %d", off))
				}
			}

			var alive, reset []uint32
			total := 0
			for sid, st := range sts {
				switch err := st.Err(); {
				case err == nil:
					alive = append(alive, sid)
					held, _ := st.held()
					total += held
				case errors.Is(err, ErrBufferOverflow):
					reset = append(reset, sid)
					if !fins[sid] {
						t.Errorf("stream %d reset without a FIN to the peer", sid)
					}
				default:
					t.Errorf("stream %d: %v", sid, err)
				}
			}
			sort.Slice(alive, func(i, j int) bool { return alive[i] < alive[j] })
			if len(fins) != len(reset) {
				t.Errorf("FINs for %v, resets %v", fins, reset)
			}
			if total > sessionBuf || int64(total) != env.sess.buffered.Load() {
				t.Fatalf("alive streams hold %d bytes, session accounts %d, limit %d", total, env.sess.buffered.Load(), sessionBuf)
			}
			if len(alive) == 0 || len(reset) < nStreams-sessionBuf/perStream {
				t.Fatalf("alive %v, reset %v", alive, reset)
			}
			// Every survivor has all its data, in order.
			for _, sid := range alive {
				if held, _ := sts[sid].held(); held != perStream {
					t.Fatalf("stream %d alive with %d of %d bytes", sid, held, perStream)
				}
				if got := readN(t, sts[sid], perStream); !bytes.Equal(got, pattern(perStream, byte(sid))) {
					t.Fatalf("stream %d: data corrupted", sid)
				}
			}
			if n := env.sess.buffered.Load(); n != 0 {
				t.Fatalf("session accounts %d bytes after every survivor was read", n)
			}
			// Reset streams are gone for good: their later data is dropped.
			for _, sid := range reset {
				env.p.send(wire.CmdPSH, sid, []byte("late"))
			}
			env.p.expectQuiet("data for reset streams")
		})
	}
}

// TestClientLoneStreamGetsSibling: a client stream alone on its session whose
// reader is slow holds the read loop (backpressure). When the caller opens a
// second stream on that session, the second must not be starved: the slow
// stream is reset once it is no longer alone.
func TestClientLoneStreamGetsSibling(t *testing.T) {
	leakCheck(t)
	sc, pc := tcpPair(t)
	shrinkTCP(t, sc, pc)
	env := startClientOn(t, sc, pc, Config{StreamBuffer: smallStreamBuf, SessionBuffer: smallSessionBuf})
	slow := env.open(t, testDst)

	// Fill the slow stream until the read loop holds (the peer's write
	// blocks), as in TestSlowReaderAlone.
	frames := pshFrames(slow.ID(), pattern(8<<20, 1), wire.MaxPayload)
	pc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := pc.Write(frames)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("peer write = %d, %v; want it to block", n, err)
	}
	// The sibling opens; then the peer finishes the frame its deadline cut
	// and sends the sibling some data. The peer's writes may block while
	// the read loop holds, so they run in the background. The FIN for the
	// slow stream may come before or after the sibling's SYN.
	fast, err := env.sess.OpenStream(t.Context(), testDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	sawFIN := false
	for _, want := range []wire.Cmd{wire.CmdSYN, wire.CmdPSH} {
		f := env.p.next()
		if f.cmd == wire.CmdFIN && f.sid == slow.ID() && !sawFIN {
			sawFIN = true
			f = env.p.next()
		}
		if f.cmd != want || f.sid != fast.ID() {
			t.Fatalf("got %v, want %v %d", f, want, fast.ID())
		}
	}
	writeDone := make(chan error, 1)
	go func() {
		pc.SetWriteDeadline(time.Now().Add(testTimeout))
		var err error
		if cut := n % wire.MaxFrameLen; cut != 0 {
			_, err = pc.Write(frames[n : n+wire.MaxFrameLen-cut])
		}
		if err == nil {
			_, err = pc.Write(frameBytes(wire.CmdPSH, fast.ID(), []byte("sibling data")))
		}
		writeDone <- err
	}()
	got := make(chan readResult, 1)
	go func() {
		fast.SetReadDeadline(time.Now().Add(testTimeout))
		b := make([]byte, 12)
		_, err := io.ReadFull(fast, b)
		got <- readResult{b, err}
	}()
	r := <-got
	if r.err != nil || string(r.data) != "sibling data" {
		t.Errorf("sibling read %q, %v: it is starved by the slow lone stream", r.data, r.err)
	}
	if err := waitErr(t, writeDone, "peer write"); err != nil {
		t.Errorf("peer write: %v", err)
	}
	if t.Failed() {
		env.sess.Close()
		return
	}
	// The slow stream paid for it: reset, and the peer told with FIN.
	checkOverflowed(t, slow)
	got2 := env.p.barrier()
	if !sawFIN && (len(got2) != 1 || got2[0].cmd != wire.CmdFIN || got2[0].sid != slow.ID()) {
		t.Fatalf("frames %v, want one FIN %d", got2, slow.ID())
	}
	if sawFIN && len(got2) != 0 {
		t.Fatalf("frames %v after the FIN, want none", got2)
	}
}
