package session

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"github.com/anytls-suite/anytls/internal/wire"
)

// socketPair returns the two ends of a loopback TCP connection with small
// kernel buffers, so that a writer meets a full socket quickly.
func socketPair(t *testing.T) (w, r *net.TCPConn) {
	t.Helper()
	a, b := tcpPair(t)
	w, r = a.(*net.TCPConn), b.(*net.TCPConn)
	w.SetWriteBuffer(16 << 10)
	// not smaller: a receive window under the loopback MSS can stall the
	// connection on the kernel's zero-window probe timer
	r.SetReadBuffer(128 << 10)
	return w, r
}

type writeToResult struct {
	n   int64
	err error
}

func writeToAsync(st *Stream, w io.Writer) <-chan writeToResult {
	ch := make(chan writeToResult, 1)
	go func() {
		n, err := st.WriteTo(w)
		ch <- writeToResult{n, err}
	}()
	return ch
}

// startDirect opens stream 1 on a server session and runs its WriteTo on a
// fresh socket; it returns the socket's reading end too.
func startDirect(t *testing.T) (*serverEnv, *Stream, *net.TCPConn, *net.TCPConn, <-chan writeToResult) {
	t.Helper()
	env, st := serverStream(t, connKinds[1], Config{})
	w, r := socketPair(t)
	return env, st, w, r, writeToAsync(st, w)
}

func waitWriteTo(t *testing.T, res <-chan writeToResult) writeToResult {
	t.Helper()
	select {
	case wr := <-res:
		return wr
	case <-time.After(testTimeout):
		t.Fatal("WriteTo did not return")
	}
	return writeToResult{}
}

// sendSlowly has the peer send data and FIN on stream 1 while r, the socket
// the stream is written to, is read in small pieces (so that it is often
// full), and checks that all of data arrives in order.
func sendSlowly(t *testing.T, env *serverEnv, r *net.TCPConn, data []byte) {
	t.Helper()
	sent := make(chan error, 1)
	go func() {
		sent <- env.p.tryWrite(append(pshFrames(1, data, 65535), frameBytes(wire.CmdFIN, 1, nil)...))
	}()
	r.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, 0, len(data))
	buf := make([]byte, 3000)
	for len(got) < len(data) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("data differs from byte %d", commonPrefix(got, data))
	}
	if err := waitErr(t, sent, "peer write"); err != nil {
		t.Fatal(err)
	}
}

func sunk(st *Stream) int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sunk
}

// TestDirectDeliveryKeepsOrder: WriteTo on a socket whose reader is slower
// than the sender. The read loop writes what the socket takes, the rest is
// queued and written by WriteTo, and the bytes arrive whole and in order.
func TestDirectDeliveryKeepsOrder(t *testing.T) {
	env, st, _, r, res := startDirect(t)

	data := pattern(6<<20, 7)
	sendSlowly(t, env, r, data)
	if wr := waitWriteTo(t, res); wr.err != nil || wr.n != int64(len(data)) {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", wr.n, wr.err, len(data))
	}
	direct := sunk(st)
	if direct == 0 || direct == int64(len(data)) {
		t.Fatalf("read loop wrote %d of %d bytes: want both paths used", direct, len(data))
	}
	t.Logf("read loop wrote %d of %d bytes directly", direct, len(data))
}

