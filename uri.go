package anytls

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/anytls-suite/anytls/internal/tlsutil"
)

// URIPinParam is the URI query parameter carrying a certificate pin (hex
// SHA-256 of the server certificate). "fingerprint" is accepted too.
const URIPinParam = "pin-sha256"

// ParseURI reads an anytls:// URI into the matching fields of a ClientConfig:
//
//	anytls://[password@]host[:port]/?sni=NAME&insecure=1&pin-sha256=HEX
//
// The password is the percent-encoded user part; the port defaults to 443;
// an sni that is an IP address means no SNI is sent.
func ParseURI(s string) (ClientConfig, error) {
	var cfg ClientConfig
	u, err := url.Parse(s)
	if err != nil {
		return cfg, fmt.Errorf("anytls: bad URI: %w", err)
	}
	if u.Scheme != "anytls" {
		return cfg, fmt.Errorf("anytls: URI scheme is %q, want anytls", u.Scheme)
	}
	if u.User != nil {
		cfg.Password = u.User.Username()
		if p, ok := u.User.Password(); ok {
			// a password containing ':' arrives split in two
			cfg.Password += ":" + p
		}
	}
	host := u.Hostname()
	if host == "" {
		return cfg, fmt.Errorf("anytls: URI %q has no host", s)
	}
	if !validHost(host) {
		return cfg, fmt.Errorf("anytls: URI host %q is not a host name or IP address", host)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return cfg, fmt.Errorf("anytls: URI port %q is not a port number", port)
	}
	cfg.Server = net.JoinHostPort(host, port)
	q := u.Query()
	cfg.ServerName = q.Get("sni")
	switch strings.ToLower(q.Get("insecure")) {
	case "", "0", "false":
	case "1", "true":
		cfg.InsecureSkipVerify = true
	default:
		return cfg, fmt.Errorf("anytls: URI insecure=%q is not 0 or 1", q.Get("insecure"))
	}
	pin := q.Get(URIPinParam)
	if pin == "" {
		pin = q.Get("fingerprint")
	}
	if pin != "" {
		b, err := tlsutil.ParsePin(pin)
		if err != nil {
			return cfg, fmt.Errorf("anytls: URI: %w", err)
		}
		cfg.PinSHA256 = b
	}
	return cfg, nil
}

// validHost accepts an IP address (an IPv6 one with or without a zone that
// names an interface) or a name of letters, digits, '-', '.' and '_' (bytes
// above ASCII are left for the resolver to judge).
func validHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return plainName(ip.Zone(), false)
	}
	return len(host) <= 253 && plainName(host, true)
}

// plainName reports whether s has only letters, digits, '-', '.' and '_'
// (and bytes above ASCII if high is set).
func plainName(s string, high bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c >= 0x80 && high:
		default:
			return false
		}
	}
	return true
}

// FormatURI writes an anytls:// URI for a server. sni and pin may be empty.
func FormatURI(password, server, sni string, insecure bool, pin []byte) string {
	u := url.URL{Scheme: "anytls", Host: server, Path: "/"}
	if password != "" {
		u.User = url.User(password)
	}
	q := url.Values{}
	if sni != "" {
		q.Set("sni", sni)
	}
	if insecure {
		q.Set("insecure", "1")
	}
	if len(pin) > 0 {
		q.Set(URIPinParam, fmt.Sprintf("%x", pin))
	}
	u.RawQuery = q.Encode()
	return u.String()
}
