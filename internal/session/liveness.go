package session

import (
	"errors"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// Liveness defaults. See Config for what each one does.
const (
	DefaultSYNACKTimeout = 5 * time.Second
	DefaultProbeTimeout  = 5 * time.Second
	DefaultQuietTimeout  = 10 * time.Second
	DefaultWriteTimeout  = 2 * time.Minute
	DefaultServerIdle    = 5 * time.Minute
	// holdPingInterval is how often a read loop that holds for a slow lone
	// stream tells a v2 peer that it is alive (the peer's probes go
	// unanswered meanwhile, since they sit behind the data not yet read).
	holdPingInterval = 3 * time.Second
)

// ErrHeartbeatTimeout is the cause of a session closed because a probe got no
// answer: the connection stopped carrying data.
var ErrHeartbeatTimeout = &timeoutError{msg: "anytls: no answer to heartbeat: the connection to the peer is dead"}

// ErrIdle is the cause of a server session closed for carrying nothing for
// its idle timeout.
var ErrIdle = errors.New("anytls: session idle")

// ErrSYNACKTimeout ends a stream whose v2 server did not confirm it in time.
// It is a net.Error whose Timeout is true.
var ErrSYNACKTimeout = &timeoutError{msg: "anytls: server did not confirm the stream in time (no SYNACK)"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// dur turns a configured duration into an effective one: zero means def,
// negative means off (0).
// epoch is the reference point of mono; set once, when the package is
// initialised, and only read after that.
var epoch = time.Now()

// mono returns a time on the monotonic clock, in nanoseconds since epoch
// (made odd, so that it is never 0, which fields use for "none"). The
// session keeps its times this way, in 8 bytes instead of a time.Time's
// 24, and a step of the wall clock (NTP, a migrated VM) moves none of them.
func mono() int64 { return monoAt(time.Now()) }

// monoAt is mono for t, which must carry a monotonic reading (as the
// results of time.Now and of Add on them do).
func monoAt(t time.Time) int64 { return int64(t.Sub(epoch)) | 1 }

func dur(v, def time.Duration) time.Duration {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// noteRecv records that a frame arrived. Called by the read loop per frame.
// Any frame answers an outstanding probe: the path works.
func (s *Session) noteRecv() {
	s.lastRecv.Store(mono())
	if s.probeAt.Load() != 0 {
		s.suspicious.Store(false)
		s.probeUnsent.Store(false)
		s.probeAt.Store(0)
	}
}

// probeWritten restarts the outstanding probe's clock now that it is on the
// wire: a probe that waited behind a write the peer did not take (a peer
// that stops reading while a destination is slow, as sing-anytls's server
// does) says nothing about the path until it is sent. The write token is
// held.
// taken is the probeAt of the probe the write carried: a probe answered
// meanwhile, and a newer one queued since, are left alone.
func (s *Session) probeWritten(taken int64) {
	if s.probeAt.CompareAndSwap(taken, mono()) {
		s.probeUnsent.Store(false)
	}
}

// Suspected reports whether the session is being probed because something
// went wrong on it (a late SYNACK, silence with streams open): it may be
// dead. The pool does not hand out suspected sessions. Routine heartbeats on
// idle sessions do not make a session suspected.
func (s *Session) Suspected() bool { return s.probeAt.Load() != 0 && s.suspicious.Load() }

// suspect probes the session (v2 client peers only) unless a probe is
// already outstanding. serious marks the session Suspected meanwhile.
// Without probes (ProbeTimeout off) it does nothing: no verdict would ever
// clear the suspicion.
func (s *Session) suspect(serious bool) {
	if !s.client || s.cfg.ProbeTimeout <= 0 || s.PeerVersion() < 2 || s.IsClosed() {
		return
	}
	if serious {
		s.suspicious.Store(true)
	}
	now := mono()
	if !s.probeAt.CompareAndSwap(0, now) {
		return
	}
	s.probeUnsent.Store(true)
	s.queue(wire.CmdHeartRequest, 0, nil, true)
	s.armLiveness(s.cfg.ProbeTimeout)
}

// armLiveness schedules the liveness check in d, unless it is already due
// sooner: a pending verdict is never postponed.
func (s *Session) armLiveness(d time.Duration) { s.schedule(d, false) }

// rearm schedules the next check from the check itself.
func (s *Session) rearm(d time.Duration) { s.schedule(d, true) }

func (s *Session) schedule(d time.Duration, force bool) {
	if d <= 0 {
		return
	}
	now := time.Now()
	at := now.Add(d)
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.IsClosed() {
		return
	}
	if !force && s.liveTimer != nil && s.liveAt > monoAt(now) && monoAt(at) >= s.liveAt {
		return
	}
	s.liveAt = monoAt(at)
	if s.liveTimer == nil {
		s.liveTimer = time.AfterFunc(d, s.checkLiveness)
		return
	}
	s.liveTimer.Reset(d)
}

// streamGone runs when a client stream leaves the table: an idle session's
// heartbeat is due IdleHeartbeat after the last frame, not at the next
// quiet check.
func (s *Session) streamGone() {
	if !s.client || s.cfg.IdleHeartbeat <= 0 || s.NumStreams() > 0 {
		return
	}
	quiet := time.Duration(mono() - s.lastRecv.Load())
	s.armLiveness(max(s.cfg.IdleHeartbeat-quiet, time.Millisecond))
}

func (s *Session) stopLiveness() {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.liveTimer != nil {
		s.liveTimer.Stop()
	}
}

// checkLiveness runs from a timer. A client probes a v2 server that has been
// quiet for QuietTimeout while streams are open (or for IdleHeartbeat while
// none are) and closes the session when the probe gets no frame back within
// ProbeTimeout. A server closes a session that has had no streams and no
// frames for its idle timeout.
func (s *Session) checkLiveness() {
	if s.IsClosed() {
		return
	}
	now := mono()
	last := s.lastRecv.Load()
	if !s.client {
		if s.cfg.IdleTimeout <= 0 {
			return
		}
		idle := time.Duration(now - last)
		if s.NumStreams() == 0 && !s.holding.Load() && idle >= s.cfg.IdleTimeout {
			s.log.Debug("closing idle session", "idle", idle)
			s.fail(ErrIdle)
			return
		}
		s.rearm(s.cfg.IdleTimeout - min(idle, s.cfg.IdleTimeout) + time.Millisecond)
		return
	}
	if p := s.probeAt.Load(); p != 0 {
		switch {
		case last >= p || s.holding.Load():
			// answered, or our own reader is the bottleneck
			s.suspicious.Store(false)
			s.probeAt.Store(0)
		case s.probeUnsent.Load():
			// not on the wire yet: it waits behind a write of ours that the
			// peer does not take. WriteTimeout bounds that wait; the
			// verdict counts from the probe's write.
			s.rearm(s.cfg.ProbeTimeout)
			return
		case time.Duration(now-p) >= s.cfg.ProbeTimeout:
			s.log.Warn("session dead: no answer to a heartbeat", "waited", s.cfg.ProbeTimeout)
			s.fail(ErrHeartbeatTimeout)
			return
		default:
			s.rearm(time.Duration(p + int64(s.cfg.ProbeTimeout) - now))
			return
		}
	}
	if s.PeerVersion() < 2 {
		// a v1 peer cannot answer; look again later in case ServerSettings
		// was merely late
		s.rearm(max(s.cfg.QuietTimeout, s.cfg.IdleHeartbeat))
		return
	}
	wait, serious := s.cfg.QuietTimeout, true
	if s.NumStreams() == 0 {
		wait, serious = s.cfg.IdleHeartbeat, false
	}
	if wait <= 0 || s.holding.Load() {
		s.rearm(max(s.cfg.QuietTimeout, s.cfg.IdleHeartbeat))
		return
	}
	quiet := time.Duration(now - last)
	if quiet >= wait {
		s.suspect(serious)
		return
	}
	s.rearm(wait - quiet)
}

// armSYNACK starts a stream's SYNACK deadline.
func (s *Session) armSYNACK(st *Stream) {
	if s.cfg.SYNACKTimeout <= 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.synacked || st.ended {
		return // the answer came before the timer could be armed
	}
	st.synackTimer = time.AfterFunc(s.cfg.SYNACKTimeout, func() { s.synackExpired(st) })
}

// synackExpired runs when a stream's SYNACK deadline passes. With a v2 server
// the stream fails with ErrSYNACKTimeout and the session is probed; with a
// server that never announced v2, no SYNACK is coming, and the stream is
// taken as open.
func (s *Session) synackExpired(st *Stream) {
	if st.isSynacked() {
		return
	}
	if s.PeerVersion() < 2 {
		st.synackOK()
		if !s.serverSettings.Load() && s.cfg.OnPeerVersion != nil {
			s.cfg.OnPeerVersion(true) // the next sessions need not wait
		}
		return
	}
	s.log.Info("no SYNACK in time: failing the stream and probing the session",
		"stream", st.id, "timeout", s.cfg.SYNACKTimeout)
	// suspected first: the stream's end returns the session to a client's
	// pool, which must pass it over until the probe is answered
	s.suspect(true)
	if st.terminate(ErrSYNACKTimeout, true) && !s.IsClosed() {
		s.queueCtrl(wire.CmdFIN, st.id, nil)
	}
}
