// Package relay pumps bytes between two connections in both directions.
//
// AnyTLS has no half-close: FIN ends a stream both ways. The relay therefore
// treats the end of one direction carefully: when a source reaches EOF, the
// destination is half-closed only if it can be (CloseWrite), and the other
// direction keeps running until it ends too, or until it has been idle for
// Options.HalfCloseIdle. This is what lets `nc -N`-style clients, which shut
// down their sending side right after the request, still get the response.
package relay

import (
	"cmp"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/sockio"
)

// DefaultHalfCloseIdle is how long the remaining direction of a half-closed
// relay may stay silent before both sides are closed.
const DefaultHalfCloseIdle = 2 * time.Minute

// Options tunes Relay.
type Options struct {
	// HalfCloseIdle bounds the silence allowed on the remaining direction
	// after one direction ended with EOF. Zero means DefaultHalfCloseIdle.
	HalfCloseIdle time.Duration
	// Poller, if not nil, parks a pump of Start whose source has nothing to
	// read: an idle direction then holds no goroutine. The relay wakes what
	// it parked when it closes the connections; a source closed by anyone
	// else is found by the Poller's sweep (or its WakeAll).
	Poller *sockio.Poller
}

// Stats reports the bytes moved each way.
type Stats struct {
	AToB, BToA int64
}

type closeWriter interface{ CloseWrite() error }

// bufSize is one read: written to an AnyTLS stream it makes a frame of
// exactly four full TLS records (7-byte header + 65529 bytes). Buffers have
// room for that header in front of the data (see framedWriter).
const (
	headroom = 7
	bufSize  = 4*16384 - headroom
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, headroom+bufSize); return &b }}

// A framedWriter (an AnyTLS stream) sends data that has room in front of it
// for its frame header without copying it.
type framedWriter interface {
	WriteFramed(b []byte, headroom int) (int, error)
}

// Relay copies a->b and b->a until both directions have ended, then closes
// both connections. a is the side of the user whose answer must not be lost
// (the local application on a client, the AnyTLS stream on a server). It returns the byte counts and the first error that was
// not a plain end of stream.
func Relay(a, b net.Conn, opt Options) (Stats, error) {
	r := newRelay(a, b, opt)
	delivered := make(chan struct{})
	ended := func() { close(delivered) }
	switch {
	case r.deliver(b, a, &r.bToA, false, ended):
		r.pump(a, b, &r.aToB, true)
		<-delivered
	case r.deliver(a, b, &r.aToB, true, ended):
		r.pump(b, a, &r.bToA, false)
		<-delivered
	default:
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pump(b, a, &r.bToA, false)
		}()
		r.pump(a, b, &r.aToB, true)
		wg.Wait()
	}
	r.stopTimer()
	a.Close()
	b.Close()
	return Stats{AToB: r.aToB.Load(), BToA: r.bToA.Load()}, r.firstErr()
}

func newRelay(a, b net.Conn, opt Options) *relay {
	if opt.HalfCloseIdle <= 0 {
		opt.HalfCloseIdle = DefaultHalfCloseIdle
	}
	return &relay{a: a, b: b, idle: opt.HalfCloseIdle}
}

// Start relays like Relay but returns at once; done is called once, after
// both directions have ended and both connections are closed, on whichever
// goroutine ended last, and must not block. A direction whose source can
// deliver by itself (an AnyTLS stream) needs no goroutine. The other one
// copies on a goroutine of its own, and when its source (a TCP connection)
// has had nothing to read for a while (half of sockio.IdleAfter to all of
// it), it hands the wait to a new goroutine and ends: a goroutine that
// waits where it copied (a TLS write, say) keeps a stack of 4 KiB or more,
// one that only ever waited keeps the smallest stack Go gives. The relay
// owns the source's read deadline.
func Start(a, b net.Conn, opt Options, done func(Stats, error)) {
	r := newRelay(a, b, opt)
	var left atomic.Int32
	left.Store(2)
	ended := func() {
		if left.Add(-1) == 0 {
			r.stopTimer()
			a.Close()
			b.Close()
			done(Stats{AToB: r.aToB.Load(), BToA: r.bToA.Load()}, r.firstErr())
		}
	}
	if opt.Poller != nil { // before deliver: a stream may end (closeBoth) at once
		r.parkA = &sockio.Parking{Poller: opt.Poller}
		r.parkB = &sockio.Parking{Poller: opt.Poller}
	}
	// streams deliver first, as in Relay: a pump that ends at once (its
	// source closed) must not close a stream before it delivers
	bToA := r.deliver(b, a, &r.bToA, false, ended)
	aToB := r.deliver(a, b, &r.aToB, true, ended)
	if !bToA {
		c := newCopier(a, b, &r.bToA)
		c.park = r.parkB
		go r.pumpAsync(c, false, ended)
	}
	if !aToB {
		c := newCopier(b, a, &r.aToB)
		c.park = r.parkA
		go r.pumpAsync(c, true, ended)
	}
}

