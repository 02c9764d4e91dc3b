package anytls_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// middlebox is an in-process TCP relay between client and server that can
// freeze traffic without closing anything (as a NAT that forgot a mapping or
// a phone whose radio went to sleep), or delay it.
type middlebox struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	conns      []*mbConn
	delay      time.Duration
	dials      int
	wg         sync.WaitGroup
	closed     bool
	everything []net.Conn
}

type mbConn struct {
	mu     sync.Mutex
	cond   *sync.Cond
	frozen [2]bool // [0]: client to server, [1]: server to client
}

func (c *mbConn) wait(dir int) {
	c.mu.Lock()
	for c.frozen[dir] {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

func (c *mbConn) set(dir int, frozen bool) {
	c.mu.Lock()
	c.frozen[dir] = frozen
	c.cond.Broadcast()
	c.mu.Unlock()
}

func startMiddlebox(t *testing.T, target string) *middlebox {
	t.Helper()
	m := &middlebox{ln: listen(t), target: target}
	m.wg.Add(1)
	go m.accept()
	t.Cleanup(m.close)
	return m
}

func (m *middlebox) addr() string { return m.ln.Addr().String() }

func (m *middlebox) accept() {
	defer m.wg.Done()
	for {
		in, err := m.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", m.target)
		if err != nil {
			in.Close()
			continue
		}
		c := &mbConn{}
		c.cond = sync.NewCond(&c.mu)
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		m.conns = append(m.conns, c)
		m.everything = append(m.everything, in, out)
		m.dials++
		delay := m.delay
		m.mu.Unlock()
		m.wg.Add(2)
		go m.pump(c, 0, in, out, delay)
		go m.pump(c, 1, out, in, delay)
	}
}

// pump forwards src to dst, holding while the connection is frozen. With a
// delay, every chunk leaves delay after it arrived (a pipeline, as on a long
// path, not a queue of sleeps).
func (m *middlebox) pump(c *mbConn, dir int, src, dst net.Conn, delay time.Duration) {
	defer m.wg.Done()
	type chunk struct {
		b  []byte
		at time.Time
	}
	out := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range out {
			time.Sleep(time.Until(ch.at))
			c.wait(dir) // frozen: what was read is held too
			if ch.b == nil {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				return
			}
			if _, err := dst.Write(ch.b); err != nil {
				src.Close()
				return
			}
		}
	}()
	defer func() {
		close(out)
		<-done
	}()
	for {
		c.wait(dir)
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			out <- chunk{buf[:n], time.Now().Add(delay)}
		}
		if err == io.EOF {
			out <- chunk{nil, time.Now().Add(delay)}
			return
		}
		if err != nil {
			return
		}
	}
}

// Directions to freeze.
const (
	upstream   = 1 << 0 // client to server
	downstream = 1 << 1 // server to client
	bothWays   = upstream | downstream
)

// freezeExisting stops traffic in the given directions on the connections
// made so far; new connections flow.
func (m *middlebox) freezeExisting(dirs int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		for d := 0; d < 2; d++ {
			if dirs&(1<<d) != 0 {
				c.set(d, true)
			}
		}
	}
}

// thaw lets traffic flow again everywhere.
func (m *middlebox) thaw() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.set(0, false)
		c.set(1, false)
	}
}

func (m *middlebox) setDelay(d time.Duration) {
	m.mu.Lock()
	m.delay = d
	m.mu.Unlock()
}

func (m *middlebox) connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dials
}

func (m *middlebox) close() {
	m.mu.Lock()
	m.closed = true
	m.ln.Close()
	for _, c := range m.everything {
		c.Close()
	}
	m.mu.Unlock()
	m.thaw()
	m.wg.Wait()
}
