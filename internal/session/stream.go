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

	readable chan struct{} // signalled when data or an error arrives
	drained  chan struct{} // signalled when the reader consumed data
	done     chan struct{} // closed when the stream has ended
	synack   chan struct{} // closed when the server confirmed the stream

	onClose     func()
	closeOnce   sync.Once
	synackTimer *time.Timer // the client's SYNACK deadline
	rdl, wdl    *deadline
}

func newStream(s *Session, id uint32) *Stream {
	return &Stream{
		id:       id,
		sess:     s,
		readable: make(chan struct{}, 1),
		drained:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		synack:   make(chan struct{}),
		rdl:      newDeadline(),
		wdl:      newDeadline(),
	}
}

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
		if err != nil && st.sinkErr == nil {
			st.sinkErr = err
		}
		if err != nil || m == len(buf.b) || st.ended {
			ended := st.ended
			st.mu.Unlock()
			st.sess.alloc.put(buf)
			if err != nil {
				signal(st.readable)
			}
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
	st.mu.Unlock()
	signal(st.readable)
	return held, added
}

// held returns the bytes buffered and whether the stream has ended.
func (st *Stream) held() (int, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.n, st.ended
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
	st.mu.Unlock()
	close(st.done)
	signal(st.readable)
	signal(st.drained)
	if st.onClose != nil {
		st.onClose()
	}
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
	close(st.synack)
	if st.synackTimer != nil {
		st.synackTimer.Stop()
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
			st.mu.Unlock()
			signal(st.drained)
			return n, nil
		}
		err := st.rerr
		st.mu.Unlock()
		if err != nil {
			return 0, err
		}
		select {
		case <-st.readable:
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
// read loop never waits for w: what w does not take at once is queued and
// written from here.
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
		}()
		defer func() {
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
			b := st.queue[st.head]
			off := st.off
			st.popLocked()
			st.consumedLocked(len(b.b) - off)
			st.sinking = true
			st.mu.Unlock()
			signal(st.drained)
			n, err := w.Write(b.b[off:])
			st.sess.alloc.put(b)
			st.mu.Lock()
			st.sinking = false
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
		st.mu.Unlock()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		select {
		case <-st.readable:
		case <-st.rdl.wait():
			return total, os.ErrDeadlineExceeded
		}
	}
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
	if err := st.writeErr(); err != nil {
		return 0, err
	}
	cancel := st.wdl.wait()
	select {
	case <-cancel:
		return 0, os.ErrDeadlineExceeded
	default:
	}
	return st.sess.writeData(st, p, cancel)
}

// Close closes the stream in both directions and tells the peer with FIN
// (unless the peer closed it first or the session is gone). It does not
// block on the network.
func (st *Stream) Close() error {
	st.closeOnce.Do(func() {
		st.mu.Lock()
		st.freeQueueLocked()
		st.rerr = ErrStreamClosed
		st.werr = ErrStreamClosed
		st.mu.Unlock()
		if st.terminate(ErrStreamClosed, true) && !st.sess.IsClosed() {
			st.sess.queueCtrl(wire.CmdFIN, st.id, nil)
		}
	})
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
	return st.sess.writeFrame(wire.CmdSYNACK, st.id, data, st.wdl.wait())
}

// SYNACK returns a channel that is closed when the server confirmed the
// stream: a v2 server's SYNACK, data arriving first, or, with a server that
// never announced v2, the SYNACK deadline passing. It is never closed after
// an error SYNACK; use Done to see the stream end.
func (st *Stream) SYNACK() <-chan struct{} { return st.synack }

// WaitSYNACK waits until the server confirmed the stream (nil), the stream
// ended (its error: a *RemoteError with the server's reason, ErrSYNACKTimeout,
// or the session's end), or ctx is done.
func (st *Stream) WaitSYNACK(ctx context.Context) error {
	select {
	case <-st.synack:
		return nil
	default:
	}
	select {
	case <-st.synack:
		return nil
	case <-st.done:
		select {
		case <-st.synack:
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
