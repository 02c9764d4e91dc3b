package anytls

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	pin := bytes.Repeat([]byte{0xab}, 32)
	pinHex := strings.Repeat("ab", 32)
	tests := []struct {
		uri      string
		password string
		server   string
		sni      string
		insecure bool
		pin      []byte
	}{
		{uri: "anytls://secret@example.com:8443/?sni=front.example&insecure=1",
			password: "secret", server: "example.com:8443", sni: "front.example", insecure: true},
		// the port defaults to 443; no path before the query; a share
		// link's #name is ignored
		{uri: "anytls://secret@example.com?insecure=0#My%20server", password: "secret", server: "example.com:443"},
		{uri: "ANYTLS://secret@example.com", password: "secret", server: "example.com:443"},
		// percent-encoded user part, a ':' written plainly, '+' kept
		{uri: "anytls://p%40ss%2Fw%3Ard@h:1", password: "p@ss/w:rd", server: "h:1"},
		{uri: "anytls://a:b:c@h:2/", password: "a:b:c", server: "h:2"},
		{uri: "anytls://a+b@h:3/", password: "a+b", server: "h:3"},
		{uri: "anytls://h:4/", server: "h:4"},
		// IPv6 literals keep their brackets in Server only
		{uri: "anytls://x@[::1]:8443/?sni=127.0.0.1", password: "x", server: "[::1]:8443", sni: "127.0.0.1"},
		{uri: "anytls://x@[2001:db8::1]/", password: "x", server: "[2001:db8::1]:443"},
		{uri: "anytls://x@[fe80::1%25eth0]:2/", password: "x", server: "[fe80::1%eth0]:2"},
		{uri: "anytls://x@h:5/?insecure=TRUE", password: "x", server: "h:5", insecure: true},
		{uri: "anytls://x@h:6/?" + URIPinParam + "=" + pinHex, password: "x", server: "h:6", pin: pin},
		{uri: "anytls://x@h:7/?fingerprint=" + strings.ToUpper(pinHex), password: "x", server: "h:7", pin: pin},
	}
	for _, tt := range tests {
		cfg, err := ParseURI(tt.uri)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tt.uri, err)
			continue
		}
		if cfg.Password != tt.password || cfg.Server != tt.server || cfg.ServerName != tt.sni ||
			cfg.InsecureSkipVerify != tt.insecure || !bytes.Equal(cfg.PinSHA256, tt.pin) {
			t.Errorf("ParseURI(%q) = password %q, server %q, sni %q, insecure %v, pin %x; want %q, %q, %q, %v, %x",
				tt.uri, cfg.Password, cfg.Server, cfg.ServerName, cfg.InsecureSkipVerify, cfg.PinSHA256,
				tt.password, tt.server, tt.sni, tt.insecure, tt.pin)
		}
	}
}

func TestParseURIErrors(t *testing.T) {
	tests := []struct{ uri, want string }{
		{"http://x@h:1/", "scheme"},
		{"anytls:///?sni=a", "no host"},
		{"anytls://x@:443/", "no host"},
		{"anytls://x@h:0/", "not a port"},
		{"anytls://x@h:65536/", "not a port"},
		{"anytls://x@h:port/", "bad URI"},
		{"anytls://x@h:1/?insecure=yes", "insecure"},
		{"anytls://x@h:1/?" + URIPinParam + "=abcd", "pin"},
		{"anytls://x@h:1/?" + URIPinParam + "=" + strings.Repeat("zz", 32), "pin"},
		{"anytls://%zz@h:1/", "bad URI"},
		{"::not a uri", "bad URI"},
		{"anytls://]", "not a host name"},
		{"anytls://::%25]:1", "not a host name"},
		{"anytls://x@a!b:1/", "not a host name"},
		{"anytls://x@[::1%5D:1/", "bad URI"},
	}
	for _, tt := range tests {
		_, err := ParseURI(tt.uri)
		if err == nil {
			t.Errorf("ParseURI(%q) succeeded, want an error about %s", tt.uri, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseURI(%q) = %v, want an error about %s", tt.uri, err, tt.want)
		}
	}
}

// FormatURI's output reads back as what it was given, whatever the
// password holds.
func TestFormatURIRoundTrip(t *testing.T) {
	pin := bytes.Repeat([]byte{7}, 32)
	for _, pw := range []string{"plain", "a long random password", "p@ss:w/o?r#d%&=+", "ünï©ødé", ""} {
		for _, server := range []string{"example.com:443", "127.0.0.1:8443", "[::1]:1"} {
			uri := FormatURI(pw, server, "front.example", true, pin)
			cfg, err := ParseURI(uri)
			if err != nil {
				t.Fatalf("ParseURI(FormatURI(%q, %q)) = %q: %v", pw, server, uri, err)
			}
			if cfg.Password != pw || cfg.Server != server || cfg.ServerName != "front.example" ||
				!cfg.InsecureSkipVerify || !bytes.Equal(cfg.PinSHA256, pin) {
				t.Errorf("%q read back as password %q, server %q, sni %q, insecure %v, pin %x",
					uri, cfg.Password, cfg.Server, cfg.ServerName, cfg.InsecureSkipVerify, cfg.PinSHA256)
			}
		}
	}
}

// FuzzParseURI: ParseURI never panics; what it accepts names a server
// with a port in 1-65535 and a pin of 32 bytes or none; and it reads
// FormatURI's rendering of what it returned back the same.
func FuzzParseURI(f *testing.F) {
	f.Add("anytls://secret@example.com:8443/?sni=front.example&insecure=1")
	f.Add("anytls://p%40ss@[::1]/?pin-sha256=" + strings.Repeat("ab", 32))
	f.Add("anytls://a:b@h?fingerprint=" + strings.Repeat("AB", 32) + "#name")
	f.Add("anytls://h:65535")
	f.Add("anytls://x@[fe80::1%25eth0]:1/")
	f.Fuzz(func(t *testing.T, uri string) {
		cfg, err := ParseURI(uri)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(cfg.Server)
		if err != nil || host == "" {
			t.Fatalf("ParseURI(%q): server %q is not host:port: %v", uri, cfg.Server, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("ParseURI(%q): port %q", uri, port)
		}
		if len(cfg.PinSHA256) != 0 && len(cfg.PinSHA256) != 32 {
			t.Fatalf("ParseURI(%q): pin of %d bytes", uri, len(cfg.PinSHA256))
		}
		again := FormatURI(cfg.Password, cfg.Server, cfg.ServerName, cfg.InsecureSkipVerify, cfg.PinSHA256)
		back, err := ParseURI(again)
		if err != nil {
			t.Fatalf("ParseURI(%q) read back %q: %v", uri, again, err)
		}
		if back.Password != cfg.Password || back.Server != cfg.Server || back.ServerName != cfg.ServerName ||
			back.InsecureSkipVerify != cfg.InsecureSkipVerify || !bytes.Equal(back.PinSHA256, cfg.PinSHA256) {
			t.Fatalf("ParseURI(%q) = %+v; its rendering %q reads back as %+v", uri, cfg, again, back)
		}
	})
}
