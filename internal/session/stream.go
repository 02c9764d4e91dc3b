package session

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Stream is one proxied connection inside a session. It is a net.Conn: a
// peer's FIN reads as io.EOF once the buffered data is consumed, Close sends
// FIN once, and deadlines work for both directions.
type Stream struct {
	id   uint32
	sess *Session

	mu       sync.Mutex // guards the fields below
	queue    []*buffer  // received chunks; queue[head:] are unread
	head     int        // index of the first unread chunk
	off      int        // read offset into queue[head]
	n        int        // bytes held in queue
	rerr     error      // what Read returns once the queue is empty
	werr     error      // what Write returns
	ended    bool       // terminate ran
	synacked bool

	// Direct delivery (see push and WriteTo): while WriteTo runs on a socket,
	// the read loop writes arriving data straight to it when nothing is
	// queued, without waiting and without waking the WriteTo goroutine.
	sink     sockio.TryWriter // WriteTo's destination, or nil
	sinking  bool             // a write to the destination is in progress
	sinkErr  error            // the read loop's failed write to sink
	sunk     int64            // bytes the read loop wrote to sink
	sinkFree chan struct{}    // signalled when the read loop's write ends after sink was cleared
	async    *delivery        // set by Deliver
	draining bool             // a drain goroutine writes the queue to async.w

	readable chan struct{} // signalled when data or an error arrives; made by a waiting reader (lazy)
	drained  chan struct{} // signalled when the reader consumed data; made by a holding read loop (lazy)
	done     chan struct{} // closed when the stream has ended
	synack   chan struct{} // closed when the server confirmed the stream; made on demand (synackChan)

	onClose     func()
	closeOnce   sync.Once
	synackTimer *time.Timer // the client's SYNACK deadline
	rdl, wdl    deadline
}

func newStream(s *Session, id uint32) *Stream {
	return &Stream{id: id, sess: s, done: make(chan struct{})}
}

// lazy returns *ch, made first (with room for size signals) if it is nil:
// a channel that nobody waits on is never made, and an idle stream or
// session holds fewer. Whoever signals or closes one reads the field under
// the same lock as the waiter that makes it, after changing the state the
// waiter checks under that lock: either the waiter sees the new state, or
// the signaller sees the channel.
func lazy(ch *chan struct{}, size int) chan struct{} {
	if *ch == nil {
		*ch = make(chan struct{}, size)
	}
	return *ch
}

// signal wakes the waiter on ch, if any (a nil ch has none).
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ID returns the stream id.
func (st *Stream) ID() uint32 { return st.id }

// Session returns the session that carries the stream.
func (st *Stream) Session() *Session { return st.sess }

// push hands over a received chunk: written straight to WriteTo's socket
// when nothing is queued before it and the socket takes it at once, queued
// otherwise (what the socket did not take). It returns the bytes now held and
// the bytes it added to them, or held -1 when the stream has ended (the chunk
// is then freed).
func (st *Stream) push(buf *buffer) (held, added int) {
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		st.sess.alloc.put(buf)
		return -1, 0
	}
	if !st.synacked && st.sess.client {
		st.confirmLocked() // data before SYNACK: the stream is open
	}
	if st.async != nil && st.async.failed {
		st.mu.Unlock()
		st.sess.alloc.put(buf) // the destination failed: data is dropped
		return 0, 0
	}
	off := 0
	if st.sink != nil && st.n == 0 && !st.sinking && st.sinkErr == nil {
		sink := st.sink
		st.sinking = true
		st.mu.Unlock()
		m, err := sink(buf.b)
		st.mu.Lock()
		st.sinking = false
		st.sunk += int64(m)
		if st.sink == nil {
			signal(st.sinkFree)
		}
		var failed func(error)
		if err != nil && st.sinkErr == nil {
			st.sinkErr = err
			failed = st.asyncFailLocked()
		}
		if err != nil || m == len(buf.b) || st.ended {
			ended := st.ended
			end := st.asyncEndLocked()
			readable := st.readable
			st.mu.Unlock()
			st.sess.alloc.put(buf)
			if err != nil {
				signal(readable)
			}
			if failed != nil {
				failed(err)
			}
			end()
			if ended {
				return -1, 0
			}
			return 0, 0
		}
		off = m
	}
	if st.head > 0 && len(st.queue) == cap(st.queue) {
		n := copy(st.queue, st.queue[st.head:])
		clear(st.queue[n:])
		st.queue = st.queue[:n]
		st.head = 0
	}
	if len(st.queue) == 0 {
		st.off = off
	}
	st.queue = append(st.queue, buf)
	added = len(buf.b) - off
	st.n += added
	held = st.n
	st.startDrainLocked()
	readable := st.readable
	st.mu.Unlock()
	signal(readable)
	return held, added
}

