package anytls_test

// UDP over TCP interoperability with sing: sing's own UoT code (the client
// side sing-box uses, and a server handler built from sing's reader and
// packet conn) over sing-anytls, against our server and our client.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/udptest"
	"github.com/anytls-suite/anytls/internal/wire"
	singanytls "github.com/anytls/sing-anytls"
	M "github.com/sagernet/sing/common/metadata"
	N "github.com/sagernet/sing/common/network"
	"github.com/sagernet/sing/common/uot"
)

// interopDatagrams is how many datagrams of mixed sizes (1 to 65507 bytes)
// each interop test sends, and receives back.
const interopDatagrams = 10_000

// serveUoT serves a UDP-over-TCP stream on the sing-anytls server the way
// sing-box does, with sing's code: confirm the stream first (SYNACK, through
// the stream's HandshakeSuccess, which ReportConnHandshakeSuccess calls as
// the deprecated ReportHandshakeSuccess did), read the request with
// uot.ReadRequest, and relay uot.NewConn's packets to a real UDP socket.
func (h *singHandler) serveUoT(conn net.Conn) {
	if err := N.ReportConnHandshakeSuccess(conn, conn); err != nil {
		return
	}
	req, err := uot.ReadRequest(conn)
	if err != nil {
		return
	}
	pc := uot.NewConn(conn, *req)
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return
	}
	sock.SetReadBuffer(udptest.SocketBuffer)
	sock.SetWriteBuffer(udptest.SocketBuffer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 0xFFFF)
		for {
			n, from, err := sock.ReadFrom(buf)
			if err != nil {
				return
			}
			if _, err := pc.WriteTo(buf[:n], from); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 0xFFFF)
	for {
		n, to, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		sock.WriteTo(buf[:n], to)
	}
	conn.Close()
	sock.Close()
	<-done
}

// singDialer lets sing's uot.Client open its streams through a sing-anytls
// client.
type singDialer struct{ c *singanytls.Client }

func (d singDialer) DialContext(ctx context.Context, _ string, dst M.Socksaddr) (net.Conn, error) {
	return d.c.CreateProxy(ctx, dst)
}

func (d singDialer) ListenPacket(context.Context, M.Socksaddr) (net.PacketConn, error) {
	return nil, errors.ErrUnsupported
}

// A sing-anytls client with sing's UoT client, version 2 (the lazy request
// in front of the first packet), through our server to UDP echo servers.
func TestInteropUDPSingClientOurServer(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, _, _ := startServer(t, nil)
	sc := newSingClient(t, addr)
	ctx := testContext(t, 120*time.Second)
	sizes := mixedSizes(interopDatagrams, 1, anytls.MaxUDPPayload)

	t.Run("connect", func(t *testing.T) {
		client := uot.Client{Dialer: singDialer{sc}, Version: uot.Version}
		conn, err := client.DialContext(ctx, N.NetworkUDP, M.SocksaddrFromNetIP(echo4))
		if err != nil {
			t.Fatal(err)
		}
		st := exchange(t, connLink(conn), sizes, exchangeConfig{})
		t.Logf("%d datagrams (%d MB) each way in %v, %d resent", st.datagrams, st.bytes>>20, st.elapsed, st.resent)
	})
	t.Run("non-connect", func(t *testing.T) {
		// each datagram names its destination: IPv4, a name our server
		// resolves, and IPv6 when there is IPv6
		dsts := []net.Addr{M.SocksaddrFromNetIP(echo4), M.ParseSocksaddrHostPort("localhost", echo4.Port())}
		from := []string{echo4.String(), echo4.String()}
		if udptest.HaveIPv6(t) {
			echo6 := udptest.Echo(t, "[::1]:0")
			dsts = append(dsts, M.SocksaddrFromNetIP(echo6))
			from = append(from, echo6.String())
		}
		client := uot.Client{Dialer: singDialer{sc}, Version: uot.Version}
		pc, err := client.ListenPacket(ctx, M.SocksaddrFromNetIP(echo4))
		if err != nil {
			t.Fatal(err)
		}
		st := exchange(t, packetLink(pc, func(i int) net.Addr { return dsts[i%len(dsts)] }), sizes,
			exchangeConfig{from: func(i int) string { return from[i%len(from)] }})
		t.Logf("%d datagrams (%d MB) each way in %v, %d resent", st.datagrams, st.bytes>>20, st.elapsed, st.resent)
	})
	t.Run("legacy version 1", func(t *testing.T) {
		client := uot.Client{Dialer: singDialer{sc}, Version: uot.LegacyVersion}
		pc, err := client.ListenPacket(ctx, M.Socksaddr{})
		if err != nil {
			t.Fatal(err)
		}
		exchange(t, packetLink(pc, func(int) net.Addr { return net.UDPAddrFromAddrPort(echo4) }),
			mixedSizes(500, 1, anytls.MaxUDPPayload),
			exchangeConfig{from: func(int) string { return echo4.String() }})
	})
}

// Our client's local SOCKS5 UDP ASSOCIATE, through a sing-anytls server whose
// handler serves UoT with sing's code, to a UDP echo server.
func TestInteropUDPOurSOCKSSingServer(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, pin := startSingServer(t, nil)
	c := newClient(t, addr, pin, nil)
	proxy := startSOCKS(t, c, socksListenAddr(t))
	u := socksAssociate(t, proxy)
	dst := wire.AddrFromAddrPort(echo4)
	st := exchange(t, u.link(func(int) wire.Addr { return dst }),
		mixedSizes(interopDatagrams, 1, maxSOCKSPayload(proxy)),
		exchangeConfig{from: func(int) string { return echo4.String() }})
	t.Logf("%d datagrams (%d MB) each way in %v, %d resent", st.datagrams, st.bytes>>20, st.elapsed, st.resent)
}

// Our client's packet conn and connected conn through the sing-anytls
// server.
func TestInteropUDPOurClientSingServer(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	addr, pin := startSingServer(t, nil)
	c := newClient(t, addr, pin, nil)
	ctx := testContext(t, 60*time.Second)
	conn, err := c.DialContext(ctx, "udp", echo4.String())
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, connLink(conn), mixedSizes(500, 1, anytls.MaxUDPPayload), exchangeConfig{})
	pc, err := c.ListenPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, packetLink(pc, func(int) net.Addr { return net.UDPAddrFromAddrPort(echo4) }),
		mixedSizes(500, 1, anytls.MaxUDPPayload),
		exchangeConfig{from: func(int) string { return netip.AddrPortFrom(echo4.Addr(), echo4.Port()).String() }})
}
