package anytls_test

import (
	"errors"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/wire"
)

// A client beyond MaxSessions gets an Alert and a close; the server logs it
// and takes the next client once a session has ended.
func TestMaxSessions(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	rec := newLogRecorder()
	addr, srv, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.MaxSessions = 2
		c.Logger = rec.logger()
	})
	first, second := dialRaw(t, addr), dialRaw(t, addr)
	for _, r := range []*rawClient{first, second} {
		r.writeChunks(preamble(testPassword, 30), 64)
		r.settings()
		r.echoStream(1, echo, "session within the limit")
	}
	if n := srv.Stats().Sessions; n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	// our client, third, is told why
	c := newClient(t, addr, pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err == nil {
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	var alert *anytls.AlertError
	if !errors.As(err, &alert) {
		t.Fatalf("third session: %v, want an Alert", err)
	}
	t.Logf("third session: %v", err)
	rec.wait(t, 10*time.Second, 1, "session refused: limit reached", "user", "tester", "limit", "2", "refused", "1")
	// more refusals within 10 s: at debug level, counted for the next warning
	for range 3 {
		r := dialRaw(t, addr)
		r.writeChunks(preamble(testPassword, 30), 64)
		r.expect(wire.CmdAlert, 0)
		r.conn.Close()
	}
	rec.wait(t, 10*time.Second, 3, "session refused: limit reached (warned already)", "user", "tester")
	if n := rec.count("session refused: limit reached"); n != 1 {
		t.Errorf("%d warnings for 4 refused sessions within 10 s, want 1", n)
	}

	first.conn.Close()
	waitFor(t, 10*time.Second, "the first session to end", func() bool { return srv.Stats().Sessions == 1 })
	conn, err = c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("room again"))
	conn.Close()
}

// A stream whose destination does not come within DestinationTimeout is
// closed with a log line; its session carries on.
func TestDestinationTimeout(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	rec := newLogRecorder()
	addr, _, _ := startServer(t, func(c *anytls.ServerConfig) {
		c.DestinationTimeout = 200 * time.Millisecond
		c.Logger = rec.logger()
	})
	r := dialRaw(t, addr)
	r.writeChunks(preamble(testPassword, 30), 64)
	r.settings()
	r.writeFrame(wire.CmdSYN, 1, nil)
	r.expect(wire.CmdFIN, 1)
	rec.wait(t, 10*time.Second, 1, "stream closed: no destination within the destination timeout", "user", "tester")
	r.echoStream(2, echo, "the session lives on")
}

// 100,000 SYNs without a destination on one session: at most
// MaxStreamsPerSession streams are opened, the rest are refused with FIN
// and a log line each, and the server's memory stays bounded.
func TestSYNFlood(t *testing.T) {
	checkLeaks(t)
	const (
		syns  = 100_000
		limit = 1024 // session.DefaultMaxStreams
		batch = 4096
	)
	echo := startEcho(t)
	rec := newLogRecorder()
	addr, srv, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.DestinationTimeout = 5 * time.Minute // none may end during the flood
		c.Logger = rec.logger()
	})
	before := memInUse()
	goroutines := runtime.NumGoroutine()

	r := dialRaw(t, addr)
	r.conn.SetDeadline(time.Now().Add(5 * time.Minute))
	r.writeChunks(preamble(testPassword, 30), 64)
	r.settings()
	var fins atomic.Int64
	finCh := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	go func() {
		for {
			cmd, _, _, err := r.readFrame()
			if err != nil {
				readErr <- err
				return
			}
			if cmd == wire.CmdFIN {
				fins.Add(1)
				select {
				case finCh <- struct{}{}:
				default:
				}
			}
		}
	}()
	start := time.Now()
	frames := make([]byte, 0, batch*wire.HeaderLen)
	for sent := 0; sent < syns; {
		frames = frames[:0]
		for i := 0; i < batch && sent < syns; i++ {
			sent++
			frames, _ = wire.AppendHeader(frames, wire.CmdSYN, uint32(sent), 0)
		}
		if _, err := r.conn.Write(frames); err != nil {
			t.Fatalf("after %d SYNs: %v", sent, err)
		}
		// the refusals (FINs) must keep pace before the next batch: a
		// client that reads nothing is a different test
		for int(fins.Load()) < sent-limit {
			select {
			case <-finCh:
			case err := <-readErr:
				t.Fatalf("after %d SYNs and %d FINs: %v", sent, fins.Load(), err)
			case <-time.After(60 * time.Second):
				t.Fatalf("after %d SYNs only %d FINs", sent, fins.Load())
			}
		}
	}
	elapsed := time.Since(start)
	stats := srv.Stats()
	after := memInUse()
	growth := int64(after) - int64(before)
	t.Logf("%d SYNs in %v: %d refused with FIN, %d streams open; heap+stacks in use %.1f MB -> %.1f MB (growth %.1f MB), goroutines %d -> %d",
		syns, elapsed.Round(time.Millisecond), fins.Load(), stats.Streams, mb(before), mb(after), float64(growth)/(1<<20),
		goroutines, runtime.NumGoroutine())
	if n := fins.Load(); n != syns-limit {
		t.Errorf("%d FINs, want %d", n, syns-limit)
	}
	if stats.Streams != limit {
		t.Errorf("%d streams open, want the limit %d", stats.Streams, limit)
	}
	if growth > 50<<20 {
		t.Errorf("memory grew by %.1f MB, want under 50 MB", float64(growth)/(1<<20))
	}

	// the flood ends with its session; a real client is served throughout
	r.conn.Close()
	waitFor(t, 30*time.Second, "the flooding session's streams to end", func() bool {
		s := srv.Stats()
		return s.Streams == 0 && s.Sessions == 0
	})
	// one warning per 10 s, each with the count since the previous one, and
	// the rest when the session ends: every refusal counted, few lines
	warnings, refused := refusalLog(t, rec)
	if most := 1 + int(elapsed/(10*time.Second)); warnings < 1 || warnings > most {
		t.Errorf("%d refusal warnings for a flood of %v, want 1 to %d", warnings, elapsed.Round(time.Millisecond), most)
	}
	if refused != syns-limit {
		t.Errorf("warnings count %d refused streams, want %d", refused, syns-limit)
	}
	c := newClient(t, addr, pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("after the flood"))
	conn.Close()
}

