package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

// fileConfig is the JSON configuration file (-config FILE). Every field is
// optional; a field left out keeps its default, and a flag given on the
// command line wins over the file. Paths are relative to the file's
// directory. Unknown fields are errors, so that a typo does not pass
// silently. README.md lists every field with its default.
type fileConfig struct {
	Listen        string     `json:"listen"`
	Users         []fileUser `json:"users"`
	Password      string     `json:"password"`
	Cert          string     `json:"cert"`
	Key           string     `json:"key"`
	SNI           string     `json:"sni"`
	PublicHost    string     `json:"public_host"`
	Fallback      string     `json:"fallback"`
	PaddingScheme string     `json:"padding_scheme"`
	LogLevel      string     `json:"log_level"`

	AuthTimeout        *duration `json:"auth_timeout"`
	ConnectTimeout     *duration `json:"connect_timeout"`
	DestinationTimeout *duration `json:"destination_timeout"`
	HalfCloseIdle      *duration `json:"half_close_idle"`
	UDPIdleTimeout     *duration `json:"udp_idle_timeout"`
	DrainTimeout       *duration `json:"drain_timeout"`
	SessionIdleTimeout *duration `json:"session_idle_timeout"`
	WriteTimeout       *duration `json:"write_timeout"`

	MaxSessions          int `json:"max_sessions"`
	MaxSessionsPerUser   int `json:"max_sessions_per_user"`
	MaxStreamsPerSession int `json:"max_streams_per_session"`
	StreamBuffer         int `json:"stream_buffer"`
	SessionBuffer        int `json:"session_buffer"`

	LocalDestinations       *anytls.LocalDestinations `json:"local_destinations"`
	DenyPrivateDestinations bool                      `json:"deny_private_destinations"`
}

// fileUser is one account.
type fileUser struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// duration is a time.Duration written as "10s", "2m", "1h30m".
// Negative values switch a mechanism off where the field says so
// (session_idle_timeout, write_timeout) and are errors elsewhere.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"10s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// loadFile reads and checks the configuration file at path.
func loadFile(path string) (*fileConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: more than one JSON value", path)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&fc.Cert, &fc.Key, &fc.PaddingScheme} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if _, err := fc.users(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for name, d := range map[string]*duration{
		"auth_timeout": fc.AuthTimeout, "connect_timeout": fc.ConnectTimeout,
		"destination_timeout": fc.DestinationTimeout, "half_close_idle": fc.HalfCloseIdle,
		"udp_idle_timeout": fc.UDPIdleTimeout, "drain_timeout": fc.DrainTimeout,
	} {
		if d != nil && *d < 0 {
			return nil, fmt.Errorf("%s: %s %v is negative", path, name, time.Duration(*d))
		}
	}
	return &fc, nil
}

// users returns the file's accounts: "users", plus "password" as the user
// "default".
func (fc *fileConfig) users() ([]anytls.User, error) {
	var users []anytls.User
	if fc.Password != "" {
		users = append(users, anytls.User{Name: "default", Password: fc.Password})
	}
	seen := map[string]bool{}
	var errs []error
	for i, u := range fc.Users {
		name := strings.TrimSpace(u.Name)
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("user %d has no name", i+1))
		case seen[name]:
			errs = append(errs, fmt.Errorf("user name %q appears twice", name))
		}
		seen[name] = true
		users = append(users, anytls.User{Name: name, Password: u.Password})
	}
	return users, errors.Join(errs...)
}

// apply copies the file's settings into o, except those the command line
// set (explicit).
func (fc *fileConfig) apply(o *options, explicit map[string]bool) {
	str := func(flag string, dst *string, v string) {
		if !explicit[flag] && v != "" {
			*dst = v
		}
	}
	str("l", &o.listen, fc.Listen)
	str("cert", &o.certFile, fc.Cert)
	str("key", &o.keyFile, fc.Key)
	str("sni", &o.sni, fc.SNI)
	str("public-host", &o.publicHost, fc.PublicHost)
	str("fallback", &o.fallback, fc.Fallback)
	str("padding-scheme", &o.schemeFile, fc.PaddingScheme)
	str("log-level", &o.logLevel, fc.LogLevel)
	dur := func(flag string, dst *time.Duration, v *duration) {
		if !explicit[flag] && v != nil && *v != 0 { // zero: the default
			*dst = time.Duration(*v)
		}
	}
	dur("auth-timeout", &o.authTimeout, fc.AuthTimeout)
	dur("drain-timeout", &o.drainTimeout, fc.DrainTimeout)
	num := func(flag string, dst *int, v int) {
		if !explicit[flag] && v != 0 {
			*dst = v
		}
	}
	num("max-sessions", &o.maxSessions, fc.MaxSessions)
	if !explicit["local-destinations"] && fc.LocalDestinations != nil {
		o.localDestinations = *fc.LocalDestinations
	}
	if !explicit["deny-private"] && fc.DenyPrivateDestinations {
		o.denyPrivate = true
	}
}

// serverFields sets the ServerConfig fields that only the file has.
func (fc *fileConfig) serverFields(cfg *anytls.ServerConfig) {
	if fc.ConnectTimeout != nil {
		cfg.ConnectTimeout = time.Duration(*fc.ConnectTimeout)
	}
	if fc.DestinationTimeout != nil {
		cfg.DestinationTimeout = time.Duration(*fc.DestinationTimeout)
	}
	if fc.HalfCloseIdle != nil {
		cfg.HalfCloseIdle = time.Duration(*fc.HalfCloseIdle)
	}
	if fc.UDPIdleTimeout != nil {
		cfg.UDPIdleTimeout = time.Duration(*fc.UDPIdleTimeout)
	}
	if fc.SessionIdleTimeout != nil {
		cfg.SessionIdleTimeout = time.Duration(*fc.SessionIdleTimeout)
	}
	if fc.WriteTimeout != nil {
		cfg.WriteTimeout = time.Duration(*fc.WriteTimeout)
	}
	cfg.MaxStreamsPerSession = fc.MaxStreamsPerSession
	cfg.MaxSessionsPerUser = fc.MaxSessionsPerUser
	cfg.StreamBuffer = fc.StreamBuffer
	cfg.SessionBuffer = fc.SessionBuffer
}
