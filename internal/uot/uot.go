// Package uot is UDP over TCP version 2, as sing-box defines it: how an
// AnyTLS stream carries UDP datagrams. It holds the request and packet codecs,
// the client's packet connections over a stream, and the server's handler that
// relays a stream to a UDP socket.
//
// Protocol flow (client C, server S, over one stream):
//
//	C -> S  stream destination   the name MagicAddress (any port), as a
//	                             SOCKS5 address; LegacyMagicAddress for v1
//	C -> S  request (v2 only)    isConnect(1) DESTINATION(SOCKS5 address)
//	S -> C  SYNACK               once the server's UDP socket is open
//	C <-> S packets              connect mode:      LENGTH(2) DATA
//	                             non-connect mode:  ADDRESS(UoT codes) LENGTH(2) DATA
//
// Address encodings (see wire.AddrEncoding): the request's destination uses
// the SOCKS5 codes (1 = IPv4, 3 = domain, 4 = IPv6); the per-packet address
// in non-connect mode uses the UoT codes (0 = IPv4, 1 = IPv6, 2 = domain with
// one length byte). Ports and lengths are big-endian. In connect mode every
// packet goes to, and comes from, the request's destination. Version 1 has
// no request and only non-connect packets.
//
// Limits: a packet's payload is at most MaxPacketSize bytes (the largest UDP
// payload IPv4 carries). A longer one is dropped, never truncated: its length
// field and bytes are consumed so the stream stays in step. An address that
// cannot be decoded cannot be skipped (its length is unknown), so it ends the
// stream with ErrMalformed.
package uot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/anytls-suite/anytls/internal/wire"
)

const (
	// MagicAddress is the stream destination (a domain name, any port) that
	// asks for UDP over TCP version 2.
	MagicAddress = "sp.v2.udp-over-tcp.arpa"
	// LegacyMagicAddress asks for version 1: no request header, non-connect
	// packets only.
	LegacyMagicAddress = "sp.udp-over-tcp.arpa"

	// MaxPacketSize is the largest payload carried: 65535 - 8 (UDP header) -
	// 20 (IPv4 header). Longer packets are dropped.
	MaxPacketSize = 65507
	// maxLength is the largest value of the 16-bit length field.
	maxLength = 0xFFFF
	// lengthLen is the size of the length field.
	lengthLen = 2
	// MaxHeaderLen is the longest packet header: a domain address plus the
	// length field.
	MaxHeaderLen = wire.MaxAddrLen + lengthLen
	// MaxRequestLen is the longest request: isConnect plus a domain address.
	MaxRequestLen = 1 + wire.MaxAddrLen
)

// Errors. Match them with errors.Is.
var (
	// ErrPacketTooLarge: a payload longer than MaxPacketSize. A write returns
	// it without sending; a reader drops such a packet and goes on.
	ErrPacketTooLarge = errors.New("anytls: UDP packet larger than 65507 bytes")
	// ErrMalformed: the stream holds bytes that are not a UoT request or
	// packet (an unknown address type, an empty domain name). The stream
	// cannot be resynchronised and is ended.
	ErrMalformed = errors.New("anytls: malformed UDP-over-TCP data")
	// ErrStreamBroken: a packet was only partly written (its write deadline
	// passed between two frames), so the peer would lose its framing; the
	// stream has been closed.
	ErrStreamBroken = errors.New("anytls: UDP-over-TCP stream broken by a partial packet write")
)

// Magic reports whether dst is a stream destination that asks for UDP over
// TCP, and whether it asks for the legacy version 1.
func Magic(dst wire.Addr) (ok, legacy bool) {
	switch dst.Name {
	case MagicAddress:
		return true, false
	case LegacyMagicAddress:
		return true, true
	}
	return false, false
}

// Destination returns the stream destination that opens an association:
// MagicAddress, or LegacyMagicAddress for version 1. The port is 0.
func Destination(legacy bool) wire.Addr {
	if legacy {
		return wire.Addr{Name: LegacyMagicAddress}
	}
	return wire.Addr{Name: MagicAddress}
}

// DomainAddr is a UDP address given by a domain name, for packets sent to a
// name (the server resolves it) or received from a peer that named the
// source. It implements net.Addr.
type DomainAddr struct {
	Name string
	Port uint16
}

// Network returns "udp".
func (a DomainAddr) Network() string { return "udp" }

// String returns "name:port".
func (a DomainAddr) String() string { return net.JoinHostPort(a.Name, strconv.Itoa(int(a.Port))) }

// NetAddr converts a to a net.Addr: a *net.UDPAddr for an IP, a DomainAddr for
// a name.
func NetAddr(a wire.Addr) net.Addr {
	if a.IsName() {
		return DomainAddr{Name: a.Name, Port: a.Port}
	}
	return net.UDPAddrFromAddrPort(a.AddrPort())
}

// AddrFromNet converts a net.Addr to a wire.Addr. *net.UDPAddr, DomainAddr
// and netip-based addresses are converted directly; any other address is
// parsed from its String() as "host:port".
func AddrFromNet(addr net.Addr) (wire.Addr, error) {
	switch a := addr.(type) {
	case *net.UDPAddr:
		if a == nil {
			return wire.Addr{}, fmt.Errorf("%w: nil address", wire.ErrInvalidAddr)
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Port < 0 || a.Port > 0xFFFF {
			return wire.Addr{}, fmt.Errorf("%w: %v", wire.ErrInvalidAddr, addr)
		}
		return wire.Addr{IP: ip.Unmap(), Port: uint16(a.Port)}, nil
	case DomainAddr:
		return wire.MakeAddr(a.Name, a.Port)
	case *DomainAddr:
		return wire.MakeAddr(a.Name, a.Port)
	case nil:
		return wire.Addr{}, fmt.Errorf("%w: nil address", wire.ErrInvalidAddr)
	}
	return wire.ParseAddr(addr.String())
}
