package session

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// junk is a run of frames a session must skip by their length: unknown
// commands of several sizes, Waste, and PSH for streams that do not exist.
func junk() []byte {
	var b []byte
	for _, f := range []struct {
		cmd byte
		sid uint32
		n   int
	}{
		{11, 0, 0},
		{11, 1, 5},
		{200, 1, 1},
		{200, 0xffffffff, 65535},
		{255, 7, 3},
		{byte(wire.CmdWaste), 0, 0},
		{byte(wire.CmdWaste), 0, 100},
		{byte(wire.CmdWaste), 1, 65535},
		{byte(wire.CmdPSH), 99, 17}, // unknown stream
		{byte(wire.CmdPSH), 0, 4},   // stream 0
		{byte(wire.CmdFIN), 98, 0},  // FIN for an unknown stream
		{12, 1, 2},
		{byte(wire.CmdHeartResponse), 0, 6}, // data where none is expected
	} {
		b = append(b, rawFrame(f.cmd, f.sid, f.n)...)
	}
	return b
}

func TestSkipUnknownFrames(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("server", func(t *testing.T) {
			env, st := serverStream(t, kind, Config{})
			var b []byte
			b = append(b, frameBytes(wire.CmdPSH, 1, []byte("hello "))...)
			b = append(b, junk()...)
			// commands that only flow server -> client, sent to the server
			b = append(b, frameBytes(wire.CmdSYNACK, 1, []byte("x"))...)
			b = append(b, frameBytes(wire.CmdServerSettings, 0, []byte("v=9"))...)
			b = append(b, frameBytes(wire.CmdUpdatePaddingScheme, 0, []byte("stop=1"))...)
			b = append(b, frameBytes(wire.CmdSettings, 0, []byte("v=1"))...) // a second Settings
			b = append(b, frameBytes(wire.CmdPSH, 1, []byte("world"))...)
			env.p.write(b)
			if got := readN(t, st, 11); string(got) != "hello world" {
				t.Fatalf("read %q", got)
			}
			env.p.expectQuiet("junk")
			if v := env.sess.PeerVersion(); v != 2 {
				t.Fatalf("PeerVersion = %d after junk", v)
			}
			if env.sess.IsClosed() || len(env.streams) != 0 {
				t.Fatal("junk closed the session or opened streams")
			}
		})
		t.Run("client", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			st := env.open(t, testDst)
			var b []byte
			b = append(b, frameBytes(wire.CmdPSH, st.ID(), []byte("hello "))...)
			b = append(b, junk()...)
			// commands that only flow client -> server, sent to the client
			b = append(b, frameBytes(wire.CmdSYN, 5, nil)...)
			b = append(b, rawFrame(byte(wire.CmdSYN), 6, 9)...)
			b = append(b, frameBytes(wire.CmdSettings, 0, []byte("v=2"))...)
			b = append(b, frameBytes(wire.CmdPSH, st.ID(), []byte("world"))...)
			env.p.write(b)
			if got := readN(t, st, 11); string(got) != "hello world" {
				t.Fatalf("read %q", got)
			}
			env.p.expectQuiet("junk")
			if env.sess.IsClosed() || env.sess.NumStreams() != 1 {
				t.Fatal("junk closed the session or changed its streams")
			}
		})
	})
}

func TestPeerFIN(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		env, st := serverStream(t, kind, Config{})
		env.p.write(append(frameBytes(wire.CmdPSH, 1, []byte("last words")),
			frameBytes(wire.CmdFIN, 1, nil)...))
		got, err := readUntilErr(t, st)
		if string(got) != "last words" || err != io.EOF {
			t.Fatalf("read %q, %v; want the data then io.EOF", got, err)
		}
		// EOF stays EOF.
		if n, err := st.Read(make([]byte, 4)); n != 0 || err != io.EOF {
			t.Fatalf("second Read = %d, %v", n, err)
		}
		if _, err := st.Write([]byte("too late")); !errors.Is(err, ErrClosedByPeer) {
			t.Fatalf("Write after FIN = %v, want ErrClosedByPeer", err)
		}
		if !errors.Is(st.Err(), io.EOF) {
			t.Fatalf("Err = %v", st.Err())
		}
		waitDone(t, st.Done(), "Done after FIN")
		// No FIN in answer, none on Close, and data for the stream is dropped.
		env.p.send(wire.CmdPSH, 1, []byte("ghost"))
		env.p.expectQuiet("FIN received")
		st.Close()
		st.Close()
		env.p.expectQuiet("Close after the peer's FIN")
		if n := env.sess.NumStreams(); n != 0 {
			t.Fatalf("NumStreams = %d", n)
		}
		if _, err := st.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want ErrStreamClosed", err)
		}
	})
}