// TestDirectDeliveryIdleSocket: with an idle reader, every frame goes
// straight to the socket from the read loop.
func TestDirectDeliveryIdleSocket(t *testing.T) {
	env, st, _, r, res := startDirect(t)
	r.SetReadDeadline(time.Now().Add(testTimeout))
	// Message 0 arrives once WriteTo runs (by either path): from then on
	// the socket is known to the read loop.
	for i := range 21 {
		if i == 1 {
			if n := sunk(st); n != 0 && n != 1000 {
				t.Fatalf("read loop wrote %d bytes of message 0", n)
			}
		}
		msg := pattern(1000, byte(i))
		env.p.send(wire.CmdPSH, 1, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: %v", i, err)
		}
		// WriteTo may still be finishing a write of its own (message 0):
		// the next message goes straight out once it has
		waitFor(t, "the stream to be idle", func() bool {
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.n == 0 && !st.sinking
		})
	}
	if n := sunk(st); n < 20*1000 {
		t.Fatalf("read loop wrote %d bytes directly, want at least messages 1-20 (20000)", n)
	}
	env.p.send(wire.CmdFIN, 1, nil)
	if wr := waitWriteTo(t, res); wr.err != nil || wr.n != 21*1000 {
		t.Fatalf("WriteTo = %d, %v", wr.n, wr.err)
	}
}

// TestDirectDeliveryStuckSocket: a socket that is never read cannot hold up
// the read loop: a sibling stream gets all its data, and the stuck stream
// is reset once its buffer is full.
func TestDirectDeliveryStuckSocket(t *testing.T) {
	env, stuck := serverStream(t, connKinds[1], Config{StreamBuffer: 256 << 10})
	other := env.open(t, 3, wire.Addr{})
	w, _ := socketPair(t)
	res := writeToAsync(stuck, w)
	otherData := pattern(512<<10, 9)
	got := readAllAsync(other)

	b := pshFrames(1, pattern(2<<20, 1), 16384)
	b = append(b, pshFrames(3, otherData, 16384)...)
	b = append(b, frameBytes(wire.CmdFIN, 3, nil)...)
	if err := env.p.tryWrite(b); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != io.EOF || !bytes.Equal(r.data, otherData) {
			t.Fatalf("sibling: %d bytes, %v", len(r.data), r.err)
		}
	case <-time.After(testTimeout):
		t.Fatal("sibling stream stalled behind a stuck socket")
	}
	waitDone(t, stuck.Done(), "stuck stream's reset")
	if !errors.Is(stuck.Err(), ErrBufferOverflow) {
		t.Fatalf("stuck stream ended with %v, want ErrBufferOverflow", stuck.Err())
	}
	w.Close() // WriteTo may be blocked writing to it, as any writer would be
	if wr := waitWriteTo(t, res); wr.err == nil {
		t.Fatalf("stuck stream's WriteTo = %d, nil; want an error", wr.n)
	}
}

// TestDirectDeliveryWriteError: when the socket fails under the read loop's
// write, WriteTo returns that write error and the session carries on.
func TestDirectDeliveryWriteError(t *testing.T) {
	env, st, _, r, res := startDirect(t)
	r.SetLinger(0)
	r.Close() // the reader resets the connection
	var wr writeToResult
	for i := 0; ; i++ {
		env.p.send(wire.CmdPSH, 1, pattern(1000, 1))
		select {
		case wr = <-res:
		case <-time.After(10 * time.Millisecond):
			if i < 1000 {
				continue
			}
			t.Fatal("WriteTo did not report the failed socket")
		}
		break
	}
	var op *net.OpError
	if !errors.As(wr.err, &op) || op.Op != "write" ||
		!(errors.Is(wr.err, syscall.ECONNRESET) || errors.Is(wr.err, syscall.EPIPE)) {
		t.Fatalf("WriteTo = %d, %v; want a write error (reset or broken pipe)", wr.n, wr.err)
	}
	st.Close()
	env.p.expect(wire.CmdFIN, 1)
	other := env.open(t, 3, wire.Addr{})
	sendAndRead(t, env.p, other, "still here")
}

// deliverEvents records Deliver's callbacks.
type deliverEvents struct {
	writeErrs chan error
	ends      chan error
}

func deliver(t *testing.T, st *Stream, w io.Writer) *deliverEvents {
	t.Helper()
	ev := &deliverEvents{writeErrs: make(chan error, 10), ends: make(chan error, 10)}
	if !st.Deliver(w, func(err error) { ev.writeErrs <- err }, func(err error) { ev.ends <- err }) {
		t.Fatal("Deliver refused a TCP socket")
	}
	return ev
}

