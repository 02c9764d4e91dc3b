package inbound

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/udptest"
	"github.com/anytls-suite/anytls/internal/uot"
	"github.com/anytls-suite/anytls/internal/wire"
)

// udpDialer is a fakeDialer that also carries UDP, directly: its packet
// connections are plain UDP sockets that resolve names through names.
type udpDialer struct {
	fakeDialer
	fail error

	mu    sync.Mutex
	conns []*directPacketConn
}

type directPacketConn struct {
	*net.UDPConn
	names  map[string]string
	closed chan struct{}
	once   sync.Once
}

func (c *directPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if d, ok := addr.(uot.DomainAddr); ok {
		ip, ok := c.names[d.Name]
		if !ok {
			return 0, &net.DNSError{Err: "no such host", Name: d.Name, IsNotFound: true}
		}
		addr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), d.Port))
	}
	return c.UDPConn.WriteTo(p, addr)
}

func (c *directPacketConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.UDPConn.Close()
}

func (d *udpDialer) ListenPacket(ctx context.Context) (net.PacketConn, error) {
	if d.fail != nil {
		return nil, d.fail
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	c := &directPacketConn{UDPConn: pc, names: d.names, closed: make(chan struct{})}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *udpDialer) last(t *testing.T) *directPacketConn {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.conns) == 0 {
		t.Fatal("no packet connection opened")
	}
	return d.conns[len(d.conns)-1]
}

// udpAssociate runs the handshake for UDP ASSOCIATE on c and returns the
// reply code and the relay address.
func udpAssociate(t *testing.T, c net.Conn, dst wire.Addr) (byte, wire.Addr) {
	t.Helper()
	greet, _, req := socksClientBytes("", "", socksCmdUDPAssociate, dst)
	if _, err := c.Write(append(greet, req...)); err != nil {
		t.Fatal(err)
	}
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if h[0] != 5 || h[1] != 0 || h[2] != 5 || h[4] != 0 {
		t.Fatalf("reply header % x", h)
	}
	bnd, err := wire.ReadAddr(c, wire.SOCKS)
	if err != nil {
		t.Fatal(err)
	}
	return h[3], bnd
}

// socksDatagram builds a client datagram: RSV RSV FRAG ADDR PORT DATA.
func socksDatagram(frag byte, dst wire.Addr, payload string) []byte {
	b, err := wire.AppendAddr([]byte{0, 0, frag}, dst, wire.SOCKS)
	if err != nil {
		panic(err)
	}
	return append(b, payload...)
}

// udpClient is the SOCKS client's datagram socket, on the family of relay.
func udpClient(t *testing.T, relay wire.Addr) *net.UDPConn {
	t.Helper()
	ip := netip.MustParseAddr("127.0.0.1")
	if relay.IP.Is6() {
		ip = netip.IPv6Loopback()
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

func exchange(t *testing.T, c *net.UDPConn, relay wire.Addr, datagram []byte) []byte {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(datagram, relay.AddrPort()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0xFFFF)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("waiting for the reply: %v", err)
	}
	if from != relay.AddrPort() {
		t.Fatalf("reply from %v, want the relay %v", from, relay)
	}
	return buf[:n]
}

func serveAlso(t *testing.T, s *Server, addr string) (string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Logf("no listener on %s: %v", addr, err)
		return "", false
	}
	go s.Serve(ln)
	return ln.Addr().String(), true
}

