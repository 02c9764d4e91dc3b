package outbound

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// fakeResolver answers a few names, as DNS that points names at forbidden
// addresses would.
func fakeResolver(_ context.Context, _, host string) ([]netip.Addr, error) {
	answers := map[string][]string{
		"rebind.test":     {"127.0.0.1"},
		"rebind6.test":    {"::1"},
		"mapped.test":     {"::ffff:127.0.0.1"},
		"metadata.test":   {"169.254.169.254"},
		"zero.test":       {"0.0.0.0"},
		"mixed.test":      {"127.0.0.1", "198.51.100.7", "::1", "2001:db8::7"},
		"private.test":    {"10.1.2.3"},
		"public.test":     {"198.51.100.9"},
		"localhost":       {"127.0.0.1"},
		"self.test":       {"203.0.113.5"},
		"allrefused.test": {"127.0.0.1", "::1"},
	}
	list, ok := answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range list {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

func ownAddrs() ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8::5")}, nil
}

func newDialer(p Policy) *Dialer {
	return &Dialer{Policy: p, Lookup: fakeResolver, InterfaceAddrs: ownAddrs}
}

// Every spelling of a local address is refused after resolution.
func TestDenyLocalSpellings(t *testing.T) {
	d := newDialer(Policy{DenyLocal: true})
	for _, host := range []string{
		"127.0.0.1", "127.1.2.3", "127.0.0.1.", "localhost", "LOCALHOST.", "foo.localhost", "Foo.LocalHost.",
		"0.0.0.0", "0", "0.0", "0x0", "0.1.2.3", "::", "[::]", "::1", "[::1]", "0:0:0:0:0:0:0:1",
		"::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:ffff:7f00:1", "[::ffff:127.0.0.1]", "::ffff:0.0.0.0",
		"::127.0.0.1", "::7f00:1",
		"2130706433", "0x7f000001", "0X7F000001", "0x7f.1", "0x7F.0.0.1", "0177.0.0.1", "0177.1",
		"017700000001", "127.1", "127.0.1", "0x7f.0x0.0x0.0x1", "0177.0x0.00.1",
		"169.254.169.254", "::ffff:169.254.169.254", "2852039166", "fe80::1", "fe80::1%lo", "[fe80::1%25lo]",
		"224.0.0.1", "ff02::1", "ff01::1", "255.255.255.255", "4294967295",
		"239.255.255.250", "224.0.1.1", "233.252.0.1", "ff05::2", "ff0e::1", "::ffff:239.1.2.3",
		"64:ff9b::7f00:1", "64:ff9b::127.0.0.1", "2002:7f00:1::1",
		"rebind.test", "rebind6.test", "mapped.test", "metadata.test", "zero.test", "allrefused.test",
		"203.0.113.5", "self.test", "2001:db8::5",
	} {
		_, err := d.LookupNetIP(context.Background(), "ip", host)
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%q: err = %v, want ErrRefused", host, err)
			continue
		}
		var re *RefusedError
		if !errors.As(err, &re) || re.Reason == "" || !strings.Contains(err.Error(), host) && re.Host != "" {
			t.Errorf("%q: error %v does not name the host and the reason", host, err)
		}
	}
}

func TestDenyPrivateSpellings(t *testing.T) {
	d := newDialer(Policy{DenyPrivate: true})
	for _, host := range []string{
		"10.0.0.1", "012.0.0.1", "167772161", "0xa000001", "10.1", "172.16.0.1", "172.31.255.255",
		"192.168.1.1", "0xc0.0xa8.1.1", "100.64.0.1", "100.127.255.254", "fd00::1", "fc00::1", "fec0::1",
		"::ffff:10.0.0.1", "::ffff:192.168.0.1", "64:ff9b::10.0.0.1", "2002:a00:1::1", "private.test",
	} {
		if _, err := d.LookupNetIP(context.Background(), "ip", host); !errors.Is(err, ErrRefused) {
			t.Errorf("%q: err = %v, want ErrRefused", host, err)
		}
	}
	// local addresses are not private: DenyPrivate alone lets them through
	for _, host := range []string{"127.0.0.1", "::1", "169.254.1.1", "rebind.test"} {
		if _, err := d.LookupNetIP(context.Background(), "ip", host); err != nil {
			t.Errorf("%q with DenyPrivate only: %v", host, err)
		}
	}
}

