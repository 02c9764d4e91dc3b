// Package sockio holds two socket operations the standard library does not
// offer on a net.Conn: waiting for input without a buffer, and a write that
// never blocks. Both go through the runtime's poller (syscall.RawConn), so
// they honour Close and deadlines like the conn's own Read and Write.
package sockio

import (
	"errors"
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