// pumpAsync is pump for Start: it copies until the source has nothing to
// read, then parks in the Poller, which calls pumpAsync again on a new
// goroutine once there is something to read, or else waits on a new
// goroutine (waitAsync); and ends.
func (r *relay) pumpAsync(c *copier, drain bool, ended func()) {
	rerr, werr, idle := c.copy(true)
	if idle {
		if c.park == nil || !c.park.Park(&c.rd, func() { r.pumpAsync(c, drain, ended) }) {
			go r.waitAsync(c, drain, ended)
		}
		return
	}
	c.clearDeadline() // the drain after a failed write reads src on
	r.copied(c, rerr, werr, drain)
	ended()
}

// waitAsync waits until c's source has something to read, then copies on.
func (r *relay) waitAsync(c *copier, drain bool, ended func()) {
	if err := c.rd.Wait(); err != nil {
		r.copied(c, err, nil, drain)
		ended()
		return
	}
	r.pumpAsync(c, drain, ended)
}

type relay struct {
	a, b       net.Conn
	idle       time.Duration
	aToB, bToA atomic.Int64
	// where Start's pumps park (reading a, reading b); set before they
	// start, nil without a Poller
	parkA, parkB *sockio.Parking

	mu     sync.Mutex
	err    error
	ended  int // directions that have ended
	timer  *time.Timer
	closed bool
}

// pump copies src to dst. On EOF it half-closes dst when possible. When
// reading src fails, src is broken, and so is the way back into it: both ends
// are closed so that the other direction stops too.
//
// When writing dst fails in the a->b direction (drain set), only this
// direction ends: the other one may still carry b's last words (an answer sent
// just before it closed, an AnyTLS stream ended by the peer's FIN with data
// still buffered), so it runs on, bounded by the half-close timer. Meanwhile
// src (a, the side whose user must get everything) is read and what it sends
// is dropped: closing a TCP connection with unread input resets it, and the
// reset throws away the end of that answer still waiting in the send buffer.
// When writing a fails, a's user is gone: both ends are closed at once, so
// that b (a destination streaming to a departed client, say) is not read for
// nothing.
func (r *relay) pump(src, dst net.Conn, count *atomic.Int64, drain bool) {
	c := newCopier(dst, src, count)
	rerr, werr, _ := c.copy(false)
	r.copied(c, rerr, werr, drain)
}

// copied ends a direction whose copy returned rerr or werr (see pump).
func (r *relay) copied(c *copier, rerr, werr error, drain bool) {
	if werr != nil {
		r.writeFailed(drain)
	}
	if werr != nil && drain {
		var dropped atomic.Int64
		rerr, _, _ = newCopier(io.Discard, c.src, &dropped).copy(false)
	}
	r.finish(c.dst.(net.Conn), rerr, werr)
}

// A deliverer (an AnyTLS stream) writes its data to a socket from its
// session's read loop: see session.Stream.Deliver.
type deliverer interface {
	Deliver(w io.Writer, onWriteErr, onEnd func(error)) bool
}

// deliver runs the direction src->dst without a goroutine when src can
// deliver by itself, with the same rules as pump; ended is called when the
// direction has ended. It returns false when src cannot.
func (r *relay) deliver(src, dst net.Conn, count *atomic.Int64, drain bool, ended func()) bool {
	d, ok := src.(deliverer)
	if !ok {
		return false
	}
	cw := &countingWriter{w: dst, count: count}
	return d.Deliver(cw, func(error) { r.writeFailed(drain) }, func(rerr error) {
		if rerr == io.EOF {
			rerr = nil
		}
		werr := cw.writeErr()
		if werr != nil && !drain {
			rerr = nil // ended by our own close after the failed write
		}
		r.finish(dst, rerr, werr)
		ended()
	})
}

// writeFailed reacts to a failed write in one direction (see pump).
func (r *relay) writeFailed(drain bool) {
	if drain {
		r.startTimer() // src is still read, and what it sends dropped
	} else {
		r.closeBoth()
	}
}

// finish ends one direction: rerr is the source's error (nil for EOF),
// werr the destination's.
func (r *relay) finish(dst net.Conn, rerr, werr error) {
	err := cmp.Or(werr, rerr)
	r.mu.Lock()
	r.ended++
	both := r.ended == 2
	if err != nil && r.err == nil && !isClosed(err) {
		r.err = err
	}
	r.mu.Unlock()
	if rerr != nil {
		r.closeBoth()
		return
	}
	if werr == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
	}
	if !both {
		r.startTimer()
	}
}

func (r *relay) closeBoth() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	pa, pb := r.parkA, r.parkB
	r.mu.Unlock()
	r.a.Close()
	r.b.Close()
	if pa != nil {
		pa.Close()
	}
	if pb != nil {
		pb.Close()
	}
}

