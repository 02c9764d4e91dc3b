// Package pool keeps a client's AnyTLS sessions: one live stream per session,
// idle sessions reused newest first (highest seq), idle ones closed after a
// timeout except the newest MinIdle, and dead ones dropped at once.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Defaults for Config's zero values, as in the reference client.
const (
	DefaultCheckInterval = 30 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
	DefaultMinIdle       = 5
)

// ErrClosed is returned by OpenStream after Close.
var ErrClosed = errors.New("anytls: client closed")

// Config configures a Pool.
type Config struct {
	// CheckInterval is how often idle sessions are examined.
	CheckInterval time.Duration
	// IdleTimeout is how long a session may stay idle before it is closed.
	IdleTimeout time.Duration
	// MinIdle is how many of the newest idle sessions are kept open even when
	// they have been idle longer than IdleTimeout. Negative means zero.
	MinIdle int
	// DisableReuse closes every session when its stream ends.
	DisableReuse bool
	// Logger receives the pool's logs; nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("idle check interval %v is negative", c.CheckInterval))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle session timeout %v is negative", c.IdleTimeout))
	}
	return errors.Join(errs...)
}

// DialFunc creates a new client session. onClose must be passed to the
// session's Config.OnClose so the pool learns of its death.
type DialFunc func(ctx context.Context, onClose func(error)) (*session.Session, error)

type entry struct {
	sess      *session.Session
	seq       uint64
	idleSince time.Time
}

// Pool hands out streams on pooled sessions.
type Pool struct {
	cfg  Config
	dial DialFunc
	log  *slog.Logger

	mu     sync.Mutex
	seq    uint64
	idle   []*entry // sorted by seq ascending; the newest is last
	all    map[*session.Session]*entry
	closed bool

	wg sync.WaitGroup
	// done ends with Close: it stops the idle checker and cuts short the
	// dials in progress
	done   context.Context
	finish context.CancelFunc
}

// New creates a pool and starts its idle checker.
func New(cfg Config, dial DialFunc) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinIdle < 0 {
		cfg.MinIdle = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg:  cfg,
		dial: dial,
		log:  cfg.Logger,
		all:  make(map[*session.Session]*entry),
	}
	p.done, p.finish = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.checker()
	return p, nil
}

// OpenStream opens a stream to dst on the newest idle session, or on a new
// session when none is idle.
func (p *Pool) OpenStream(ctx context.Context, dst wire.Addr) (*session.Stream, error) {
	for attempt := 0; ; attempt++ {
		e, fresh, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		// The stream's end returns the session to the idle list, but not
		// the end of a stream whose opening failed: that session is
		// aborted below, and must not be handed out meanwhile.
		var state atomic.Int32 // opening, then opened or ended
		st, err := e.sess.OpenStream(ctx, dst, func() {
			if !state.CompareAndSwap(opening, ended) {
				p.streamEnded(e)
			}
		})
		if err == nil {
			if !state.CompareAndSwap(opening, opened) {
				p.streamEnded(e) // it ended before OpenStream returned
			}
			return st, nil
		}
		if testHookOpenFailed != nil {
			testHookOpenFailed()
		}
		e.sess.Abort()
		// A pooled session may have died while idle: try another, but never
		// retry a session we just made, nor after the caller gave up.
		if fresh || ctx.Err() != nil || attempt >= 3 {
			return nil, err
		}
		p.log.Debug("pooled session failed, retrying on another", "err", err)
	}
}

// States of a stream being opened by OpenStream.
const (
	opening int32 = iota
	opened
	ended
)

// testHookOpenFailed runs when opening a stream failed, before the session
// is aborted.
var testHookOpenFailed func()