func (ev *deliverEvents) end(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ev.ends:
		select {
		case again := <-ev.ends:
			t.Fatalf("onEnd called twice: %v, then %v", err, again)
		default:
		}
		return err
	case <-time.After(testTimeout):
		t.Fatal("onEnd was not called")
	}
	return nil
}

// TestDeliverSlowSocket: Deliver to a socket read slowly: everything arrives
// in order, onEnd reports the FIN after the last byte was written, and no
// goroutine is left behind.
func TestDeliverSlowSocket(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	w, r := socketPair(t)
	ev := deliver(t, st, w)
	data := pattern(6<<20, 5)
	sendSlowly(t, env, r, data)
	if err := ev.end(t); err != io.EOF {
		t.Fatalf("onEnd(%v), want io.EOF", err)
	}
	if len(ev.writeErrs) != 0 {
		t.Fatalf("onWriteErr(%v)", <-ev.writeErrs)
	}
	if n := sunk(st); n == 0 || n == int64(len(data)) {
		t.Fatalf("read loop wrote %d of %d bytes: want both paths used", n, len(data))
	}
}

// TestDeliverWriteError: a failed socket is reported once, what follows is
// dropped, and onEnd still comes at the stream's end.
func TestDeliverWriteError(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	w, r := socketPair(t)
	r.SetLinger(0)
	r.Close()
	ev := deliver(t, st, w)
	var werr error
	for i := 0; werr == nil; i++ {
		env.p.send(wire.CmdPSH, 1, pattern(1000, 1))
		select {
		case werr = <-ev.writeErrs:
		case <-time.After(10 * time.Millisecond):
			if i > 1000 {
				t.Fatal("onWriteErr not called for a reset socket")
			}
		}
	}
	if !(errors.Is(werr, syscall.ECONNRESET) || errors.Is(werr, syscall.EPIPE)) {
		t.Fatalf("onWriteErr(%v), want reset or broken pipe", werr)
	}
	env.p.write(pshFrames(1, pattern(100000, 2), 30000)) // dropped
	env.p.send(wire.CmdFIN, 1, nil)
	if err := ev.end(t); err != io.EOF {
		t.Fatalf("onEnd(%v), want io.EOF", err)
	}
	if len(ev.writeErrs) != 0 {
		t.Fatal("onWriteErr called twice")
	}
	if n := env.sess.buffered.Load(); n != 0 {
		t.Fatalf("session still counts %d buffered bytes", n)
	}
}

// TestDeliverAfterEnd: data and FIN that arrived before Deliver are written,
// then onEnd follows; a stream reset with data queued reports its error.
func TestDeliverAfterEnd(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	env.p.send(wire.CmdPSH, 1, []byte("early"))
	env.p.send(wire.CmdFIN, 1, nil)
	waitDone(t, st.Done(), "FIN")
	w, r := socketPair(t)
	ev := deliver(t, st, w)
	if err := ev.end(t); err != io.EOF {
		t.Fatalf("onEnd(%v), want io.EOF", err)
	}
	r.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, 5)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "early" {
		t.Fatalf("read %q, %v", got, err)
	}

	other := env.open(t, 3, wire.Addr{})
	w2, _ := socketPair(t)
	ev2 := deliver(t, other, w2)
	other.Close()
	if err := ev2.end(t); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("onEnd(%v) after Close, want ErrStreamClosed", err)
	}
}

