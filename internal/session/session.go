// Package session implements the AnyTLS session layer: many streams over one
// connection, the client's write shaping, settings and version negotiation,
// SYNACK and heartbeats.
//
// Concurrency model: one goroutine reads the connection (readLoop) and never
// waits for a stream's consumer, except to apply backpressure when a stream
// that is alone on its session has filled its buffer. When the connection
// has nothing to read at a frame boundary, the reader hands the wait to a
// new goroutine and ends (see readLoop), so that an idle session waits on
// the smallest stack instead of the one its last burst of traffic grew. Writes are made by the
// goroutine that asks for them, one at a time under the write token, so the
// data path has no goroutine hand-off. Control frames produced by the reader
// (heartbeat answers, resets, settings answers) are queued and written by the
// next writer, or by a short-lived flusher goroutine, so the reader never
// blocks on a write.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Defaults for Config's zero values.
const (
	DefaultStreamBuffer  = 1 << 20  // bytes buffered per stream before its limit applies
	DefaultSessionBuffer = 32 << 20 // bytes buffered per session across its streams
	DefaultMaxStreams    = 1024     // streams open at once per server session
	DefaultAlertTimeout  = 5 * time.Second
)

// writeChunk is the largest payload put in one PSH frame: header plus payload
// fill exactly four maximum-size TLS records.
const writeChunk = 4*16384 - wire.HeaderLen