// memInUse returns the bytes of heap and goroutine stacks in use, after a
// collection.
func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

// refusalLog returns the number of "refusing stream" warnings and the sum of
// the refused counts in them and in the session's closing summary.
func refusalLog(t *testing.T, rec *logRecorder) (warnings, refused int) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, e := range rec.events {
		switch e.msg {
		case "refusing stream: limit reached":
			warnings++
		case "refused streams over the limit since the last warning":
		default:
			continue
		}
		n, err := strconv.Atoi(e.attrs["refused"])
		if err != nil {
			t.Fatalf("%q: refused=%q", e.msg, e.attrs["refused"])
		}
		refused += n
	}
	return warnings, refused
}

// TestCloseWithStuckDestination: a client sends more than the sockets hold
// to a destination that reads nothing, then FIN. The stream still owes the
// destination its data, so the relay waits; Close must end it anyway.
func TestCloseWithStuckDestination(t *testing.T) {
	checkLeaks(t)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			setRcvBuf(fd, 16<<10)
		})
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := holdAccepted(t, ln)
	addr, srv, _ := startServer(t, func(c *anytls.ServerConfig) {
		c.StreamBuffer, c.SessionBuffer = 32<<20, 64<<20 // all of it is taken in, none is read out
	})
	r := dialRaw(t, addr)
	r.writeChunks(preamble(testPassword, 30), 64)
	r.settings()
	r.openStream(1, ln.Addr().String())
	data := randomBytes(16 << 20) // more than the kernel buffers hold
	for off := 0; off < len(data); off += 60000 {
		r.writeFrame(wire.CmdPSH, 1, data[off:min(off+60000, len(data))])
	}
	r.writeFrame(wire.CmdFIN, 1, nil)
	waitFor(t, 10*time.Second, "the destination to be connected", func() bool { return len(accepted) == 1 })
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waits for a relay whose destination reads nothing")
	}
}

// MaxSessionsPerUser keeps one user from taking every session: the user's
// session beyond it gets the Alert, other users are served, and the user
// gets a session again once one of its sessions has ended.
func TestMaxSessionsPerUser(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	rec := newLogRecorder()
	const otherPassword = "another user's password"
	addr, srv, _ := startServer(t, func(c *anytls.ServerConfig) {
		c.Users = append(c.Users, anytls.User{Name: "other", Password: otherPassword})
		c.MaxSessionsPerUser = 1
		c.Logger = rec.logger()
	})
	first := dialRaw(t, addr)
	first.writeChunks(preamble(testPassword, 30), 64)
	first.settings()
	first.echoStream(1, echo, "the user's one session")

	second := dialRaw(t, addr)
	second.writeChunks(preamble(testPassword, 30), 64)
	second.expect(wire.CmdAlert, 0)
	second.conn.Close()
	rec.wait(t, 10*time.Second, 1, "session refused: user limit reached", "user", "tester", "limit", "1")

	other := dialRaw(t, addr)
	other.writeChunks(preamble(otherPassword, 30), 64)
	other.settings()
	other.echoStream(1, echo, "another user is served")

	first.conn.Close()
	waitFor(t, 10*time.Second, "the user's session to end", func() bool { return srv.Stats().Sessions == 1 })
	again := dialRaw(t, addr)
	again.writeChunks(preamble(testPassword, 30), 64)
	again.settings()
	again.echoStream(1, echo, "room again for the user")
}

// Users are told apart by their passwords, not their names: two users that
// share a name have a session bound each.
func TestMaxSessionsPerUserSameName(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	const twinPassword = "a twin's password"
	addr, _, _ := startServer(t, func(c *anytls.ServerConfig) {
		c.Users = append(c.Users, anytls.User{Name: "tester", Password: twinPassword})
		c.MaxSessionsPerUser = 1
	})
	for _, pw := range []string{testPassword, twinPassword} {
		r := dialRaw(t, addr)
		r.writeChunks(preamble(pw, 30), 64)
		r.settings()
		r.echoStream(1, echo, "one session each")
	}
}