// TestDeliverIdleStreamsHoldNoGoroutine: streams delivering to sockets that
// keep up cost no goroutine each.
func TestDeliverIdleStreamsHoldNoGoroutine(t *testing.T) {
	leakCheck(t)
	env := startServer(t, connKinds[1], Config{})
	env.hello(t, "2")
	const streams = 40
	readers := make([]*net.TCPConn, streams)
	for i := range streams {
		st := env.open(t, uint32(2*i+1), wire.Addr{})
		w, r := socketPair(t)
		readers[i] = r
		deliver(t, st, w)
	}
	before := runtime.NumGoroutine()
	for i, r := range readers {
		env.p.send(wire.CmdPSH, uint32(2*i+1), []byte("ping"))
		r.SetReadDeadline(time.Now().Add(testTimeout))
		got := make([]byte, 4)
		if _, err := io.ReadFull(r, got); err != nil || string(got) != "ping" {
			t.Fatalf("stream %d: %q, %v", 2*i+1, got, err)
		}
	}
	if after := runtime.NumGoroutine(); after-before >= streams/2 {
		t.Fatalf("goroutines %d -> %d for %d delivering streams", before, after, streams)
	}
}

// TestDeliverCallbacksMayClose: the relay closes the stream from onEnd and
// onWriteErr; doing so, also from inside Close, must not deadlock.
func TestDeliverCallbacksMayClose(t *testing.T) {
	leakCheck(t)
	env := startServer(t, connKinds[1], Config{})
	env.hello(t, "2")
	for _, how := range []string{"Close", "FIN", "write error"} {
		t.Run(how, func(t *testing.T) {
			st := env.open(t, uint32(len(how)*2+1), wire.Addr{})
			w, r := socketPair(t)
			ended := make(chan error, 1)
			ok := st.Deliver(w, func(error) { st.Close() }, func(err error) {
				st.Close()
				ended <- err
			})
			if !ok {
				t.Fatal("Deliver refused a TCP socket")
			}
			switch how {
			case "Close":
				go st.Close() // a deadlock shows as a timeout below
			case "FIN":
				env.p.send(wire.CmdFIN, st.ID(), nil)
			case "write error":
				r.SetLinger(0)
				r.Close()
				go func() {
					for range 1000 {
						select {
						case <-st.Done():
							return
						default:
						}
						if env.p.tryWrite(frameBytes(wire.CmdPSH, st.ID(), []byte("x"))) != nil {
							return
						}
						time.Sleep(time.Millisecond)
					}
				}()
			}
			select {
			case <-ended:
			case <-time.After(testTimeout):
				t.Fatal("onEnd was not called (deadlock?)")
			}
			waitDone(t, st.Done(), "stream end")
		})
	}
}