// startTimer watches the remaining direction after a half-close (or a failed
// write): if no byte moves for the idle period, both connections are closed.
// Only the first call arms the timer.
func (r *relay) startTimer() {
	last := r.aToB.Load() + r.bToA.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.ended == 2 || r.timer != nil {
		return
	}
	var check func()
	check = func() {
		now := r.aToB.Load() + r.bToA.Load()
		r.mu.Lock()
		if r.closed || r.ended == 2 {
			r.mu.Unlock()
			return
		}
		if now != last {
			last = now
			r.timer = time.AfterFunc(r.idle, check)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.closeBoth()
	}
	r.timer = time.AfterFunc(r.idle, check)
}

func (r *relay) stopTimer() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = 2
	if r.timer != nil {
		r.timer.Stop()
	}
}

func (r *relay) firstErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

type countingWriter struct {
	w     io.Writer
	count *atomic.Int64
	mu    sync.Mutex // guards err: TryWriter runs on another goroutine
	err   error      // the first write error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	return c.note(c.w.Write(p))
}

// note counts n and keeps the first error.
func (c *countingWriter) note(n int, err error) (int, error) {
	c.count.Add(int64(n))
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *countingWriter) writeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// TryWriter lets an AnyTLS stream's read loop write to the destination
// directly (see session.Stream.WriteTo), counted like Write.
func (c *countingWriter) TryWriter() sockio.TryWriter {
	tw := sockio.NewTryWriter(c.w)
	if tw == nil {
		return nil
	}
	return func(p []byte) (int, error) { return c.note(tw(p)) }
}

// A copier copies src to dst, counting what it writes. A TCP source is
// read with a read that never waits; once it is drained, the copier waits
// for more without holding a buffer, so that an idle connection costs no
// 64 KiB buffer.
type copier struct {
	dst    io.Writer
	src    io.Reader
	count  *atomic.Int64
	rd     sockio.Reader // usable when canTry; else src.Read, which waits
	canTry bool
	dl     interface{ SetReadDeadline(time.Time) error } // src, if it has deadlines
	idle   sockio.IdleDeadline                           // waitIdle's
	park   *sockio.Parking                               // where Start's pump waits, if anywhere
	fw     framedWriter
	framed bool
}

// waitIdle waits for the source to have something to read under a
// sockio.IdleDeadline; ready is false when that passed.
func (c *copier) waitIdle() (ready bool, err error) {
	if c.dl == nil {
		return true, c.rd.Wait()
	}
	c.idle.Arm(c.dl)
	err = c.rd.Wait()
	if c.idle.Passed(err) {
		c.idle.Clear(c.dl)
		return false, nil
	}
	return err == nil, err
}

// clearDeadline removes waitIdle's deadline, if set.
func (c *copier) clearDeadline() {
	if c.dl != nil {
		c.idle.Clear(c.dl)
	}
}

func newCopier(dst io.Writer, src io.Reader, count *atomic.Int64) *copier {
	c := &copier{dst: dst, src: src, count: count}
	c.rd, c.canTry = sockio.NewReader(src)
	c.dl, _ = src.(interface{ SetReadDeadline(time.Time) error })
	c.fw, c.framed = dst.(framedWriter)
	return c
}

// copy copies until EOF (both results nil), a read error (rerr) or a write
// error (werr). With yield set it also returns, with idle set, when the
// source has had nothing to read for a while (see waitIdle); the caller then
// waits (c.rd.Wait) and calls copy again. A source that can write itself out
// (an AnyTLS stream) does so without a copy and never yields.
func (c *copier) copy(yield bool) (rerr, werr error, idle bool) {
	if wt, ok := c.src.(io.WriterTo); ok {
		if _, isTCP := c.src.(*net.TCPConn); !isTCP {
			cw := &countingWriter{w: c.dst, count: c.count}
			_, err := wt.WriteTo(cw)
			if err != nil && cw.writeErr() != nil {
				return nil, err, false
			}
			return err, nil, false
		}
	}
	for {
		bp := bufPool.Get().(*[]byte)
		buf := (*bp)[headroom:]
		var n int
		var rerr error
		if c.canTry {
			n, rerr = c.rd.TryRead(buf)
			if c.idle.Passed(rerr) {
				// waitIdle's deadline passed while the copy was busy (a
				// slow write, a source that never ran dry): that says
				// nothing about being idle; read again without it, and
				// the next wait sets a fresh one
				bufPool.Put(bp)
				c.clearDeadline()
				continue
			}
			if rerr == sockio.ErrWouldBlock {
				bufPool.Put(bp)
				if yield {
					ready, err := c.waitIdle()
					if err != nil {
						return err, nil, false
					}
					if !ready {
						return nil, nil, true
					}
					continue
				}
				if err := c.rd.Wait(); err != nil {
					return err, nil, false
				}
				continue
			}
		} else {
			n, rerr = c.src.Read(buf)
		}
		var werr error
		if n > 0 {
			var m int
			if c.framed {
				m, werr = c.fw.WriteFramed((*bp)[:headroom+n], headroom)
			} else {
				m, werr = c.dst.Write(buf[:n])
			}
			c.count.Add(int64(m))
		}
		bufPool.Put(bp)
		if werr != nil {
			return nil, werr, false
		}
		if rerr == io.EOF {
			return nil, nil, false
		}
		if rerr != nil {
			return rerr, nil, false
		}
	}
}
