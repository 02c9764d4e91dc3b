package inbound

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/anytls-suite/anytls/internal/uot"
	"github.com/anytls-suite/anytls/internal/wire"
)

// PacketDialer is implemented by a Dialer that can also carry UDP. Without
// it, UDP ASSOCIATE is answered with 0x07 (command not supported).
//
// ListenPacket opens one association through the tunnel: WriteTo sends a
// datagram to any address (a *net.UDPAddr, or a uot.DomainAddr the far end
// resolves), ReadFrom returns replies with their source. ctx bounds the
// opening only. Closing the connection ends the association; ReadFrom
// returns an error once the tunnel ended it.
type PacketDialer interface {
	ListenPacket(ctx context.Context) (net.PacketConn, error)
}

// SOCKS5 UDP relay (RFC 1928 section 7). Each datagram between the client and
// our relay socket carries a header:
//
//	RSV(2)=0 FRAG(1) ATYP DST.ADDR DST.PORT(2) DATA
//
// FRAG must be 0: fragments are dropped. From the client, DST is where the
// datagram goes; to the client, it is where the reply came from.
const (
	// udpHeaderMin is RSV, FRAG and ATYP.
	udpHeaderMin = 3 + 1
	// udpHeaderMax is the longest header: a domain address.
	udpHeaderMax = 3 + wire.MaxAddrLen
	// udpBufferSize holds the largest UDP datagram.
	udpBufferSize = 0xFFFF
	// udpSocketBuffer is asked for the relay socket's kernel buffers.
	udpSocketBuffer = 1 << 20
)

// tunnelPacketConn is the packet side of the tunnel with wire addresses.
// uot's connections offer it directly; any other net.PacketConn is adapted.
type tunnelPacketConn interface {
	ReadFromAddr(p []byte) (int, wire.Addr, error)
	WriteToAddr(p []byte, addr wire.Addr) (int, error)
}

type netPacketConn struct{ net.PacketConn }

func (c netPacketConn) ReadFromAddr(p []byte) (int, wire.Addr, error) {
	n, addr, err := c.ReadFrom(p)
	if err != nil {
		return n, wire.Addr{}, err
	}
	a, err := uot.AddrFromNet(addr)
	return n, a, err
}

func (c netPacketConn) WriteToAddr(p []byte, addr wire.Addr) (int, error) {
	return c.WriteTo(p, uot.NetAddr(addr))
}

// udpAssociation is one UDP ASSOCIATE: a relay socket for the client, one
// tunnel association, and the TCP control connection that keeps it alive.
type udpAssociation struct {
	ctrl   net.Conn
	local  *net.UDPConn
	tunnel tunnelPacketConn
	log    *slog.Logger

	allowIP   netip.Addr // datagrams from other IPs are dropped (invalid: any IP)
	allowPort uint16     // 0: any port, until the first datagram fixes the client

	mu     sync.Mutex     // guards client
	client netip.AddrPort // where replies go, once known

	strangers int // datagrams dropped for their source (read loop only)

	endOnce sync.Once
	end     func()
}

// socksUDPAssociate serves UDP ASSOCIATE: open the relay socket and the
// tunnel association, reply with the relay address, relay until the control
// connection closes (or the tunnel ends, which closes the control
// connection).
func (s *Server) socksUDPAssociate(req *socksRequest) {
	pd := s.dialer.(PacketDialer)
	localIP := netip.IPv4Unspecified()
	if ta, ok := req.conn.LocalAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			localIP = ip.Unmap()
		}
	}
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(localIP, 0)))
	if err != nil {
		_ = req.reply(SOCKSReplyGeneralFailure, wire.Addr{})
		req.log.Warn("inbound: UDP relay socket", "err", err)
		return
	}
	_ = sock.SetReadBuffer(udpSocketBuffer)
	_ = sock.SetWriteBuffer(udpSocketBuffer)
	sockID, ok := s.register(sock)
	if !ok {
		sock.Close()
		return
	}
	defer s.unregister(sockID, sock)

	pc, err := pd.ListenPacket(req.ctx)
	if err != nil {
		code := SOCKSReplyCode(err)
		_ = req.reply(code, wire.Addr{})
		req.log.Info("inbound: UDP association through the tunnel failed", "reply", socksReplyName(code), "err", err)
		return
	}
	pcID, ok := s.register(pc)
	if !ok {
		pc.Close()
		return
	}
	defer s.unregister(pcID, pc)

	a := &udpAssociation{ctrl: req.conn, local: sock, log: req.log, tunnel: netPacketConn{pc}}
	if t, ok := pc.(tunnelPacketConn); ok {
		a.tunnel = t
	}
	a.allowIP = clientIP(req.conn)
	if req.dst.IP.IsValid() && !req.dst.IP.IsUnspecified() {
		a.allowIP = req.dst.IP
	}
	a.allowPort = req.dst.Port
	a.end = func() {
		a.endOnce.Do(func() {
			sock.Close()
			pc.Close()
			req.conn.Close()
		})
	}

	bnd := wire.AddrFromAddrPort(sock.LocalAddr().(*net.UDPAddr).AddrPort())
	if err := req.reply(SOCKSReplySucceeded, bnd); err != nil {
		req.log.Debug("inbound: SOCKS5 reply", "err", err)
		return
	}
	if err := req.conn.SetDeadline(time.Time{}); err != nil {
		return
	}
	req.log.Debug("inbound: SOCKS5 UDP ASSOCIATE", "relay", bnd.String(), "allowed_ip", a.allowIP)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer a.end()
		a.fromClient()
	}()
	go func() {
		defer wg.Done()
		defer a.end()
		a.toClient()
	}()
	// The association lives as long as the control connection: read (and
	// ignore) until it closes.
	var b [512]byte
	for {
		if _, err := req.br.Read(b[:]); err != nil {
			break
		}
	}
	a.end()
	wg.Wait()
	req.log.Debug("inbound: UDP association ended", "relay", bnd.String())
}