func TestAllowed(t *testing.T) {
	both := newDialer(Policy{DenyLocal: true, DenyPrivate: true})
	for host, want := range map[string]string{
		"198.51.100.1":        "198.51.100.1",
		"::ffff:198.51.100.1": "198.51.100.1",
		"3325256705":          "198.51.100.1",
		"198.51.100.1.":       "198.51.100.1",
		"2001:db8::1":         "2001:db8::1",
		"[2001:db8::1]":       "2001:db8::1",
		"public.test":         "198.51.100.9",
		"172.32.0.1":          "172.32.0.1",
		"100.128.0.1":         "100.128.0.1",
		"64:ff9b::808:808":    "64:ff9b::808:808",
		"1.2.3":               "1.2.0.3",
	} {
		ips, err := both.LookupNetIP(context.Background(), "ip", host)
		if err != nil || len(ips) != 1 || ips[0].String() != want {
			t.Errorf("%q: %v %v, want %s", host, ips, err, want)
		}
	}
	// a name with both kinds keeps only the allowed ones, in order
	ips, err := both.LookupNetIP(context.Background(), "ip", "mixed.test")
	if err != nil || len(ips) != 2 || ips[0].String() != "198.51.100.7" || ips[1].String() != "2001:db8::7" {
		t.Errorf("mixed.test: %v %v", ips, err)
	}
	// the zero policy refuses nothing and resolves localhost like any name
	all := newDialer(Policy{})
	for _, host := range []string{"127.0.0.1", "localhost", "::1", "169.254.169.254", "rebind.test", "203.0.113.5"} {
		if _, err := all.LookupNetIP(context.Background(), "ip", host); err != nil {
			t.Errorf("%q with the zero policy: %v", host, err)
		}
	}
}

func TestNotAddressesAreNames(t *testing.T) {
	// spellings that are not inet_aton forms go to the resolver as names
	for _, s := range []string{"1.2.3.4.5", "256.1.1.1", "127.16777216", "08.1.1.1", "0x1g", "1..1", ".1", "example.com", "1.2.3.4a"} {
		if ip, ok := parseHost(s); ok {
			t.Errorf("parseHost(%q) = %v, want a name", s, ip)
		}
	}
	d := newDialer(Policy{DenyLocal: true})
	for _, s := range []string{"127.0.0.1 ", " 127.0.0.1", "a b", "evil\x00.test", "x/y", "a@b", "", strings.Repeat("a", 256)} {
		if _, err := d.LookupNetIP(context.Background(), "ip", s); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: err = %v, want ErrBadName", s, err)
		}
	}
}

func TestDialContext(t *testing.T) {
	var dialed []string
	d := newDialer(Policy{DenyLocal: true})
	d.Dial = func(_ context.Context, network, address string) (net.Conn, error) {
		dialed = append(dialed, network+" "+address)
		return nil, errors.New("unreachable in tests")
	}
	ctx := context.Background()
	if _, err := d.DialContext(ctx, "tcp", "0x7f.1:80"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial 0x7f.1: %v", err)
	} else if !strings.Contains(err.Error(), "0x7f.1 (127.0.0.1) is a loopback address") {
		t.Errorf("error text %q does not explain", err)
	}
	if _, err := d.DialContext(ctx, "udp", "[::ffff:127.0.0.1]:53"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial mapped: %v", err)
	}
	if len(dialed) != 0 {
		t.Fatalf("refused destinations were dialed: %v", dialed)
	}
	// the allowed addresses of a name are tried in turn, as IPs
	d.DialContext(ctx, "tcp", "mixed.test:443")
	if len(dialed) != 2 || dialed[0] != "tcp 198.51.100.7:443" || dialed[1] != "tcp [2001:db8::7]:443" {
		t.Fatalf("dialed %v", dialed)
	}
	dialed = nil
	d.DialContext(ctx, "tcp4", "mixed.test:443")
	if _, err := d.DialContext(ctx, "tcp4", "2001:db8::1:443"); err == nil {
		t.Error("tcp4 to an IPv6 literal succeeded")
	}
	if _, err := d.DialContext(ctx, "tcp", "no-port"); err == nil {
		t.Error("an address without a port was accepted")
	}
}

