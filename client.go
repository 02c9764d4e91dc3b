package anytls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/pool"
	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Defaults for ClientConfig's zero values.
const (
	DefaultDialTimeout       = 10 * time.Second
	DefaultIdleCheckInterval = pool.DefaultCheckInterval
	DefaultIdleTimeout       = pool.DefaultIdleTimeout
	DefaultMinIdleSessions   = pool.DefaultMinIdle
	DefaultSYNACKTimeout     = session.DefaultSYNACKTimeout
	DefaultHeartbeatTimeout  = session.DefaultProbeTimeout
	DefaultQuietTimeout      = session.DefaultQuietTimeout
	DefaultIdleHeartbeat     = 30 * time.Second
	DefaultWriteTimeout      = session.DefaultWriteTimeout
)

// ClientConfig configures a Client. Zero values mean the documented defaults.
type ClientConfig struct {
	// Server is the server's "host:port".
	Server string
	// Password authenticates the client.
	Password string

	// ServerName is sent as SNI and checked against the certificate. Empty
	// means the host of Server; an IP address means no SNI is sent.
	ServerName string
	// RootCAs verifies the server's certificate instead of the system pool.
	RootCAs *x509.CertPool
	// PinSHA256, when set, accepts only the server certificate whose DER
	// encoding has this SHA-256 (32 bytes), whatever its issuer or names.
	PinSHA256 []byte
	// InsecureSkipVerify accepts any server certificate. Without it, and
	// without a pin, the certificate is verified against RootCAs (or the
	// system's roots).
	InsecureSkipVerify bool
	// TLSConfig, if set, is cloned and used as the base TLS configuration.
	// With a ClientSessionCache, sessions after the first resume the TLS
	// session of an earlier one (no certificate sent, checked or signed for;
	// the key exchange stays fresh; the pin is still checked): about 5% less
	// time per new session, but about 0.5 KiB more per idle session on
	// each side, so it is off by default.
	TLSConfig *tls.Config

	// ClientName is announced as "client=" in Settings. Empty means
	// DefaultClientName.
	ClientName string
	// PaddingScheme is the scheme text used until the server pushes its own.
	// Empty means the default scheme.
	PaddingScheme []byte

	// IdleCheckInterval is how often idle sessions are examined (default 30s).
	IdleCheckInterval time.Duration
	// IdleTimeout closes sessions idle for longer (default 30s).
	IdleTimeout time.Duration
	// MinIdleSessions keeps the newest idle sessions open beyond IdleTimeout
	// (default 5; negative means none).
	MinIdleSessions int
	// DisableReuse uses one session per stream.
	DisableReuse bool

	// DialTimeout bounds TCP connect, TLS handshake and authentication of a
	// new session (default 10s).
	DialTimeout time.Duration

	// WaitSYNACK makes DialContext return only once a v2 server confirmed
	// that it reached the destination (or the error it reported). Off by
	// default: the connection is returned at once and a failure surfaces on
	// its first Read or Write, which saves a round trip.
	WaitSYNACK bool
	// SYNACKTimeout bounds the wait for a v2 server's SYNACK: the stream
	// fails with a timeout and the session is probed (default 5s; negative:
	// no deadline).
	SYNACKTimeout time.Duration
	// HeartbeatTimeout is how long a probe (HeartRequest) may go unanswered
	// before the session is declared dead and closed (default 5s; negative:
	// no probes at all).
	HeartbeatTimeout time.Duration
	// QuietTimeout probes a session with open streams that has received
	// nothing for this long (default 10s; negative: off).
	QuietTimeout time.Duration
	// IdleHeartbeat probes idle pooled sessions this often so that a session
	// taken from the pool is known to be alive (default 30s; negative: off).
	// v1 servers, which cannot answer, are never probed.
	IdleHeartbeat time.Duration
	// WriteTimeout closes a session whose single write to the server stalls
	// this long (default 2m; negative: off).
	WriteTimeout time.Duration
	// Dial opens the TCP connection to the server; nil uses net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// StreamBuffer and SessionBuffer bound buffered received data (defaults
	// in the session package: 1 MiB per stream, 32 MiB per session).
	StreamBuffer  int
	SessionBuffer int

	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with the configuration at once.
func (c *ClientConfig) Validate() error {
	var errs []error
	if c.Server == "" {
		errs = append(errs, errors.New("server address is empty"))
	} else if err := checkHostPort(c.Server); err != nil {
		errs = append(errs, fmt.Errorf("server address %w", err))
	}
	if c.Password == "" {
		errs = append(errs, errors.New("password is empty"))
	}
	if c.PinSHA256 != nil && len(c.PinSHA256) != sha256.Size {
		errs = append(errs, fmt.Errorf("certificate pin has %d bytes, want %d", len(c.PinSHA256), sha256.Size))
	}
	if len(c.PaddingScheme) > 0 {
		if _, err := padding.Parse(c.PaddingScheme); err != nil {
			errs = append(errs, err)
		}
	}
	if len(c.ClientName) > 1024 {
		errs = append(errs, errors.New("client name is longer than 1024 bytes"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"idle check interval", c.IdleCheckInterval}, {"idle timeout", c.IdleTimeout}, {"dial timeout", c.DialTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.StreamBuffer < 0 || c.SessionBuffer < 0 {
		errs = append(errs, errors.New("buffer sizes must not be negative"))
	}
	return errors.Join(errs...)
}

// checkHostPort checks a "host:port" address that will be dialed: the port
// is a number from 1 to 65535 or a service name known to this system.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v", addr, err)
	}
	if n, err := net.LookupPort("tcp", port); err != nil || n == 0 {
		return fmt.Errorf("%q: port %q is not a port number (1-65535) or service name", addr, port)
	}
	return nil
}

// Client opens proxied connections through an AnyTLS server. It is safe for
// concurrent use.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	hash   [wire.AuthHashLen]byte
	tls    *tls.Config
	scheme atomic.Pointer[padding.Scheme]
	pool   *pool.Pool
	dial   func(ctx context.Context, network, address string) (net.Conn, error)
	poller sockio.Poller // where the read loops of idle sessions wait
	// serverV1: the last session found the server to speak version 1, so
	// new sessions take streams as open without waiting for a SYNACK
	serverV1 atomic.Bool
}

// NewClient validates cfg and returns a client. No connection is made until
// the first Dial.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("anytls: client config: %w", err)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ClientName == "" {
		cfg.ClientName = DefaultClientName
	}
	if cfg.MinIdleSessions == 0 {
		cfg.MinIdleSessions = DefaultMinIdleSessions
	}
	if cfg.IdleHeartbeat == 0 {
		cfg.IdleHeartbeat = DefaultIdleHeartbeat
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: cfg.Logger, hash: sha256.Sum256([]byte(cfg.Password)), dial: cfg.Dial}
	if c.dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		c.dial = d.DialContext
	}
	scheme := padding.Default()
	if len(cfg.PaddingScheme) > 0 {
		scheme, _ = padding.Parse(cfg.PaddingScheme)
	}
	c.scheme.Store(scheme)
	c.tls = c.tlsConfig()
	p, err := pool.New(pool.Config{
		CheckInterval: cfg.IdleCheckInterval,
		IdleTimeout:   cfg.IdleTimeout,
		MinIdle:       cfg.MinIdleSessions,
		DisableReuse:  cfg.DisableReuse,
		Logger:        cfg.Logger,
	}, c.dialSession)
	if err != nil {
		return nil, fmt.Errorf("anytls: client config: %w", err)
	}
	c.pool = p
	return c, nil
}

