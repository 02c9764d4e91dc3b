//go:build linux

package anytls_test

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// Out of file descriptors, accept fails with EMFILE: the server backs off
// instead of exiting, picks the waiting connection up once descriptors are
// free, closes it at the deadline like any stranger, and serves a real
// client, all under the lowered limit.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	rec := newLogRecorder()
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.AuthTimeout = time.Second
		c.Logger = rec.logger()
	})
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 60*time.Second)
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("before the limit"))
	// kept open: a closing connection would free descriptors at some
	// moment in the middle of the count below
	defer conn.Close()

	// a limit a little above what is open, then every descriptor but one
	// taken by files
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	low := saved
	low.Cur = uint64(len(entries) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved)
	var files []*os.File
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	defer closeFiles()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling the descriptor table: %v", err)
			}
			break
		}
		files = append(files, f)
	}
	files[len(files)-1].Close()
	files = files[:len(files)-1]

	// the stranger takes the last descriptor on our side; the kernel
	// completes its connection, the server cannot accept it
	stranger, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial with one descriptor left: %v", err)
	}
	defer stranger.Close()
	rec.wait(t, 10*time.Second, 1, "accept failed; retrying", "err", "too many open files")
	closeFiles()
	start := time.Now()
	stranger.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := stranger.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("stranger: %v, want a close at the deadline", err)
	}
	t.Logf("stranger closed %v after descriptors were free; accept errors logged: %d",
		time.Since(start).Round(time.Millisecond), rec.count("accept failed; retrying"))
	again, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, again, []byte("under the low limit, after EMFILE"))
	again.Close()
}
