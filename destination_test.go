package anytls_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/udptest"
)

// testLookup resolves like the system resolver, plus names that DNS under
// an attacker's control could point at the server itself.
func testLookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	switch host {
	case "rebind.test":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case "mapped.test":
		return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}, nil
	case "metadata.test":
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

// localSpellings are ways to name the server's own loopback, unspecified
// and link-local addresses; each is refused with LocalDeny. The client sends
// IP literals as addresses and the rest as names, which the server resolves.
var localSpellings = []string{
	"127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST.", "a.localhost", "0.0.0.0", "0", "[::]", "[::1]",
	"[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1",
	"017700000001", "169.254.169.254", "[fe80::1]", "rebind.test", "mapped.test", "metadata.test",
}

// reachableSpellings reach the IPv4 loopback echo server when local
// destinations are allowed: the control for the refusals.
var reachableSpellings = []string{
	"127.0.0.1", "localhost", "0.0.0.0", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "rebind.test", "mapped.test",
}

func startPolicyServer(t *testing.T, local anytls.LocalDestinations) (*anytls.Client, *logRecorder) {
	t.Helper()
	rec := newLogRecorder()
	addr, _, pin := startServer(t, func(c *anytls.ServerConfig) {
		c.LocalDestinations = local
		c.LookupNetIP = testLookup
		c.Logger = rec.logger()
	})
	return newClient(t, addr, pin, nil), rec
}

// expectRefused opens a stream to host:port and expects the server's refusal
// on the first read.
func expectRefused(t *testing.T, c *anytls.Client, network, host, port string) {
	t.Helper()
	conn, err := c.DialContext(testContext(t, 30*time.Second), network, net.JoinHostPort(strings.Trim(host, "[]"), port))
	if err != nil {
		t.Fatalf("%s %s: dial: %v", network, host, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	conn.Write([]byte("must not arrive"))
	_, err = conn.Read(make([]byte, 64))
	if !anytls.IsRemoteError(err) || !strings.Contains(err.Error(), "refused by the server's policy") {
		t.Errorf("%s %s: read = %v, want a RemoteError saying the policy refused it", network, host, err)
		return
	}
	t.Logf("%s %s: %v", network, host, err)
}

func TestDestinationPolicyTCP(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	_, port, _ := net.SplitHostPort(echo)
	ctx := testContext(t, 60*time.Second)
	t.Run("deny", func(t *testing.T) {
		c, rec := startPolicyServer(t, anytls.LocalDeny)
		for _, host := range localSpellings {
			expectRefused(t, c, "tcp", host, port)
		}
		if n := rec.count("destination refused"); n != len(localSpellings) {
			t.Errorf("server logged %d refusals, want %d", n, len(localSpellings))
		}
		if rec.count("destination policy", "policy", "deny local") != 1 {
			t.Errorf("the policy was not logged at start")
		}
	})
	t.Run("allow", func(t *testing.T) {
		c, _ := startPolicyServer(t, anytls.LocalAllow)
		for _, host := range reachableSpellings {
			conn, err := c.DialContext(ctx, "tcp", net.JoinHostPort(strings.Trim(host, "[]"), port))
			if err != nil {
				t.Fatalf("%s: dial: %v", host, err)
			}
			echoRoundTrip(t, conn, []byte("reached via "+host))
			conn.Close()
		}
	})
}

// A listener on a non-loopback address refuses local destinations by
// default; the same server on loopback (every other test) allows them.
func TestDestinationPolicyAuto(t *testing.T) {
	checkLeaks(t)
	echo := startEcho(t)
	rec := newLogRecorder()
	srv, pin := newServer(t, func(c *anytls.ServerConfig) { c.Logger = rec.logger() })
	ln := listen(t)
	serveOn(t, srv, &addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}})
	rec.wait(t, 10*time.Second, 1, "destination policy", "policy", "deny local", "local_destinations", "auto")
	c := newClient(t, ln.Addr().String(), pin, nil)
	conn, err := c.DialContext(testContext(t, 30*time.Second), "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !anytls.IsRemoteError(err) {
		t.Fatalf("read = %v, want the refusal", err)
	}
}

