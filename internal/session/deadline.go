package session

import (
	"sync"
	"time"
)

// deadline turns a time into a channel that is closed once the time has
// passed, for use in select statements. Setting a new time re-arms it. The
// zero value has no time set; its channel is made when first needed, so
// that a stream whose deadlines nobody waits for or sets holds none.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{} // closed when expired; nil until needed
}

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
	if t.IsZero() {
		if expired(d.ch) {
			d.ch = nil
		}
		return
	}
	if d.ch == nil || expired(d.ch) {
		d.ch = make(chan struct{})
	}
	if dur := time.Until(t); dur > 0 {
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	close(d.ch)
}

// passed reports whether the deadline has passed, without making a channel.
func (d *deadline) passed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch != nil && expired(d.ch)
}

// canceller is what a write that has to wait for the write token gives up
// on: a stream's write deadline, whose channel is made only then (a write
// that finds the token free makes none), or a plain channel (a context's).
// The zero value never cancels.
type canceller struct {
	d  *deadline
	ch <-chan struct{}
}

func (c canceller) done() <-chan struct{} {
	if c.d != nil {
		return c.d.wait()
	}
	return c.ch
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return lazy(&d.ch, 0)
}
