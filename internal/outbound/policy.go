// Package outbound is the server's way out to stream destinations, TCP and
// UDP alike. It resolves names itself and checks every address AFTER
// resolution against a Policy, so that no spelling of a forbidden address
// gets through: a name that resolves to loopback, an IPv4-mapped IPv6
// address, the legacy inet_aton forms ("2130706433", "0x7f.1", "0177.0.0.1",
// "127.1"), an IPv6 literal with a zone, "localhost" and its sub-names.
//
// A refused destination is an error wrapping ErrRefused whose text says
// which address was refused and why; the server sends that text to the
// client in SYNACK.
package outbound

import (
	"errors"
	"net/netip"
	"strings"
)

// ErrRefused is wrapped by every error about a destination the policy
// forbids. Match it with errors.Is.
var ErrRefused = errors.New("destination refused by the server's policy")

// ErrBadName is wrapped by the error for a destination name that no resolver
// should see: one with spaces, control characters or other bytes that never
// occur in a host name.
var ErrBadName = errors.New("invalid destination name")

// Policy says which destination addresses are refused. The zero Policy
// refuses nothing.
type Policy struct {
	// DenyLocal refuses the addresses that lead back into the server
	// itself or its link: loopback (127.0.0.0/8, ::1), unspecified
	// (0.0.0.0/8, ::), IPv4-compatible IPv6 (::/96), link-local unicast
	// (169.254.0.0/16, fe80::/10), multicast (224.0.0.0/4, ff00::/8: a
	// group this host's sockets joined gets the datagram back), the limited
	// broadcast 255.255.255.255, and every address of the server's own
	// interfaces (see Dialer.InterfaceAddrs, which adds their networks'
	// broadcast addresses).
	DenyLocal bool
	// DenyPrivate refuses private ranges: 10.0.0.0/8, 172.16.0.0/12,
	// 192.168.0.0/16, the shared (carrier-grade NAT) range 100.64.0.0/10,
	// unique local fc00::/7 and the old site-local fec0::/10.
	DenyPrivate bool
}

// String describes the policy for logs: "allow all", "deny local",
// "deny private" or "deny local and private".
func (p Policy) String() string {
	switch {
	case p.DenyLocal && p.DenyPrivate:
		return "deny local and private"
	case p.DenyLocal:
		return "deny local"
	case p.DenyPrivate:
		return "deny private"
	}
	return "allow all"
}

// RefusedError is a destination address the policy forbids. It wraps
// ErrRefused.
type RefusedError struct {
	// Host is the destination as the client named it.
	Host string
	// Addr is the refused address (the resolved one for a name).
	Addr netip.Addr
	// Reason says what kind of address it is ("a loopback address").
	Reason string
}

// Error names the destination (and the name it came from) and the reason.
func (e *RefusedError) Error() string {
	what := e.Addr.String()
	if e.Host != "" && e.Host != what {
		what = e.Host + " (" + what + ")"
	}
	return ErrRefused.Error() + ": " + what + " is " + e.Reason
}

// Unwrap returns ErrRefused.
func (e *RefusedError) Unwrap() error { return ErrRefused }

var (
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")
	v4Compatible = netip.MustParsePrefix("::/96")
	broadcast    = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	sharedNAT    = netip.MustParsePrefix("100.64.0.0/10")
	siteLocal    = netip.MustParsePrefix("fec0::/10")
	nat64        = []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96"), netip.MustParsePrefix("64:ff9b:1::/48")}
	sixToFour    = netip.MustParsePrefix("2002::/16")
)

// localReason says why ip counts as local, or "".
func localReason(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsUnspecified(), thisNetwork.Contains(ip):
		return "an unspecified address"
	case v4Compatible.Contains(ip):
		return "an IPv4-compatible IPv6 address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsMulticast():
		// whatever its scope, a group this host's own sockets joined gets
		// the datagram back
		return "a multicast address"
	case ip == broadcast:
		return "the broadcast address"
	}
	return ""
}

// privateReason says why ip counts as private, or "".
func privateReason(ip netip.Addr) string {
	switch {
	case ip.IsPrivate(), siteLocal.Contains(ip):
		return "a private address"
	case sharedNAT.Contains(ip):
		return "a shared (carrier-grade NAT) address"
	}
	return ""
}

// embeddedIPv4 returns the IPv4 address inside a NAT64 or 6to4 address,
// through which an IPv6 destination can reach an IPv4 one.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	for _, p := range nat64 {
		if p.Contains(ip) {
			return netip.AddrFrom4([4]byte(b[12:16])), true
		}
	}
	if sixToFour.Contains(ip) {
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// reason says why the policy refuses ip, or "" if it does not. own lists
// the server's interface addresses (refused with DenyLocal).
func (p Policy) reason(ip netip.Addr, own []netip.Addr) string {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return "not an IP address"
	}
	if p.DenyLocal {
		if r := localReason(ip); r != "" {
			return r
		}
		for _, o := range own {
			if o == ip {
				return "an address of this server (or a broadcast address of its networks)"
			}
		}
	}
	if p.DenyPrivate {
		if r := privateReason(ip); r != "" {
			return r
		}
	}
	if v4, ok := embeddedIPv4(ip); ok {
		if r := p.reason(v4, own); r != "" {
			return "an IPv6 address embedding " + v4.String() + ", " + r
		}
	}
	return ""
}

// Check returns a *RefusedError if the policy forbids ip, nil otherwise. It
// does not consider the server's interface addresses; Dialer.Check does.
func (p Policy) Check(ip netip.Addr) error {
	if r := p.reason(ip, nil); r != "" {
		return &RefusedError{Addr: ip, Reason: r}
	}
	return nil
}

// parseHost turns a destination host into an address when it is one in any
// spelling a resolver might accept: an IP literal (IPv6 with or without
// brackets or a zone; IPv4-mapped forms are unmapped by the checks) or a
// legacy inet_aton IPv4 form. A trailing dot is ignored.
func parseHost(host string) (netip.Addr, bool) {
	h := strings.TrimSuffix(host, ".")
	if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip, true
	}
	return parseInetAton(h)
}

// parseInetAton parses the IPv4 forms of the C library's inet_aton, which
// some resolvers (getaddrinfo) accept: one to four parts separated by dots,
// each decimal, octal (leading 0) or hexadecimal (0x); the last part fills
// the bytes that remain, so "127.1" is 127.0.0.1 and "2130706433" is too.
func parseInetAton(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var vals [4]uint64
	for i, p := range parts {
		v, ok := parseInetAtonPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	last := len(parts) - 1
	var n uint64
	for i := 0; i < last; i++ {
		if vals[i] > 0xff {
			return netip.Addr{}, false
		}
		n |= vals[i] << (24 - 8*i)
	}
	if vals[last] >= 1<<(8*(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

func parseInetAtonPart(p string) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" is 0 to inet_aton
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	case p == "":
		return 0, false
	}
	var v uint64
	for i := 0; i < len(p); i++ {
		var d uint64
		switch c := p[i]; {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}

// isLocalhostName reports whether name is "localhost" or below it, which
// RFC 6761 reserves for loopback whatever DNS says.
func isLocalhostName(name string) bool {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	return n == "localhost" || strings.HasSuffix(n, ".localhost")
}

// validName rejects names with bytes that never occur in a host name
// (spaces, control characters, DEL, and the path and query separators that
// some resolvers or proxies would cut at).
func validName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c <= ' ', c == 0x7f, c == '/', c == '\\', c == '?', c == '#', c == '@':
			return false
		}
	}
	return true
}