// TestWriteFramed: data written with room for the header in front arrives
// as one PSH frame with the data unchanged, with and without control frames
// waiting, and falls back to Write for data over one frame or too little
// room; on a client in its padding phase the shaped path is used.
func TestWriteFramed(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	framed := func(data []byte, room int) []byte {
		b := make([]byte, room+len(data))
		for i := range room {
			b[i] = 0xee
		}
		copy(b[room:], data)
		return b
	}
	for i, size := range []int{1, 1000, writeChunk} {
		data := pattern(size, byte(i))
		if n, err := st.WriteFramed(framed(data, wire.HeaderLen), wire.HeaderLen); n != size || err != nil {
			t.Fatalf("WriteFramed(%d) = %d, %v", size, n, err)
		}
		f := env.p.expect(wire.CmdPSH, 1)
		if !bytes.Equal(f.data, data) {
			t.Fatalf("frame of %d bytes differs", size)
		}
	}
	// a HeartRequest makes the session queue its answer; whichever path the
	// next write takes, the frames stay whole
	env.p.send(wire.CmdHeartRequest, 0, nil)
	data := pattern(5000, 9)
	if n, err := st.WriteFramed(framed(data, 16), 16); n != len(data) || err != nil {
		t.Fatalf("WriteFramed = %d, %v", n, err)
	}
	var got []byte
	for pong := false; len(got) < len(data) || !pong; {
		f := env.p.next()
		switch f.cmd {
		case wire.CmdHeartResponse:
			pong = true
		case wire.CmdPSH:
			got = append(got, f.data...)
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data differs")
	}
	// more than a frame, and too little room: plain writes
	big := pattern(writeChunk+100, 3)
	for _, room := range []int{wire.HeaderLen, 3} {
		if n, err := st.WriteFramed(framed(big, room), room); n != len(big) || err != nil {
			t.Fatalf("WriteFramed(%d, room %d) = %d, %v", len(big), room, n, err)
		}
		got = append(env.p.expect(wire.CmdPSH, 1).data, env.p.expect(wire.CmdPSH, 1).data...)
		if !bytes.Equal(got, big) {
			t.Fatal("split data differs")
		}
	}
}

func TestWriteFramedWhileShaping(t *testing.T) {
	leakCheck(t)
	env := startClient(t, connKinds[1], Config{Scheme: mustScheme(t, "stop=4\n0=30-30\n1=100-100\n2=300-300\n3=500-500")})
	st := env.open(t, testDst)
	data := pattern(200, 4)
	b := append(make([]byte, wire.HeaderLen), data...)
	if n, err := st.WriteFramed(b, wire.HeaderLen); n != len(data) || err != nil {
		t.Fatalf("WriteFramed = %d, %v", n, err)
	}
	if f := env.p.expect(wire.CmdPSH, st.ID()); !bytes.Equal(f.data, data) {
		t.Fatal("data differs")
	}
}

// TestDeliverFailureReleasesHeldReadLoop: the read loop holds for a lone
// stream over its buffer; when Deliver's socket then fails, the queue is
// dropped and the read loop goes on at once (not at its next hold ping).
func TestDeliverFailureReleasesHeldReadLoop(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{StreamBuffer: 64 << 10})
	w, r := socketPair(t)
	failed := make(chan struct{}, 1)
	if !st.Deliver(w, func(error) { failed <- struct{}{} }, func(error) {}) {
		t.Fatal("Deliver refused a TCP socket")
	}
	sent := make(chan error, 1)
	go func() { sent <- env.p.tryWrite(pshFrames(1, pattern(4<<20, 1), 16384)) }()
	// Wait for the steady state: the read loop holds and the drain
	// goroutine is blocked on the full socket (nothing moves for 100 ms; on
	// a slow machine this may misjudge, and the test proves less but does
	// not fail).
	waitFor(t, "the read loop to hold for the stream", func() bool { return env.sess.holding.Load() })
	for last := -1; ; {
		time.Sleep(100 * time.Millisecond)
		n, _ := st.held()
		if n == last && env.sess.holding.Load() {
			break
		}
		last = n
	}
	r.SetLinger(0)
	r.Close()
	waitDone(t, failed, "onWriteErr")
	start := time.Now()
	waitFor(t, "the read loop to go on", func() bool {
		n, _ := st.held()
		return n == 0 && !env.sess.holding.Load()
	})
	if d := time.Since(start); d >= holdPingInterval/2 {
		t.Errorf("the read loop stayed held %v after the queue was dropped", d)
	}
	if err := waitErr(t, sent, "the peer's write"); err != nil {
		t.Fatal(err)
	}
}

// TestDeliverOnEndAfterOnWriteErr: a stream closed while onWriteErr runs
// gets its onEnd only after onWriteErr has returned.
func TestDeliverOnEndAfterOnWriteErr(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	entered, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
	st.Deliver(failingWriter{}, func(error) {
		close(entered)
		<-release
	}, func(error) { close(ended) })
	env.p.send(wire.CmdPSH, 1, []byte("x"))
	waitDone(t, entered, "onWriteErr")
	st.Close()
	select {
	case <-ended:
		close(release)
		t.Fatal("onEnd ran while onWriteErr was still running")
	default:
	}
	close(release)
	waitDone(t, ended, "onEnd after onWriteErr returned")
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("test: write failed") }
func (failingWriter) TryWriter() sockio.TryWriter {
	return func([]byte) (int, error) { return 0, errors.New("test: write failed") }
}

