// Command anytls-client runs a local SOCKS5 and HTTP proxy that forwards
// through an AnyTLS server.
//
//	anytls-client -l 127.0.0.1:1080 -s 'anytls://PASSWORD@server:8443/?pin-sha256=...'
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/cli"
	"github.com/anytls-suite/anytls/internal/inbound"
	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"github.com/anytls-suite/anytls/internal/wire"
)

const prog = "anytls-client"

type options struct {
	listen, server, password, sni string
	minIdle                       int
	disableReuse                  bool
	idleCheck, idleTimeout        time.Duration
	caFile, pin                   string
	insecure                      bool
	proxyAuth, clientName         string
	waitSYNACK                    bool
	synackTimeout, heartbeat      time.Duration
	quietTimeout, idleHeartbeat   time.Duration
	logLevel                      string
	version                       bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flagSet(&o)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return o, nil
}

// flagSet defines the command's flags, stored into o.
func flagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.StringVar(&o.listen, "l", "127.0.0.1:1080", "local SOCKS5/HTTP proxy listen address")
	fs.StringVar(&o.server, "s", "127.0.0.1:8443", "server: host:port or an anytls:// URI")
	fs.StringVar(&o.password, "p", "", "password (overrides the URI's)")
	fs.StringVar(&o.sni, "sni", "", "TLS server name (SNI); an IP address sends none")
	fs.IntVar(&o.minIdle, "m", anytls.DefaultMinIdleSessions, "idle sessions kept open beyond the idle timeout")
	fs.BoolVar(&o.disableReuse, "dr", false, "disable session reuse: one TLS connection per proxied connection")
	fs.DurationVar(&o.idleCheck, "idle-check", anytls.DefaultIdleCheckInterval, "how often idle sessions are checked")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", anytls.DefaultIdleTimeout, "close sessions idle for longer than this")
	fs.StringVar(&o.caFile, "ca", "", "verify the server certificate against the CA certificates in this PEM file")
	fs.StringVar(&o.pin, "pin", "", "accept only the server certificate with this SHA-256 (hex)")
	fs.BoolVar(&o.insecure, "insecure", false, "accept any server certificate (the default when neither -ca nor -pin is given)")
	fs.StringVar(&o.proxyAuth, "sup", "", "require this user,password from local SOCKS5/HTTP proxy clients")
	fs.StringVar(&o.clientName, "client-name", "", "client name announced to the server (default "+anytls.DefaultClientName+")")
	fs.BoolVar(&o.waitSYNACK, "wait-synack", false, "tell local clients a connection is up only once the server reached the destination (refusals become SOCKS5 errors / HTTP 502); default: answer at once, saving a round trip")
	fs.DurationVar(&o.synackTimeout, "synack-timeout", anytls.DefaultSYNACKTimeout, "fail a connection whose v2 server has not confirmed it in this time, and probe the session")
	fs.DurationVar(&o.heartbeat, "heartbeat-timeout", anytls.DefaultHeartbeatTimeout, "close a session whose heartbeat probe is unanswered for this long")
	fs.DurationVar(&o.quietTimeout, "quiet-timeout", anytls.DefaultQuietTimeout, "probe a session with open connections that received nothing for this long")
	fs.DurationVar(&o.idleHeartbeat, "idle-heartbeat", anytls.DefaultIdleHeartbeat, "probe idle pooled sessions this often (negative: never)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

func main() {
	o, err := parseFlags(os.Args[1:])
	cli.Start(prog, anytls.Version, err, o.version)
	if err := run(o); err != nil {
		cli.Fatal(prog, err)
	}
}

// clientConfig turns the flags into a library configuration. It also reports
// whether certificate verification is off.
func clientConfig(o options) (anytls.ClientConfig, bool, error) {
	var cfg anytls.ClientConfig
	if len(o.server) >= len("anytls://") && strings.EqualFold(o.server[:len("anytls://")], "anytls://") {
		var err error
		if cfg, err = anytls.ParseURI(o.server); err != nil {
			return cfg, false, err
		}
	} else {
		cfg.Server = o.server
		if _, _, err := net.SplitHostPort(o.server); err != nil {
			cfg.Server = net.JoinHostPort(o.server, "443")
		}
	}
	if o.password != "" {
		cfg.Password = o.password
	}
	if o.sni != "" {
		cfg.ServerName = o.sni
	}
	if o.pin != "" {
		pin, err := tlsutil.ParsePin(o.pin)
		if err != nil {
			return cfg, false, err
		}
		cfg.PinSHA256 = pin
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return cfg, false, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, false, fmt.Errorf("CA file %s holds no PEM certificate", o.caFile)
		}
		cfg.RootCAs = pool
		// asked for by name: it wins over a URI's insecure=1 (not over
		// -insecure, nor over a pin, which is checked instead of it)
		cfg.InsecureSkipVerify = false
	}
	if o.insecure {
		cfg.InsecureSkipVerify = true
	}
	insecure := cfg.PinSHA256 == nil && (cfg.InsecureSkipVerify || cfg.RootCAs == nil)
	if cfg.PinSHA256 == nil && cfg.RootCAs == nil {
		// as the reference client does; announced with a warning at start
		cfg.InsecureSkipVerify = true
	}
	cfg.MinIdleSessions = o.minIdle
	if o.minIdle == 0 {
		cfg.MinIdleSessions = -1
	}
	cfg.DisableReuse = o.disableReuse
	cfg.IdleCheckInterval = o.idleCheck
	cfg.IdleTimeout = o.idleTimeout
	cfg.ClientName = o.clientName
	cfg.WaitSYNACK = o.waitSYNACK
	cfg.SYNACKTimeout = o.synackTimeout
	cfg.HeartbeatTimeout = o.heartbeat
	cfg.QuietTimeout = o.quietTimeout
	cfg.IdleHeartbeat = o.idleHeartbeat
	return cfg, insecure, cfg.Validate()
}