// TestPeerFINWriteTo: WriteTo returns nil at the peer's FIN, having copied
// everything.
func TestPeerFINWriteTo(t *testing.T) {
	env, st := serverStream(t, connKinds[0], Config{})
	data := pattern(300000, 3)
	env.p.write(append(pshFrames(1, data, 65535), frameBytes(wire.CmdFIN, 1, nil)...))
	// A partial Read first, so that WriteTo starts inside a chunk.
	head := readN(t, st, 10)
	var out bytes.Buffer
	st.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := st.WriteTo(&out)
	got := append(head, out.Bytes()...)
	if err != nil || n != int64(len(data)-10) || !bytes.Equal(got, data) {
		t.Fatalf("WriteTo = %d, %v (equal prefix %d)", n, err, commonPrefix(got, data))
	}
}

func TestLocalClose(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("server", func(t *testing.T) {
			env, st := serverStream(t, kind, Config{})
			env.p.send(wire.CmdPSH, 1, []byte("buffered"))
			readN(t, st, 1)
			checkLocalClose(t, env.p, st)
			// The session lives on and takes new streams.
			st2 := env.open(t, 2, wire.Addr{})
			env.p.send(wire.CmdPSH, 2, []byte("x"))
			readN(t, st2, 1)
		})
		t.Run("client", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			st := env.open(t, testDst)
			checkLocalClose(t, env.p, st)
			st2 := env.open(t, testDst)
			if _, err := st2.Write([]byte("y")); err != nil {
				t.Fatal(err)
			}
			env.p.expect(wire.CmdPSH, st2.ID())
		})
	})
}

func checkLocalClose(t *testing.T, p *peer, st *Stream) {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := p.barrier()
	if len(got) != 1 || got[0].cmd != wire.CmdFIN || got[0].sid != st.ID() || len(got[0].data) != 0 {
		t.Fatalf("frames after Close: %v, want exactly one FIN %d", got, st.ID())
	}
	st.Close()
	p.expectQuiet("second Close")
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrStreamClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrStreamClosed", err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Write after Close = %v, want ErrStreamClosed", err)
	}
	// Data and FIN from the peer for the closed stream are dropped quietly.
	p.send(wire.CmdPSH, st.ID(), []byte("late"))
	p.send(wire.CmdFIN, st.ID(), nil)
	p.expectQuiet("data for a closed stream")
	select {
	case <-st.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}

func TestSessionCloseSendsNoFIN(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("server", func(t *testing.T) {
			leakCheck(t)
			env := startServer(t, kind, Config{})
			env.hello(t, "2")
			var sts []*Stream
			for sid := uint32(1); sid <= 3; sid++ {
				sts = append(sts, env.open(t, sid, wire.Addr{}))
			}
			env.p.send(wire.CmdPSH, 2, []byte("pending"))
			env.p.expectQuiet("setup")
			blocked := readAllAsync(sts[0])
			env.sess.Close()
			checkSessionClosed(t, env.p, sts, blocked)
		})
		t.Run("client", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			var sts []*Stream
			for range 3 {
				sts = append(sts, env.open(t, testDst))
			}
			blocked := readAllAsync(sts[0])
			env.sess.Close()
			checkSessionClosed(t, env.p, sts, blocked)
			if _, err := env.sess.OpenStream(t.Context(), testDst, nil); !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("OpenStream after Close = %v", err)
			}
			if err := waitErr(t, env.closed, "OnClose"); err != nil {
				t.Fatalf("OnClose(%v) for a local Close, want nil", err)
			}
		})
	})
}

