package uot

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"

	"github.com/anytls-suite/anytls/internal/wire"
)

// Request is the header a version 2 client sends first on the stream:
//
//	isConnect(1)  0 = non-connect mode, anything else = connect mode
//	DESTINATION   SOCKS5 address codes (1 = IPv4, 3 = domain, 4 = IPv6), port BE
type Request struct {
	// Connect selects connect mode: packets carry no address and all go to,
	// and come from, Destination.
	Connect bool
	// Destination is the peer in connect mode; in non-connect mode it is
	// informative only (we send 0.0.0.0:0).
	Destination wire.Addr
}

// AppendRequest appends the encoded request to dst.
func AppendRequest(dst []byte, r Request) ([]byte, error) {
	c := byte(0)
	if r.Connect {
		c = 1
	}
	return wire.AppendAddr(append(dst, c), r.Destination, wire.SOCKS)
}

// requestLen returns the size of the request that starts b or, when b is too
// short to tell, a longer prefix to look at next (more is then true).
func requestLen(b []byte) (n int, more bool, err error) {
	if len(b) < 2 {
		return 2, true, nil
	}
	switch b[1] {
	case 1: // IPv4
		return 1 + 1 + 4 + 2, false, nil
	case 4: // IPv6
		return 1 + 1 + 16 + 2, false, nil
	case 3: // domain
		if len(b) < 3 {
			return 3, true, nil
		}
		if b[2] == 0 {
			return 0, false, fmt.Errorf("%w: request: %w", ErrMalformed, wire.ErrEmptyName)
		}
		return 1 + 2 + int(b[2]) + 2, false, nil
	}
	return 0, false, fmt.Errorf("%w: request: %w %d", ErrMalformed, wire.ErrAddrType, b[1])
}

// DecodeRequest decodes the request at the front of b and returns it with the
// number of bytes used. A truncated request returns io.ErrUnexpectedEOF; an
// undecodable address returns an error wrapping ErrMalformed.
func DecodeRequest(b []byte) (Request, int, error) {
	n, more, err := requestLen(b)
	if err != nil {
		return Request{}, 0, err
	}
	if more || len(b) < n {
		return Request{}, 0, io.ErrUnexpectedEOF
	}
	a, _, err := wire.DecodeAddr(b[1:n], wire.SOCKS)
	if err != nil {
		return Request{}, 0, fmt.Errorf("%w: request: %w", ErrMalformed, err)
	}
	return Request{Connect: b[0] != 0, Destination: normalize(a)}, n, nil
}

// normalize turns a domain that is an IP literal into that IP, as peers do
// when they read one.
func normalize(a wire.Addr) wire.Addr {
	if a.IsName() {
		if ip, err := netip.ParseAddr(a.Name); err == nil && ip.Zone() == "" {
			return wire.Addr{IP: ip.Unmap(), Port: a.Port}
		}
	}
	return a
}

// HeaderLen returns the size of a packet header: the address (non-connect
// mode only) and the length field. It is 0 when addr cannot be encoded.
func HeaderLen(connect bool, addr wire.Addr) int {
	if connect {
		return lengthLen
	}
	if n := addr.Len(); n > 0 {
		return n + lengthLen
	}
	return 0
}

// AppendHeader appends a packet header for a payload of n bytes:
//
//	connect mode:      LENGTH(2)
//	non-connect mode:  ADDRESS (UoT codes: 0 = IPv4, 1 = IPv6, 2 = domain) PORT(2) LENGTH(2)
//
// In connect mode addr is ignored.
func AppendHeader(dst []byte, connect bool, addr wire.Addr, n int) ([]byte, error) {
	if n < 0 || n > MaxPacketSize {
		return dst, ErrPacketTooLarge
	}
	if !connect {
		var err error
		if dst, err = wire.AppendAddr(dst, addr, wire.UoT); err != nil {
			return dst, err
		}
	}
	return binary.BigEndian.AppendUint16(dst, uint16(n)), nil
}

// AppendPacket appends a header and the payload.
func AppendPacket(dst []byte, connect bool, addr wire.Addr, payload []byte) ([]byte, error) {
	dst, err := AppendHeader(dst, connect, addr, len(payload))
	if err != nil {
		return dst, err
	}
	return append(dst, payload...), nil
}

// packetLen returns the size of the packet that starts b, header included,
// or, when b is too short to tell, a longer prefix to look at next (more is
// then true). It never asks for more than MaxHeaderLen bytes before it knows
// the size.
func packetLen(b []byte, connect bool) (n int, more bool, err error) {
	hl := lengthLen
	if !connect {
		if len(b) < 1 {
			return 1, true, nil
		}
		switch b[0] {
		case 0: // IPv4
			hl = 1 + 4 + 2 + lengthLen
		case 1: // IPv6
			hl = 1 + 16 + 2 + lengthLen
		case 2: // domain
			if len(b) < 2 {
				return 2, true, nil
			}
			if b[1] == 0 {
				return 0, false, fmt.Errorf("%w: packet address: %w", ErrMalformed, wire.ErrEmptyName)
			}
			hl = 2 + int(b[1]) + 2 + lengthLen
		default:
			return 0, false, fmt.Errorf("%w: packet address: %w %d", ErrMalformed, wire.ErrAddrType, b[0])
		}
	}
	if len(b) < hl {
		return hl, true, nil
	}
	return hl + int(binary.BigEndian.Uint16(b[hl-lengthLen:hl])), false, nil
}

// DecodePacket decodes the packet at the front of b. It returns the address
// (the zero Addr in connect mode), the payload (a sub-slice of b), and the
// packet's size. A truncated packet returns io.ErrUnexpectedEOF; an
// undecodable address an error wrapping ErrMalformed (n is then 0: the stream
// cannot go on). A payload over MaxPacketSize returns ErrPacketTooLarge with
// the address and n set, so that the caller can skip the packet.
func DecodePacket(b []byte, connect bool) (addr wire.Addr, payload []byte, n int, err error) {
	n, more, err := packetLen(b, connect)
	if err != nil {
		return wire.Addr{}, nil, 0, err
	}
	if more || len(b) < n {
		return wire.Addr{}, nil, 0, io.ErrUnexpectedEOF
	}
	hl := lengthLen
	if !connect {
		a, an, err := wire.DecodeAddr(b, wire.UoT)
		if err != nil { // unreachable after packetLen, kept for safety
			return wire.Addr{}, nil, 0, fmt.Errorf("%w: packet address: %w", ErrMalformed, err)
		}
		addr, hl = normalize(a), an+lengthLen
	}
	if n-hl > MaxPacketSize {
		return addr, nil, n, fmt.Errorf("%w: %d bytes", ErrPacketTooLarge, n-hl)
	}
	return addr, b[hl:n:n], n, nil
}
