//go:build unix

package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
)

// ReadWaiter returns a function that blocks until src, a TCP connection, has
// something to read (data, EOF or an error), without a buffer; nil for other
// readers. It peeks one byte with MSG_PEEK.
func ReadWaiter(src io.Reader) func() error {
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

// NewTryWriter returns a TryWriter for w if w is a TCP or Unix stream
// connection, or nil.
func NewTryWriter(w io.Writer) TryWriter {
	var (
		rc  syscall.RawConn
		err error
		nw  string
	)
	switch c := w.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
		nw = "tcp"
	case *net.UnixConn:
		rc, err = c.SyscallConn()
		nw = "unix"
	default:
		return nil
	}
	if err != nil {
		return nil
	}
	src, dst := w.(net.Conn).LocalAddr(), w.(net.Conn).RemoteAddr()
	return func(p []byte) (n int, err error) {
		var serr error
		cerr := rc.Write(func(fd uintptr) bool {
			for n < len(p) {
				m, e := syscall.Write(int(fd), p[n:])
				if m > 0 {
					n += m
				}
				switch e {
				case nil:
					if m <= 0 {
						return true
					}
				case syscall.EINTR:
				case syscall.EAGAIN:
					return true
				default:
					serr = e
					return true
				}
			}
			return true
		})
		if serr != nil {
			cerr = os.NewSyscallError("write", serr)
		}
		if cerr != nil {
			return n, &net.OpError{Op: "write", Net: nw, Source: src, Addr: dst, Err: cerr}
		}
		return n, nil
	}
}
