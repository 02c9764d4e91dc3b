package anytls

import (
	"crypto/sha256"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestClientConfigValidate(t *testing.T) {
	ok := ClientConfig{Server: "example.com:8443", Password: "pw"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a minimal config: %v", err)
	}
	for _, s := range []string{"[::1]:443", "127.0.0.1:1", "example.com:https"} {
		c := ok
		c.Server = s
		if err := c.Validate(); err != nil {
			t.Errorf("server %q: %v", s, err)
		}
	}
	for _, tt := range []struct {
		name string
		edit func(*ClientConfig)
		want string
	}{
		{"no server", func(c *ClientConfig) { c.Server = "" }, "server address is empty"},
		{"no port", func(c *ClientConfig) { c.Server = "example.com" }, "missing port"},
		{"port 0", func(c *ClientConfig) { c.Server = "example.com:0" }, "not a port number"},
		{"port too big", func(c *ClientConfig) { c.Server = "example.com:65536" }, "not a port number"},
		{"URI as address", func(c *ClientConfig) { c.Server = "ANYTLS://pw@example.com" }, "not a port number"},
		{"no password", func(c *ClientConfig) { c.Password = "" }, "password is empty"},
		{"short pin", func(c *ClientConfig) { c.PinSHA256 = make([]byte, 31) }, "31 bytes"},
		{"bad scheme", func(c *ClientConfig) { c.PaddingScheme = []byte("stop=x") }, "stop"},
		{"long name", func(c *ClientConfig) { c.ClientName = strings.Repeat("n", 1025) }, "client name"},
		{"negative idle timeout", func(c *ClientConfig) { c.IdleTimeout = -time.Second }, "idle timeout -1s is negative"},
		{"negative buffer", func(c *ClientConfig) { c.StreamBuffer = -1 }, "buffer sizes"},
	} {
		c := ok
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if _, err := NewClient(c); err == nil {
			t.Errorf("%s: NewClient accepted the config", tt.name)
		}
	}
	// every problem is reported at once
	err := (&ClientConfig{IdleTimeout: -1}).Validate()
	for _, want := range []string{"server address is empty", "password is empty", "idle timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() of an empty config = %v, want it to mention %q", err, want)
		}
	}
}

func TestServerConfigValidate(t *testing.T) {
	ok := ServerConfig{Users: []User{{Name: "a", Password: "pa"}, {Name: "b", Password: "pb"}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a minimal config: %v", err)
	}
	c := ok
	c.Fallback = "127.0.0.1:http"
	if err := c.Validate(); err != nil {
		t.Errorf("fallback by service name: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*ServerConfig)
		want string
	}{
		{"no users", func(c *ServerConfig) { c.Users = nil }, "no users"},
		{"empty password", func(c *ServerConfig) { c.Users = []User{{Name: "a"}} }, `user 1 ("a") has an empty password`},
		{"shared password", func(c *ServerConfig) { c.Users = []User{{"a", "p"}, {"b", "p"}} }, `"a" and "b" share a password`},
		{"bad scheme", func(c *ServerConfig) { c.PaddingScheme = []byte("stop=x") }, "stop"},
		{"fallback without port", func(c *ServerConfig) { c.Fallback = "127.0.0.1" }, "fallback"},
		{"fallback port 0", func(c *ServerConfig) { c.Fallback = "127.0.0.1:0" }, "not a port number"},
		{"negative timeout", func(c *ServerConfig) { c.ConnectTimeout = -time.Second }, "connect timeout -1s is negative"},
		{"unknown policy", func(c *ServerConfig) { c.LocalDestinations = LocalDeny + 1 }, "local destination policy"},
		{"negative limit", func(c *ServerConfig) { c.MaxSessions = -1 }, "limits"},
	} {
		c := ok
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: NewServer accepted the config", tt.name)
		}
	}
}

// SetUsers refuses what NewServer refuses, and keeps the accounts it had.
func TestSetUsersChecks(t *testing.T) {
	s, err := NewServer(ServerConfig{Users: []User{{Name: "a", Password: "pa"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hash := func(pw string) []byte { h := sha256.Sum256([]byte(pw)); return h[:] }
	for _, users := range [][]User{nil, {{Name: "b"}}, {{"b", "p"}, {"c", "p"}}} {
		if err := s.SetUsers(users); err == nil {
			t.Errorf("SetUsers(%v) accepted", users)
		}
	}
	if _, ok := s.authenticate(hash("")); ok {
		t.Error("the empty password authenticates")
	}
	if name, ok := s.authenticate(hash("pa")); !ok || name != "a" {
		t.Errorf("the account kept is %q, %v; want a", name, ok)
	}
	if err := s.SetUsers([]User{{Name: "b", Password: "pb"}}); err != nil {
		t.Fatal(err)
	}
	if name, ok := s.authenticate(hash("pb")); !ok || name != "b" {
		t.Errorf("after a good SetUsers: %q, %v", name, ok)
	}
	if _, ok := s.authenticate(hash("pa")); ok {
		t.Error("the replaced account still authenticates")
	}
}

// Serve after Close returns ErrServerClosed and closes the listener, as it
// does when it returns for any other reason.
func TestServeAfterCloseClosesListener(t *testing.T) {
	s, err := NewServer(ServerConfig{Users: []User{{Name: "a", Password: "pa"}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Serve(ln); err != ErrServerClosed {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on the listener = %v, want it closed", err)
	}
}
