//go:build unix

package relay

import (
	"io"
	"net"
	"syscall"
)

// readWaiter returns a function that blocks until src has something to read
// (data, EOF or an error), without a buffer, or nil where that is not
// possible. It peeks one byte with MSG_PEEK inside the runtime's poller, so
// the wait honours Close and deadlines like a Read.
func readWaiter(src io.Reader) func() error {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() error {
		var peek [1]byte
		return rc.Read(func(fd uintptr) bool {
			_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK)
			return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		})
	}
}
