// Command anytls-server runs an AnyTLS server.
//
//	anytls-server -l 0.0.0.0:8443 -p PASSWORD [-cert cert.pem -key key.pem]
//	anytls-server -config server.json
//
// Without -cert/-key it generates a self-signed certificate in memory and
// prints its SHA-256 fingerprint and an anytls:// URI for clients.
//
// Signals: SIGHUP reloads the users (and the padding scheme) from the
// configuration file and the certificate files, keeping live sessions;
// SIGTERM or SIGINT stop accepting, let live streams finish for up to the
// drain timeout, then close; a second SIGTERM or SIGINT closes at once.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/cli"
	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/tlsutil"
)

const prog = "anytls-server"

type options struct {
	configFile                   string
	listen, password, schemeFile string
	certFile, keyFile, sni       string
	fallback, publicHost         string
	logLevel                     string
	authTimeout, drainTimeout    time.Duration
	maxSessions                  int
	localDestinations            anytls.LocalDestinations
	denyPrivate                  bool
	version                      bool

	explicit map[string]bool // flags given on the command line
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.StringVar(&o.configFile, "config", "", "JSON configuration file (see README); flags given as well win over it")
	fs.StringVar(&o.listen, "l", "0.0.0.0:8443", "listen address (host:port)")
	fs.StringVar(&o.password, "p", "", "password clients must present (the user \"default\"); required without users in -config")
	fs.StringVar(&o.schemeFile, "padding-scheme", "", "file with the padding scheme to push to clients (default: the standard scheme)")
	fs.StringVar(&o.certFile, "cert", "", "TLS certificate file (PEM); with -key. Default: a self-signed certificate made at start")
	fs.StringVar(&o.keyFile, "key", "", "TLS private key file (PEM); with -cert")
	fs.StringVar(&o.sni, "sni", "", "server name for the self-signed certificate and the printed URI")
	fs.StringVar(&o.fallback, "fallback", "", "host:port of a plain-HTTP web server that receives connections failing authentication")
	fs.StringVar(&o.publicHost, "public-host", "", "host name or IP clients use to reach this server, for the printed URI")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.authTimeout, "auth-timeout", anytls.DefaultAuthTimeout, "deadline from accept for the TLS handshake and the authentication")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", anytls.DefaultDrainTimeout, "on SIGTERM/SIGINT, how long live streams may finish")
	fs.IntVar(&o.maxSessions, "max-sessions", anytls.DefaultMaxSessions, "authenticated sessions at once")
	fs.TextVar(&o.localDestinations, "local-destinations", anytls.LocalAuto,
		"may streams reach this host's loopback, link-local and own addresses: auto (refused unless listening on loopback), allow or deny")
	fs.BoolVar(&o.denyPrivate, "deny-private", false, "refuse private destinations (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	o.explicit = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.explicit[f.Name] = true })
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	cli.Start(prog, anytls.Version, err, o.version)
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	if err := run(o, env{stderr: os.Stderr, signals: signals}); err != nil {
		cli.Fatal(prog, err)
	}
}

// env is what run takes from the process; tests supply their own.
type env struct {
	stderr  io.Writer
	signals <-chan os.Signal
	// listening, if set, is told the address once the server accepts.
	listening func(net.Addr)
}

// server is the running program: the library's server plus what SIGHUP
// reloads.
type server struct {
	o     options
	file  *fileConfig // nil without -config
	log   *slog.Logger
	srv   *anytls.Server
	certs *tlsutil.CertReloader // nil with a self-signed certificate
}

func run(o options, e env) error {
	var file *fileConfig
	if o.configFile != "" {
		fc, err := loadFile(o.configFile)
		if err != nil {
			return err
		}
		fc.apply(&o, o.explicit)
		file = fc
	}
	// zero means the default, as in the file and the library
	if o.authTimeout == 0 {
		o.authTimeout = anytls.DefaultAuthTimeout
	}
	if o.drainTimeout == 0 {
		o.drainTimeout = anytls.DefaultDrainTimeout
	}
	if o.drainTimeout < 0 {
		return fmt.Errorf("-drain-timeout %v is negative", o.drainTimeout)
	}
	level, err := cli.ParseLevel(o.logLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	users, err := usersOf(o, file)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("-l %q: %v", o.listen, err)
	}
	cfg := anytls.ServerConfig{
		Users:                   users,
		Fallback:                o.fallback,
		AuthTimeout:             o.authTimeout,
		MaxSessions:             o.maxSessions,
		LocalDestinations:       o.localDestinations,
		DenyPrivateDestinations: o.denyPrivate,
		Logger:                  log,
	}
	if file != nil {
		file.serverFields(&cfg)
	}
	if o.schemeFile != "" {
		if cfg.PaddingScheme, err = readScheme(o.schemeFile); err != nil {
			return err
		}
	}
	s := &server{o: o, file: file, log: log}
	var leaf []byte
	selfSigned := false
	switch {
	case o.certFile != "" && o.keyFile != "":
		if s.certs, err = tlsutil.NewCertReloader(o.certFile, o.keyFile); err != nil {
			return err
		}
		cfg.TLSConfig = &tls.Config{GetCertificate: s.certs.GetCertificate}
		leaf = s.certs.Certificate().Certificate[0]
	case o.certFile != "" || o.keyFile != "":
		return errors.New("-cert and -key go together")
	default:
		names := []string{"localhost"}
		if o.sni != "" {
			names = []string{o.sni, "localhost"}
		}
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			names = append(names, host)
		}
		cert, err := tlsutil.SelfSigned(names...)
		if err != nil {
			return fmt.Errorf("generating a self-signed certificate: %w", err)
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		leaf = cert.Certificate[0]
		selfSigned = true
	}

	if s.srv, err = anytls.NewServer(cfg); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	fp := tlsutil.Fingerprint(leaf)
	log.Info("anytls server listening", "version", anytls.Version, "addr", ln.Addr().String(),
		"users", userNames(users), "padding_md5", s.srv.PaddingSchemeMD5(), "auth_timeout", o.authTimeout,
		"max_sessions", o.maxSessions, "drain_timeout", o.drainTimeout)
	if selfSigned {
		log.Warn("using a self-signed certificate made at start; it changes at every restart: use -cert and -key to keep one")
	}
	if o.fallback != "" {
		log.Info("fallback enabled", "target", o.fallback)
	}
	fmt.Fprintf(e.stderr, "certificate SHA-256: %s\n", fp)
	if len(users) == 1 {
		pin, _ := tlsutil.ParsePin(fp)
		if _, p, err := net.SplitHostPort(ln.Addr().String()); err == nil {
			port = p // the port actually bound, for "-l host:0"
		}
		uri := anytls.FormatURI(users[0].Password, net.JoinHostPort(uriHost(o, host), port), o.sni, selfSigned, pin)
		fmt.Fprintf(e.stderr, "client URI: %s\n", uri)
	}

	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	if e.listening != nil {
		e.listening(ln.Addr())
	}
	for {
		select {
		case sig := <-e.signals:
			if sig == syscall.SIGHUP {
				s.reload()
				continue
			}
			s.shutdown(sig, e.signals)
			<-errc
			return nil
		case err := <-errc:
			s.srv.Close()
			if errors.Is(err, anytls.ErrServerClosed) {
				return nil
			}
			return err
		}
	}
}

