package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/wire"
	singanytls "github.com/anytls/sing-anytls"
	"github.com/sagernet/sing/common/logger"
	M "github.com/sagernet/sing/common/metadata"
)

// benchPassword is the one account of every AnyTLS server the harness runs.
const benchPassword = "anytls-bench password"

// tunnel opens connections to a destination through one implementation's
// client. The SOCKS5 front end of a client child and the library path of the
// harness both use it.
type tunnel interface {
	DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error)
	Close() error
}

// newTunnel returns a fresh client of kind ("ours", "sing" or "tls") for
// the server at addr: no session, no TLS session cache.
func newTunnel(kind, addr string) (tunnel, error) {
	switch kind {
	case "ours":
		c, err := anytls.NewClient(anytls.ClientConfig{
			Server:             addr,
			Password:           benchPassword,
			ServerName:         "localhost",
			InsecureSkipVerify: true,
		})
		if err != nil {
			return nil, err
		}
		return oursTunnel{c}, nil
	case "sing":
		c, err := singanytls.NewClient(context.Background(), singanytls.ClientConfig{
			Password: benchPassword,
			DialOut: func(ctx context.Context) (net.Conn, error) {
				return dialTLS(ctx, addr)
			},
			Logger: logger.NOP(),
		})
		if err != nil {
			return nil, err
		}
		return singTunnel{c}, nil
	case "tls":
		return tlsTunnel{addr}, nil
	}
	return nil, fmt.Errorf("unknown tunnel kind %q", kind)
}

// clientTLS is the client side's TLS configuration for the sing-anytls
// client and the TLS relay: Go's defaults, any certificate accepted (ours
// gets the same through ClientConfig.InsecureSkipVerify).
var clientTLS = &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}

func dialTLS(ctx context.Context, addr string) (net.Conn, error) {
	d := tls.Dialer{Config: clientTLS}
	return d.DialContext(ctx, "tcp", addr)
}

type oursTunnel struct{ c *anytls.Client }

func (t oursTunnel) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	return t.c.DialContext(ctx, "tcp", dst.String())
}

func (t oursTunnel) Close() error { return t.c.Close() }

type singTunnel struct{ c *singanytls.Client }

func (t singTunnel) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	return t.c.CreateProxy(ctx, M.ParseSocksaddr(dst.String()))
}

func (t singTunnel) Close() error { return t.c.Close() }

// tlsTunnel is the client of the plain TLS relay: one TLS connection per
// proxied connection, the destination (SOCKS5 address encoding) first.
type tlsTunnel struct{ addr string }

func (t tlsTunnel) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	conn, err := dialTLS(ctx, t.addr)
	if err != nil {
		return nil, err
	}
	hdr, err := wire.AppendAddr(nil, dst, wire.SOCKS)
	if err == nil {
		_, err = conn.Write(hdr)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (tlsTunnel) Close() error { return nil }

// swappable is a tunnel whose client can be replaced by a fresh one (for the
// cold-start measurement) while a SOCKS5 front end keeps using it.
type swappable struct {
	kind, addr string

	mu  sync.Mutex
	cur tunnel
}

func newSwappable(kind, addr string) (*swappable, error) {
	t, err := newTunnel(kind, addr)
	if err != nil {
		return nil, err
	}
	return &swappable{kind: kind, addr: addr, cur: t}, nil
}

func (s *swappable) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	s.mu.Lock()
	t := s.cur
	s.mu.Unlock()
	return t.DialTCP(ctx, dst)
}

// fresh replaces the client with a new one and closes the old one.
func (s *swappable) fresh() error {
	t, err := newTunnel(s.kind, s.addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.cur
	s.cur = t
	s.mu.Unlock()
	return old.Close()
}

func (s *swappable) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Close()
}
