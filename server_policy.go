package anytls

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/anytls-suite/anytls/internal/outbound"
)

// ErrDestinationRefused is wrapped by the server's error for a stream
// destination its policy refuses (ServerConfig.LocalDestinations,
// DenyPrivateDestinations). The client receives the error's text in SYNACK,
// as a *RemoteError.
var ErrDestinationRefused = outbound.ErrRefused

// LocalDestinations says whether streams may reach addresses that lead back
// into the server: loopback, unspecified, link-local, IPv4-compatible IPv6,
// multicast (any group: the server's own sockets may have joined it),
// broadcast, and the addresses of the server's own interfaces and their
// networks' broadcast addresses. The check runs after the server has resolved a name itself,
// for TCP and UDP destinations alike, so no spelling gets through
// ("localhost", "0.0.0.0", "::", "::ffff:127.0.0.1", "2130706433",
// "0x7f.1", names that resolve there).
type LocalDestinations int

const (
	// LocalAuto (the default) refuses local destinations on a listener
	// whose address is not a loopback address (a server on the internet),
	// and allows them on a loopback listener (local demos and tests).
	LocalAuto LocalDestinations = iota
	// LocalAllow allows local destinations on every listener.
	LocalAllow
	// LocalDeny refuses local destinations on every listener.
	LocalDeny
)

// String returns "auto", "allow" or "deny".
func (l LocalDestinations) String() string {
	switch l {
	case LocalAuto:
		return "auto"
	case LocalAllow:
		return "allow"
	case LocalDeny:
		return "deny"
	}
	return fmt.Sprintf("LocalDestinations(%d)", int(l))
}

// MarshalText encodes l as its String.
func (l LocalDestinations) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText accepts "auto" (or empty), "allow" or "deny".
func (l *LocalDestinations) UnmarshalText(b []byte) error {
	switch strings.ToLower(strings.TrimSpace(string(b))) {
	case "", "auto":
		*l = LocalAuto
	case "allow":
		*l = LocalAllow
	case "deny":
		*l = LocalDeny
	default:
		return fmt.Errorf("local destinations %q: want auto, allow or deny", b)
	}
	return nil
}

// denyLocal resolves the local-destination policy for a listener or
// connection whose local address is addr.
func (l LocalDestinations) denyLocal(addr net.Addr) bool {
	switch l {
	case LocalAllow:
		return false
	case LocalDeny:
		return true
	}
	return !isLoopback(addr)
}

func isLoopback(addr net.Addr) bool {
	if addr == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// newDialers builds the server's two outbound dialers: one that allows
// local destinations and one that refuses them; both refuse private ones
// if so configured.
func newDialers(cfg *ServerConfig) [2]*outbound.Dialer {
	var ds [2]*outbound.Dialer
	for i := range ds {
		ds[i] = &outbound.Dialer{
			Policy: outbound.Policy{DenyLocal: i == 1, DenyPrivate: cfg.DenyPrivateDestinations},
			Dial:   cfg.Dial,
			Lookup: cfg.LookupNetIP,
		}
	}
	return ds
}

// outboundFor returns the dialer for streams of a connection accepted on a
// listener with local address addr.
func (s *Server) outboundFor(addr net.Addr) *outbound.Dialer {
	if s.cfg.LocalDestinations.denyLocal(addr) {
		return s.out[1]
	}
	return s.out[0]
}
