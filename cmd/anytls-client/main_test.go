package main

import (
	"bytes"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/tlsutil"
)

func mustFlags(t *testing.T, args ...string) options {
	t.Helper()
	o, err := parseFlags(args)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	return o
}

func mustConfig(t *testing.T, args ...string) (anytls.ClientConfig, bool) {
	t.Helper()
	cfg, insecure, err := clientConfig(mustFlags(t, args...))
	if err != nil {
		t.Fatalf("clientConfig(%q): %v", args, err)
	}
	return cfg, insecure
}

// caFile writes a PEM certificate into a temporary file and returns its path.
func caFile(t *testing.T) string {
	t.Helper()
	cert, err := tlsutil.SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServerForms(t *testing.T) {
	for _, tt := range []struct{ s, want string }{
		{"example.com", "example.com:443"},
		{"example.com:8443", "example.com:8443"},
		{"192.0.2.1", "192.0.2.1:443"},
		{"::1", "[::1]:443"},
		{"[::1]:8443", "[::1]:8443"},
		{"anytls://pw@example.com:9443/?insecure=1", "example.com:9443"},
		{"ANYTLS://pw@example.com", "example.com:443"},
	} {
		cfg, _ := mustConfig(t, "-s", tt.s, "-p", "pw")
		if cfg.Server != tt.want {
			t.Errorf("-s %s: server %q, want %q", tt.s, cfg.Server, tt.want)
		}
	}
}

// Flags given by name win over the URI's fields.
func TestFlagsOverURI(t *testing.T) {
	pin := strings.Repeat("ab", 32)
	uri := "anytls://uri-pw@example.com:9443/?sni=uri.example&" + anytls.URIPinParam + "=" + strings.Repeat("cd", 32)
	cfg, insecure := mustConfig(t, "-s", uri)
	if cfg.Password != "uri-pw" || cfg.ServerName != "uri.example" || cfg.PinSHA256[0] != 0xcd || insecure {
		t.Fatalf("from the URI: %+v, insecure %v", cfg, insecure)
	}
	cfg, insecure = mustConfig(t, "-s", uri, "-p", "flag-pw", "-sni", "flag.example", "-pin", pin)
	if cfg.Password != "flag-pw" || cfg.ServerName != "flag.example" || cfg.PinSHA256[0] != 0xab || insecure {
		t.Fatalf("with flags: %+v, insecure %v", cfg, insecure)
	}
}

// The certificate is verified by a pin or a CA file; without either it is
// not, and run warns about it (insecure).
func TestVerification(t *testing.T) {
	ca := caFile(t)
	pin := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name     string
		args     []string
		insecure bool // reported
		skip     bool // InsecureSkipVerify
		roots    bool
	}{
		{"nothing", nil, true, true, false},
		{"-insecure", []string{"-insecure"}, true, true, false},
		{"-pin", []string{"-pin", pin}, false, false, false},
		{"-ca", []string{"-ca", ca}, false, false, true},
		{"-ca and -insecure", []string{"-ca", ca, "-insecure"}, true, true, true},
		{"URI insecure=1", []string{"-s", "anytls://pw@h/?insecure=1"}, true, true, false},
		{"URI insecure=1 and -ca", []string{"-s", "anytls://pw@h/?insecure=1", "-ca", ca}, false, false, true},
		{"URI insecure=1 and -pin", []string{"-s", "anytls://pw@h/?insecure=1", "-pin", pin}, false, true, false},
	} {
		cfg, insecure := mustConfig(t, append([]string{"-p", "pw"}, tt.args...)...)
		if insecure != tt.insecure || cfg.InsecureSkipVerify != tt.skip || (cfg.RootCAs != nil) != tt.roots {
			t.Errorf("%s: reported insecure %v, InsecureSkipVerify %v, RootCAs %v; want %v, %v, %v",
				tt.name, insecure, cfg.InsecureSkipVerify, cfg.RootCAs != nil, tt.insecure, tt.skip, tt.roots)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "notpem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-s", "h:1"}, "password"},
		{[]string{"-s", "anytls://pw@]"}, "not a host name"},
		{[]string{"-p", "pw", "-pin", "abcd"}, "pin"},
		{[]string{"-p", "pw", "-ca", filepath.Join(t.TempDir(), "missing.pem")}, "CA file"},
		{[]string{"-p", "pw", "-ca", notPEM}, "no PEM certificate"},
	} {
		_, _, err := clientConfig(mustFlags(t, tt.args...))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one about %s", tt.args, err, tt.want)
		}
	}
	if _, err := parseFlags([]string{"-p", "pw", "extra"}); err == nil {
		t.Error("a stray argument was accepted")
	}
}

func TestPoolFlags(t *testing.T) {
	cfg, _ := mustConfig(t, "-p", "pw")
	if cfg.MinIdleSessions != anytls.DefaultMinIdleSessions || cfg.DisableReuse {
		t.Errorf("defaults: MinIdleSessions %d, DisableReuse %v", cfg.MinIdleSessions, cfg.DisableReuse)
	}
	// -m 0 keeps no idle session: the library's zero means its default
	cfg, _ = mustConfig(t, "-p", "pw", "-m", "0", "-dr", "-idle-timeout", "1m", "-idle-check", "5s")
	if cfg.MinIdleSessions != -1 || !cfg.DisableReuse || cfg.IdleTimeout.Seconds() != 60 || cfg.IdleCheckInterval.Seconds() != 5 {
		t.Errorf("-m 0 -dr: %+v", cfg)
	}
}

// The README's client section lists every flag.
func TestREADMEListsFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := bytes.Cut(readme, []byte("## Running a client"))
	section, _, _ = bytes.Cut(section, []byte("\n## "))
	var o options
	var missing []string
	flagSet(&o).VisitAll(func(f *flag.Flag) {
		if !bytes.Contains(section, []byte("`-"+f.Name)) {
			missing = append(missing, "-"+f.Name)
		}
	})
	if len(missing) > 0 {
		t.Errorf("README's client section does not list %v", missing)
	}
}