func (c *Client) tlsConfig() *tls.Config {
	var t *tls.Config
	if c.cfg.TLSConfig != nil {
		t = c.cfg.TLSConfig.Clone()
	} else {
		t = &tls.Config{}
	}
	if c.cfg.ServerName != "" {
		t.ServerName = c.cfg.ServerName
	} else if t.ServerName == "" {
		host, _, _ := net.SplitHostPort(c.cfg.Server)
		t.ServerName = host
	}
	if c.cfg.RootCAs != nil {
		t.RootCAs = c.cfg.RootCAs
	}
	switch {
	case c.cfg.PinSHA256 != nil:
		t.InsecureSkipVerify = true // replaced by the pin check below
		t.VerifyConnection = tlsutil.VerifyPin(c.cfg.PinSHA256)
	case c.cfg.InsecureSkipVerify:
		t.InsecureSkipVerify = true
	}
	// Each shaped write must leave as one TLS record of the size the scheme
	// asks for, not be cut by Go's slow-start record sizing.
	t.DynamicRecordSizingDisabled = true
	if len(t.NextProtos) == 0 {
		t.NextProtos = nil
	}
	return t
}

// Dial is DialContext with a background context.
func (c *Client) Dial(network, address string) (net.Conn, error) {
	return c.DialContext(context.Background(), network, address)
}

