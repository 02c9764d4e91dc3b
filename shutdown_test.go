package anytls_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/wire"
)

// startSource runs a TCP server that sends size pseudo-random bytes to each
// connection and closes it; it returns the bytes' SHA-256.
func startSource(t *testing.T, size int) (string, [32]byte) {
	block := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{7}).Read(block)
	h := sha256.New()
	for left := size; left > 0; left -= min(left, len(block)) {
		h.Write(block[:min(left, len(block))])
	}
	addr := serveTCP(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		for left := size; left > 0; {
			n, err := c.Write(block[:min(left, len(block))])
			if err != nil {
				return
			}
			left -= n
		}
	})
	return addr, [32]byte(h.Sum(nil))
}

// Shutdown during a 100 MiB download: the transfer completes, no new
// connection is accepted meanwhile, an idle session is closed at once, a new
// stream on the busy session is refused, and Shutdown returns nil within the
// drain timeout, leaving no goroutine behind.
func TestShutdownDrainsTransfer(t *testing.T) {
	checkLeaks(t)
	const size = 100 << 20
	const drain = 2 * time.Minute
	src, sum := startSource(t, size)
	echo := startEcho(t)
	rec := newLogRecorder()
	srv, pin := newServer(t, func(c *anytls.ServerConfig) { c.Logger = rec.logger() })
	ln := listen(t)
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	// an idle session, and a busy one on which a second stream will try
	idle := dialRaw(t, addr)
	idle.writeChunks(preamble(testPassword, 30), 64)
	idle.settings()
	idle.echoStream(1, echo, "about to idle")
	idle.writeFrame(wire.CmdFIN, 1, nil)
	waitFor(t, 10*time.Second, "the idle session's stream to end", func() bool { return srv.Stats().Streams == 0 })
	busy := dialRaw(t, addr)
	busy.writeChunks(preamble(testPassword, 30), 64)
	busy.settings()
	busy.openStream(1, echo)
	busy.expect(wire.CmdSYNACK, 1)

	c := newClient(t, addr, pin, nil)
	conn, err := c.DialContext(testContext(t, 5*time.Minute), "tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(drain))
	h := sha256.New()
	first := make([]byte, 10<<20)
	if _, err := io.ReadFull(conn, first); err != nil {
		t.Fatalf("first 10 MiB: %v", err)
	}
	h.Write(first)

	start := time.Now()
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	rec.wait(t, 10*time.Second, 1, "shutting down: draining")
	if err := <-served; !errors.Is(err, anytls.ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	// the idle session is closed at once (after a heartbeat that flushes
	// what it had queued)
	idle.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		cmd, sid, _, err := idle.readFrame()
		if err != nil {
			if isTimeout(err) {
				t.Errorf("idle session: %v, want closed", err)
			}
			break
		}
		if cmd == wire.CmdHeartRequest {
			idle.writeFrame(wire.CmdHeartResponse, sid, nil)
		}
	}
	// no new connection is accepted
	if nc, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("a new connection was served while draining: %v", err)
		}
		nc.Close()
	}
	// a new stream on a busy session is refused with the reason
	busy.openStream(2, echo)
	if e := busy.expect(wire.CmdSYNACK, 2); !strings.Contains(string(e), "server closed") {
		t.Errorf("SYNACK for a stream opened while draining: %q", e)
	}
	busy.conn.Close()

	n, err := io.Copy(h, conn)
	if err != nil || n+int64(len(first)) != size || [32]byte(h.Sum(nil)) != sum {
		t.Fatalf("transfer: %d bytes, %v; checksum ok: %v", n+int64(len(first)), err, [32]byte(h.Sum(nil)) == sum)
	}
	conn.Close()
	transferred := time.Since(start)
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
	case <-time.After(drain):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
	t.Logf("100 MiB transfer completed %v after Shutdown began, Shutdown returned after %v (drain timeout %v)",
		transferred.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), drain)
	if s := srv.Stats(); s != (anytls.ServerStats{}) {
		t.Errorf("after Shutdown: %+v", s)
	}
}

// A stream still open at the end of the drain is closed, and Shutdown
// reports the context's error.
func TestShutdownDrainTimeout(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	addr, srv, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echoRoundTrip(t, conn, []byte("a stream that will not end"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("stream after the drain: %v, want closed", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