// TestAbortDuringBlockedBatchedWrite: a session whose writer is blocked in a
// batched write (the peer stopped reading) dies at once on Abort; the TLS
// layer must not wait to send its close alert behind that write.
func TestAbortDuringBlockedBatchedWrite(t *testing.T) {
	leakCheck(t)
	cl, b, _ := batchedTLS(t, func(sc, pc *net.TCPConn) {
		sc.SetWriteBuffer(16 << 10)
		pc.SetReadBuffer(64 << 10)
	})
	// from here on the server reads nothing
	sess := NewClient(cl, Config{Scheme: mustScheme(t, noShaping), ProbeTimeout: -1, Batch: b})
	defer sess.Close()
	st, err := sess.OpenStream(t.Context(), testDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	progress := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := st.Write(buf); err != nil {
				return
			}
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	// The writer is blocked once its writes stop completing. (If this
	// guesses wrong on a slow machine, Abort meets no blocked write and the
	// test proves less, but does not fail.)
	for quiet := false; !quiet; {
		select {
		case <-progress:
		case <-time.After(200 * time.Millisecond):
			quiet = true
		}
	}
	start := time.Now()
	sess.Abort()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Abort blocked for %v behind a write to a peer that does not read", d)
	}
}

// batchedTLS returns a client TLS connection over a Batcher over TCP, as
// the client package makes them, and its peer, both past the handshake.
// tune, if not nil, sees the client's and the peer's TCP connections first.
func batchedTLS(t *testing.T, tune func(sc, pc *net.TCPConn)) (*tls.Conn, *sockio.Batcher, *tls.Conn) {
	t.Helper()
	sc, pc := tcpPair(t)
	if tune != nil {
		tune(sc.(*net.TCPConn), pc.(*net.TCPConn))
	}
	b := sockio.NewBatcher(sc)
	cert, err := tlsutil.SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	cl := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	sv := tls.Server(pc, &tls.Config{Certificates: []tls.Certificate{cert}})
	hs := make(chan error, 1)
	go func() { hs <- sv.Handshake() }()
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, hs, "server handshake"); err != nil {
		t.Fatal(err)
	}
	return cl, b, sv
}

// TestIdleReaderParks: with a Poller, the read loop of an idle session
// parks there and no goroutine waits for it; a frame from the peer resumes
// it (it answers a heartbeat), and Close returns while it is parked. The
// Poller's sweep is off: only the event, or the session's own wake on
// Close, can resume the reader.
func TestIdleReaderParks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a Poller parks only on Linux")
	}
	sess, p, sv := parkingClient(t)
	parked := func() bool {
		return p.Parked() == 1 && !strings.Contains(allStacks(), "(*Session).readLoop")
	}
	for round := range 3 {
		waitFor(t, "the idle reader to park", parked)
		req, _ := wire.AppendHeader(nil, wire.CmdHeartRequest, uint32(round), 0)
		if _, err := sv.Write(req); err != nil {
			t.Fatal(err)
		}
		sv.SetReadDeadline(time.Now().Add(testTimeout))
		var h wire.Header
		for h.Cmd() != wire.CmdHeartResponse { // after the client's Settings
			if _, err := io.ReadFull(sv, h[:]); err != nil {
				t.Fatalf("round %d: no answer to a heartbeat: %v", round, err)
			}
			if _, err := io.CopyN(io.Discard, sv, int64(h.Length())); err != nil {
				t.Fatal(err)
			}
		}
		if h.StreamID() != uint32(round) {
			t.Fatalf("round %d: answer %v", round, &h)
		}
	}
	waitFor(t, "the idle reader to park", parked)
	if !returnsWithin(func() { sess.Close() }, testTimeout) {
		t.Fatal("Close did not return while the reader was parked")
	}
	if p.Parked() != 0 {
		t.Fatalf("Parked = %d after Close", p.Parked())
	}
}

