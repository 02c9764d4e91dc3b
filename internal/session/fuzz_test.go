package session

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/wire"
	"go.uber.org/goleak"
)

// fuzzBound is how long a session may take to end once its input is closed.
const fuzzBound = 5 * time.Second

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func addrBytes(a wire.Addr) []byte {
	b, err := wire.AppendAddr(nil, a, wire.SOCKS)
	if err != nil {
		panic(err)
	}
	return b
}

// outputChecker parses what a session writes, frame by frame, and reports
// frames it must never send. A truncated last frame is allowed: the
// connection may close in the middle of a write.
type outputChecker struct {
	allowed map[wire.Cmd]bool
	frames  []frame
	bad     []frame
}

func (c *outputChecker) drain(r io.Reader) {
	var h wire.Header
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		data := make([]byte, h.Length())
		if _, err := io.ReadFull(r, data); err != nil {
			return
		}
		f := frame{h.Cmd(), h.StreamID(), data}
		if f.cmd != wire.CmdWaste {
			c.frames = append(c.frames, f)
		}
		if !c.allowed[f.cmd] {
			c.bad = append(c.bad, f)
		}
		if len(c.frames) > 1<<16 {
			c.frames = c.frames[:0] // only the checks matter for long runs
		}
	}
}

// serverViewOfVersion replays the input the way a server reads it and
// returns the version of the first Settings frame, or 0 if the server never
// gets one before a SYN, the end of the input or a truncated frame.
func serverViewOfVersion(in []byte) int {
	for len(in) >= wire.HeaderLen {
		var h wire.Header
		copy(h[:], in)
		in = in[wire.HeaderLen:]
		if h.Length() > len(in) {
			return 0
		}
		body := in[:h.Length()]
		in = in[h.Length():]
		switch h.Cmd() {
		case wire.CmdSettings:
			return wire.ParseSettings(body).Version()
		case wire.CmdSYN, wire.CmdAlert:
			return 0
		}
	}
	return 0
}

func serverSeeds() [][]byte {
	def := padding.Default()
	v2 := frameBytes(wire.CmdSettings, 0, settingsBody("v", "2", "client", "fuzz/1", "padding-md5", def.MD5()))
	v1 := frameBytes(wire.CmdSettings, 0, settingsBody("v", "1", "padding-md5", "x"))
	open := func(sid uint32) []byte {
		return cat(frameBytes(wire.CmdSYN, sid, nil), frameBytes(wire.CmdPSH, sid, addrBytes(testDst)))
	}
	return [][]byte{
		nil,
		v2,
		cat(v2, open(1), frameBytes(wire.CmdPSH, 1, []byte("GET / HTTP/1.1\r\n\r\n")), frameBytes(wire.CmdFIN, 1, nil)),
		cat(v1, open(1), frameBytes(wire.CmdPSH, 1, []byte("data")), frameBytes(wire.CmdFIN, 1, nil)),
		cat(v2, open(1), open(2), open(3), frameBytes(wire.CmdFIN, 2, nil), frameBytes(wire.CmdPSH, 3, make([]byte, 5000))),
		cat(frameBytes(wire.CmdSYN, 1, nil), v2),
		cat(v2, frameBytes(wire.CmdHeartRequest, 7, nil), frameBytes(wire.CmdHeartResponse, 0, nil)),
		cat(v2, rawFrame(11, 0, 0), rawFrame(200, 1, 300), rawFrame(0, 0, 100), open(1)),
		cat(v2, open(1), pshFrames(1, make([]byte, 20000), 4000), open(2), pshFrames(2, make([]byte, 9000), 3000)),
		cat(v2, frameBytes(wire.CmdAlert, 0, []byte("bye"))),
		cat(v2, open(1), rawFrame(byte(wire.CmdPSH), 1, 100)[:50]), // truncated
		cat(v2, frameBytes(wire.CmdSettings, 0, []byte("v=1")), open(4), frameBytes(wire.CmdSYN, 4, nil)),
		cat(v2, open(0), frameBytes(wire.CmdFIN, 0, nil), frameBytes(wire.CmdSYNACK, 1, []byte("x"))),
	}
}

// FuzzServerSession feeds arbitrary bytes, as the client side, to a server
// session, and drains what it writes. The session must not panic, must end
// soon after its input is closed, must leak no goroutine and no buffer
// accounting, and must never send a frame a server does not send (nor SYNACK
// or ServerSettings to a v1 client).
func FuzzServerSession(f *testing.F) {
	for _, s := range serverSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ignore := goleak.IgnoreCurrent()
		sc, pc := net.Pipe()
		var handlers sync.WaitGroup
		sess := NewServer(sc, Config{
			StreamBuffer:  4 << 10,
			SessionBuffer: 16 << 10,
			MaxStreams:    8,
			OnStream: func(st *Stream) {
				handlers.Add(1)
				go func() {
					defer handlers.Done()
					defer st.Close()
					if _, err := wire.ReadAddr(st, wire.SOCKS); err != nil {
						st.SendSYNACK(err)
						return
					}
					st.SendSYNACK(nil)
					st.Write([]byte("hello"))
					io.Copy(io.Discard, st)
				}()
			},
		})
		served := make(chan error, 1)
		go func() { served <- sess.Serve() }()

		out := &outputChecker{allowed: map[wire.Cmd]bool{
			wire.CmdPSH: true, wire.CmdFIN: true, wire.CmdAlert: true,
			wire.CmdUpdatePaddingScheme: true, wire.CmdSYNACK: true,
			wire.CmdHeartResponse: true, wire.CmdServerSettings: true,
		}}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			out.drain(pc)
		}()

		feedSession(t, pc, in, sess, served, drained, &handlers, "server", out)
		if v := serverViewOfVersion(in); v < 2 {
			for _, fr := range out.frames {
				if fr.cmd == wire.CmdSYNACK || fr.cmd == wire.CmdServerSettings {
					t.Fatalf("server sent %v to a client of version %d", fr, v)
				}
			}
		}
		if n := sess.buffered.Load(); n != 0 {
			t.Fatalf("session accounts %d buffered bytes after every stream closed", n)
		}
		goleak.VerifyNone(t, ignore)
	})
}