func TestSOCKS5UDPAssociate(t *testing.T) {
	checkGoroutines(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	d := &udpDialer{fakeDialer: fakeDialer{names: map[string]string{"echo.test": "127.0.0.1"}}}
	s, addr := startServer(t, Config{}, d)
	addrs := map[string]string{"ipv4": addr}
	if a6, ok := serveAlso(t, s, "[::1]:0"); ok {
		addrs["ipv6"] = a6
	}
	for family, proxy := range addrs {
		t.Run(family, func(t *testing.T) {
			c := dialProxy(t, proxy)
			rep, relay := udpAssociate(t, c, wire.Addr{IP: netip.IPv4Unspecified()})
			if rep != SOCKSReplySucceeded {
				t.Fatalf("reply %d", rep)
			}
			local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
			if relay.IP != local.Unmap() || relay.Port == 0 {
				t.Fatalf("relay address %v, want %v with a port", relay, local)
			}
			u := udpClient(t, relay)
			echoHdr := socksDatagram(0, wire.AddrFromAddrPort(echo4), "")
			for _, dst := range []wire.Addr{wire.AddrFromAddrPort(echo4), {Name: "echo.test", Port: echo4.Port()}} {
				got := exchange(t, u, relay, socksDatagram(0, dst, "ping"))
				// the reply names the echo server's address as its source
				if want := append(echoHdr, "ping"...); !bytes.Equal(got, want) {
					t.Fatalf("to %v: reply % x, want % x", dst, got, want)
				}
			}
			big := string(bytes.Repeat([]byte{0xA5}, 60000))
			if got := exchange(t, u, relay, socksDatagram(0, wire.AddrFromAddrPort(echo4), big)); string(got[len(echoHdr):]) != big {
				t.Fatalf("large datagram: %d bytes back", len(got))
			}
			// Dropped: fragments, bad headers, unknown names. The next
			// good datagram's reply is the first to come back.
			u.WriteToUDPAddrPort(socksDatagram(1, wire.AddrFromAddrPort(echo4), "fragment"), relay.AddrPort())
			u.WriteToUDPAddrPort([]byte{0, 0}, relay.AddrPort())
			u.WriteToUDPAddrPort([]byte{0, 0, 0, 9, 1, 2}, relay.AddrPort())
			u.WriteToUDPAddrPort(socksDatagram(0, wire.Addr{Name: "unknown.test", Port: 9}, "lost"), relay.AddrPort())
			if got := exchange(t, u, relay, socksDatagram(0, wire.AddrFromAddrPort(echo4), "after")); string(got[len(echoHdr):]) != "after" {
				t.Fatalf("first reply after dropped datagrams: %q", got)
			}
			// The association ends with its control connection.
			pc := d.last(t)
			c.Close()
			select {
			case <-pc.closed:
			case <-time.After(testTimeout):
				t.Fatal("tunnel packet connection not closed after the control connection")
			}
		})
	}
	waitConns(t, s)
}

// Only the client's socket is heard: the one whose port the request named,
// or else the first one to send.
func TestSOCKS5UDPOnlyTheClient(t *testing.T) {
	checkGoroutines(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	s, addr := startServer(t, Config{}, &udpDialer{})
	dst := wire.AddrFromAddrPort(echo4)
	loopback := wire.Addr{IP: netip.MustParseAddr("127.0.0.1")}
	for _, announced := range []bool{false, true} {
		t.Run(fmt.Sprintf("announced port %v", announced), func(t *testing.T) {
			u, stranger := udpClient(t, loopback), udpClient(t, loopback)
			from := wire.Addr{IP: netip.IPv4Unspecified()}
			if announced {
				from = wire.AddrFromAddrPort(u.LocalAddr().(*net.UDPAddr).AddrPort())
			}
			c := dialProxy(t, addr)
			_, relay := udpAssociate(t, c, from)
			if !announced { // the first datagram makes u the client
				if got := exchange(t, u, relay, socksDatagram(0, dst, "first")); !bytes.HasSuffix(got, []byte("first")) {
					t.Fatalf("reply %q", got)
				}
			}
			stranger.WriteToUDPAddrPort(socksDatagram(0, dst, "stranger"), relay.AddrPort())
			if got := exchange(t, u, relay, socksDatagram(0, dst, "client")); !bytes.HasSuffix(got, []byte("client")) {
				t.Fatalf("reply %q, want the client's", got)
			}
			c.Close()
		})
	}
	waitConns(t, s)
}

// An association ends from either side: when the tunnel ends it, the
// control connection is closed; Close ends it, tunnel connection included,
// and waits for its goroutines.
func TestSOCKS5UDPAssociationEnds(t *testing.T) {
	for _, byClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("server Close %v", byClose), func(t *testing.T) {
			checkGoroutines(t)
			d := &udpDialer{}
			s, addr := startServer(t, Config{}, d)
			c := dialProxy(t, addr)
			if rep, _ := udpAssociate(t, c, wire.Addr{IP: netip.IPv4Unspecified()}); rep != 0 {
				t.Fatalf("reply %d", rep)
			}
			tunnel := d.last(t)
			if byClose {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				select {
				case <-tunnel.closed:
				default:
					t.Fatal("tunnel packet connection open after Close")
				}
			} else {
				tunnel.Close()
			}
			if rest := expectEOF(t, c); len(rest) != 0 {
				t.Fatalf("unexpected data %q", rest)
			}
			waitConns(t, s)
		})
	}
}

func TestSOCKS5UDPFailures(t *testing.T) {
	checkGoroutines(t)
	d := &udpDialer{fail: replyErr(SOCKSReplyNotAllowed)}
	s, addr := startServer(t, Config{}, d)
	c := dialProxy(t, addr)
	greet, _, req := socksClientBytes("", "", socksCmdUDPAssociate, wire.Addr{IP: netip.IPv4Unspecified()})
	c.Write(append(greet, req...))
	want := []byte{5, 0, 5, SOCKSReplyNotAllowed, 0, 1, 0, 0, 0, 0, 0, 0}
	if got := expectEOF(t, c); !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	waitConns(t, s)
}
