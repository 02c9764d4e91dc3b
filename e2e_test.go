package anytls_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

func TestEndToEndEcho(t *testing.T) {
	c, echo, ctx := echoClient(t, 60*time.Second)

	for i, size := range []int{1, 1000, 65535, 65536, 200_000, 1 << 20} {
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		echoRoundTrip(t, conn, randomBytes(size))
		conn.Close()
	}
	open, _ := c.Sessions()
	if open != 1 {
		t.Errorf("sequential streams used %d sessions, want 1 reused", open)
	}
}

func TestEndToEndConcurrent(t *testing.T) {
	c, echo, ctx := echoClient(t, 60*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.DialContext(ctx, "tcp", echo)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			echoRoundTrip(t, conn, randomBytes(256<<10))
		}()
	}
	wg.Wait()
}

func TestDialErrorReported(t *testing.T) {
	checkLeaks(t)
	// a port with nothing listening
	ln := listen(t)
	dead := ln.Addr().String()
	ln.Close()
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "tcp", dead)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Read(make([]byte, 10))
	if !anytls.IsRemoteError(err) {
		t.Fatalf("read error = %v, want a RemoteError", err)
	}
	t.Logf("remote error: %v", err)
	// the session survives for other streams
	echo := startEcho(t)
	conn2, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	echoRoundTrip(t, conn2, []byte("still alive"))
}

func TestWrongPasswordFails(t *testing.T) {
	checkLeaks(t)
	// a wrong password is a stranger: the server says nothing until its
	// authentication deadline, then closes
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) { c.AuthTimeout = time.Second })
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) { cfg.Password = "wrong" })
	ctx := testContext(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "tcp", "127.0.0.1:9")
	if err != nil {
		return // acceptable: failed at once
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, anytls.ErrSessionClosed) || !errors.Is(err, anytls.ErrNoAnswer) {
		t.Fatalf("err = %v, want ErrSessionClosed and ErrNoAnswer", err)
	}
}

func TestPinMismatch(t *testing.T) {
	checkLeaks(t)
	addr, _, pin := startServer(t, nil)
	bad := append([]byte(nil), pin...)
	bad[0] ^= 0xff
	c := newClient(t, addr, bad, nil)
	_, err := c.DialContext(testContext(t, 30*time.Second), "tcp", "127.0.0.1:9")
	if err == nil {
		t.Fatal("dial succeeded with a wrong pin")
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %T %v", err, err)
	}
	t.Logf("pin mismatch error: %v", err)
}

// TestIdleWaitsOnFreshGoroutines: once a session and a relay have nothing
// to read, no goroutine waits under the frames of a TLS read or of a copy
// (such a goroutine keeps the stack its traffic grew). On Linux the session
// readers and the server's destination pump are parked in the client's and
// the server's Poller, and no goroutine waits for them at all; elsewhere
// the readers wait in waitThenRead and the pump in waitAsync. Traffic after
// the idle spell still flows both ways.
func TestIdleWaitsOnFreshGoroutines(t *testing.T) {
	c, echo, ctx := echoClient(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, conn, randomBytes(300_000)) // grows the stacks
	count := func(stacks, fn string) int { return strings.Count(stacks, fn+"(") }
	var stacks string
	waitFor(t, 10*time.Second, "idle readers and pumps to wait on fresh goroutines", func() bool {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		waiting, pumping, pollers := 2, 1, 0 // client and server reader; server's pump
		if runtime.GOOS == "linux" {
			waiting, pumping, pollers = 0, 0, 2
		}
		return count(stacks, "session.(*Session).readFrames") == 0 &&
			count(stacks, "relay.(*copier).copy") == 0 &&
			count(stacks, "session.(*Session).waitThenRead") == waiting &&
			count(stacks, "relay.(*relay).waitAsync") == pumping &&
			count(stacks, "sockio.(*Poller).loop") == pollers
	})
	for range 3 {
		echoRoundTrip(t, conn, randomBytes(100_000))
	}
}

// TestFramePausedMidway: a frame whose pieces arrive with pauses longer than
// the idle hand-over's deadline (sockio.IdleAfter) between them, inside its
// header and inside its data, is read whole: the deadline that detects an
// idle session applies only before a frame's first byte.
func TestFramePausedMidway(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	addr, _, _ := startServer(t, nil)
	r := dialRaw(t, addr)
	r.writeChunks(preamble(testPassword, 30), 64)
	r.settings()
	r.echoStream(1, echo, "first")
	data := randomBytes(3000)
	frame, err := wire.AppendFrame(nil, wire.CmdPSH, 1, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range [][]byte{frame[:3], frame[3:1000], frame[1000:]} {
		r.writeChunks(piece, len(piece)) // one TLS record each
		time.Sleep(3 * sockio.IdleAfter) // the pause under test, not a synchronisation
	}
	var got []byte
	for len(got) < len(data) {
		got = append(got, r.expect(wire.CmdPSH, 1)...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs from the frame's data")
	}
	r.echoStream(3, echo, "after the pauses")
}

// TestTrafficWithPausesAroundIdleHandover: streams that alternate bursts of
// data with pauses on either side of the idle hand-over's deadline (so that
// session readers and destination pumps hand over in the middle of the
// traffic, at random points) deliver every byte in order.
func TestTrafficWithPausesAroundIdleHandover(t *testing.T) {
	c, echo, ctx := echoClient(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), 1))
			conn, err := c.DialContext(ctx, "tcp", echo)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(50 * time.Second))
			for round := range 6 {
				data := randomBytes(1 + rng.IntN(200_000))
				werr := make(chan error, 1)
				go func() {
					_, err := conn.Write(data)
					werr <- err
				}()
				got := make([]byte, len(data))
				_, err := io.ReadFull(conn, got)
				if err == nil {
					err = <-werr
				}
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New("echo differs")
				}
				if err != nil {
					errs <- fmt.Errorf("stream %d round %d (%d bytes): %w", i, round, len(data), err)
					return
				}
				// the pause is the workload: 0.4x to 1.8x the deadline
				time.Sleep(sockio.IdleAfter * time.Duration(40+rng.IntN(140)) / 100)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
