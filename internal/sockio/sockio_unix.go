//go:build unix

package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawTCP returns src's raw connection, if src is a TCP connection, and a
// function that wraps an error of a read from it as the net package does.
func rawTCP(src io.Reader) (syscall.RawConn, func(error) error) {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return nil, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	local, remote := tc.LocalAddr(), tc.RemoteAddr()
	return rc, func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Source: local, Addr: remote, Err: err}
	}
}

// ReadWaiter returns a function that blocks until src, a TCP connection, has
// something to read (data, EOF or an error), without a buffer; nil for other
// readers. It peeks one byte with MSG_PEEK.
func ReadWaiter(src io.Reader) func() error {
	rc, opErr := rawTCP(src)
	if rc == nil {
		return nil
	}
	return func() error {
		var peek [1]byte
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			_, _, e := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK)
			switch e {
			case syscall.EAGAIN:
				return false
			case nil, syscall.EINTR:
			default:
				perr = e // a pending error (a reset) is reported once: keep it
			}
			return true
		})
		if err == nil && perr != nil {
			err = opErr(os.NewSyscallError("recvfrom", perr))
		}
		return err
	}
}

// NewTryReader returns a function that reads what src, a TCP connection,
// holds at once and never waits: ErrWouldBlock when there is nothing, io.EOF
// at the end; nil for other readers.
func NewTryReader(src io.Reader) func(p []byte) (int, error) {
	rc, opErr := rawTCP(src)
	if rc == nil {
		return nil
	}
	return func(p []byte) (n int, err error) {
		var serr error
		cerr := rc.Read(func(fd uintptr) bool {
			for {
				n, serr = syscall.Read(int(fd), p)
				if serr != syscall.EINTR {
					return true
				}
			}
		})
		switch {
		case cerr != nil:
			return 0, opErr(cerr)
		case serr == syscall.EAGAIN:
			return 0, ErrWouldBlock
		case serr != nil:
			return 0, opErr(os.NewSyscallError("read", serr))
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
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
