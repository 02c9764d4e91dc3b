package anytls_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/udptest"
	"github.com/anytls-suite/anytls/internal/wire"
)

// udpTargets returns the echo servers a test can reach: IPv4, the name
// localhost (resolved by the server, to 127.0.0.1), and IPv6 if available.
func udpTargets(t *testing.T) (names []string, addrs map[string]string, from map[string]string) {
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addrs = map[string]string{
		"ipv4":   echo4.String(),
		"domain": net.JoinHostPort("localhost", strconv.Itoa(int(echo4.Port()))),
	}
	from = map[string]string{"ipv4": echo4.String(), "domain": echo4.String()}
	names = []string{"ipv4", "domain"}
	if udptest.HaveIPv6(t) {
		echo6 := udptest.Echo(t, "[::1]:0")
		addrs["ipv6"], from["ipv6"] = echo6.String(), echo6.String()
		names = append(names, "ipv6")
	}
	return names, addrs, from
}

func TestUDPConnectMode(t *testing.T) {
	checkLeaks(t)
	names, addrs, _ := udpTargets(t)
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 60*time.Second)
	sizes := mixedSizes(300, 1, anytls.MaxUDPPayload)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			conn, err := c.DialContext(ctx, "udp", addrs[name])
			if err != nil {
				t.Fatal(err)
			}
			if conn.RemoteAddr().String() != addrs[name] || conn.RemoteAddr().Network() != "udp" {
				t.Fatalf("RemoteAddr %v", conn.RemoteAddr())
			}
			st := exchange(t, connLink(conn), sizes, exchangeConfig{})
			t.Logf("%d datagrams, %d resent", st.datagrams, st.resent)
		})
	}
}

func TestUDPPacketMode(t *testing.T) {
	checkLeaks(t)
	names, addrs, from := udpTargets(t)
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	pc, err := c.ListenPacket(testContext(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	dsts := make([]net.Addr, len(names))
	for i, name := range names {
		ap, err := netip.ParseAddrPort(addrs[name])
		if err == nil {
			dsts[i] = net.UDPAddrFromAddrPort(ap)
		} else {
			host, port, _ := net.SplitHostPort(addrs[name])
			p, _ := strconv.Atoi(port)
			dsts[i] = anytls.DomainAddr{Name: host, Port: uint16(p)}
		}
	}
	st := exchange(t, packetLink(pc, func(i int) net.Addr { return dsts[i%len(dsts)] }),
		mixedSizes(300, 1, anytls.MaxUDPPayload),
		exchangeConfig{from: func(i int) string { return from[names[i%len(names)]] }})
	t.Logf("%d datagrams, %d resent", st.datagrams, st.resent)
}

func TestUDPErrors(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 30*time.Second)
	for _, bad := range []struct{ network, addr string }{{"udp4", "[::1]:53"}, {"udp6", "127.0.0.1:53"},
		{"tcp4", "[::1]:80"}, {"tcp6", "127.0.0.1:80"}, {"tcp6", "[::ffff:127.0.0.1]:80"}} {
		if _, err := c.DialContext(ctx, bad.network, bad.addr); !errors.Is(err, anytls.ErrAddressFamily) {
			t.Errorf("DialContext(%s, %s) = %v, want ErrAddressFamily", bad.network, bad.addr, err)
		}
	}
	conn, err := c.DialContext(ctx, "udp4", echo4.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(make([]byte, anytls.MaxUDPPayload+1)); !errors.Is(err, anytls.ErrPacketTooLarge) {
		t.Fatalf("oversized Write = %v", err)
	}
	// the association is intact
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("still there")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "still there" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

// The server ends an association idle for UDPIdleTimeout; the client reads
// io.EOF.
func TestUDPIdleTimeout(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, _, pin := startServer(t, func(cfg *anytls.ServerConfig) { cfg.UDPIdleTimeout = 200 * time.Millisecond })
	c := newClient(t, addr, pin, nil)
	pc, err := c.ListenPacket(testContext(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := pc.WriteTo([]byte("once"), net.UDPAddrFromAddrPort(echo4)); err != nil {
		t.Fatal(err)
	}
	// The echo normally comes back first; on a machine stalled for longer
	// than the timeout the association may end before it.
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err == nil && string(buf[:n]) == "once" {
		_, _, err = pc.ReadFrom(buf)
	}
	if err != io.EOF {
		t.Fatalf("ReadFrom after the idle timeout = %q, %v; want io.EOF", buf[:n], err)
	}
}

// Several SOCKS5 UDP associations at once, through our client and server to
// one echo server: each gets its own replies only (every reply names its
// association, see datagram).
func TestUDPSeveralAssociations(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, _, pin := startServer(t, nil)
	c := newClient(t, addr, pin, nil)
	proxy := startSOCKS(t, c, socksListenAddr(t))
	dst := wire.AddrFromAddrPort(echo4)
	const associations = 6
	var wg sync.WaitGroup
	for k := range associations {
		u := socksAssociate(t, proxy)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// t.Fatal must not run here: run the exchange in a subtest
			t.Run(fmt.Sprintf("association %d", k), func(t *testing.T) {
				st := exchange(t, u.link(func(int) wire.Addr { return dst }),
					mixedSizes(300, 4, maxSOCKSPayload(proxy)),
					exchangeConfig{key: byte(k + 1), window: 16, windowBytes: 256 << 10,
						from: func(int) string { return echo4.String() }})
				t.Logf("%d datagrams, %d resent", st.datagrams, st.resent)
			})
		}()
	}
	wg.Wait()
}

// An association whose first datagram comes later than the SYNACK timeout
// works: the server can confirm it only once it has the UoT request, so
// the request must not wait for that first datagram. (It did: the stream
// then failed with the SYNACK timeout, and the local proxy's UDP ASSOCIATE
// with it.)
func TestUDPFirstDatagramAfterSYNACKTimeout(t *testing.T) {
	checkLeaks(t)
	_, addrs, _ := udpTargets(t)
	addr, _, pin := startServer(t, nil)
	const synack = 200 * time.Millisecond
	c := newClient(t, addr, pin, func(cfg *anytls.ClientConfig) { cfg.SYNACKTimeout = synack })
	ctx := testContext(t, 30*time.Second)
	conn, err := c.DialContext(ctx, "udp", addrs["ipv4"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc, err := c.ListenPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	time.Sleep(3 * synack) // the silence under test, not a synchronisation
	exchange(t, connLink(conn), mixedSizes(20, 1, 1500), exchangeConfig{})
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addrs["ipv4"]))
	exchange(t, packetLink(pc, func(int) net.Addr { return dst }), mixedSizes(20, 1, 1500),
		exchangeConfig{from: func(int) string { return addrs["ipv4"] }})
}
