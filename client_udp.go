package anytls

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/anytls-suite/anytls/internal/uot"
	"github.com/anytls-suite/anytls/internal/wire"
)

// UDP through the tunnel uses sing-box's UDP over TCP, version 2: each
// association is one stream to the name uot.MagicAddress, and every datagram
// travels whole on it (docs/architecture.md, "UDP over TCP").

// MaxUDPPayload is the largest datagram carried through the tunnel: the
// largest UDP payload IPv4 carries. Longer ones are refused with
// ErrPacketTooLarge on write and dropped on arrival.
const MaxUDPPayload = uot.MaxPacketSize

// UDP errors. Match them with errors.Is.
var (
	// ErrPacketTooLarge: a datagram longer than MaxUDPPayload.
	ErrPacketTooLarge = uot.ErrPacketTooLarge
	// ErrMalformedUDP: the server sent bytes that are not UDP-over-TCP
	// packets; the association was closed.
	ErrMalformedUDP = uot.ErrMalformed
	// ErrAddressFamily: "tcp4" or "udp4" with an IPv6 address, "tcp6" or
	// "udp6" with an IPv4 one.
	ErrAddressFamily = errors.New("anytls: address does not match the network's IP version")
)

// DomainAddr is a UDP address given by a domain name and a port. Pass it to
// WriteTo to let the server resolve the name; ReadFrom returns it when a
// server names a packet's source.
type DomainAddr = uot.DomainAddr

// ListenPacket opens a UDP association through the server, in non-connect
// mode: WriteTo sends each datagram to its own address (a *net.UDPAddr, a
// DomainAddr, or any net.Addr whose String is "host:port"; the server
// resolves names), and ReadFrom returns each reply with its source address.
// The server's socket lives as long as the returned connection, until Close
// or until the server ends the association after 2 minutes without traffic
// (then ReadFrom returns io.EOF). Like DialContext it costs no round trip: a
// server's failure to open the socket arrives as a *RemoteError on ReadFrom.
func (c *Client) ListenPacket(ctx context.Context) (net.PacketConn, error) {
	st, err := c.pool.OpenStream(ctx, uot.Destination(false))
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "udp", Err: err}
	}
	pc, err := uot.NewPacketConn(withinCtx(ctx, st), false, c.log)
	st.SetWriteDeadline(time.Time{})
	if err != nil {
		st.Close()
		return nil, &net.OpError{Op: "listen", Net: "udp", Err: err}
	}
	return pc, nil
}

// withinCtx gives st's writes ctx's deadline, so that the association's
// request, written when it opens, does not wait longer than the caller
// allows; the caller clears it.
func withinCtx(ctx context.Context, st net.Conn) net.Conn {
	if d, ok := ctx.Deadline(); ok {
		st.SetWriteDeadline(d)
	}
	return st
}

// familyFits reports whether an IP destination is of the version network
// ("tcp4", "udp6", ...) asks for; names always fit (the server resolves
// them).
func familyFits(network string, dst wire.Addr) bool {
	if dst.IsName() {
		return true
	}
	switch network {
	case "tcp4", "udp4":
		return dst.IP.Is4()
	case "tcp6", "udp6":
		return !dst.IP.Is4()
	}
	return true
}

// dialUDP opens a connect-mode association to address: every Write is one
// datagram to address, every Read one datagram from it.
func (c *Client) dialUDP(ctx context.Context, network, address string) (net.Conn, error) {
	dst, err := wire.ParseAddr(address)
	if err != nil {
		return nil, err
	}
	if !familyFits(network, dst) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: uot.NetAddr(dst), Err: fmt.Errorf("%w: %s", ErrAddressFamily, address)}
	}
	st, err := c.pool.OpenStream(ctx, uot.Destination(false))
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: uot.NetAddr(dst), Err: err}
	}
	conn, err := uot.NewConn(withinCtx(ctx, st), dst, c.log)
	st.SetWriteDeadline(time.Time{})
	if err != nil {
		st.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Addr: uot.NetAddr(dst), Err: err}
	}
	return conn, nil
}