// held returns the bytes buffered and whether the stream has ended.
func (st *Stream) held() (int, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.n, st.ended
}

// heldWait is held for a read loop that holds for the reader: also the
// channel signalled when the reader consumes data.
func (st *Stream) heldWait() (int, bool, chan struct{}) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.n, st.ended, lazy(&st.drained, 1)
}

// freeQueue drops all buffered data. st.mu must be held.
func (st *Stream) freeQueueLocked() {
	for i, b := range st.queue[st.head:] {
		st.sess.alloc.put(b)
		st.queue[st.head+i] = nil
	}
	st.queue = st.queue[:0]
	st.head = 0
	st.off = 0
	if st.n > 0 {
		st.sess.buffered.Add(-int64(st.n))
		st.n = 0
	}
}

// terminate ends the stream with err (io.EOF for a peer's FIN). Buffered data
// stays readable after io.EOF and is dropped for any other error. With
// unregister, the stream is also removed from the session; the result says
// whether it was still registered there, i.e. whether the peer must be told.
func (st *Stream) terminate(err error, unregister bool) bool {
	registered := false
	if unregister {
		registered = st.sess.removeStream(st)
	}
	st.mu.Lock()
	if st.ended {
		st.mu.Unlock()
		return registered
	}
	st.ended = true
	if st.synackTimer != nil {
		st.synackTimer.Stop()
		st.synackTimer = nil
	}
	if st.rerr == nil {
		st.rerr = err
	}
	if err != io.EOF {
		st.freeQueueLocked()
	}
	if st.werr == nil {
		if err == io.EOF {
			st.werr = ErrClosedByPeer
		} else {
			st.werr = err
		}
	}
	end := st.asyncEndLocked()
	readable, drained := st.readable, st.drained
	st.mu.Unlock()
	close(st.done)
	signal(readable)
	signal(drained)
	if st.onClose != nil {
		st.onClose()
	}
	end()
	return registered
}

func (st *Stream) synackOK() {
	st.mu.Lock()
	st.confirmLocked()
	st.mu.Unlock()
}

// confirmLocked marks a client stream as confirmed by the server. st.mu held.
func (st *Stream) confirmLocked() {
	if st.synacked {
		return
	}
	st.synacked = true
	if st.synack != nil {
		close(st.synack)
	}
	if st.synackTimer != nil {
		st.synackTimer.Stop()
		st.synackTimer = nil
	}
}

func (st *Stream) isSynacked() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.synacked || st.ended
}

func (st *Stream) writeErr() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.werr
}

