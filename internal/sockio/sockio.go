// Package sockio holds socket operations the standard library does not
// offer on a net.Conn: waiting for input without a buffer, and a write that
// never blocks, both through the runtime's poller (syscall.RawConn), so that
// they honour Close and deadlines like the conn's own Read and Write; a
// Batcher that sends the records of one TLS write in one system call; and a
// Poller where idle readers wait without a goroutine (Linux).
package sockio

import (
	"errors"
	"os"
	"time"
)

// ErrWouldBlock is what Reader.TryRead returns when nothing is waiting.
var ErrWouldBlock = errors.New("sockio: nothing to read now")

// TryWriter writes what the socket takes at once and never waits: it returns
// n < len(p) with a nil error when the socket's send buffer is full.
type TryWriter func(p []byte) (n int, err error)

// IdleAfter is how long a reader (a session's read loop, a relay's pump)
// waits for input where it is before it hands the wait to a new goroutine
// and ends (a session's read loop: between half of it and all of it). A
// goroutine keeps the stack its deepest calls grew (4 KiB or more after a
// TLS read or write) while one that only ever waited keeps 2 KiB; the
// hand-over costs a few microseconds, nothing beside a pause this long,
// and a connection that is busy never pays it.
const IdleAfter = 50 * time.Millisecond

// An IdleDeadline is the read deadline by which a reader finds out that its
// connection has been idle for about IdleAfter. Setting a deadline costs a
// timer update, too much before every read of a busy connection, so Arm
// keeps it at most IdleAfter ahead and renews it only once half of that has
// passed: a read timing out under it means between IdleAfter/2 and
// IdleAfter without input, or a deadline that ran out while the reader was
// busy elsewhere (see Passed). The zero value is disarmed.
type IdleDeadline struct {
	at time.Time
}

// deadliner is the part of a net.Conn that IdleDeadline needs.
type deadliner interface{ SetReadDeadline(time.Time) error }

// Arm sets c's read deadline, unless the one already set is at least
// IdleAfter/2 ahead.
func (d *IdleDeadline) Arm(c deadliner) {
	now := time.Now()
	if d.at.Sub(now) < IdleAfter/2 {
		d.at = now.Add(IdleAfter)
		c.SetReadDeadline(d.at)
	}
}

// Clear removes c's read deadline if Arm set one.
func (d *IdleDeadline) Clear(c deadliner) {
	if !d.at.IsZero() {
		d.at = time.Time{}
		c.SetReadDeadline(time.Time{})
	}
}

// Passed reports whether err is the timeout of a deadline Arm set.
func (d *IdleDeadline) Passed(err error) bool {
	return !d.at.IsZero() && errors.Is(err, os.ErrDeadlineExceeded)
}