// DialContext opens a proxied connection to address ("host:port") through
// the server. By default the returned connection is open at once (zero round
// trips): if the server cannot reach address, its reason (a *RemoteError)
// arrives on the first Read. With ClientConfig.WaitSYNACK, DialContext waits
// for the server's confirmation and returns that error itself.
//
// Networks "tcp", "tcp4", "tcp6" give a stream; "udp", "udp4", "udp6" give a
// connected UDP association (see ListenPacket) in which each Write sends one
// datagram to address and each Read returns one datagram from it.
func (c *Client) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	case "udp", "udp4", "udp6":
		return c.dialUDP(ctx, network, address)
	default:
		return nil, fmt.Errorf("anytls: network %q is not supported", network)
	}
	dst, err := wire.ParseAddr(address)
	if err != nil {
		return nil, err
	}
	if !familyFits(network, dst) {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: addrString(address), Err: fmt.Errorf("%w: %s", ErrAddressFamily, address)}
	}
	st, err := c.pool.OpenStream(ctx, dst)
	if err == nil && c.cfg.WaitSYNACK {
		if err = st.WaitSYNACK(ctx); err != nil {
			st.Close()
		}
	}
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: addrString(address), Err: err}
	}
	return st, nil
}

type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }

// PaddingSchemeMD5 returns the md5 of the padding scheme new sessions use: the
// configured one, or the last one the server pushed.
func (c *Client) PaddingSchemeMD5() string { return c.scheme.Load().MD5() }

// Sessions returns how many sessions are open, and how many of them are idle.
func (c *Client) Sessions() (open, idle int) { return c.pool.Stats() }

// Close closes all sessions and waits for the client's goroutines.
func (c *Client) Close() error {
	err := c.pool.Close()
	c.poller.Wait() // the sessions woke their parked readers as they closed
	return err
}

// dialSession connects, handshakes, authenticates and starts a session.
func (c *Client) dialSession(ctx context.Context, onClose func(error)) (*session.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	raw, err := c.dial(ctx, "tcp", c.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("connect to server %s: %w", c.cfg.Server, err)
	}
	batch := sockio.NewBatcher(raw)
	conn := tls.Client(batch, c.tls)
	_, _, err = onFreshStack(func() (struct{}, struct{}, error) { return struct{}{}, struct{}{}, conn.HandshakeContext(ctx) })
	if err != nil {
		raw.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("TLS handshake with server %s: no answer within %v: %w", c.cfg.Server, c.cfg.DialTimeout, err)
		}
		return nil, fmt.Errorf("TLS handshake with server %s: %w", c.cfg.Server, err)
	}
	scheme := c.scheme.Load()
	auth, err := wire.AppendAuth(nil, &c.hash, scheme.AuthPadding())
	if err != nil {
		raw.Close()
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		raw.SetWriteDeadline(d)
	}
	if _, err := conn.Write(auth); err != nil {
		raw.Close()
		return nil, fmt.Errorf("send authentication to server %s: %w", c.cfg.Server, err)
	}
	raw.SetWriteDeadline(time.Time{})
	sess := session.NewClient(conn, session.Config{
		Scheme:        scheme,
		ClientName:    c.cfg.ClientName,
		OnScheme:      c.storeScheme,
		PeerV1:        c.serverV1.Load(),
		OnPeerVersion: c.serverV1.Store,
		StreamBuffer:  c.cfg.StreamBuffer,
		SessionBuffer: c.cfg.SessionBuffer,
		SYNACKTimeout: c.cfg.SYNACKTimeout,
		ProbeTimeout:  c.cfg.HeartbeatTimeout,
		QuietTimeout:  c.cfg.QuietTimeout,
		IdleHeartbeat: c.cfg.IdleHeartbeat,
		WriteTimeout:  c.cfg.WriteTimeout,
		Batch:         batch,
		Poller:        &c.poller,
		OnClose: func(err error) {
			var alert *session.AlertError
			switch {
			case errors.As(err, &alert):
				c.log.Error("server sent an alert and closed the session", "text", alert.Text)
			case errors.Is(err, session.ErrNoAnswer):
				c.log.Error("server " + c.cfg.Server + " closed the connection without answering: check the password")
			}
			onClose(err)
		},
		Logger: c.log,
	})
	return sess, nil
}

// storeScheme keeps a scheme pushed by the server for this client's later
// sessions only.
func (c *Client) storeScheme(s *padding.Scheme) {
	if old := c.scheme.Swap(s); old.MD5() != s.MD5() {
		c.log.Info("server pushed a new padding scheme", "md5", s.MD5())
	}
}

// onFreshStack runs f on a goroutine of its own and returns its results.
// The TLS handshake runs deep call chains that grow a goroutine's stack to
// tens of KiB, and a stack shrinks only by half per garbage collection: a
// caller of DialContext that then waits on the stream for hours keeps its
// small stack when the handshake ran elsewhere.
func onFreshStack[A, B, C any](f func() (A, B, C)) (A, B, C) {
	type result struct {
		a A
		b B
		c C
	}
	ch := make(chan result, 1)
	go func() {
		a, b, c := f()
		ch <- result{a, b, c}
	}()
	r := <-ch
	return r.a, r.b, r.c
}
