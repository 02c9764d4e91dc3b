//go:build linux

package sockio

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// parkOn parks a reader of c in p and returns the id and a channel that
// receives once fn runs.
func parkOn(t *testing.T, p *Poller, c interface{ Read([]byte) (int, error) }) (uint64, chan struct{}) {
	t.Helper()
	rd, ok := NewReader(c)
	if !ok {
		t.Fatal("no Reader for a TCP connection")
	}
	ran := make(chan struct{}, 2)
	id := p.Park(&rd, func() { ran <- struct{}{} })
	if id == 0 {
		t.Fatal("Park failed on an open socket")
	}
	return id, ran
}

func waitRan(t *testing.T, ran chan struct{}, what string) {
	t.Helper()
	select {
	case <-ran:
	case <-time.After(testTimeout):
		t.Fatalf("%s: the parked function did not run", what)
	}
}

func notRan(t *testing.T, ran chan struct{}, what string) {
	t.Helper()
	select {
	case <-ran:
		t.Fatalf("%s: the parked function ran", what)
	default:
	}
}

// goDone runs f on a goroutine of its own and returns a channel closed when
// it has returned.
func goDone(f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	return done
}

// pollerGoroutines counts the goroutines in Poller.loop.
func pollerGoroutines() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "sockio.(*Poller).loop(")
}

// waitNoLoop waits until no goroutine runs Poller.loop: a Poller with
// nothing parked holds none.
func waitNoLoop(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for pollerGoroutines() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("Poller.loop still runs with nothing parked")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPollerResumesOnData(t *testing.T) {
	p := &Poller{Sweep: time.Hour} // no sweep: only the event can wake it
	a, b := tcpPair(t)
	_, ran := parkOn(t, p, a)
	if p.Parked() != 1 {
		t.Fatalf("Parked = %d, want 1", p.Parked())
	}
	notRan(t, ran, "before data")
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitRan(t, ran, "data")
	if p.Parked() != 0 {
		t.Fatalf("Parked = %d after the wake, want 0", p.Parked())
	}
	// the data is still there for the reader
	buf := make([]byte, 4)
	a.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := a.Read(buf); n != 1 || err != nil {
		t.Fatalf("read after the wake = %d, %v", n, err)
	}
	waitNoLoop(t)
	// the socket can be parked again (it left the epoll set)
	_, ran = parkOn(t, p, a)
	b.Write([]byte("y"))
	waitRan(t, ran, "data, second park")
}

func TestPollerResumesOnPeerClose(t *testing.T) {
	p := &Poller{Sweep: time.Hour}
	a, b := tcpPair(t)
	_, ran := parkOn(t, p, a)
	b.Close()
	waitRan(t, ran, "peer's FIN")
}

func TestPollerAlreadyReadable(t *testing.T) {
	p := &Poller{Sweep: time.Hour}
	a, b := tcpPair(t)
	b.Write([]byte("x"))
	// wait until the byte has arrived, then park: the wake must come anyway
	rd, _ := NewReader(a)
	if err := rd.Wait(); err != nil {
		t.Fatal(err)
	}
	_, ran := parkOn(t, p, a)
	waitRan(t, ran, "data already there")
}

func TestPollerWake(t *testing.T) {
	p := &Poller{Sweep: time.Hour}
	a, _ := tcpPair(t)
	id, ran := parkOn(t, p, a)
	p.Wake(id)
	waitRan(t, ran, "Wake")
	p.Wake(id) // a second wake of the same id does nothing
	select {
	case <-ran:
		t.Fatal("the parked function ran twice")
	case <-time.After(10 * time.Millisecond):
	}
	waitNoLoop(t)
}

// TestPollerSweepFindsClosedSocket: a socket closed behind its reader's back
// leaves the epoll set silently; the sweep resumes its reader, and only that
// one.
func TestPollerSweepFindsClosedSocket(t *testing.T) {
	p := &Poller{Sweep: 20 * time.Millisecond}
	a, _ := tcpPair(t)
	c, _ := tcpPair(t)
	_, ranA := parkOn(t, p, a)
	_, ranC := parkOn(t, p, c)
	a.Close()
	waitRan(t, ranA, "closed socket")
	notRan(t, ranC, "open socket")
	if p.Parked() != 1 {
		t.Fatalf("Parked = %d, want 1", p.Parked())
	}
	p.WakeAll()
	waitRan(t, ranC, "WakeAll")
	waitNoLoop(t)
}

func TestPollerRefusesClosedSocket(t *testing.T) {
	p := &Poller{}
	a, _ := tcpPair(t)
	rd, _ := NewReader(a)
	a.Close()
	if id := p.Park(&rd, func() { t.Error("ran") }); id != 0 {
		t.Fatal("Park succeeded on a closed socket")
	}
	var nilPoller *Poller
	if nilPoller.Park(&rd, func() {}) != 0 {
		t.Fatal("a nil Poller parked")
	}
}

// TestParkingClose: the owner's Close after closing the socket resumes the
// reader at once (the sweep is off), and no Park succeeds afterwards.
func TestParkingClose(t *testing.T) {
	k := &Parking{Poller: &Poller{Sweep: time.Hour}}
	a, _ := tcpPair(t)
	rd, _ := NewReader(a)
	ran := make(chan struct{}, 1)
	if !k.Park(&rd, func() { ran <- struct{}{} }) {
		t.Fatal("Park failed")
	}
	a.Close()
	k.Close()
	waitRan(t, ran, "Parking.Close")
	b, _ := tcpPair(t)
	rd, _ = NewReader(b)
	if k.Park(&rd, func() {}) {
		t.Fatal("Park succeeded after Close")
	}
	waitNoLoop(t)
}

// TestPollerManyReaders: readers woken in any order each run exactly once.
func TestPollerManyReaders(t *testing.T) {
	p := &Poller{Sweep: time.Hour}
	const n = 100
	var runs [n]atomic.Int32
	peers := make([]interface{ Write([]byte) (int, error) }, n)
	done := make(chan int, n)
	for i := range n {
		a, b := tcpPair(t)
		peers[i] = b
		rd, _ := NewReader(a)
		if p.Park(&rd, func() { runs[i].Add(1); done <- i }) == 0 {
			t.Fatal("Park failed")
		}
	}
	for i := n - 1; i >= 0; i -= 2 { // half by data, in reverse
		peers[i].Write([]byte("x"))
	}
	for range n / 2 {
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Fatal("a reader was not resumed")
		}
	}
	if p.Parked() != n/2 {
		t.Fatalf("Parked = %d, want %d", p.Parked(), n/2)
	}
	p.WakeAll()
	for range n / 2 {
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Fatal("WakeAll missed a reader")
		}
	}
	waitNoLoop(t)
	for i := range runs {
		if r := runs[i].Load(); r != 1 {
			t.Fatalf("reader %d ran %d times", i, r)
		}
	}
}

