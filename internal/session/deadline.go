package session

import (
	"sync"
	"time"
)

// deadline turns a time into a channel that is closed once the time has
// passed, for use in select statements. Setting a new time re-arms it.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{} // closed when expired
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func expired(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// set arms the deadline for t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired: wait until its callback has closed ch
	}
	d.timer = nil
	wasExpired := expired(d.ch)
	if t.IsZero() {
		if wasExpired {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if wasExpired {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !wasExpired {
		close(d.ch)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}
