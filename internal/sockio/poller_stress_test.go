//go:build linux

package sockio

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPollerStress: readers on many connections park, are woken by data,
// by their owner's Close, by WakeAll or by the sweep (sockets closed behind
// their backs), and park again, in random order from several goroutines.
// Every park is resumed exactly once, and at the end nothing is parked and
// the loop has ended.
func TestPollerStress(t *testing.T) {
	const (
		conns  = 40
		rounds = 400
	)
	p := &Poller{Sweep: 10 * time.Millisecond}
	type reader struct {
		k       Parking
		rd      Reader
		a       net.Conn // the parked side
		b       net.Conn // its peer
		parks   atomic.Int64
		resumes atomic.Int64
		closed  atomic.Bool
	}
	rs := make([]*reader, conns)
	var wg sync.WaitGroup // one count per outstanding park
	var park func(r *reader)
	resume := func(r *reader) {
		r.resumes.Add(1)
		// drain what woke it, then park again unless the socket is closed
		r.a.SetReadDeadline(time.Now().Add(time.Millisecond))
		r.a.Read(make([]byte, 64))
		if !r.closed.Load() {
			park(r)
		}
		wg.Done()
	}
	park = func(r *reader) {
		wg.Add(1)
		r.parks.Add(1)
		if !r.k.Park(&r.rd, func() { resume(r) }) {
			r.parks.Add(-1)
			wg.Done()
		}
	}
	for i := range rs {
		a, b := tcpPair(t)
		rd, ok := NewReader(a)
		if !ok {
			t.Fatal("no Reader")
		}
		rs[i] = &reader{k: Parking{Poller: p}, rd: rd, a: a, b: b}
		park(rs[i])
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var actors sync.WaitGroup
	for range 4 {
		seed := rng.Uint64()
		actors.Add(1)
		go func() {
			defer actors.Done()
			r := rand.New(rand.NewPCG(seed, 3))
			for range rounds {
				x := rs[r.IntN(conns)]
				switch n := r.IntN(100); {
				case n < 80:
					x.b.Write([]byte("x"))
				case n < 85:
					p.WakeAll()
				case n < 90 && !x.closed.Load():
					// closed behind the owner's back: the sweep finds it
					x.closed.Store(true)
					x.a.Close()
				case n < 93 && !x.closed.Load():
					x.closed.Store(true)
					x.a.Close()
					x.k.Close()
				}
			}
		}()
	}
	actors.Wait()
	for _, x := range rs {
		x.closed.Store(true)
		x.a.Close()
		x.k.Close()
	}
	select {
	case <-goDone(wg.Wait):
	case <-time.After(testTimeout):
		t.Fatalf("parked readers were never resumed (Parked = %d)", p.Parked())
	}
	var total int64
	for i, x := range rs {
		total += x.parks.Load()
		if x.parks.Load() != x.resumes.Load() {
			t.Errorf("reader %d: parked %d times, resumed %d", i, x.parks.Load(), x.resumes.Load())
		}
	}
	t.Logf("%d parks over %d connections", total, conns)
	p.Wait()
	if n := p.Parked(); n != 0 {
		t.Fatalf("Parked = %d at the end", n)
	}
}