// Config configures a session. Zero values mean the documented defaults.
type Config struct {
	// Client selects the client role; otherwise the session is a server.
	Client bool

	// Scheme (client) is the padding scheme that shapes this session's first
	// writes, and whose md5 is announced in Settings. Nil means the default.
	Scheme *padding.Scheme
	// ClientName (client) is the value of "client=" in Settings.
	ClientName string
	// OnScheme (client) receives a padding scheme pushed by the server. It is
	// called from the read loop and must not block.
	OnScheme func(*padding.Scheme)
	// PeerV1 (client) says that earlier sessions found the server to speak
	// version 1: streams are taken as open at once, not after the SYNACK
	// timeout, until a ServerSettings frame says otherwise.
	PeerV1 bool
	// OnPeerVersion (client) learns what the session found: v1 true when
	// the server sent no ServerSettings before its SYNACK deadline or
	// announced version 1, false when it announced version 2 or more. It
	// is called from the read loop or a timer and must not block.
	OnPeerVersion func(v1 bool)

	// ServerScheme (server) returns the scheme to push to clients whose md5
	// differs. Nil means the default scheme.
	ServerScheme func() *padding.Scheme
	// OnStream (server) is called from the read loop for every new stream. It
	// must not block: it typically starts a goroutine to serve the stream.
	OnStream func(*Stream)
	// MaxStreams (server) bounds streams open at once; further SYNs are
	// answered with FIN.
	MaxStreams int

	// StreamBuffer bounds the bytes buffered for one stream whose reader is
	// behind; SessionBuffer bounds them for the whole session.
	StreamBuffer  int
	SessionBuffer int

	// OnClose is called once, without locks held, after the session died.
	OnClose func(error)

	// Liveness. For each duration zero means the default and a negative
	// value switches the mechanism off.
	//
	// SYNACKTimeout (client) bounds the wait for a v2 server's SYNACK: the
	// stream then fails with ErrSYNACKTimeout and the session is probed.
	SYNACKTimeout time.Duration
	// ProbeTimeout (client) is how long a probe (HeartRequest) may go
	// without any frame coming back before the session is declared dead.
	ProbeTimeout time.Duration
	// QuietTimeout (client) is how long a session with open streams may
	// receive nothing before it is probed.
	QuietTimeout time.Duration
	// IdleHeartbeat (client) probes a session without streams after this
	// much silence, so that an idle pooled session is known to be alive.
	// Zero means off here (the client package sets its own default).
	IdleHeartbeat time.Duration
	// WriteTimeout bounds one write to the connection; a peer that stopped
	// reading for that long is considered gone and the session closes.
	WriteTimeout time.Duration
	// IdleTimeout (server) closes a session that has had no streams and
	// received nothing for this long.
	IdleTimeout time.Duration

	// Batch, if not nil, is the connection below conn's TLS layer: a write
	// of several TLS records after the padding phase is then sent to the
	// socket in one system call.
	Batch *sockio.Batcher
	// Poller, if not nil, parks the read loop of an idle session (with
	// Batch): no goroutine waits while the connection has nothing to read.
	Poller *sockio.Poller

	// Logger receives the session's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Scheme == nil {
		c.Scheme = padding.Default()
	}
	if c.StreamBuffer <= 0 {
		c.StreamBuffer = DefaultStreamBuffer
	}
	if c.SessionBuffer <= 0 {
		c.SessionBuffer = DefaultSessionBuffer
	}
	if c.SessionBuffer < c.StreamBuffer {
		c.SessionBuffer = c.StreamBuffer
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// defaultAlloc is shared by all sessions so that buffers freed by one stream
// serve the next; it holds no state beyond cached memory.
var defaultAlloc allocator

// Session is one AnyTLS connection carrying many streams.
type Session struct {
	conn   net.Conn
	cfg    Config
	log    *slog.Logger
	client bool
	alloc  *allocator

	// write side: wtoken is the write lock (a channel so that waits can be
	// abandoned on deadlines); the fields below it are guarded by it.
	wtoken     chan struct{}
	wbuf       []byte
	scratch    []byte
	sizes      []int
	writes     int   // writes made so far, for shaping (client)
	probeTaken int64 // the write in progress carries the probe of this probeAt, or 0

	ctrlMu      sync.Mutex
	ctrl        []byte // queued control frames
	ctrlFlusher bool   // a flusher goroutine is scheduled
	probeQueued bool   // ctrl holds the outstanding probe

	mu      sync.Mutex // guards the fields below
	streams map[uint32]*Stream
	nextID  uint32
	pongCh  chan struct{} // closed by the next HeartResponse; made by Ping
	added   chan struct{} // signalled when OpenStream adds a stream (client); made by a holding read loop

	buffered    atomic.Int64 // bytes held in stream buffers
	peerVersion atomic.Int32

	// liveness (liveness.go)
	lastRecv       atomic.Int64 // when the last frame was read (mono)
	probeAt        atomic.Int64 // when the outstanding probe was queued, then written (mono), or 0
	probeUnsent    atomic.Bool  // the outstanding probe is not on the wire yet
	holding        atomic.Bool  // the read loop waits for a slow lone stream
	suspicious     atomic.Bool  // the outstanding probe has a serious reason
	peerProbes     atomic.Bool  // the peer has sent a HeartRequest
	serverSettings atomic.Bool  // a ServerSettings frame arrived (client)
	dataSeen       atomic.Bool  // stream data arrived (client): a v2 server would have sent ServerSettings first
	liveMu         sync.Mutex
	liveTimer      *time.Timer
	liveAt         int64 // when liveTimer fires (mono); guarded by liveMu
	wdeadline      int64 // last write deadline set (mono); guarded by wtoken

	die       chan struct{}
	dieOnce   sync.Once
	dieErr    error // set before die is closed
	wg        sync.WaitGroup
	readerRun bool
	onEnd     func(error) // Start's callback, set before the read loop starts

	// read loop only
	refused      int   // streams refused since the last warning
	refusedLogAt int64 // when that warning was logged (mono), or 0
	frames       int   // frames read so far
	settingsSeen bool  // the client's Settings arrived (server)
	hdr          wire.Header
	waitErr      error               // the error of the last wait for input
	idle         sockio.IdleDeadline // readHeader's read deadline
	park         sockio.Parking      // where an idle read loop waits (cfg.Poller)
}

func newSession(conn net.Conn, cfg Config) *Session {
	cfg.setDefaults()
	s := &Session{
		conn:    conn,
		cfg:     cfg,
		log:     cfg.Logger,
		client:  cfg.Client,
		alloc:   &defaultAlloc,
		wtoken:  make(chan struct{}, 1),
		streams: make(map[uint32]*Stream),
		die:     make(chan struct{}),
	}
	s.park.Poller = cfg.Poller
	s.peerVersion.Store(1)
	s.lastRecv.Store(mono())
	// the timeouts below are used as they are from here on: 0 is off
	c := &s.cfg
	c.SYNACKTimeout = dur(c.SYNACKTimeout, DefaultSYNACKTimeout)
	c.ProbeTimeout = dur(c.ProbeTimeout, DefaultProbeTimeout)
	c.QuietTimeout = dur(c.QuietTimeout, DefaultQuietTimeout)
	c.IdleHeartbeat = dur(c.IdleHeartbeat, 0)
	c.WriteTimeout = dur(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = dur(c.IdleTimeout, DefaultServerIdle)
	if c.ProbeTimeout == 0 {
		c.QuietTimeout, c.IdleHeartbeat = 0, 0 // no probes without a verdict
	}
	return s
}

// NewClient starts a client session on conn, over which the caller has already
// sent the authentication preamble (write 0 of the padding scheme). Settings
// are sent together with the first stream. The read loop starts at once.
func NewClient(conn net.Conn, cfg Config) *Session {
	cfg.Client = true
	s := newSession(conn, cfg)
	s.writes = 1
	settings := wire.Settings{
		{Key: wire.KeyVersion, Value: "2"},
		{Key: wire.KeyClient, Value: s.cfg.ClientName},
		{Key: wire.KeyPaddingMD5, Value: s.cfg.Scheme.MD5()},
	}
	body := settings.Append(nil)
	s.ctrl, _ = wire.AppendFrame(s.ctrl, wire.CmdSettings, 0, body)
	if s.cfg.ProbeTimeout > 0 {
		// Tells the server that this client probes (so that a server of
		// ours keeps it informed while it holds back a slow stream); a v2
		// server answers it, a v1 server ignores a command it does not know.
		s.ctrl, _ = wire.AppendHeader(s.ctrl, wire.CmdHeartRequest, 0, 0)
	}
	s.readerRun = true
	s.wg.Add(1)
	go s.readLoop()
	return s
}

// NewServer prepares a server session on an authenticated conn. Serve runs it.
func NewServer(conn net.Conn, cfg Config) *Session {
	cfg.Client = false
	return newSession(conn, cfg)
}

// Serve runs a server session until it ends, and returns the cause. It
// closes the session before returning.
func (s *Session) Serve() error {
	ch := make(chan error, 1)
	s.Start(func(err error) { ch <- err })
	return <-ch
}

// Start runs a server session like Serve but returns at once; done is
// called once with Serve's result, after the session has ended and its
// other goroutines have exited, on one of its goroutines. done must not
// call Close.
func (s *Session) Start(done func(error)) {
	s.mu.Lock()
	if s.readerRun {
		s.mu.Unlock()
		done(errors.New("anytls: session already running"))
		return
	}
	s.readerRun = true
	if s.IsClosed() {
		s.mu.Unlock()
		done(s.Err())
		return
	}
	s.onEnd = done
	s.wg.Add(1)
	s.mu.Unlock()
	s.armLiveness(s.cfg.IdleTimeout)
	go s.readLoop()
}

// Conn returns the underlying connection.
func (s *Session) Conn() net.Conn { return s.conn }

// PeerVersion returns the protocol version the peer announced (1 until a v2
// peer has said otherwise).
func (s *Session) PeerVersion() int { return int(s.peerVersion.Load()) }

// NumStreams returns the number of open streams.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Done returns a channel closed when the session has died.
func (s *Session) Done() <-chan struct{} { return s.die }

// IsClosed reports whether the session has died.
func (s *Session) IsClosed() bool { return expired(s.die) }

// Err returns why the session died (wrapping ErrSessionClosed), or nil.
func (s *Session) Err() error {
	select {
	case <-s.die:
		return &closedError{cause: s.dieErr}
	default:
		return nil
	}
}

// Close closes the session and all its streams without sending FINs, and
// waits for the session's goroutines to exit. It must not be called from the
// session's own callbacks (OnClose, a stream's onClose); use Abort there.
func (s *Session) Close() error {
	s.fail(nil)
	s.wg.Wait()
	return nil
}

// Abort closes the session like Close but does not wait for its goroutines.
// It is safe to call from any goroutine, including the session's callbacks.
func (s *Session) Abort() { s.fail(nil) }

// fail kills the session with cause (nil for a local Close). It never blocks
// on I/O and may be called from any goroutine, including the read loop.
func (s *Session) fail(cause error) {
	s.dieOnce.Do(func() {
		// die is closed under mu: Serve and queueCtrl add to wg under mu
		// only while it is open, so no Add can race with Close's Wait
		s.mu.Lock()
		s.dieErr = cause
		close(s.die)
		streams := make([]*Stream, 0, len(s.streams))
		for _, st := range s.streams {
			streams = append(streams, st)
		}
		clear(s.streams)
		s.mu.Unlock()
		s.closeConn()
		s.park.Close()
		s.stopLiveness()
		if cause != nil && !errors.Is(cause, net.ErrClosed) {
			s.log.Debug("session closed", "cause", cause)
		}
		// the owner (a pool) learns first, so that whoever sees a stream
		// fail finds the session already gone from it
		if s.cfg.OnClose != nil {
			s.cfg.OnClose(cause)
		}
		err := &closedError{cause: cause}
		for _, st := range streams {
			st.terminate(err, false)
		}
	})
}

// closeConn closes the connection when the session dies. A write in
// progress (perhaps blocked on a peer that stopped reading) is broken by
// closing the socket first, as crypto/tls itself does for a Write in flight:
// with the Batcher below TLS, the TLS layer would otherwise not see that
// write and wait up to 5 s to send its close alert behind it. Without a
// write in progress the session keeps the write token, so that none starts,
// and the TLS layer sends its close alert.
func (s *Session) closeConn() {
	select {
	case s.wtoken <- struct{}{}:
	default:
		if s.cfg.Batch != nil {
			s.cfg.Batch.Conn.Close()
		}
	}
	s.conn.Close()
}

// ---- writing ----

func (s *Session) lockWrite(cancel canceller) error {
	select {
	case s.wtoken <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.wtoken <- struct{}{}:
		return nil
	case <-s.die:
		return s.Err()
	case <-cancel.done():
		return os.ErrDeadlineExceeded
	}
}

func (s *Session) unlockWrite() { <-s.wtoken }

// takeCtrl appends the queued control frames to dst. Write token held.
func (s *Session) takeCtrl(dst []byte) []byte {
	s.ctrlMu.Lock()
	if s.probeQueued {
		s.probeQueued, s.probeTaken = false, s.probeAt.Load()
	}
	if len(s.ctrl) > 0 {
		dst = append(dst, s.ctrl...)
		s.ctrl = s.ctrl[:0]
		if cap(s.ctrl) > 4096 {
			s.ctrl = nil
		}
	}
	s.ctrlMu.Unlock()
	return dst
}

// maxCtrlQueue bounds the control frames waiting for a writer. A peer that
// keeps asking for answers (HeartRequest, SYNs that are refused) without
// reading them would otherwise make the queue grow without limit.
const maxCtrlQueue = 256 << 10

// queueCtrl queues a control frame to be sent by the next writer; it never
// blocks. A queue over maxCtrlQueue kills the session.
func (s *Session) queueCtrl(cmd wire.Cmd, sid uint32, data []byte) {
	s.queue(cmd, sid, data, false)
}

// queue is queueCtrl; probe marks the frame as the outstanding probe,
// whose verdict counts from when it is written.
func (s *Session) queue(cmd wire.Cmd, sid uint32, data []byte, probe bool) {
	s.ctrlMu.Lock()
	s.ctrl, _ = wire.AppendFrame(s.ctrl, cmd, sid, data)
	if probe {
		s.probeQueued = true
	}
	queued := len(s.ctrl)
	spawn := !s.ctrlFlusher
	s.ctrlFlusher = true
	s.ctrlMu.Unlock()
	if queued > maxCtrlQueue {
		s.fail(fmt.Errorf("%w: peer does not read: %d bytes of control frames queued", ErrProtocol, queued))
		return
	}
	if spawn {
		s.mu.Lock()
		if !s.IsClosed() {
			s.wg.Add(1)
			go s.flushCtrl()
		}
		s.mu.Unlock()
	}
}

func (s *Session) flushCtrl() {
	defer s.wg.Done()
	if err := s.lockWrite(canceller{}); err != nil {
		return
	}
	defer s.unlockWrite()
	s.ctrlMu.Lock()
	s.ctrlFlusher = false
	s.ctrlMu.Unlock()
	buf := s.takeCtrl(s.wbuf[:0])
	if len(buf) > 0 {
		s.writeLocked(buf)
	}
}

// writeFrame sends one frame (after any queued control frames) as one write.
func (s *Session) writeFrame(cmd wire.Cmd, sid uint32, data []byte, cancel canceller) error {
	if err := s.lockWrite(cancel); err != nil {
		return err
	}
	defer s.unlockWrite()
	if len(data) > wire.MaxPayload { // before taking the control frames, which would be lost
		return wire.ErrPayloadTooLarge
	}
	buf := s.takeCtrl(s.wbuf[:0])
	buf, _ = wire.AppendFrame(buf, cmd, sid, data)
	return s.writeLocked(buf)
}

// writeLocked sends b as one logical write, shaped while the client is in its
// padding phase, and keeps b as the session's write buffer. The write token
// must be held.
func (s *Session) writeLocked(b []byte) error {
	err := s.sendLocked(b)
	if cap(b) <= 2*smallWrite {
		s.wbuf = b[:0]
	}
	return err
}

// smallWrite bounds the data of a frame built in the session's own write
// buffer, which the session keeps; larger frames use pooled buffers.
const smallWrite = 4 << 10

// writeBuf is a pooled buffer for large frames.
type writeBuf struct{ b []byte }

const writeBufSize = wire.HeaderLen + writeChunk + 512

var writeBufs = sync.Pool{New: func() any { return &writeBuf{b: make([]byte, 0, writeBufSize)} }}

// sendLocked sends b as one logical write, shaped while the client is in its
// padding phase. The write token must be held.
func (s *Session) sendLocked(b []byte) error {
	var err error
	s.refreshWriteDeadline()
	if s.client && s.writes < s.cfg.Scheme.Stop() {
		n := s.writes
		s.writes++
		err = s.shape(b, n)
	} else if s.cfg.Batch != nil && len(b) > maxRecord {
		s.cfg.Batch.Hold()
		_, err = s.conn.Write(b)
		if ferr := s.cfg.Batch.Flush(); err == nil {
			err = ferr
		}
	} else {
		_, err = s.conn.Write(b)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("write stalled for %v, the peer stopped reading: %w", s.cfg.WriteTimeout, err)
		}
		s.fail(fmt.Errorf("write: %w", err))
		return s.Err()
	}
	if s.probeTaken != 0 {
		s.probeWritten(s.probeTaken)
		s.probeTaken = 0
	}
	return nil
}

// maxRecord is the most plaintext one TLS record carries.
const maxRecord = 16384

// refreshWriteDeadline keeps a deadline WriteTimeout ahead of every write,
// extending it only when less than three quarters of it is left, to spare
// timer work on the hot path. The write token must be held.
func (s *Session) refreshWriteDeadline() {
	if s.cfg.WriteTimeout <= 0 {
		return
	}
	now := time.Now()
	if time.Duration(s.wdeadline-monoAt(now)) < s.cfg.WriteTimeout/4*3 {
		dl := now.Add(s.cfg.WriteTimeout) // saturates, and so does monoAt
		s.wdeadline = monoAt(dl)
		s.conn.SetWriteDeadline(dl)
	}
}

// shape sends b as write number n of the padding scheme: one TLS write per
// size, the data cut or padded with a Waste frame to that size, stopping at a
// check mark once the data is used up; data left after the list goes as is.
func (s *Session) shape(b []byte, n int) error {
	s.sizes = s.cfg.Scheme.Sizes(s.sizes[:0], n)
	for _, size := range s.sizes {
		if size == padding.CheckMark {
			if len(b) == 0 {
				break
			}
			continue
		}
		switch {
		case len(b) > size:
			if _, err := s.conn.Write(b[:size]); err != nil {
				return err
			}
			b = b[size:]
		case len(b) > 0:
			if pad := size - len(b); pad > wire.HeaderLen {
				b = wire.AppendWaste(b, pad)
			}
			if _, err := s.conn.Write(b); err != nil {
				return err
			}
			b = b[len(b):]
		default:
			s.scratch = wire.AppendWaste(s.scratch[:0], wire.HeaderLen+size)
			if _, err := s.conn.Write(s.scratch); err != nil {
				return err
			}
		}
	}
	if len(b) > 0 {
		if _, err := s.conn.Write(b); err != nil {
			return err
		}
	}
	if cap(s.scratch) > 64<<10 {
		s.scratch = nil
	}
	return nil
}

// writeData sends p as PSH frames for sid, releasing the write token between
// frames so that other streams are not starved by a large write.
func (s *Session) writeData(st *Stream, p []byte, cancel canceller) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), writeChunk)
		if err := s.lockWrite(cancel); err != nil {
			return written, err
		}
		if err := st.writeErr(); err != nil {
			s.unlockWrite()
			return written, err
		}
		var err error
		if n > smallWrite {
			// a large frame is built in a pooled buffer, so that an idle
			// session does not keep one of 64 KiB
			wb := writeBufs.Get().(*writeBuf)
			buf := s.takeCtrl(wb.b[:0])
			buf, _ = wire.AppendHeader(buf, wire.CmdPSH, st.id, n)
			buf = append(buf, p[:n]...)
			err = s.sendLocked(buf)
			if cap(buf) <= 2*writeBufSize { // one grown by a long control queue is dropped
				wb.b = buf[:0]
				writeBufs.Put(wb)
			}
		} else {
			buf := s.takeCtrl(s.wbuf[:0])
			buf, _ = wire.AppendHeader(buf, wire.CmdPSH, st.id, n)
			buf = append(buf, p[:n]...)
			err = s.writeLocked(buf)
		}
		s.unlockWrite()
		if err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// writeFramed sends b[wire.HeaderLen:] (at most writeChunk bytes) as one PSH
