//go:build unix

package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
)

// A Reader reads a TCP connection below the net package: a read that never
// waits (TryRead) and a wait without a buffer (Wait). Make one with
// NewReader.
type Reader struct {
	rc            syscall.RawConn
	local, remote net.Addr
}

// NewReader returns a Reader for src, and whether src is a TCP connection
// (the Reader works only then).
func NewReader(src io.Reader) (Reader, bool) {
	tc, ok := src.(*net.TCPConn)
	if !ok {
		return Reader{}, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return Reader{}, false
	}
	return Reader{rc: rc, local: tc.LocalAddr(), remote: tc.RemoteAddr()}, true
}

// opErr wraps an error of a read as the net package does.
func (r *Reader) opErr(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: r.local, Addr: r.remote, Err: err}
}

// Wait blocks until the socket has something to read (data, EOF or an
// error). It peeks one byte with MSG_PEEK, then waits for the poller; once
// woken it returns without looking again (the read that follows finds out
// what there is, or nothing after a spurious wake-up).
func (r *Reader) Wait() error {
	var peek [1]byte
	var perr error
	woken := false
	err := r.rc.Read(func(fd uintptr) bool {
		if woken {
			return true
		}
		woken = true
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
		err = r.opErr(os.NewSyscallError("recvfrom", perr))
	}
	return err
}

// TryRead reads what the socket holds at once: ErrWouldBlock when there is
// nothing, io.EOF at the end.
func (r *Reader) TryRead(p []byte) (n int, err error) {
	var serr error
	cerr := r.rc.Read(func(fd uintptr) bool {
		for {
			n, serr = syscall.Read(int(fd), p)
			if serr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, r.opErr(cerr)
	case serr == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case serr != nil:
		return 0, r.opErr(os.NewSyscallError("read", serr))
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
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
