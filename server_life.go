package anytls

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Server limits and shutdown defaults.
const (
	// DefaultMaxSessions bounds the authenticated sessions a server carries
	// at once. An idle session costs about 15 KiB (its TLS connection and
	// session state; on Linux no goroutine, see sockio.Poller); one that
	// moved data may keep up to ~300 KiB of
	// buffers; the receive buffers of busy streams come on top (bounded by
	// SessionBuffer).
	DefaultMaxSessions = 4096
	// DefaultDrainTimeout is how long anytls-server lets live streams finish
	// after SIGTERM or SIGINT (Shutdown's context) before it closes them.
	DefaultDrainTimeout = 30 * time.Second
)

// Server errors. Match them with errors.Is.
var (
	// ErrTooManySessions refuses an authenticated client while the server
	// carries MaxSessions sessions; the client gets an Alert saying so.
	ErrTooManySessions = errors.New("anytls: server session limit reached")
	// ErrUserSessionLimit refuses an authenticated client whose user holds
	// MaxSessionsPerUser sessions; the client gets the same Alert.
	ErrUserSessionLimit = errors.New("anytls: user session limit reached")
	// ErrServerClosed is returned by Serve after Shutdown or Close, and
	// refuses new streams on a draining server.
	ErrServerClosed = errors.New("anytls: server closed")
)

// alertBusy is the Alert text for a client refused by the session limit.
const alertBusy = "server is at its session limit; try again later"

// ServerStats counts what a server carries at one moment.
type ServerStats struct {
	// Pending counts connections not (yet) trusted: in the TLS handshake
	// or the preamble, answered as a web server, or relayed to the fallback.
	Pending int
	// Sessions counts authenticated sessions.
	Sessions int
	// Streams counts the streams being served (TCP relays and UDP
	// associations, including those still waiting for their destination).
	Streams int
}

// liveSession is an authenticated session the server carries.
type liveSession struct {
	sess    *session.Session
	user    string // the user's password hash: names need not be unique
	streams int    // streams being served; guarded by Server.mu
}

// Stats returns the server's current counts.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ServerStats{Pending: len(s.conns), Sessions: len(s.sessions)}
	for ls := range s.sessions {
		st.Streams += ls.streams
	}
	return st
}

// begin counts a goroutine that serves a connection in s.wg, unless the
// server is closed or draining. Adding under mu keeps every Add before the
// Wait of Close or Shutdown.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining {
		return false
	}
	s.wg.Add(1)
	return true
}

// addSession registers an authenticated session on raw, which is no longer
// a pending connection, or refuses it when the server is draining or at
// MaxSessions.
func (s *Server) addSession(ls *liveSession, raw net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining {
		return ErrServerClosed
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		return ErrTooManySessions
	}
	if s.cfg.MaxSessionsPerUser > 0 && s.perUser[ls.user] >= s.cfg.MaxSessionsPerUser {
		return ErrUserSessionLimit
	}
	delete(s.conns, raw)
	s.sessions[ls] = struct{}{}
	s.perUser[ls.user]++
	return nil
}

func (s *Server) removeSession(ls *liveSession) {
	s.mu.Lock()
	if _, ok := s.sessions[ls]; ok {
		delete(s.sessions, ls)
		if s.perUser[ls.user]--; s.perUser[ls.user] <= 0 {
			delete(s.perUser, ls.user)
		}
	}
	s.mu.Unlock()
}

// streamStarted counts a stream of ls; it reports false, counting nothing,
// when the server is draining: the stream must be refused.
func (s *Server) streamStarted(ls *liveSession) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining || s.closed {
		return false
	}
	ls.streams++
	return true
}

// streamEnded uncounts a stream; a draining server closes the session with
// its last stream.
func (s *Server) streamEnded(ls *liveSession) {
	s.mu.Lock()
	ls.streams--
	last := s.draining && ls.streams == 0
	s.mu.Unlock()
	if last {
		s.closeDrained(ls)
	}
}