// frame for st, writing the header into b[:wire.HeaderLen] so that the data
// is not copied. While control frames wait or the client is shaping, it
// falls back to the copying path.
func (s *Session) writeFramed(st *Stream, b []byte, cancel canceller) (int, error) {
	p := b[wire.HeaderLen:]
	if err := s.lockWrite(cancel); err != nil {
		return 0, err
	}
	if err := st.writeErr(); err != nil {
		s.unlockWrite()
		return 0, err
	}
	s.ctrlMu.Lock()
	direct := len(s.ctrl) == 0
	s.ctrlMu.Unlock()
	if !direct || (s.client && s.writes < s.cfg.Scheme.Stop()) {
		s.unlockWrite()
		return s.writeData(st, p, cancel)
	}
	wire.AppendHeader(b[:0], wire.CmdPSH, st.id, len(p))
	err := s.sendLocked(b)
	s.unlockWrite()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// ---- client operations ----

// OpenStream opens a stream to dst: SYN and the destination go out in one
// write (with the Settings on a session's first stream). onClose, if not nil,
// is called once when the stream ends for any reason.
func (s *Session) OpenStream(ctx context.Context, dst wire.Addr, onClose func()) (*Stream, error) {
	if !s.client {
		return nil, errors.New("anytls: OpenStream on a server session")
	}
	alen := dst.Len()
	if alen == 0 {
		return nil, fmt.Errorf("%w: %v", wire.ErrInvalidAddr, dst)
	}
	s.mu.Lock()
	if s.IsClosed() {
		s.mu.Unlock()
		return nil, s.Err()
	}
	s.nextID++
	st := newStream(s, s.nextID)
	st.onClose = onClose
	s.streams[st.id] = st
	added := s.added
	s.mu.Unlock()
	signal(added) // a read loop holding for a lone stream must reconsider

	// A v2 session that has been quiet for long is probed in the same write
	// as the SYN: if the path froze meanwhile, we learn it within
	// ProbeTimeout instead of at the next quiet check.
	now := mono()
	quiet := time.Duration(now - s.lastRecv.Load())
	probe := s.cfg.QuietTimeout > 0 && quiet >= s.cfg.QuietTimeout && s.PeerVersion() >= 2 &&
		s.probeAt.CompareAndSwap(0, now)
	if probe {
		s.probeUnsent.Store(true)
	}

	err := s.lockWrite(canceller{ch: ctx.Done()})
	if err == nil {
		buf := s.takeCtrl(s.wbuf[:0])
		if probe {
			buf, _ = wire.AppendHeader(buf, wire.CmdHeartRequest, 0, 0)
			s.probeTaken = now
		}
		buf, _ = wire.AppendHeader(buf, wire.CmdSYN, st.id, 0)
		buf, _ = wire.AppendHeader(buf, wire.CmdPSH, st.id, alen)
		buf, _ = wire.AppendAddr(buf, dst, wire.SOCKS)
		err = s.writeLocked(buf)
		s.unlockWrite()
	}
	if err != nil {
		if probe && s.probeAt.CompareAndSwap(now, 0) {
			s.probeUnsent.Store(false) // never sent: the next quiet check probes again
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			err = ctx.Err()
		}
		st.terminate(err, true)
		return nil, err
	}
	switch {
	case probe:
		s.armLiveness(s.cfg.ProbeTimeout)
	case s.cfg.QuietTimeout > 0:
		s.armLiveness(max(s.cfg.QuietTimeout-quiet, time.Millisecond))
	}
	settings := s.serverSettings.Load()
	switch {
	case settings && s.PeerVersion() < 2, // a server that said it is v1
		!settings && (s.dataSeen.Load() || s.cfg.PeerV1): // one that behaves, or behaved, as v1
		st.synackOK() // no SYNACK will come
	default:
		s.armSYNACK(st)
	}
	return st, nil
}

// Ping sends a HeartRequest and waits for a HeartResponse. It returns the
// round-trip time.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	s.mu.Lock()
	ch := lazy(&s.pongCh, 0)
	s.mu.Unlock()
	start := time.Now()
	if err := s.writeFrame(wire.CmdHeartRequest, 0, nil, canceller{ch: ctx.Done()}); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-s.die:
		return 0, s.Err()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ---- reading ----

// readLoop reads frames until the session ends, or until the connection has
// had nothing to read at a frame boundary for a while (see readHeader): then it
// parks in cfg.Poller, which runs readLoop again on a new goroutine once
// there is something to read, and ends; without a Poller (or on a system
// without one) it starts waitThenRead on a new goroutine instead. Either
// inherits its place in wg. An idle session then holds no goroutine, or one
// with the smallest stack: a goroutine's stack grows with the deepest calls
// it makes (TLS decryption, a write to a socket) and Go gives back at most
// half of it per garbage collection, and only while a quarter is in use, so
// a reader that waited where it read would keep 4 KiB or more for as long
// as the session stays idle. Waiting on the socket below TLS needs the
// Batcher; without one (tests on pipes) the reader waits in the TLS read.
func (s *Session) readLoop() {
	err := s.readFrames()
	if err == errIdle {
		s.trimIdle()
		if !s.cfg.Batch.Park(&s.park, s.readLoop) {
			go s.waitThenRead()
		}
		return
	}
	if s.refused > 0 {
		s.log.Warn("refused streams over the limit since the last warning", "refused", s.refused,
			"limit", s.cfg.MaxStreams)
	}
	s.fail(err)
	s.wg.Done()
	if s.onEnd != nil {
		s.wg.Wait()
		s.onEnd(s.Err())
	}
}

// trimIdle drops the small buffers the write side keeps between writes (the
// write buffer, the shaping scratch, an empty control queue) when nobody is
// writing: an idle session keeps none. The next write allocates them again,
// once per idle spell.
func (s *Session) trimIdle() {
	select {
	case s.wtoken <- struct{}{}:
		s.wbuf, s.scratch, s.sizes = nil, nil, nil
		// A session that died meanwhile keeps the token, as closeConn
		// would have: fail closes die under mu before closeConn runs.
		s.mu.Lock()
		if !s.IsClosed() {
			<-s.wtoken
		}
		s.mu.Unlock()
	default: // a write in progress, or the session is closing
	}
	s.ctrlMu.Lock()
	if len(s.ctrl) == 0 {
		s.ctrl = nil
	}
	s.ctrlMu.Unlock()
}

// waitThenRead waits until the connection has something to read, then reads
// on (see readLoop).
func (s *Session) waitThenRead() {
	s.waitErr = s.cfg.Batch.WaitRead() // a reset, say: readHeader reports it
	s.readLoop()
}

// errIdle is what readFrames returns when the connection has had nothing to
// read at a frame boundary for a while (see readHeader).
var errIdle = errors.New("session: nothing to read now")

// readHeader reads the next frame's header into s.hdr. When the wait can
// happen below TLS (see readLoop), it reads under a sockio.IdleDeadline;
// when that passes before the header's first byte, readHeader returns
// errIdle. crypto/tls
// keeps a partial record over a read that timed out. Errors are
// io.ReadFull's.
func (s *Session) readHeader() error {
	if err := s.waitErr; err != nil {
		s.waitErr = nil
		return err
	}
	n := 0
	if b := s.cfg.Batch; b != nil && b.CanWaitRead() {
		s.idle.Arm(s.conn)
		var err error
		n, err = s.conn.Read(s.hdr[:])
		switch {
		case n == 0 && s.idle.Passed(err):
			s.idle.Clear(s.conn) // WaitRead honours it too
			return errIdle
		case n == 0 && err != nil:
			return err
		case n == len(s.hdr):
			return nil
		case err != nil && !s.idle.Passed(err):
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	m, err := io.ReadFull(s.body(), s.hdr[n:])
	if err == io.EOF && n+m > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// body returns the reader for the rest of a frame: the connection, which
// readHeader's deadline must not interrupt once a frame has begun.
func (s *Session) body() io.Reader { return bodyReader{s} }

// bodyReader reads the connection; when readHeader's read deadline passes,
// it clears the deadline and reads on.
type bodyReader struct{ s *Session }

func (r bodyReader) Read(p []byte) (int, error) {
	for {
		n, err := r.s.conn.Read(p)
		if !r.s.idle.Passed(err) {
			return n, err
		}
		r.s.idle.Clear(r.s.conn)
		if n > 0 {
			return n, nil
		}
	}
}

// refusedLogEvery spaces the warnings about refused streams: a peer that
// keeps opening streams over the limit gets one line per interval, with the
// count, not one per SYN.
const refusedLogEvery = 10 * time.Second

func (s *Session) readFrames() error {
	for ; ; s.frames++ {
		if err := s.readHeader(); err != nil {
			if err == errIdle {
				return err
			}
			if s.IsClosed() {
				return nil
			}
			if err == io.EOF && s.frames == 0 && s.client {
				return ErrNoAnswer
			}
			// A server that closes with our bytes unread resets instead.
			if errors.Is(err, syscall.ECONNRESET) && s.frames == 0 && s.client {
				return fmt.Errorf("%w (%v)", ErrNoAnswer, err)
			}
			if err == io.EOF {
				return errors.New("connection closed by peer")
			}
			return fmt.Errorf("read: %w", err)
		}
		s.noteRecv()
		cmd, sid, n := s.hdr.Cmd(), s.hdr.StreamID(), s.hdr.Length()
		var err error
		switch cmd {
		case wire.CmdPSH:
			err = s.onPSH(sid, n)
		case wire.CmdSYN:
			if s.client {
				err = s.discard(n)
				break
			}
			if !s.settingsSeen {
				s.alert("client did not send its settings")
				return fmt.Errorf("%w: SYN before Settings", ErrProtocol)
			}
			if err = s.discard(n); err == nil {
				s.onSYN(sid)
			}
		case wire.CmdFIN:
			if err = s.discard(n); err == nil {
				s.onFIN(sid)
			}
		case wire.CmdSettings:
			var body []byte
			if body, err = s.readBody(n); err == nil && !s.client && !s.settingsSeen {
				s.settingsSeen = true
				s.onSettings(body)
			}
		case wire.CmdServerSettings:
			var body []byte
			if body, err = s.readBody(n); err == nil && s.client {
				v := wire.ParseSettings(body).Version()
				s.peerVersion.Store(int32(min(v, 255)))
				s.serverSettings.Store(true)
				s.log.Debug("server settings", "version", v)
				if s.cfg.OnPeerVersion != nil {
					s.cfg.OnPeerVersion(v < 2)
				}
			}
		case wire.CmdAlert:
			var body []byte
			if body, err = s.readBody(n); err == nil {
				text := string(body)
				s.log.Warn("alert from peer", "text", text)
				return &AlertError{Text: text}
			}
		case wire.CmdUpdatePaddingScheme:
			var body []byte
			if body, err = s.readBody(n); err == nil && s.client {
				s.onScheme(body)
			}
		case wire.CmdSYNACK:
			var body []byte
			if body, err = s.readBody(n); err == nil && s.client {
				s.onSYNACK(sid, body)
			}
		case wire.CmdHeartRequest:
			if err = s.discard(n); err == nil {
				s.peerProbes.Store(true)
				s.queueCtrl(wire.CmdHeartResponse, sid, nil)
			}
		case wire.CmdHeartResponse:
			if err = s.discard(n); err == nil {
				s.mu.Lock()
				if s.pongCh != nil {
					close(s.pongCh)
					s.pongCh = nil
				}
				s.mu.Unlock()
			}
		default: // Waste and unknown commands: skip the data by its length
			err = s.discard(n)
		}
		if err != nil {
			return err
		}
	}
}

// readBody reads a control frame's data into a fresh slice (control frames
// are rare; their data may be kept by the handler).
func (s *Session) readBody(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.body(), b); err != nil {
		return nil, readErr(err)
	}
	return b, nil
}

func (s *Session) discard(n int) error {
	if n == 0 {
		return nil
	}
	buf := s.alloc.get(min(n, 16<<10))
	defer s.alloc.put(buf)
	for n > 0 {
		m := min(n, len(buf.b))
		if _, err := io.ReadFull(s.body(), buf.b[:m]); err != nil {
			return readErr(err)
		}
		n -= m
	}
	return nil
}

func readErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read: %w", err)
}

func (s *Session) lookup(sid uint32) *Stream {
	s.mu.Lock()
	st := s.streams[sid]
	s.mu.Unlock()
	return st
}

func (s *Session) onPSH(sid uint32, n int) error {
	st := s.lookup(sid)
	if st == nil || n == 0 {
		return s.discard(n)
	}
	buf := s.alloc.get(n)
	if _, err := io.ReadFull(s.body(), buf.b); err != nil {
		s.alloc.put(buf)
		return readErr(err)
	}
	if s.client && !s.dataSeen.Load() {
		s.dataSeen.Store(true)
		if !s.serverSettings.Load() && s.cfg.OnPeerVersion != nil {
			s.cfg.OnPeerVersion(true) // a v2 server sends ServerSettings first
		}
	}
	held, added := st.push(buf)
	if held <= 0 { // written out at once, or the stream is gone: buf is freed
		return nil
	}
	total := s.buffered.Add(int64(added))
	if held > s.cfg.StreamBuffer {
		return s.overflow(st)
	}
	if total > int64(s.cfg.SessionBuffer) {
		return s.overflow(s.largest())
	}
	return nil
}

// overflow handles a stream over its buffer limit. Alone on the session, it
// holds the read loop until the reader catches up: plain backpressure, which
// stalls nobody else. With siblings, it resets the stream so they keep
// moving. A client stream that gets a sibling (OpenStream) while the read
// loop holds for it is reset then.
func (s *Session) overflow(st *Stream) error {
	if st == nil {
		return nil
	}
	var ping *time.Ticker
	defer func() {
		if ping != nil {
			ping.Stop()
			s.holding.Store(false)
			s.noteRecv() // the quiet time we caused ourselves does not count
		}
	}()
	for {
		s.mu.Lock()
		alone := len(s.streams) <= 1
		var added chan struct{} // only a client's OpenStream adds streams
		if s.client {
			added = lazy(&s.added, 1)
		}
		s.mu.Unlock()
		if !alone {
			s.log.Warn("stream receive buffer full with other streams on the session: resetting it",
				"stream", st.id, "limit", s.cfg.StreamBuffer)
			if st.terminate(ErrBufferOverflow, true) {
				s.queueCtrl(wire.CmdFIN, st.id, nil)
			}
			return nil
		}
		held, done, drained := st.heldWait()
		if done || (held <= s.cfg.StreamBuffer && s.buffered.Load() <= int64(s.cfg.SessionBuffer)) {
			return nil
		}
		if ping == nil {
			// While we hold, the peer's probes sit unread behind the data:
			// tell a v2 peer now and then that we are alive, just busy.
			s.holding.Store(true)
			ping = time.NewTicker(holdPingInterval)
		}
		select {
		case <-drained:
		case <-st.done:
		case <-added:
		case <-ping.C:
			// only to a peer that probes us: a peer that does not (sing-box,
			// mihomo) gains nothing, and its answer could not be written
			// while we hold, which some peers treat as fatal
			if s.PeerVersion() >= 2 && s.peerProbes.Load() {
				s.queueCtrl(wire.CmdHeartRequest, 0, nil)
			}
		case <-s.die:
			return nil
		}
	}
}

func (s *Session) largest() *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	var big *Stream
	bigN := -1
	for _, st := range s.streams {
		if n, _ := st.held(); n > bigN {
			big, bigN = st, n
		}
	}
	return big
}

func (s *Session) onSYN(sid uint32) {
	if sid == 0 {
		s.log.Debug("ignoring SYN for stream 0")
		return
	}
	s.mu.Lock()
	if _, ok := s.streams[sid]; ok || s.IsClosed() {
		s.mu.Unlock()
		return
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		s.mu.Unlock()
		s.refused++
		if now := mono(); s.refusedLogAt == 0 || time.Duration(now-s.refusedLogAt) >= refusedLogEvery {
			s.log.Warn("refusing stream: limit reached", "stream", sid, "limit", s.cfg.MaxStreams,
				"refused", s.refused)
			s.refusedLogAt, s.refused = now, 0
		}
		s.queueCtrl(wire.CmdFIN, sid, nil)
		return
	}
	st := newStream(s, sid)
	s.streams[sid] = st
	s.mu.Unlock()
	if s.cfg.OnStream == nil {
		st.Close()
		return
	}
	s.cfg.OnStream(st)
}

func (s *Session) onFIN(sid uint32) {
	s.mu.Lock()
	st := s.streams[sid]
	delete(s.streams, sid)
	s.mu.Unlock()
	if st != nil {
		st.terminate(io.EOF, false)
		s.streamGone()
	}
}

func (s *Session) onSettings(body []byte) {
	set := wire.ParseSettings(body)
	v := set.Version()
	s.peerVersion.Store(int32(min(v, 255)))
	name, _ := set.Get(wire.KeyClient)
	md5, _ := set.Get(wire.KeyPaddingMD5)
	s.log.Debug("client settings", "version", v, "client", name, "padding_md5", md5)
	if v >= 2 {
		reply := wire.Settings{{Key: wire.KeyVersion, Value: "2"}}.Append(nil)
		s.queueCtrl(wire.CmdServerSettings, 0, reply)
	}
	scheme := padding.Default()
	if s.cfg.ServerScheme != nil {
		if sc := s.cfg.ServerScheme(); sc != nil {
			scheme = sc
		}
	}
	if md5 != scheme.MD5() {
		s.queueCtrl(wire.CmdUpdatePaddingScheme, 0, scheme.Raw())
	}
}

func (s *Session) onScheme(body []byte) {
	sc, err := padding.Parse(body)
	if err != nil {
		// read it as other clients do, skipping what they skip, so that
		// we shape as they do and the server does not push it again
		lenient, lerr := padding.ParseLenient(body)
		if lerr != nil {
			s.log.Warn("server pushed a padding scheme that does not parse; keeping the current one", "err", lerr)
			return
		}
		s.log.Info("server pushed a padding scheme with items other clients skip; skipping them too", "err", err)
		sc = lenient
	}
	s.log.Debug("server pushed a padding scheme", "md5", sc.MD5())
	if s.cfg.OnScheme != nil {
		s.cfg.OnScheme(sc)
	}
}

func (s *Session) onSYNACK(sid uint32, body []byte) {
	st := s.lookup(sid)
	if st == nil {
		return
	}
	if len(body) == 0 {
		st.synackOK()
		return
	}
	if st.terminate(&RemoteError{Text: string(body)}, true) {
		s.queueCtrl(wire.CmdFIN, sid, nil)
	}
}

// alert sends an Alert synchronously, with a short deadline: the session is
// about to close.
func (s *Session) alert(text string) {
	if len(text) > wire.MaxPayload {
		text = text[:wire.MaxPayload]
	}
	if err := s.lockWrite(canceller{}); err != nil {
		return
	}
	defer s.unlockWrite()
	buf := s.takeCtrl(s.wbuf[:0])
	buf, _ = wire.AppendFrame(buf, wire.CmdAlert, 0, []byte(text))
	s.conn.SetWriteDeadline(time.Now().Add(DefaultAlertTimeout))
	if _, err := s.conn.Write(buf); err != nil {
		s.log.Debug("sending alert failed", "err", err)
	}
}

// removeStream drops a stream from the table. It reports whether the stream
// was still registered (and so whether the peer still knows it).
func (s *Session) removeStream(st *Stream) bool {
	s.mu.Lock()
	if s.streams[st.id] != st {
		s.mu.Unlock()
		return false
	}
	delete(s.streams, st.id)
	s.mu.Unlock()
	s.streamGone()
	return true
}

// String describes the session for logs: its role and the peer's address.
func (s *Session) String() string {
	role := "server"
	if s.client {
		role = "client"
	}
	return role + " session " + strconv.Quote(s.conn.RemoteAddr().String())
}
