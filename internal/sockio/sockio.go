// Package sockio holds two socket operations the standard library does not
// offer on a net.Conn: waiting for input without a buffer, and a write that
// never blocks. Both go through the runtime's poller (syscall.RawConn), so
// they honour Close and deadlines like the conn's own Read and Write.
package sockio

// TryWriter writes what the socket takes at once and never waits: it returns
// n < len(p) with a nil error when the socket's send buffer is full.
type TryWriter func(p []byte) (n int, err error)
