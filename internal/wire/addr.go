package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Addr is a destination: an IP address or a domain name, and a port. Exactly
// one of IP (valid) and Name (non-empty) is set.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

// AddrEncoding selects the address-type codes of an address on the wire.
type AddrEncoding uint8

const (
	// SOCKS is the RFC 1928 encoding used for stream destinations and the UoT
	// request: 1 = IPv4, 3 = domain, 4 = IPv6.
	SOCKS AddrEncoding = iota
	// UoT is the encoding of sing's UDP-over-TCP packet addresses:
	// 0 = IPv4, 2 = domain, 1 = IPv6.
	UoT
)

// Address-type codes per encoding: [IPv4, domain, IPv6].
func (e AddrEncoding) codes() (v4, name, v6 byte) {
	if e == UoT {
		return 0, 2, 1
	}
	return 1, 3, 4
}

// Address errors.
var (
	ErrAddrType    = errors.New("anytls: unknown address type")
	ErrEmptyName   = errors.New("anytls: empty domain name")
	ErrNameTooLong = errors.New("anytls: domain name longer than 255 bytes")
	ErrInvalidAddr = errors.New("anytls: invalid address")
)

// MaxAddrLen is the largest encoded address: type, length, 255-byte name, port.
const MaxAddrLen = 1 + 1 + 255 + 2

// ParseAddr parses "host:port", where host is an IP literal (IPv6 in brackets)
// or a domain name.
func ParseAddr(s string) (Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, fmt.Errorf("%w %q: %v", ErrInvalidAddr, s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Addr{}, fmt.Errorf("%w %q: bad port", ErrInvalidAddr, s)
	}
	return MakeAddr(host, uint16(p))
}

// MakeAddr builds an Addr from a host (IP literal or domain) and a port.
func MakeAddr(host string, port uint16) (Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return Addr{}, fmt.Errorf("%w %q: zones are not allowed", ErrInvalidAddr, host)
		}
		return Addr{IP: ip.Unmap(), Port: port}, nil
	}
	if host == "" {
		return Addr{}, ErrEmptyName
	}
	if len(host) > 255 {
		return Addr{}, ErrNameTooLong
	}
	return Addr{Name: host, Port: port}, nil
}

// AddrFromAddrPort converts a netip.AddrPort.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
}

// IsName reports whether the address is a domain name.
func (a Addr) IsName() bool { return a.Name != "" }

// Valid reports whether the address has a host.
func (a Addr) Valid() bool { return a.Name != "" || a.IP.IsValid() }

// Host returns the name or the IP literal without brackets.
func (a Addr) Host() string {
	if a.Name != "" {
		return a.Name
	}
	return a.IP.String()
}

// String returns "host:port" with IPv6 in brackets.
func (a Addr) String() string {
	return net.JoinHostPort(a.Host(), strconv.Itoa(int(a.Port)))
}

// AddrPort returns the address as a netip.AddrPort; it is invalid for names.
func (a Addr) AddrPort() netip.AddrPort {
	if a.Name != "" {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.IP, a.Port)
}

// Len returns the encoded size of a, or 0 if it cannot be encoded.
func (a Addr) Len() int {
	switch {
	case a.Name != "":
		if len(a.Name) > 255 {
			return 0
		}
		return 1 + 1 + len(a.Name) + 2
	case a.IP.Is4():
		return 1 + 4 + 2
	case a.IP.Is6():
		return 1 + 16 + 2
	}
	return 0
}

// AppendAddr appends the encoded address (type, host, port BE).
func AppendAddr(dst []byte, a Addr, enc AddrEncoding) ([]byte, error) {
	v4, name, v6 := enc.codes()
	switch {
	case a.Name != "":
		if len(a.Name) > 255 {
			return dst, ErrNameTooLong
		}
		dst = append(dst, name, byte(len(a.Name)))
		dst = append(dst, a.Name...)
	case a.IP.Is4():
		b := a.IP.As4()
		dst = append(dst, v4)
		dst = append(dst, b[:]...)
	case a.IP.Is6():
		b := a.IP.As16()
		dst = append(dst, v6)
		dst = append(dst, b[:]...)
	default:
		return dst, ErrInvalidAddr
	}
	return append(dst, byte(a.Port>>8), byte(a.Port)), nil
}

// DecodeAddr decodes an address from the front of b and returns it with the
// number of bytes used. A truncated address returns io.ErrUnexpectedEOF.
func DecodeAddr(b []byte, enc AddrEncoding) (Addr, int, error) {
	if len(b) < 1 {
		return Addr{}, 0, io.ErrUnexpectedEOF
	}
	v4, name, v6 := enc.codes()
	var a Addr
	var n int
	switch b[0] {
	case v4:
		if len(b) < 1+4+2 {
			return Addr{}, 0, io.ErrUnexpectedEOF
		}
		a.IP = netip.AddrFrom4([4]byte(b[1:5]))
		n = 5
	case v6:
		if len(b) < 1+16+2 {
			return Addr{}, 0, io.ErrUnexpectedEOF
		}
		a.IP = netip.AddrFrom16([16]byte(b[1:17])).Unmap()
		n = 17
	case name:
		if len(b) < 2 {
			return Addr{}, 0, io.ErrUnexpectedEOF
		}
		l := int(b[1])
		if l == 0 {
			return Addr{}, 0, ErrEmptyName
		}
		if len(b) < 2+l+2 {
			return Addr{}, 0, io.ErrUnexpectedEOF
		}
		a.Name = string(b[2 : 2+l])
		n = 2 + l
	default:
		return Addr{}, 0, fmt.Errorf("%w %d", ErrAddrType, b[0])
	}
	a.Port = uint16(b[n])<<8 | uint16(b[n+1])
	return a, n + 2, nil
}

// ReadAddr reads one encoded address from r, reading no byte past it. A
// stream that ends inside the address returns io.ErrUnexpectedEOF (io.EOF if
// it ends before the first byte).
func ReadAddr(r io.Reader, enc AddrEncoding) (Addr, error) {
	var buf [MaxAddrLen]byte
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return Addr{}, err
	}
	v4, name, v6 := enc.codes()
	var need int
	switch buf[0] {
	case v4:
		need = 4 + 2
	case v6:
		need = 16 + 2
	case name:
		if _, err := io.ReadFull(r, buf[1:2]); err != nil {
			return Addr{}, noEOF(err)
		}
		if buf[1] == 0 {
			return Addr{}, ErrEmptyName
		}
		need = int(buf[1]) + 2
		if _, err := io.ReadFull(r, buf[2:2+need]); err != nil {
			return Addr{}, noEOF(err)
		}
		a, _, err := DecodeAddr(buf[:2+need], enc)
		return a, err
	default:
		return Addr{}, fmt.Errorf("%w %d", ErrAddrType, buf[0])
	}
	if _, err := io.ReadFull(r, buf[1:1+need]); err != nil {
		return Addr{}, noEOF(err)
	}
	a, _, err := DecodeAddr(buf[:1+need], enc)
	return a, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
