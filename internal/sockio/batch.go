package sockio

import (
	"net"
	"sync"
)

// Batcher wraps the connection below a TLS connection so that the records
// of one large TLS write leave in a single system call: between Hold and
// Flush, writes are collected instead of sent. crypto/tls writes every
// record (16 KiB at most) on its own, so a 64 KiB frame otherwise costs four
// writes to the socket and four wake-ups of the peer.
//
// Writes from other goroutines while held (an alert from the TLS read side)
// are collected in order with the rest. The collecting buffer is returned to
// a pool by Flush, so an idle connection holds none.
//
// On the read side it lets the reader of the TLS connection, after a read
// that timed out, wait for input outside crypto/tls (WaitRead).
type Batcher struct {
	net.Conn

	mu   sync.Mutex
	hold bool
	buf  *[]byte

	rd      Reader
	canWait bool
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4*(16384+256)); return &b }}

// NewBatcher wraps c.
func NewBatcher(c net.Conn) *Batcher {
	b := &Batcher{Conn: c}
	b.rd, b.canWait = NewReader(c)
	return b
}

// CanWaitRead reports whether WaitRead works: the wrapped connection is a
// TCP connection on a Unix system.
func (b *Batcher) CanWaitRead() bool { return b.canWait }

// WaitRead blocks until the connection has something to read (data, EOF or
// an error), without a buffer. It needs CanWaitRead.
func (b *Batcher) WaitRead() error { return b.rd.Wait() }

// Park parks the reader of the connection in k (see Parking.Park): fn runs
// once the connection has something to read. It reports false when it could
// not; the caller then waits itself (WaitRead).
func (b *Batcher) Park(k *Parking, fn func()) bool { return b.canWait && k.Park(&b.rd, fn) }

// Write sends p, or collects it while held.
func (b *Batcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.hold {
		*b.buf = append(*b.buf, p...)
		b.mu.Unlock()
		return len(p), nil
	}
	b.mu.Unlock()
	return b.Conn.Write(p)
}

// Hold starts collecting writes.
func (b *Batcher) Hold() {
	b.mu.Lock()
	b.hold = true
	if b.buf == nil {
		b.buf = batchPool.Get().(*[]byte)
	}
	b.mu.Unlock()
}

// Flush sends what was collected in one write and stops collecting.
func (b *Batcher) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = false
	if b.buf == nil {
		return nil
	}
	var err error
	if len(*b.buf) > 0 {
		_, err = b.Conn.Write(*b.buf)
	}
	if cap(*b.buf) <= 256<<10 {
		*b.buf = (*b.buf)[:0]
		batchPool.Put(b.buf)
	}
	b.buf = nil
	return err
}