// Read reads buffered data. It returns io.EOF after the peer's FIN.
func (st *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		st.mu.Lock()
		if st.n > 0 {
			n := 0
			for n < len(p) && st.head < len(st.queue) {
				b := st.queue[st.head]
				c := copy(p[n:], b.b[st.off:])
				n += c
				st.off += c
				if st.off == len(b.b) {
					st.sess.alloc.put(b)
					st.popLocked()
				}
			}
			st.consumedLocked(n)
			drained := st.drained
			st.mu.Unlock()
			signal(drained)
			return n, nil
		}
		err := st.rerr
		if err != nil {
			st.mu.Unlock()
			return 0, err
		}
		readable := lazy(&st.readable, 1)
		st.mu.Unlock()
		select {
		case <-readable:
		case <-st.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// popLocked drops the first unread chunk from the queue (not freeing it).
func (st *Stream) popLocked() {
	st.queue[st.head] = nil
	st.head++
	st.off = 0
	if st.head == len(st.queue) {
		st.queue = st.queue[:0]
		st.head = 0
	}
}

func (st *Stream) consumedLocked(n int) {
	st.n -= n
	st.sess.buffered.Add(-int64(n))
}

// WriteTo writes the stream's data to w as it arrives until the peer's FIN
// (returning nil) or an error. When w is a TCP or Unix socket (or offers a
// TryWriter method), data that finds nothing queued before it is written by
// the session's read loop itself, without a copy or a goroutine switch; the
// read loop never waits for w to drain: what w does not take at once is
// queued and written from here. Nothing else may write to such a w while
// WriteTo runs: the read loop would wait for that writer's system call.
func (st *Stream) WriteTo(w io.Writer) (total int64, err error) {
	if sink := tryWriterFor(w); sink != nil {
		st.mu.Lock()
		if st.sinkFree == nil {
			st.sinkFree = make(chan struct{}, 1)
		}
		select {
		case <-st.sinkFree:
		default:
		}
		st.sink = sink
		st.sinkErr = nil // a failure of an earlier WriteTo's writer
		sunk := st.sunk
		st.mu.Unlock()
		defer func() {
			st.mu.Lock()
			st.sink = nil
			busy := st.sinking
			st.mu.Unlock()
			if busy { // only the read loop's write can be in progress here
				<-st.sinkFree
			}
			st.mu.Lock()
			total += st.sunk - sunk
			st.mu.Unlock()
		}()
	}
	for {
		st.mu.Lock()
		if err := st.sinkErr; err != nil {
			st.mu.Unlock()
			return total, err
		}
		if st.n > 0 && !st.sinking {
			n, err := st.writeHeadLocked(w)
			st.mu.Unlock()
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		err := st.rerr
		if st.n > 0 {
			err = nil // the read loop is writing: its leftovers follow
		}
		if err != nil {
			st.mu.Unlock()
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		readable := lazy(&st.readable, 1)
		st.mu.Unlock()
		select {
		case <-readable:
		case <-st.rdl.wait():
			return total, os.ErrDeadlineExceeded
		}
	}
}

// delivery is the state of Deliver.
type delivery struct {
	w          io.Writer
	onWriteErr func(error)
	onEnd      func(error)
	failed     bool // a write to w failed: data is dropped from then on
	failing    bool // onWriteErr is being called: onEnd waits for it
	ended      bool // onEnd was called
}

// Deliver hands all of the stream's incoming data to w from now on, with no
// goroutine of its own while w keeps up: the session's read loop writes each
// frame to w with a write that never waits, and only what w does not take at
// once is queued and written by a goroutine that lives until the queue is
// empty. An idle relay direction then costs no goroutine at all. Deliver
// returns false and does nothing when w cannot be written without waiting
// (it is not a TCP or Unix socket and has no TryWriter method).
//
// onWriteErr is called once if a write to w fails; the stream's data is
// dropped from then on. onEnd is called once, with the error that ended the
// stream: after the peer's FIN (io.EOF) once all data before it was written
// or dropped; after any other end at once, the data being dropped (a write
// to w in progress may still finish or fail after it, silently). Both run on whichever
// goroutine sees the event (the read loop, the drain goroutine, the one that
// closes the stream), without locks held, and must not block. Read, WriteTo
// and Deliver must not be called after a Deliver that returned true.
func (st *Stream) Deliver(w io.Writer, onWriteErr, onEnd func(error)) bool {
	sink := tryWriterFor(w)
	if sink == nil {
		return false
	}
	st.mu.Lock()
	st.async = &delivery{w: w, onWriteErr: onWriteErr, onEnd: onEnd}
	st.sink = sink
	st.startDrainLocked() // data that arrived before Deliver
	end := st.asyncEndLocked()
	st.mu.Unlock()
	end()
	return true
}

// startDrainLocked starts the drain goroutine when Deliver's queue holds
// data and none runs. st.mu held.
func (st *Stream) startDrainLocked() {
	if st.async != nil && st.n > 0 && !st.draining && !st.async.failed {
		st.draining = true
		go st.drain()
	}
}

// drain writes Deliver's queue to its writer, blocking as any writer does,
// until the queue is empty.
func (st *Stream) drain() {
	a := st.async
	for {
		st.mu.Lock()
		if st.n == 0 || a.failed || st.sinking {
			st.draining = false
			end := st.asyncEndLocked()
			st.mu.Unlock()
			end()
			return
		}
		_, err := st.writeHeadLocked(a.w)
		var failed func(error)
		if err != nil && st.sinkErr == nil {
			st.sinkErr = err
			failed = st.asyncFailLocked()
		}
		st.mu.Unlock()
		if failed != nil {
			failed(err)
		}
	}
}

// asyncFailLocked marks Deliver's writer as failed, drops the queue and
// returns onWriteErr (nil without Deliver). st.mu held.
func (st *Stream) asyncFailLocked() func(error) {
	if st.async == nil || st.async.failed {
		return nil
	}
	st.async.failed = true
	if st.async.ended { // the stream ended with an error meanwhile: no more callbacks
		st.freeQueueLocked()
		return nil
	}
	st.async.failing = true
	st.freeQueueLocked()
	signal(st.drained) // a read loop holding for this stream's queue goes on
	return st.reportWriteErr
}

// reportWriteErr calls Deliver's onWriteErr, then onEnd if the stream ended
// meanwhile (onEnd never runs before onWriteErr has returned).
func (st *Stream) reportWriteErr(err error) {
	st.async.onWriteErr(err)
	st.mu.Lock()
	st.async.failing = false
	end := st.asyncEndLocked()
	st.mu.Unlock()
	end()
}

// asyncEndLocked returns the call of Deliver's onEnd when it is due now
// (once), or a no-op. st.mu held.
func (st *Stream) asyncEndLocked() func() {
	a := st.async
	if a == nil || a.ended || a.failing || !st.ended {
		return func() {}
	}
	// After the peer's FIN everything before it is written first. After
	// any other end the data is dropped, and a write in progress (perhaps
	// blocked on a destination that reads nothing) is not waited for: the
	// relay closes the destination, which ends it.
	if st.rerr == io.EOF && (st.sinking || st.draining || (st.n > 0 && !a.failed)) {
		return func() {}
	}
	a.ended = true
	err := st.rerr
	return func() { a.onEnd(err) }
}

// writeHeadLocked takes the first queued chunk and writes it to w, marked
// as sinking meanwhile; st.mu is released during the write. st.mu held.
func (st *Stream) writeHeadLocked(w io.Writer) (int, error) {
	b := st.queue[st.head]
	off := st.off
	st.popLocked()
	st.consumedLocked(len(b.b) - off)
	st.sinking = true
	drained := st.drained
	st.mu.Unlock()
	signal(drained)
	n, err := w.Write(b.b[off:])
	st.sess.alloc.put(b)
	st.mu.Lock()
	st.sinking = false
	return n, err
}

// tryWriterFor returns a non-blocking writer for w, or nil.
func tryWriterFor(w io.Writer) sockio.TryWriter {
	if t, ok := w.(interface{ TryWriter() sockio.TryWriter }); ok {
		return t.TryWriter()
	}
	return sockio.NewTryWriter(w)
}

// Write sends p as PSH frames; writes larger than one frame are split.
func (st *Stream) Write(p []byte) (int, error) {
	cancel, err := st.writeStart()
	if err != nil {
		return 0, err
	}
	return st.sess.writeData(st, p, cancel)
}

// writeStart returns what a write gives up on when it has to wait (the
// stream's write deadline), or the error that stops it before it starts.
func (st *Stream) writeStart() (canceller, error) {
	if err := st.writeErr(); err != nil {
		return canceller{}, err
	}
	if st.wdl.passed() {
		return canceller{}, os.ErrDeadlineExceeded
	}
	return canceller{d: &st.wdl}, nil
}

// WriteFramed sends b[headroom:] like Write. With headroom of at least
// wire.HeaderLen bytes and at most one frame of data, the frame header is
// written into the room in front of the data (b[:headroom] is overwritten)
// and the data is not copied: the relay reads into such buffers.
func (st *Stream) WriteFramed(b []byte, headroom int) (int, error) {
	if headroom < wire.HeaderLen || len(b)-headroom > writeChunk {
		return st.Write(b[headroom:])
	}
	cancel, err := st.writeStart()
	if err != nil {
		return 0, err
	}
	if len(b) == headroom {
		return 0, nil
	}
	return st.sess.writeFramed(st, b[headroom-wire.HeaderLen:], cancel)
}

// Close closes the stream in both directions and tells the peer with FIN
// (unless the peer closed it first or the session is gone). It does not
// block on the network.
func (st *Stream) Close() error {
	first := false
	st.closeOnce.Do(func() {
		first = true
		st.mu.Lock()
		st.freeQueueLocked()
		st.rerr = ErrStreamClosed
		st.werr = ErrStreamClosed
		st.mu.Unlock()
	})
	// terminate runs outside the Once: what it calls (Deliver's onEnd) may
	// close the stream again.
	if first && st.terminate(ErrStreamClosed, true) && !st.sess.IsClosed() {
		st.sess.queueCtrl(wire.CmdFIN, st.id, nil)
	}
	return nil
}

// SendSYNACK reports the outcome of the server's outbound dial to a v2
// client: nil for success, or the error whose text the client will see. It
// does nothing for a v1 client. Only the first call sends.
func (st *Stream) SendSYNACK(dialErr error) error {
	st.mu.Lock()
	first := !st.synacked
	st.synacked = true
	st.mu.Unlock()
	if !first || st.sess.client || st.sess.PeerVersion() < 2 {
		return nil
	}
	var data []byte
	if dialErr != nil {
		text := dialErr.Error()
		if text == "" {
			text = "error"
		}
		if len(text) > 1024 {
			text = text[:1024]
		}
		data = []byte(text)
	}
	return st.sess.writeFrame(wire.CmdSYNACK, st.id, data, canceller{d: &st.wdl})
}

// SYNACK returns a channel that is closed when the server confirmed the
// stream: a v2 server's SYNACK, data arriving first, or, with a server that
// never announced v2, the SYNACK deadline passing. It is never closed after
// an error SYNACK; use Done to see the stream end.
func (st *Stream) SYNACK() <-chan struct{} { return st.synackChan() }

// synackChan returns st.synack, made first if nobody asked before.
func (st *Stream) synackChan() chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.synack == nil {
		st.synack = make(chan struct{})
		if st.synacked && st.sess.client { // a server's SendSYNACK sets synacked too
			close(st.synack)
		}
	}
	return st.synack
}

// WaitSYNACK waits until the server confirmed the stream (nil), the stream
// ended (its error: a *RemoteError with the server's reason, ErrSYNACKTimeout,
// or the session's end), or ctx is done.
func (st *Stream) WaitSYNACK(ctx context.Context) error {
	synack := st.synackChan()
	select {
	case <-synack:
		return nil
	default:
	}
	select {
	case <-synack:
		return nil
	case <-st.done:
		select {
		case <-synack:
			return nil
		default:
		}
		return st.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done returns a channel closed when the stream has ended.
func (st *Stream) Done() <-chan struct{} { return st.done }

// Err returns the error that ended the stream, or nil while it is open.
func (st *Stream) Err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.ended {
		return nil
	}
	return st.rerr
}

// LocalAddr returns the session connection's local address.
func (st *Stream) LocalAddr() net.Addr { return st.sess.conn.LocalAddr() }

// RemoteAddr returns the session connection's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.conn.RemoteAddr() }

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.rdl.set(t)
	st.wdl.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read and WriteTo.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write. A frame whose write has begun
// is completed, since a partial frame would break the whole session.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.wdl.set(t)
	return nil
}
