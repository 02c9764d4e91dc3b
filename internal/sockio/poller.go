package sockio

import (
	"sync/atomic"
	"time"
)

// SweepEvery is how often a Poller with parked readers checks, by default,
// that their sockets are still open. Closing a socket takes it out of the poller's
// epoll set without telling anyone: a reader parked on a socket that was
// closed behind its owner's back (the owner itself wakes it, see Parking)
// is found and resumed by the next sweep.
const SweepEvery = time.Second

// A Poller parks idle readers without a goroutine: Park registers a socket
// and a function, and the function runs on a new goroutine once the socket
// has something to read (data, an end of stream, an error). A goroutine
// that waits costs its descriptor and a stack of at least 2 KiB; a parked
// reader costs a map entry. Waking a parked reader when there is nothing to
// read is harmless: it reads nothing and parks again once idle. A Poller
// runs one goroutine while anything is parked and none otherwise, so it
// needs no Close. The zero value is ready to use; a nil *Poller parks
// nothing.
//
// Only Linux has one (epoll); elsewhere Park reports that it could not
// park, and the caller waits on a goroutine of its own.
type Poller struct {
	// Sweep is how often the sweep runs; zero means SweepEvery. Set it
	// before the first Park.
	Sweep time.Duration

	poller // per system
}

// A Parking is a reader's place in a Poller, for an owner that closes the
// reader's socket from another goroutine: the owner calls Close after
// closing the socket, and a parked reader resumes (and finds the socket
// closed) at once instead of at the next sweep. Set Poller before the first
// Park; with none, nothing parks.
type Parking struct {
	Poller *Poller
	id     atomic.Uint64
	closed atomic.Bool
}

// Park parks r's reader (see Poller.Park) unless Close was called; it
// reports whether it did. When it did not, the caller waits itself.
func (k *Parking) Park(r *Reader, fn func()) bool {
	if k.Poller == nil || k.closed.Load() {
		return false
	}
	id := k.Poller.Park(r, fn)
	if id == 0 {
		return false
	}
	k.keep(id)
	if k.closed.Load() { // Close ran meanwhile and may have missed id
		k.Poller.Wake(id)
	}
	return true
}

// keep records id as the parked one unless a newer one is recorded: the
// reader may have been woken, gone idle and parked again (with a later,
// larger id) before Park got to record this one.
func (k *Parking) keep(id uint64) {
	for {
		old := k.id.Load()
		if old >= id || k.id.CompareAndSwap(old, id) {
			return
		}
	}
}

// Close wakes the parked reader, if any, and makes later Parks fail. Call
// it after closing the reader's socket.
func (k *Parking) Close() {
	k.closed.Store(true)
	if id := k.id.Swap(0); id != 0 {
		k.Poller.Wake(id)
	}
}
