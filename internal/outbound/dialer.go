package outbound

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ownAddrsTTL is how long the list of the server's interface addresses is
// reused before it is read again.
const ownAddrsTTL = time.Minute

// Dialer opens connections to destinations that its Policy allows. Its
// fields are read-only once it is in use; the zero Dialer allows everything
// and uses the system's resolver and net.Dialer.
type Dialer struct {
	// Policy says which addresses are refused.
	Policy Policy
	// Dial connects to an address that passed the policy, always given as
	// "ip:port"; nil uses a net.Dialer with 30s keep-alive.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Lookup resolves names; nil uses net.DefaultResolver.LookupNetIP.
	Lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// InterfaceAddrs lists the server's own addresses, refused with
	// DenyLocal; nil reads the interfaces (net.InterfaceAddrs), at most once
	// a minute, and adds the broadcast address of each IPv4 network they
	// are on (a datagram sent there reaches this host's own sockets).
	InterfaceAddrs func() ([]netip.Addr, error)

	ownMu sync.Mutex // guards the fields below
	own   []netip.Addr
	ownAt time.Time
}

// ownAddrs returns the server's interface addresses, cached.
func (d *Dialer) ownAddrs() []netip.Addr {
	if !d.Policy.DenyLocal {
		return nil
	}
	d.ownMu.Lock()
	defer d.ownMu.Unlock()
	if d.own != nil && time.Since(d.ownAt) < ownAddrsTTL {
		return d.own
	}
	list := d.InterfaceAddrs
	if list == nil {
		list = interfaceAddrs
	}
	own, err := list()
	if err != nil && d.own != nil {
		return d.own // keep the last good list
	}
	if own == nil {
		own = []netip.Addr{}
	}
	d.own, d.ownAt = own, time.Now()
	return d.own
}

func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	prefixes := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			prefixes = append(prefixes, p)
		}
	}
	return ownAddrsOf(prefixes), nil
}

// ownAddrsOf lists the addresses of the interface prefixes given, and the
// broadcast address of each IPv4 network of more than two addresses.
func ownAddrsOf(prefixes []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, 2*len(prefixes))
	for _, p := range prefixes {
		ip := p.Addr().Unmap()
		out = append(out, ip)
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
		}
		if !ip.Is4() || bits < 0 || bits > 30 {
			continue
		}
		b := ip.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])|^uint32(0)>>bits)
		out = append(out, netip.AddrFrom4(b))
	}
	return out
}

// Check returns a *RefusedError if the policy forbids ip, counting the
// server's interface addresses as local.
func (d *Dialer) Check(ip netip.Addr) error {
	if r := d.Policy.reason(ip, d.ownAddrs()); r != "" {
		return &RefusedError{Addr: ip, Reason: r}
	}
	return nil
}

// LookupNetIP resolves host, an IP literal in any spelling or a name, and
// returns the addresses the policy allows, in the resolver's order. When the
// policy refuses every address, the error is a *RefusedError for the first
// one. network is "ip", "ip4" or "ip6". Its signature matches
// net.Resolver.LookupNetIP, so that it can stand in for a resolver.
func (d *Dialer) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, ok := parseHost(host); ok {
		ip = ip.Unmap()
		if err := d.Check(ip); err != nil {
			return nil, withHost(err, host)
		}
		if !fits(network, ip) {
			return nil, &net.AddrError{Err: "address does not fit " + network, Addr: host}
		}
		return []netip.Addr{ip}, nil
	}
	if !validName(host) {
		return nil, fmt.Errorf("%w %q", ErrBadName, host)
	}
	if d.Policy.DenyLocal && isLocalhostName(host) {
		return nil, &RefusedError{Host: host, Addr: netip.IPv6Loopback(), Reason: "a loopback address"}
	}
	lookup := d.Lookup
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ips, err := lookup(ctx, network, host)
	if err != nil {
		return nil, err
	}
	allowed := ips[:0:0]
	var first error
	for _, ip := range ips {
		if err := d.Check(ip); err != nil {
			if first == nil {
				first = withHost(err, host)
			}
			continue
		}
		allowed = append(allowed, ip.Unmap())
	}
	if len(allowed) == 0 {
		if first == nil {
			first = &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return nil, first
	}
	return allowed, nil
}

func fits(network string, ip netip.Addr) bool {
	switch network {
	case "ip4":
		return ip.Is4()
	case "ip6":
		return ip.Is6()
	}
	return true
}

func withHost(err error, host string) error {
	var re *RefusedError
	if errors.As(err, &re) && re.Host == "" {
		re.Host = host
	}
	return err
}

// DialContext connects to address ("host:port") over network ("tcp",
// "tcp4", "tcp6", or the "udp" forms): it resolves the host, drops the
// addresses the policy refuses and tries the others in turn, sharing ctx's
// time among them. An address refused by the policy returns a *RefusedError.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	ipNet := "ip"
	switch {
	case strings.HasSuffix(network, "4"):
		ipNet = "ip4"
	case strings.HasSuffix(network, "6"):
		ipNet = "ip6"
	}
	ips, err := d.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	dial := d.Dial
	if dial == nil {
		nd := &net.Dialer{KeepAlive: 30 * time.Second}
		dial = nd.DialContext
	}
	var firstErr error
	for i, ip := range ips {
		actx, cancel := partialContext(ctx, len(ips)-i)
		conn, err := dial(actx, network, net.JoinHostPort(ip.String(), port))
		cancel()
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// partialContext gives one of the remaining attempts its share of ctx's
// time, as net.Dialer does, but at least 2 seconds unless ctx ends first.
func partialContext(ctx context.Context, remaining int) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok || remaining <= 1 {
		return context.WithCancel(ctx)
	}
	share := time.Until(deadline) / time.Duration(remaining)
	share = max(share, 2*time.Second)
	return context.WithTimeout(ctx, share)
}
