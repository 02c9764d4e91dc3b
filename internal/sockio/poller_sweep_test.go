//go:build linux

package sockio

import (
	"testing"
	"time"
)

// TestPollerSweepsWhileBusy: the sweep runs on time even when events keep
// arriving more often than it is due (a neighbour woken every 20 ms under
// a 50 ms sweep), and finds a socket closed behind its reader's back.
func TestPollerSweepsWhileBusy(t *testing.T) {
	p := &Poller{Sweep: 50 * time.Millisecond}
	a, _ := tcpPair(t)
	c, d := tcpPair(t)
	_, ranA := parkOn(t, p, a)
	rc, _ := NewReader(c)
	stop := make(chan struct{})
	defer p.WakeAll()
	defer close(stop)
	var repark func()
	repark = func() {
		c.Read(make([]byte, 16))
		select {
		case <-stop:
			return
		default:
		}
		p.Park(&rc, repark)
	}
	p.Park(&rc, repark)
	go func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				d.Write([]byte("x"))
			}
		}
	}()
	a.Close() // behind its reader's back
	select {
	case <-ranA:
	case <-time.After(testTimeout):
		t.Fatal("the sweep never ran while the neighbour kept the Poller busy")
	}
}