// clientIP returns the IP of the control connection's peer.
func clientIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// accept reports whether a datagram from src belongs to the association and,
// for the first accepted one when the client gave no port, records src as
// the client's address.
func (a *udpAssociation) accept(src netip.AddrPort) bool {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if (a.allowIP.IsValid() && src.Addr() != a.allowIP) || (a.allowPort != 0 && src.Port() != a.allowPort) {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.client.IsValid() {
		a.client = src
	}
	return a.client == src
}

func (a *udpAssociation) clientAddr() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// fromClient relays datagrams from the client into the tunnel.
func (a *udpAssociation) fromClient() {
	buf := make([]byte, udpBufferSize)
	for {
		n, src, err := a.local.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Debug("inbound: UDP relay read", "err", err)
			}
			return
		}
		if !a.accept(src) {
			// the first at Info: a client announcing one address and
			// sending from another sees its UDP fail without a word
			a.strangers++
			level := slog.LevelDebug
			if a.strangers == 1 {
				level = slog.LevelInfo
			}
			a.log.Log(context.Background(), level, "inbound: UDP datagram from another address than the association's dropped",
				"from", src, "expected_ip", a.allowIP, "expected_port", a.allowPort, "dropped", a.strangers)
			continue
		}
		d := buf[:n]
		if n < udpHeaderMin || d[0] != 0 || d[1] != 0 {
			a.log.Debug("inbound: malformed SOCKS5 UDP datagram dropped", "len", n)
			continue
		}
		if d[2] != 0 {
			a.log.Debug("inbound: fragmented SOCKS5 UDP datagram dropped", "frag", d[2])
			continue
		}
		dst, an, err := wire.DecodeAddr(d[3:], wire.SOCKS)
		if err != nil {
			a.log.Debug("inbound: SOCKS5 UDP datagram with a bad address dropped", "err", err)
			continue
		}
		payload := d[3+an:]
		if _, err := a.tunnel.WriteToAddr(payload, dst); err != nil {
			if droppedDatagram(err) {
				a.log.Debug("inbound: UDP datagram dropped", "dst", dst.String(), "len", len(payload), "err", err)
				continue
			}
			a.log.Debug("inbound: UDP tunnel write", "err", err)
			return
		}
	}
}

// toClient relays datagrams from the tunnel to the client. Each is read
// behind room for the longest header, which is then written in front of it.
func (a *udpAssociation) toClient() {
	buf := make([]byte, udpHeaderMax+udpBufferSize)
	for {
		n, src, err := a.tunnel.ReadFromAddr(buf[udpHeaderMax:])
		if err != nil {
			if errors.Is(err, wire.ErrInvalidAddr) {
				continue
			}
			a.log.Debug("inbound: UDP tunnel read", "err", err)
			return
		}
		client := a.clientAddr()
		if !client.IsValid() {
			a.log.Debug("inbound: UDP reply before the client's first datagram dropped", "from", src.String())
			continue
		}
		start := udpHeaderMax - 3 - src.Len()
		h := append(buf[start:start], 0, 0, 0)
		if _, err := wire.AppendAddr(h, src, wire.SOCKS); err != nil {
			a.log.Debug("inbound: UDP reply with a bad source dropped", "err", err)
			continue
		}
		if _, err := a.local.WriteToUDPAddrPort(buf[start:udpHeaderMax+n], client); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			a.log.Debug("inbound: UDP reply to the client dropped", "len", n, "err", err)
		}
	}
}

// droppedDatagram reports whether a tunnel write error concerns only that
// datagram (too large, bad or unresolvable address, unreachable), so that the
// association goes on; any other error means the tunnel is gone.
func droppedDatagram(err error) bool {
	var dnsErr *net.DNSError
	return errors.Is(err, uot.ErrPacketTooLarge) || errors.Is(err, wire.ErrInvalidAddr) ||
		errors.Is(err, wire.ErrEmptyName) || errors.Is(err, wire.ErrNameTooLong) ||
		errors.As(err, &dnsErr) || errors.Is(err, syscall.EMSGSIZE) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}