// parkingClient starts a client session over TLS with a Poller whose sweep
// is off: only an event, or the session's own wake, resumes its parked
// reader. It returns the session, the Poller and the server's end.
func parkingClient(t *testing.T) (*Session, *sockio.Poller, *tls.Conn) {
	t.Helper()
	leakCheck(t)
	cl, b, sv := batchedTLS(t, nil)
	p := &sockio.Poller{Sweep: time.Hour}
	sess := NewClient(cl, Config{Scheme: mustScheme(t, noShaping), ProbeTimeout: -1, Batch: b, Poller: p})
	return sess, p, sv
}

// TestParkedSessionSeesReset: a reset from the peer while the read loop is
// parked (the Poller's sweep off) ends the session at once, with an error.
func TestParkedSessionSeesReset(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a Poller parks only on Linux")
	}
	sess, p, sv := parkingClient(t)
	defer sess.Close()
	waitFor(t, "the idle reader to park", func() bool { return p.Parked() == 1 })
	raw := sv.NetConn().(*net.TCPConn)
	raw.SetLinger(0)
	raw.Close()
	select {
	case <-sess.Done():
	case <-time.After(testTimeout):
		t.Fatal("a parked session did not see the peer's reset")
	}
	// a server that never answered is reported as such, with the reset
	if err := sess.Err(); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("session error = %v, want one naming the reset", err)
	}
}

// allStacks returns the stacks of all goroutines.
func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// waitFor polls cond until it holds (a state, not an event, to wait for),
// failing after testTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIdleSessionKeepsNoLargeWriteBuffer: after large writes, a session
// keeps only a small write buffer (an idle pooled session would otherwise
// hold 64 KiB).
func TestIdleSessionKeepsNoLargeWriteBuffer(t *testing.T) {
	leakCheck(t)
	env := startClient(t, connKinds[1], Config{})
	st := env.open(t, testDst)
	data := pattern(1<<20, 6)
	done := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		done <- err
	}()
	var got []byte
	for len(got) < len(data) {
		got = append(got, env.p.expect(wire.CmdPSH, st.ID()).data...)
	}
	if err := waitErr(t, done, "Write"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data differs")
	}
	if err := env.sess.lockWrite(canceller{}); err != nil {
		t.Fatal(err)
	}
	kept := cap(env.sess.wbuf)
	env.sess.unlockWrite()
	if kept > 2*smallWrite {
		t.Fatalf("the session keeps a write buffer of %d bytes after large writes", kept)
	}
}

// TestDeliverEndNotHeldByStuckWrite: when the session dies while the drain
// goroutine is blocked writing to a destination that takes nothing, onEnd
// comes at once (the relay then closes the destination, which ends the
// write); it does not wait for a write that may never finish.
func TestDeliverEndNotHeldByStuckWrite(t *testing.T) {
	env, st := serverStream(t, connKinds[1], Config{})
	w := &stuckWriter{closed: make(chan struct{})}
	defer w.Close() // what the relay does: the drain goroutine's write ends
	ended := make(chan error, 1)
	if !st.Deliver(w, func(error) {}, func(err error) { ended <- err }) {
		t.Fatal("Deliver refused a writer with TryWriter")
	}
	env.p.send(wire.CmdPSH, 1, []byte("never taken"))
	waitFor(t, "the drain goroutine to be writing", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.draining && st.sinking
	})
	env.sess.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrSessionClosed) {
			t.Fatalf("onEnd(%v), want the session's end", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("onEnd waits for a write that never finishes")
	}
}

// stuckWriter takes nothing: its TryWriter writes nothing, its Write blocks
// until Close.
type stuckWriter struct{ closed chan struct{} }

func (w *stuckWriter) TryWriter() sockio.TryWriter {
	return func([]byte) (int, error) { return 0, nil }
}

func (w *stuckWriter) Write([]byte) (int, error) {
	<-w.closed
	return 0, net.ErrClosed
}

func (w *stuckWriter) Close() error { close(w.closed); return nil }