// shutdown drains the server for up to the drain timeout; another signal
// cuts the drain short.
func (s *server) shutdown(sig os.Signal, signals <-chan os.Signal) {
	s.log.Info("shutting down", "signal", sig.String(), "drain_timeout", s.o.drainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.o.drainTimeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case sig := <-signals:
				if sig == syscall.SIGHUP {
					s.log.Info("SIGHUP ignored: the server is draining")
					continue
				}
				s.log.Warn("second signal: closing at once", "signal", sig.String())
				cancel()
				return
			case <-done:
				return
			}
		}
	}()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.log.Warn("streams still open at the end of the drain were closed", "err", err)
	}
}

// reload re-reads the users and the padding scheme from the configuration
// file and the certificate files. What fails to load is reported and the
// settings in use are kept; live sessions are not touched.
func (s *server) reload() {
	s.log.Info("SIGHUP: reloading")
	if s.file != nil {
		fc, err := loadFile(s.o.configFile)
		if err != nil {
			s.log.Error("reload: configuration file", "err", err)
		} else {
			s.reloadUsers(fc)
			s.reloadScheme(fc)
		}
	} else {
		s.reloadScheme(nil) // -padding-scheme, if given
	}
	if s.certs != nil {
		if err := s.certs.Reload(); err != nil {
			s.log.Error("reload: certificate", "err", err)
		} else {
			s.log.Info("reload: certificate loaded", "sha256", tlsutil.Fingerprint(s.certs.Certificate().Certificate[0]))
		}
	}
}

func (s *server) reloadUsers(fc *fileConfig) {
	if s.o.explicit["p"] {
		s.log.Info("reload: users come from -p, not the file; kept")
	} else {
		users, err := usersOf(s.o, fc)
		if err == nil {
			err = s.srv.SetUsers(users)
		}
		if err != nil {
			s.log.Error("reload: users kept", "err", err)
		} else {
			s.log.Info("reload: users loaded", "users", userNames(users))
		}
	}
}

// reloadScheme reads the padding scheme file again: -padding-scheme's, or
// else the configuration file's (fc, nil without one).
func (s *server) reloadScheme(fc *fileConfig) {
	scheme := s.o.schemeFile
	if fc != nil && !s.o.explicit["padding-scheme"] {
		scheme = fc.PaddingScheme
	}
	if scheme == "" {
		if fc != nil && s.o.schemeFile != "" {
			s.log.Info("reload: the file names no padding scheme now; the current one is kept", "padding_md5", s.srv.PaddingSchemeMD5())
		}
		return
	}
	text, err := readScheme(scheme)
	if err == nil {
		err = s.srv.SetPaddingScheme(text)
	}
	if err != nil {
		s.log.Error("reload: padding scheme kept", "err", err)
		return
	}
	s.log.Info("reload: padding scheme loaded", "padding_md5", s.srv.PaddingSchemeMD5())
}

// usersOf returns the accounts: -p as the user "default" if given, else the
// file's users.
func usersOf(o options, file *fileConfig) ([]anytls.User, error) {
	if o.password != "" {
		return []anytls.User{{Name: "default", Password: o.password}}, nil
	}
	if file != nil {
		users, err := file.users()
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return users, nil
		}
	}
	return nil, errors.New("no password: set one with -p, or users in the -config file")
}

func userNames(users []anytls.User) string {
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Name
	}
	return strings.Join(names, ",")
}

func readScheme(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("padding scheme: %w", err)
	}
	text := padding.Normalize(raw)
	if _, err := padding.Parse(text); err != nil {
		return nil, fmt.Errorf("padding scheme file %s: %w", path, err)
	}
	return text, nil
}

func uriHost(o options, host string) string {
	if o.publicHost != "" {
		return o.publicHost
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return "SERVER_IP"
	}
	return host
}
