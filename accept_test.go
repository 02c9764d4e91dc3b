package anytls_test

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// failingListener fails its first fails Accepts with the errors of errs in
// turn, then accepts for real.
type failingListener struct {
	net.Listener
	errs  []error
	fails int32
	calls atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if n := l.calls.Add(1); n <= l.fails {
		return nil, l.errs[int(n-1)%len(l.errs)]
	}
	return l.Listener.Accept()
}

// The accept loop survives accept errors, temporary or not: it logs each,
// backs off (5 ms doubling, at most 1 s) and serves again afterwards.
func TestAcceptRetriesErrors(t *testing.T) {
	checkLeaks(t)
	const fails = 6
	echo := startEcho(t)
	rec := newLogRecorder()
	srv, pin := newServer(t, func(c *anytls.ServerConfig) { c.Logger = rec.logger() })
	ln := &failingListener{Listener: listen(t), fails: fails, errs: []error{
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)},
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)},
		errors.New("something else entirely"),
	}}
	serveOn(t, srv, ln)
	c := newClient(t, ln.Addr().String(), pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoRoundTrip(t, conn, []byte("served after the errors"))
	conn.Close()
	logged := rec.find("accept failed; retrying")
	if len(logged) != fails {
		t.Fatalf("%d accept errors logged, want %d", len(logged), fails)
	}
	want := []string{"5ms", "10ms", "20ms", "40ms", "80ms", "160ms"}
	for i, e := range logged {
		if e.attrs["backoff"] != want[i] {
			t.Errorf("backoff %d = %s, want %s", i, e.attrs["backoff"], want[i])
		}
	}
	if got := logged[0].attrs["err"]; got == "" {
		t.Error("the error is not logged")
	}
}
