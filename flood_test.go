//go:build linux

package anytls_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// The flood test runs the server in a child process (this test binary,
// re-executed into TestFloodServerChild) so that the server's resident
// memory can be read on its own.
const (
	floodChildEnv = "ANYTLS_FLOOD_CHILD" // set in the child: its auth timeout
	floodFullEnv  = "ANYTLS_FLOOD"       // "full": the counts
)

// TestFloodServerChild is the server side of TestFloodIdleConnections; it
// does nothing in a normal run. It prints "listening ADDR PIN" and serves
// until its stdin closes.
func TestFloodServerChild(t *testing.T) {
	timeout := os.Getenv(floodChildEnv)
	if timeout == "" {
		t.Skip("only run as the flood test's child process")
	}
	d, err := time.ParseDuration(timeout)
	if err != nil {
		t.Fatal(err)
	}
	srv, pin := newServer(t, func(c *anytls.ServerConfig) { c.AuthTimeout = d })
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Printf("listening %s %x\n", ln.Addr(), pin)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	<-done
}

// floodChild is a running child server.
type floodChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	pin   []byte
}

func startFloodChild(t *testing.T, deadline time.Duration) *floodChild {
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("no test binary to re-execute: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestFloodServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), floodChildEnv+"="+deadline.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &floodChild{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		c.stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var pin string
		if _, err := fmt.Sscanf(sc.Text(), "listening %s %s", &c.addr, &pin); err == nil {
			fmt.Sscanf(pin, "%x", &c.pin)
			go io.Copy(io.Discard, stdout)
			return c
		}
	}
	t.Fatalf("the child server did not start: %v", sc.Err())
	return nil
}

// rss returns the child's resident memory in bytes.
func (c *floodChild) rss(t *testing.T) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Skipf("cannot read the child's memory: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}

// fds returns the number of the child's open descriptors.
func (c *floodChild) fds() int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.cmd.Process.Pid))
	return len(entries)
}

// raiseNoFile lifts this process's descriptor limit to its hard limit and
// returns the soft limit in force.
func raiseNoFile() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return int(min(lim.Cur, 1<<20))
}

// Idle connections, plain TCP and TLS with nothing after the handshake, are
// each closed at the one deadline after their accept; the server's memory
// grows by a bounded amount and a real client is served throughout.
// ANYTLS_FLOOD=full runs the 5,000 TCP and 3,000 TLS connections.
func TestFloodIdleConnections(t *testing.T) {
	checkLeaks(t)
	nTCP, nTLS, deadline := 500, 300, 3*time.Second
	if os.Getenv(floodFullEnv) == "full" {
		nTCP, nTLS, deadline = 5000, 3000, 10*time.Second
	}
	if limit := raiseNoFile() - 200; nTCP+nTLS > limit {
		scale := float64(limit) / float64(nTCP+nTLS)
		nTCP, nTLS = int(float64(nTCP)*scale), int(float64(nTLS)*scale)
		t.Logf("descriptor limit: flood cut to %d TCP and %d TLS connections", nTCP, nTLS)
	}
	child := startFloodChild(t, deadline)
	echo := startEcho(t)
	stop := keepClientBusy(t, child.addr, child.pin, echo)
	baseFDs, baseRSS := child.fds(), child.rss(t)

	type result struct {
		tls     bool
		elapsed time.Duration
		err     error
	}
	results := make(chan result, nTCP+nTLS)
	var conns sync.WaitGroup
	watch := func(c net.Conn, start time.Time, isTLS bool) {
		defer conns.Done()
		defer c.Close()
		c.SetReadDeadline(start.Add(deadline + 60*time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == io.EOF || err != nil && !isTimeout(err) {
			err = nil // closed by the server
		}
		results <- result{isTLS, time.Since(start), err}
	}
	dial := func(isTLS bool) error {
		start := time.Now()
		c, err := net.DialTimeout("tcp", child.addr, 30*time.Second)
		if err != nil {
			return err
		}
		if isTLS {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "www.example.com"})
			tc.SetDeadline(start.Add(deadline))
			if err := tc.Handshake(); err != nil {
				c.Close()
				return fmt.Errorf("handshake: %w", err)
			}
			c = tc
		}
		conns.Add(1)
		go watch(c, start, isTLS)
		return nil
	}
	// TLS first, with a few handshakes at a time, then the TCP ones
	floodStart := time.Now()
	var dialers sync.WaitGroup
	var mu sync.Mutex
	var dialErrs []error
	jobs := make(chan bool)
	for range 8 {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for isTLS := range jobs {
				if err := dial(isTLS); err != nil {
					mu.Lock()
					dialErrs = append(dialErrs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < nTLS+nTCP; i++ {
		jobs <- i < nTLS
	}
	close(jobs)
	dialers.Wait()
	opened := time.Since(floodStart)
	if len(dialErrs) > 0 {
		t.Fatalf("%d of %d connections failed, first: %v", len(dialErrs), nTCP+nTLS, dialErrs[0])
	}
	// the peak: every connection accepted (the kernel completes them before
	// the server accepts), none yet at its deadline
	for end := time.Now().Add(deadline / 2); child.fds() < baseFDs+nTCP+nTLS && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	peakFDs, peakRSS := child.fds(), child.rss(t)
	conns.Wait()
	close(results)
	stop()
	afterRSS := child.rss(t)

	var tcpTimes, tlsTimes []time.Duration
	for r := range results {
		if r.err != nil {
			t.Errorf("connection not closed by the server: %v after %v", r.err, r.elapsed)
			continue
		}
		if r.tls {
			tlsTimes = append(tlsTimes, r.elapsed)
		} else {
			tcpTimes = append(tcpTimes, r.elapsed)
		}
	}
	for _, g := range []struct {
		name  string
		times []time.Duration
		want  int
	}{{"TCP", tcpTimes, nTCP}, {"TLS", tlsTimes, nTLS}} {
		if len(g.times) != g.want {
			t.Errorf("%s: %d closes, want %d", g.name, len(g.times), g.want)
			continue
		}
		slices.Sort(g.times)
		lo, hi := g.times[0], g.times[len(g.times)-1]
		t.Logf("%d idle %s connections closed %v to %v after their connect (deadline %v)", g.want, g.name,
			lo.Round(time.Millisecond), hi.Round(time.Millisecond), deadline)
		if lo < deadline || hi > deadline+30*time.Second {
			t.Errorf("%s: closes between %v and %v, want at the %v deadline", g.name, lo, hi, deadline)
		}
	}
	t.Logf("opened in %v; server descriptors %d -> %d; server RSS %.1f MB -> %.1f MB at the peak (+%.1f MB, %.1f KiB per connection), %.1f MB after",
		opened.Round(time.Millisecond), baseFDs, peakFDs, mb(baseRSS), mb(peakRSS), mb(peakRSS-baseRSS),
		float64(peakRSS-baseRSS)/1024/float64(nTCP+nTLS), mb(afterRSS))
}