func TestOwnAddressesCached(t *testing.T) {
	calls := 0
	d := &Dialer{Policy: Policy{DenyLocal: true}, InterfaceAddrs: func() ([]netip.Addr, error) {
		calls++
		return ownAddrs()
	}}
	for range 10 {
		if err := d.Check(netip.MustParseAddr("203.0.113.5")); !errors.Is(err, ErrRefused) {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("interface addresses read %d times, want 1", calls)
	}
	// the real interface list includes loopback
	real := &Dialer{Policy: Policy{DenyLocal: true}}
	if len(real.ownAddrs()) == 0 {
		t.Log("no interface addresses readable here")
	}
}

// The interface list adds each IPv4 network's broadcast address: a
// datagram sent there reaches this host's own sockets.
func TestOwnAddrsOfAddsBroadcast(t *testing.T) {
	var prefixes []netip.Prefix
	for _, s := range []string{"192.0.2.7/24", "10.1.2.3/8", "198.51.100.9/30", "203.0.113.4/31",
		"203.0.113.9/32", "127.0.0.1/8", "2001:db8::1/64", "::ffff:192.0.2.200/120"} {
		prefixes = append(prefixes, netip.MustParsePrefix(s))
	}
	var got []string
	for _, a := range ownAddrsOf(prefixes) {
		got = append(got, a.String())
	}
	want := []string{"192.0.2.7", "192.0.2.255", "10.1.2.3", "10.255.255.255", "198.51.100.9", "198.51.100.11",
		"203.0.113.4", "203.0.113.9", "127.0.0.1", "127.255.255.255", "2001:db8::1", "192.0.2.200", "192.0.2.255"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ownAddrsOf = %v\nwant          %v", got, want)
	}
	d := &Dialer{Policy: Policy{DenyLocal: true}, InterfaceAddrs: func() ([]netip.Addr, error) {
		return ownAddrsOf(prefixes), nil
	}}
	if err := d.Check(netip.MustParseAddr("192.0.2.255")); !errors.Is(err, ErrRefused) {
		t.Errorf("the broadcast address of an own network: %v, want ErrRefused", err)
	}
	if err := d.Check(netip.MustParseAddr("192.0.2.254")); err != nil {
		t.Errorf("a neighbour on an own network: %v", err)
	}
}

// Multicast is local only: allowed when local destinations are.
func TestMulticastAllowedWithoutDenyLocal(t *testing.T) {
	for _, ip := range []string{"239.255.255.250", "ff05::2"} {
		if err := (Policy{DenyPrivate: true}).Check(netip.MustParseAddr(ip)); err != nil {
			t.Errorf("%s with DenyPrivate only: %v", ip, err)
		}
	}
}

func TestPolicyString(t *testing.T) {
	for p, want := range map[Policy]string{
		{}:                                   "allow all",
		{DenyLocal: true}:                    "deny local",
		{DenyPrivate: true}:                  "deny private",
		{DenyLocal: true, DenyPrivate: true}: "deny local and private",
	} {
		if p.String() != want {
			t.Errorf("%#v.String() = %q, want %q", p, p.String(), want)
		}
	}
}

func FuzzLookup(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "0x7f.1", "::ffff:7f00:1", "2130706433", "fe80::1%lo", "[::1]", "localhost."} {
		f.Add(s)
	}
	d := newDialer(Policy{DenyLocal: true, DenyPrivate: true})
	f.Fuzz(func(t *testing.T, host string) {
		ips, err := d.LookupNetIP(context.Background(), "ip", host)
		if err != nil {
			return
		}
		for _, ip := range ips {
			u := ip.Unmap()
			if u.IsLoopback() || u.IsUnspecified() || u.IsPrivate() || u.IsLinkLocalUnicast() {
				t.Fatalf("%q resolved to forbidden %v", host, ip)
			}
		}
	})
}