func checkSessionClosed(t *testing.T, p *peer, sts []*Stream, blocked <-chan readResult) {
	t.Helper()
	if got := p.expectEnd(); len(got) != 0 {
		t.Fatalf("frames after the session closed: %v, want none (no FINs)", got)
	}
	select {
	case r := <-blocked:
		if !errors.Is(r.err, ErrSessionClosed) {
			t.Fatalf("blocked Read = %v, want ErrSessionClosed", r.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("blocked Read did not return after the session closed")
	}
	for _, st := range sts {
		waitDone(t, st.Done(), "stream Done")
		if _, err := st.Read(make([]byte, 8)); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("stream %d Read = %v, want ErrSessionClosed", st.ID(), err)
		}
		if _, err := st.Write([]byte("x")); !errors.Is(err, ErrSessionClosed) {
			t.Errorf("stream %d Write = %v, want ErrSessionClosed", st.ID(), err)
		}
		if err := st.SendSYNACK(nil); err != nil && !errors.Is(err, ErrSessionClosed) {
			t.Errorf("stream %d SendSYNACK = %v", st.ID(), err)
		}
		st.Close() // no FIN either: the connection is gone
	}
}

func TestReadDeadline(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		env, st := serverStream(t, kind, Config{})

		// A deadline in the past fails at once.
		st.SetReadDeadline(time.Now().Add(-time.Second))
		checkTimeout(t, st)
		// A deadline that passes while Read waits.
		st.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		checkTimeout(t, st)
		// Buffered data is returned even after the deadline.
		env.p.send(wire.CmdPSH, 1, []byte("data"))
		env.p.expectQuiet("data")
		st.SetReadDeadline(time.Now().Add(-time.Second))
		if n, err := st.Read(make([]byte, 4)); n != 4 || err != nil {
			t.Fatalf("Read with buffered data past the deadline = %d, %v", n, err)
		}
		checkTimeout(t, st)
		// Setting a deadline wakes a Read that is already waiting (or, if
		// the goroutine is late, makes it fail at once: either way it must
		// time out now, not later).
		st.SetReadDeadline(time.Time{})
		blocked := make(chan error, 1)
		go func() {
			_, err := st.Read(make([]byte, 1))
			blocked <- err
		}()
		st.SetReadDeadline(time.Now())
		if err := waitErr(t, blocked, "Read woken by a deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read woken by a deadline = %v", err)
		}
		// Clearing the deadline makes Read wait again for data.
		st.SetReadDeadline(time.Time{})
		res := readAllAsync(st)
		env.p.send(wire.CmdPSH, 1, []byte("more"))
		env.p.send(wire.CmdFIN, 1, nil)
		r := <-res
		if string(r.data) != "more" || r.err != io.EOF {
			t.Fatalf("read %q, %v", r.data, r.err)
		}
		// The stream and session survived the timeouts.
		if env.sess.IsClosed() {
			t.Fatal("session closed by a read timeout")
		}
		// A write deadline in the past fails Write without sending.
		st2 := env.open(t, 2, wire.Addr{})
		st2.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := st2.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write past its deadline = %v", err)
		}
		env.p.expectQuiet("Write past its deadline")
		st2.SetDeadline(time.Time{})
		if _, err := st2.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		env.p.expect(wire.CmdPSH, 2)
	})
}

func checkTimeout(t *testing.T, st *Stream) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		done <- err
	}()
	err := waitErr(t, done, "Read with a deadline")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error %v is not a net.Error with Timeout()", err)
	}
	if _, werr := st.WriteTo(io.Discard); !errors.Is(werr, os.ErrDeadlineExceeded) {
		t.Fatalf("WriteTo = %v, want os.ErrDeadlineExceeded", werr)
	}
}

func TestLargeWrites(t *testing.T) {
	forEachConn(t, func(t *testing.T, kind connKind) {
		t.Run("server-writes", func(t *testing.T) {
			env, st := serverStream(t, kind, Config{})
			checkLargeWrite(t, env.p, st, 1<<20)
			checkLargeWrite(t, env.p, st, 65536)
			checkLargeWrite(t, env.p, st, 65535)
			checkLargeWrite(t, env.p, st, 3*65529+1)
		})
		t.Run("client-writes", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{})
			st := env.open(t, testDst)
			checkLargeWrite(t, env.p, st, 1<<20)
			checkLargeWrite(t, env.p, st, 200000)
		})
		t.Run("shaped-client-writes", func(t *testing.T) {
			leakCheck(t)
			env := startClient(t, kind, Config{Scheme: mustScheme(t, shapeScheme)})
			st := env.open(t, testDst)
			checkLargeWrite(t, env.p, st, 1<<20)
		})
		t.Run("server-reads", func(t *testing.T) {
			env, st := serverStream(t, kind, Config{})
			data := pattern(1<<20, 9)
			res := readAllAsync(st)
			env.p.write(append(pshFrames(1, data, 65535), frameBytes(wire.CmdFIN, 1, nil)...))
			r := <-res
			if r.err != io.EOF || !bytes.Equal(r.data, data) {
				t.Fatalf("read %d bytes, %v (equal prefix %d)", len(r.data), r.err, commonPrefix(r.data, data))
			}
		})
	})
}

func checkLargeWrite(t *testing.T, p *peer, st *Stream, size int) {
	t.Helper()
	data := pattern(size, byte(size))
	res := make(chan error, 1)
	go func() {
		n, err := st.Write(data)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
		res <- err
	}()
	var got []byte
	frames := 0
	for len(got) < len(data) {
		f := p.expect(wire.CmdPSH, st.ID())
		if len(f.data) == 0 || len(f.data) > wire.MaxPayload {
			t.Fatalf("PSH of %d bytes", len(f.data))
		}
		got = append(got, f.data...)
		frames++
	}
	if err := waitErr(t, res, "Write"); err != nil {
		t.Fatalf("Write(%d): %v", size, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("Write(%d): peer got %d bytes, equal prefix %d", size, len(got), commonPrefix(got, data))
	}
	if min := (size + wire.MaxPayload - 1) / wire.MaxPayload; frames < min {
		t.Fatalf("Write(%d) in %d frames", size, frames)
	}
	p.expectQuiet("after a large write")
}