// tunnel adapts the client to the local proxy's Dialer and PacketDialer
// (SOCKS5 UDP ASSOCIATE).
type tunnel struct{ c *anytls.Client }

func (t tunnel) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	return t.c.DialContext(ctx, "tcp", dst.String())
}

func (t tunnel) ListenPacket(ctx context.Context) (net.PacketConn, error) {
	return t.c.ListenPacket(ctx)
}

func run(o options) error {
	level, err := cli.ParseLevel(o.logLevel)
	if err != nil {
		return err
	}
	log := cli.NewLogger(level)
	cfg, insecure, err := clientConfig(o)
	if err != nil {
		return err
	}
	cfg.Logger = log
	client, err := anytls.NewClient(cfg)
	if err != nil {
		return err
	}
	defer client.Close()

	var poller sockio.Poller // where idle relays wait
	icfg := inbound.Config{
		Logger: log,
		Poller: &poller,
		StartRelay: func(local, remote net.Conn, done func()) {
			relay.Start(local, remote, relay.Options{Poller: &poller}, func(relay.Stats, error) { done() })
		},
	}
	if o.proxyAuth != "" {
		user, pass, ok := strings.Cut(o.proxyAuth, ",")
		if !ok || user == "" || pass == "" {
			return errors.New("-sup wants user,password (both non-empty)")
		}
		icfg.Username, icfg.Password = user, pass
	}
	proxy, err := inbound.New(icfg, tunnel{client})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	log.Info("anytls client ready", "version", anytls.Version, "socks5+http", ln.Addr().String(), "server", cfg.Server)
	if insecure {
		log.Warn("the server certificate is NOT verified (anyone on the path could pose as the server); pass -pin with the server's certificate SHA-256, or -ca")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- proxy.Serve(ln) }()
	select {
	case <-ctx.Done():
		stop() // a second signal ends the process at once
		log.Info("shutting down")
		proxy.Close()
		<-errc
		return nil
	case err := <-errc:
		proxy.Close()
		return err
	}
}