func (p *Pool) get(ctx context.Context) (*entry, bool, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, ErrClosed
	}
	// newest first; a session being probed after trouble is passed over
	// (it stays pooled: if the probe is answered it serves again)
	for i := len(p.idle) - 1; i >= 0; i-- {
		e := p.idle[i]
		if e.sess.IsClosed() {
			p.idle = slices.Delete(p.idle, i, i+1)
			continue
		}
		if e.sess.Suspected() {
			continue
		}
		p.idle = slices.Delete(p.idle, i, i+1)
		p.mu.Unlock()
		return e, false, nil
	}
	p.seq++
	seq := p.seq
	p.mu.Unlock()

	e := &entry{seq: seq}
	dctx, cancel := context.WithCancel(ctx)
	unwatch := context.AfterFunc(p.done, cancel)
	sess, err := p.dial(dctx, func(error) { p.sessionDied(e) })
	unwatch()
	cancel()
	if err != nil {
		if p.done.Err() != nil {
			return nil, false, ErrClosed
		}
		return nil, false, err
	}
	p.mu.Lock()
	e.sess = sess
	if p.closed {
		p.mu.Unlock()
		sess.Close()
		return nil, false, ErrClosed
	}
	if !sess.IsClosed() {
		p.all[sess] = e
	}
	p.mu.Unlock()
	p.log.Debug("new session", "seq", seq)
	return e, true, nil
}

// streamEnded runs when a stream ends; it may be called from the session's
// read loop, so it never waits.
func (p *Pool) streamEnded(e *entry) {
	p.mu.Lock()
	// checked under p.mu: sessionDied, which takes p.mu after the session is
	// marked closed, then always runs after the entry is back in idle
	if e.sess.IsClosed() {
		p.mu.Unlock()
		return
	}
	if p.closed || p.cfg.DisableReuse || e.sess.NumStreams() > 0 {
		closeIt := p.closed || p.cfg.DisableReuse
		p.mu.Unlock()
		if closeIt {
			e.sess.Abort()
		}
		return
	}
	e.idleSince = time.Now()
	i, _ := slices.BinarySearchFunc(p.idle, e.seq, func(x *entry, seq uint64) int {
		switch {
		case x.seq < seq:
			return -1
		case x.seq > seq:
			return 1
		}
		return 0
	})
	if i < len(p.idle) && p.idle[i] == e {
		p.mu.Unlock()
		return
	}
	p.idle = slices.Insert(p.idle, i, e)
	p.mu.Unlock()
}

func (p *Pool) sessionDied(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.sess != nil {
		delete(p.all, e.sess)
	}
	if i := slices.Index(p.idle, e); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
	}
}

func (p *Pool) checker() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-p.done.Done():
			return
		case now := <-t.C:
			p.CloseIdle(now.Add(-p.cfg.IdleTimeout))
		}
	}
}

// CloseIdle closes idle sessions that became idle before cutoff, keeping the
// newest MinIdle idle sessions open (their idle time restarts). It returns
// how many it closed.
func (p *Pool) CloseIdle(cutoff time.Time) int {
	var victims []*session.Session
	p.mu.Lock()
	kept := 0
	keep := make([]*entry, 0, len(p.idle))
	// walk newest first, then restore ascending order
	for i := len(p.idle) - 1; i >= 0; i-- {
		e := p.idle[i]
		switch {
		case !e.idleSince.Before(cutoff):
			kept++
			keep = append(keep, e)
		case kept < p.cfg.MinIdle:
			kept++
			e.idleSince = time.Now()
			keep = append(keep, e)
		default:
			victims = append(victims, e.sess)
		}
	}
	slices.Reverse(keep)
	p.idle = keep
	p.mu.Unlock()
	for _, s := range victims {
		s.Close()
	}
	if len(victims) > 0 {
		p.log.Debug("closed idle sessions", "count", len(victims))
	}
	return len(victims)
}

// Stats returns the number of sessions and of idle sessions.
func (p *Pool) Stats() (sessions, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all), len(p.idle)
}

// Close closes every session and stops the idle checker, waiting for both.
// A dial in progress is cut short: its OpenStream returns ErrClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	sessions := make([]*session.Session, 0, len(p.all))
	for s := range p.all {
		sessions = append(sessions, s)
	}
	p.idle = nil
	p.mu.Unlock()
	p.finish()
	for _, s := range sessions {
		s.Close()
	}
	p.wg.Wait()
	return nil
}
