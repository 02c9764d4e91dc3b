// Command anytls-server runs an AnyTLS server.
//
//	anytls-server -l 0.0.0.0:8443 -p PASSWORD [-cert cert.pem -key key.pem]
//
// Without -cert/-key it generates a self-signed certificate in memory and
// prints its SHA-256 fingerprint and an anytls:// URI for clients.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/cli"
	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/tlsutil"
)

const prog = "anytls-server"

type options struct {
	listen, password, schemeFile string
	certFile, keyFile, sni       string
	fallback, publicHost         string
	logLevel                     string
	version                      bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.StringVar(&o.listen, "l", "0.0.0.0:8443", "listen address (host:port)")
	fs.StringVar(&o.password, "p", "", "password clients must present (required)")
	fs.StringVar(&o.schemeFile, "padding-scheme", "", "file with the padding scheme to push to clients (default: the standard scheme)")
	fs.StringVar(&o.certFile, "cert", "", "TLS certificate file (PEM); with -key. Default: a self-signed certificate made at start")
	fs.StringVar(&o.keyFile, "key", "", "TLS private key file (PEM); with -cert")
	fs.StringVar(&o.sni, "sni", "", "server name for the self-signed certificate and the printed URI")
	fs.StringVar(&o.fallback, "fallback", "", "host:port of a web server that receives connections failing authentication")
	fs.StringVar(&o.publicHost, "public-host", "", "host name or IP clients use to reach this server, for the printed URI")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		cli.Fatal(prog, err)
	}
	if o.version {
		fmt.Println(prog, anytls.Version)
		return
	}
	if err := run(o); err != nil {
		cli.Fatal(prog, err)
	}
}

func run(o options) error {
	level, err := cli.ParseLevel(o.logLevel)
	if err != nil {
		return err
	}
	log := cli.NewLogger(level)
	if o.password == "" {
		return errors.New("no password: set one with -p")
	}
	host, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("-l %q: %v", o.listen, err)
	}
	cfg := anytls.ServerConfig{
		Users:    []anytls.User{{Name: "default", Password: o.password}},
		Fallback: o.fallback,
		Logger:   log,
	}
	if o.schemeFile != "" {
		raw, err := os.ReadFile(o.schemeFile)
		if err != nil {
			return fmt.Errorf("padding scheme: %w", err)
		}
		cfg.PaddingScheme = padding.Normalize(raw)
		if _, err := padding.Parse(cfg.PaddingScheme); err != nil {
			return fmt.Errorf("padding scheme file %s: %w", o.schemeFile, err)
		}
	}

	var cert tls.Certificate
	selfSigned := false
	switch {
	case o.certFile != "" && o.keyFile != "":
		cert, err = tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return fmt.Errorf("loading certificate: %w", err)
		}
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
		cert, err = tlsutil.SelfSigned(names...)
		if err != nil {
			return fmt.Errorf("generating a self-signed certificate: %w", err)
		}
		selfSigned = true
	}
	cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}

	srv, err := anytls.NewServer(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	fp := tlsutil.Fingerprint(cert.Certificate[0])
	pin, _ := tlsutil.ParsePin(fp)
	uriHost := o.publicHost
	if uriHost == "" {
		uriHost = host
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			uriHost = "SERVER_IP"
		}
	}
	uri := anytls.FormatURI(o.password, net.JoinHostPort(uriHost, port), o.sni, selfSigned, pin)
	log.Info("anytls server listening", "version", anytls.Version, "addr", ln.Addr().String(),
		"padding_md5", srv.PaddingSchemeMD5())
	if selfSigned {
		log.Warn("using a self-signed certificate made at start; it changes at every restart: use -cert and -key to keep one")
	}
	if o.fallback != "" {
		log.Info("fallback enabled", "target", o.fallback)
	}
	fmt.Fprintf(os.Stderr, "certificate SHA-256: %s\nclient URI: %s\n", fp, uri)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		srv.Close()
		if err != nil {
			return err
		}
		return nil
	}
}