// closeDrained closes a session of a draining server once what it has
// queued, the FIN of its last stream above all, is on the wire: a Ping goes
// out behind it. A v2 client's answer also shows that it has read
// everything, so that closing cannot reset data it has not read yet; a v1
// client never answers, and gets a short grace instead.
func (s *Server) closeDrained(ls *liveSession) {
	s.wg.Add(1) // by a goroutine that the server still counts
	go func() {
		defer s.wg.Done()
		wait := 200 * time.Millisecond
		if ls.sess.PeerVersion() >= 2 {
			wait = 2 * time.Second
		}
		ctx, cancel := context.WithTimeout(s.ctx, wait)
		ls.sess.Ping(ctx)
		cancel()
		ls.sess.Abort()
	}()
}

// refusedLogEvery spaces the warnings about refused sessions: one line per
// interval, counting the sessions refused since the previous one.
const refusedLogEvery = 10 * time.Second

// refuseSession tells an authenticated client that the server cannot take
// its session, with an Alert, and logs why.
func (s *Server) refuseSession(conn net.Conn, err error, remote, user string) {
	if errors.Is(err, ErrServerClosed) {
		s.log.Debug("session refused: server shutting down", "remote", remote, "user", user)
		return
	}
	if errors.Is(err, ErrUserSessionLimit) {
		s.mu.Lock()
		warn, n := s.userRefused.event()
		s.mu.Unlock()
		if warn {
			s.log.Warn("session refused: user limit reached", "remote", remote, "user", user,
				"limit", s.cfg.MaxSessionsPerUser, "refused", n)
		} else {
			s.log.Debug("session refused: user limit reached (warned already)", "remote", remote, "user", user)
		}
		s.sendAlert(conn)
		return
	}
	s.mu.Lock()
	warn, n := s.refused.event()
	s.mu.Unlock()
	if warn {
		s.log.Warn("session refused: limit reached", "remote", remote, "user", user, "limit", s.cfg.MaxSessions,
			"refused", n)
	} else {
		s.log.Debug("session refused: limit reached (warned already)", "remote", remote, "user", user)
	}
	s.sendAlert(conn)
}

// sendAlert tells a refused client that the server is busy.
func (s *Server) sendAlert(conn net.Conn) {
	frame, _ := wire.AppendFrame(nil, wire.CmdAlert, 0, []byte(alertBusy))
	conn.SetWriteDeadline(time.Now().Add(session.DefaultAlertTimeout))
	conn.Write(frame)
}

// MaxFallbackRelays bounds the connections that failed authentication and
// are being relayed to ServerConfig.Fallback at once (each holds two
// goroutines and a 64 KiB buffer while the origin keeps it open); beyond
// it, such a connection is closed.
const MaxFallbackRelays = 1024

// spacedWarning counts events that are warned about at most once per
// refusedLogEvery, with the count since the last warning.
type spacedWarning struct {
	n  int
	at time.Time
}

// event counts one event and reports whether to warn now, with the count.
func (w *spacedWarning) event() (warn bool, n int) {
	w.n++
	n = w.n
	if w.at.IsZero() || time.Since(w.at) >= refusedLogEvery {
		w.at, w.n = time.Now(), 0
		return true, n
	}
	return false, n
}

// Shutdown stops the server gracefully: it closes the listeners (Serve
// returns ErrServerClosed) and every connection that is not an
// authenticated session (handshakes, fallback relays), closes sessions
// without streams at once, refuses new streams (an error SYNACK with the text of
// ErrServerClosed), and closes each remaining session when its last stream
// ends. It returns nil once every session has ended, or, when ctx ends
// first, closes everything as Close does and returns ctx's error. Either
// way no goroutine of the server is left when it returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		s.poller.Wait()
		return nil
	}
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	for c := range s.origins {
		c.Close()
	}
	var idle []*liveSession
	streams := 0
	for ls := range s.sessions {
		if ls.streams == 0 {
			idle = append(idle, ls)
		}
		streams += ls.streams
	}
	sessions := len(s.sessions)
	s.mu.Unlock()
	s.log.Info("shutting down: draining", "sessions", sessions, "streams", streams)
	for _, ls := range idle {
		s.closeDrained(ls)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.Close()
		s.log.Info("shutdown complete")
		return nil
	case <-ctx.Done():
		left := s.Stats()
		s.log.Warn("drain timeout: closing the remaining sessions", "sessions", left.Sessions, "streams", left.Streams)
		s.Close()
		<-done
		return ctx.Err()
	}
}

// isTimeout reports whether err is a deadline that passed.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
