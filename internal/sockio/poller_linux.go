package sockio

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// poller is the Linux Poller: an epoll set of its own, itself waited on
// through the runtime's poller (an epoll descriptor is readable while it
// has events), so that its goroutine never holds a thread.
type poller struct {
	mu      sync.Mutex
	ep      *epoll // nil while nothing is parked
	ending  *epoll // the last one whose loop decided to end (see Wait)
	next    uint64
	entries map[uint64]parked
}

type parked struct {
	rc syscall.RawConn
	fn func()
}

type epoll struct {
	fd   int
	f    *os.File
	rc   syscall.RawConn
	kick int           // an eventfd in the set (id 0): wakes the loop to look again
	done chan struct{} // closed when the loop has ended
}

const (
	efdCloexec  = 0x80000 // EFD_CLOEXEC
	efdNonblock = 0x800   // EFD_NONBLOCK
)

func newEpoll() (*epoll, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	kick, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, efdCloexec|efdNonblock, 0)
	if e != 0 {
		syscall.Close(fd)
		return nil, os.NewSyscallError("eventfd2", e)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(fd, syscall.EPOLL_CTL_ADD, int(kick), &ev); err != nil {
		syscall.Close(int(kick))
		syscall.Close(fd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(int(kick))
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "sockio-epoll") // non-blocking: goes to the runtime's poller
	rc, err := f.SyscallConn()
	if err != nil {
		syscall.Close(int(kick))
		f.Close()
		return nil, err
	}
	return &epoll{fd: fd, f: f, rc: rc, kick: int(kick), done: make(chan struct{})}, nil
}

// poke wakes the loop, which then sees whether anything is left parked.
func (ep *epoll) poke() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	syscall.Write(ep.kick, one[:])
}

// drain resets the eventfd's counter.
func (ep *epoll) drain() {
	var buf [8]byte
	syscall.Read(ep.kick, buf[:])
}

func (ep *epoll) close() {
	syscall.Close(ep.kick)
	ep.f.Close()
}

// Park arranges for fn to run on a new goroutine once r's socket has
// something to read, or once Wake(id) or WakeAll is called, or once a sweep
// finds the socket closed. It returns id, or 0 when it could not park (r is
// not a socket, the socket is closed, p is nil): the caller then waits
// itself.
func (p *Poller) Park(r *Reader, fn func()) (id uint64) {
	if p == nil || r == nil || r.rc == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ep == nil {
		ep, err := newEpoll()
		if err != nil {
			return 0
		}
		p.ep = ep
		p.entries = make(map[uint64]parked)
		go p.loop(ep)
	}
	p.next++
	id = p.next
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var cerr error
	err := r.rc.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(p.ep.fd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		if len(p.entries) == 0 {
			p.ep.poke() // the loop started for this one: let it end
		}
		return 0
	}
	p.entries[id] = parked{rc: r.rc, fn: fn}
	return id
}

// Wake resumes the reader parked as id, if it still is.
func (p *Poller) Wake(id uint64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	e, ok := p.take(id)
	if ok && len(p.entries) == 0 {
		p.ep.poke()
	}
	p.mu.Unlock()
	if ok {
		go e.fn()
	}
}

// WakeAll resumes every parked reader: for an owner that closes many
// sockets behind their readers' backs (a server shutting down).
func (p *Poller) WakeAll() {
	if p == nil {
		return
	}
	p.mu.Lock()
	var fns []func()
	for id := range p.entries {
		e, _ := p.take(id)
		fns = append(fns, e.fn)
	}
	if len(fns) > 0 {
		p.ep.poke()
	}
	p.mu.Unlock()
	for _, fn := range fns {
		go fn()
	}
}

// Wait waits until the Poller's goroutine has ended: for an owner that has
// closed everything it parked (each wakes its reader on close), so that
// its Close leaves no goroutine behind. A reader parked on a socket closed
// behind its owner's back keeps it up to the next sweep.
func (p *Poller) Wait() {
	if p == nil {
		return
	}
	for {
		p.mu.Lock()
		ep, ending := p.ep, p.ending
		p.mu.Unlock()
		if ending != nil {
			<-ending.done
		}
		if ep == nil {
			return
		}
		<-ep.done
	}
}

// Parked returns the number of parked readers.
func (p *Poller) Parked() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// take removes id's entry and its socket from the epoll set. The socket is
// touched only through its RawConn, so only while it is open: a closed one
// has left the set by itself, and its number may already belong to another
// socket. p.mu is held.
func (p *Poller) take(id uint64) (parked, bool) {
	e, ok := p.entries[id]
	if !ok {
		return parked{}, false
	}
	delete(p.entries, id)
	e.rc.Control(func(fd uintptr) {
		syscall.EpollCtl(p.ep.fd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	return e, true
}

// loop waits for events on ep and resumes their readers; every p.Sweep it
// resumes the readers whose sockets were closed. It ends, closing ep,
// once nothing is parked.
func (p *Poller) loop(ep *epoll) {
	var evs [64]syscall.EpollEvent
	fns := make([]func(), 0, len(evs))
	sweep := p.Sweep
	if sweep <= 0 {
		sweep = SweepEvery
	}
	next := time.Now().Add(sweep) // the next sweep, however busy the set
	for {
		n := 0
		ep.f.SetReadDeadline(next)
		err := ep.rc.Read(func(fd uintptr) bool {
			for {
				m, e := syscall.EpollWait(int(fd), evs[:], 0)
				switch {
				case e == syscall.EINTR:
					continue
				case e != nil || m <= 0:
					return false // wait for the runtime's poller
				}
				n = m
				return true
			}
		})
		fns = fns[:0]
		p.mu.Lock()
		switch {
		case err == nil:
			for _, ev := range evs[:n] {
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if id == 0 {
					ep.drain()
				} else if e, ok := p.take(id); ok {
					fns = append(fns, e.fn)
				}
			}
		case !errors.Is(err, os.ErrDeadlineExceeded): // cannot happen: only this goroutine closes ep
			for id := range p.entries {
				e, _ := p.take(id)
				fns = append(fns, e.fn)
			}
		}
		if now := time.Now(); !now.Before(next) {
			next = now.Add(sweep)
			for id, e := range p.entries {
				if e.rc.Control(func(uintptr) {}) != nil {
					delete(p.entries, id) // closed: no longer in the set
					fns = append(fns, e.fn)
				}
			}
		}
		done := len(p.entries) == 0
		if done {
			p.ep, p.ending = nil, ep
		}
		p.mu.Unlock()
		for _, fn := range fns {
			go fn()
		}
		if done {
			ep.close()
			close(ep.done)
			return
		}
	}
}