// TestPollerWait: Wait returns once the loop has ended, after the last
// parked reader was woken, and at once on a Poller that never parked.
func TestPollerWait(t *testing.T) {
	(&Poller{}).Wait()
	p := &Poller{Sweep: time.Hour}
	a, _ := tcpPair(t)
	id, ran := parkOn(t, p, a)
	waited := goDone(p.Wait)
	select {
	case <-waited:
		t.Fatal("Wait returned while a reader was parked")
	case <-time.After(20 * time.Millisecond):
	}
	p.Wake(id)
	waitRan(t, ran, "Wake")
	select {
	case <-waited:
	case <-time.After(testTimeout):
		t.Fatal("Wait did not return after the last reader was woken")
	}
	waitNoLoop(t) // the goroutine returns right after closing its done channel
}

// TestParkingKeepsNewestID: an id recorded late (its reader already woken
// and parked again) does not replace the newer one, which Close must wake.
func TestParkingKeepsNewestID(t *testing.T) {
	var k Parking
	k.keep(7)
	k.keep(5)
	if got := k.id.Load(); got != 7 {
		t.Fatalf("id = %d, want 7", got)
	}
	k.keep(9)
	if got := k.id.Load(); got != 9 {
		t.Fatalf("id = %d, want 9", got)
	}
}

// TestPollerResumesOnReset: a reset from the peer while parked resumes the
// reader, and its read reports the reset.
func TestPollerResumesOnReset(t *testing.T) {
	p := &Poller{Sweep: time.Hour}
	a, b := tcpPair(t)
	_, ran := parkOn(t, p, a)
	b.SetLinger(0) // close with a reset
	b.Close()
	waitRan(t, ran, "peer's reset")
	a.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the wake = %v, want a reset", err)
	}
}