func clientSeeds() [][]byte {
	valid := []byte("stop=2\n0=1-2\n1=3-4")
	return [][]byte{
		nil,
		frameBytes(wire.CmdServerSettings, 0, []byte("v=2")),
		cat(frameBytes(wire.CmdServerSettings, 0, []byte("v=2")), frameBytes(wire.CmdSYNACK, 1, nil),
			frameBytes(wire.CmdPSH, 1, []byte("HTTP/1.1 200 OK\r\n\r\n")), frameBytes(wire.CmdFIN, 1, nil)),
		cat(frameBytes(wire.CmdSYNACK, 1, []byte("connection refused")), frameBytes(wire.CmdPSH, 1, []byte("x"))),
		frameBytes(wire.CmdAlert, 0, []byte("bad client")),
		cat(frameBytes(wire.CmdUpdatePaddingScheme, 0, valid), frameBytes(wire.CmdUpdatePaddingScheme, 0, []byte("stop=x"))),
		cat(frameBytes(wire.CmdHeartRequest, 1, nil), frameBytes(wire.CmdHeartResponse, 0, nil)),
		cat(rawFrame(11, 0, 0), rawFrame(200, 1, 300), rawFrame(0, 0, 100), frameBytes(wire.CmdPSH, 1, []byte("ok"))),
		cat(frameBytes(wire.CmdSYN, 2, nil), frameBytes(wire.CmdSettings, 0, []byte("v=2")), frameBytes(wire.CmdPSH, 9, []byte("x"))),
		pshFrames(1, make([]byte, 30000), 5000),
		rawFrame(byte(wire.CmdPSH), 1, 200)[:100],
	}
}

// FuzzClientSession feeds arbitrary bytes, as the server side, to a client
// session that has one stream open.
func FuzzClientSession(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ignore := goleak.IgnoreCurrent()
		sc, pc := net.Pipe()
		sess := NewClient(sc, Config{
			StreamBuffer:  4 << 10,
			SessionBuffer: 16 << 10,
			OnScheme:      func(s *padding.Scheme) { _ = s.Stop() },
		})
		out := &outputChecker{allowed: map[wire.Cmd]bool{
			wire.CmdWaste: true, wire.CmdSYN: true, wire.CmdPSH: true, wire.CmdFIN: true,
			wire.CmdSettings: true, wire.CmdHeartRequest: true, wire.CmdHeartResponse: true,
		}}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			out.drain(pc)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), fuzzBound)
		defer cancel()
		st, err := sess.OpenStream(ctx, testDst, nil)
		if err != nil {
			t.Fatalf("OpenStream: %v", err)
		}
		var user sync.WaitGroup
		user.Add(1)
		go func() {
			defer user.Done()
			defer st.Close()
			st.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			io.Copy(io.Discard, st)
		}()

		feedSession(t, pc, in, sess, sess.Done(), drained, &user, "client", out)
		if n := sess.buffered.Load(); n != 0 {
			t.Fatalf("session accounts %d buffered bytes after its streams closed", n)
		}
		goleak.VerifyNone(t, ignore)
	})
}

// feedSession writes in to the peer's end pc and closes it, then checks
// that the session reads all of it, ends (ended yields) within fuzzBound,
// that its stream goroutines (wg) finish and that who (client or server)
// sent no frame it must not. drained is closed when out has read all.
func feedSession[T any](t *testing.T, pc net.Conn, in []byte, sess *Session, ended <-chan T, drained <-chan struct{},
	wg *sync.WaitGroup, who string, out *outputChecker) {
	t.Helper()
	pc.SetWriteDeadline(time.Now().Add(fuzzBound))
	_, werr := pc.Write(in)
	if ne, ok := werr.(net.Error); ok && ne.Timeout() {
		t.Fatalf("session stopped reading its input")
	}
	pc.Close()
	select {
	case <-ended:
	case <-time.After(fuzzBound):
		t.Fatalf("session did not end within %v of its input closing", fuzzBound)
	}
	sess.Close()
	<-drained
	waitGroupBounded(t, wg, who+" stream goroutines")
	if len(out.bad) > 0 {
		t.Fatalf("%s sent frames it must not: %v", who, out.bad)
	}
}

func waitGroupBounded(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	if !returnsWithin(wg.Wait, fuzzBound) {
		t.Fatalf("%s did not finish within %v of the session ending", what, fuzzBound)
	}
}

// returnsWithin runs f on a goroutine of its own and reports whether it
// returned within d (it is left running when not).
func returnsWithin(f func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