// addrListener reports another address than the one it listens on.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l *addrListener) Addr() net.Addr { return l.addr }

func TestDestinationPolicyUDP(t *testing.T) {
	checkLeaks(t)
	echo := udptest.Echo(t, "127.0.0.1:0")
	port := strconv.Itoa(int(echo.Port()))
	ctx := testContext(t, 60*time.Second)

	t.Run("connect mode", func(t *testing.T) {
		c, rec := startPolicyServer(t, anytls.LocalDeny)
		for _, host := range localSpellings {
			expectRefused(t, c, "udp", host, port)
		}
		if n := rec.count("UDP destination refused"); n != len(localSpellings) {
			t.Errorf("server logged %d refusals, want %d", n, len(localSpellings))
		}
	})
	t.Run("packet mode", func(t *testing.T) {
		c, rec := startPolicyServer(t, anytls.LocalDeny)
		pc, err := c.ListenPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		for _, host := range localSpellings {
			var to net.Addr
			h := strings.Trim(host, "[]")
			if ip, err := netip.ParseAddr(h); err == nil {
				to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, echo.Port()))
			} else {
				to = anytls.DomainAddr{Name: h, Port: echo.Port()}
			}
			if _, err := pc.WriteTo([]byte("must not arrive"), to); err != nil {
				t.Fatalf("%s: %v", host, err)
			}
		}
		// every datagram is dropped by the server, none echoed
		rec.wait(t, 20*time.Second, len(localSpellings), "uot: dropped a packet to an unresolvable or refused destination",
			"err", "refused by the server's policy")
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, from, err := pc.ReadFrom(make([]byte, 64)); err == nil {
			t.Fatalf("a datagram came back from %v (%d bytes)", from, n)
		}
	})
	t.Run("allow", func(t *testing.T) {
		c, _ := startPolicyServer(t, anytls.LocalAllow)
		for _, host := range reachableSpellings {
			if host == "0.0.0.0" {
				continue // replies come from 127.0.0.1, a stranger to a connected association
			}
			conn, err := c.DialContext(ctx, "udp", net.JoinHostPort(host, port))
			if err != nil {
				t.Fatalf("%s: dial: %v", host, err)
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			buf := make([]byte, 64)
			var n int
			for try := 0; try < 5; try++ { // UDP may drop; the echo is local
				conn.Write([]byte("via " + host))
				conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err = conn.Read(buf); err == nil {
					break
				}
			}
			conn.Close()
			if string(buf[:n]) != "via "+host {
				t.Errorf("%s: echo %q, %v", host, buf[:n], err)
			}
		}
	})
}

// Listening on loopback with the policy on auto allows local destinations,
// and says so in a warning (a reverse proxy on the same host would expose
// the host's own services to outside clients); an explicit policy, or a
// public listener, gets no warning.
func TestLoopbackAutoWarns(t *testing.T) {
	checkLeaks(t)
	const warning = "listening on loopback, so clients may reach this host's own services; " +
		"if a proxy on this host forwards outside clients here, set local destinations to deny"
	for _, tc := range []struct {
		name   string
		policy anytls.LocalDestinations
		public bool
		warned int
	}{
		{"auto on loopback", anytls.LocalAuto, false, 1},
		{"deny on loopback", anytls.LocalDeny, false, 0},
		{"allow on loopback", anytls.LocalAllow, false, 0},
		{"auto on a public address", anytls.LocalAuto, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newLogRecorder()
			srv, _ := newServer(t, func(c *anytls.ServerConfig) {
				c.Logger = rec.logger()
				c.LocalDestinations = tc.policy
			})
			var ln net.Listener = listen(t)
			if tc.public {
				ln = &addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443}}
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			rec.wait(t, 10*time.Second, 1, "destination policy")
			srv.Close()
			select { // Serve has logged all it will
			case <-served:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after Close")
			}
			if n := rec.count(warning); n != tc.warned {
				t.Errorf("%d warnings, want %d", n, tc.warned)
			}
		})
	}
}
