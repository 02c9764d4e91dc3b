package anytls

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/outbound"
	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/uot"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Defaults for ServerConfig's zero values.
const (
	DefaultAuthTimeout        = 10 * time.Second
	DefaultConnectTimeout     = 10 * time.Second
	DefaultDestinationTimeout = 30 * time.Second
	DefaultSessionIdleTimeout = session.DefaultServerIdle
)

// User is one account of the server.
type User struct {
	// Name identifies the user in logs; it is not sent on the wire.
	Name string
	// Password is what the user's clients hash into their preamble. Each
	// user needs a password of its own.
	Password string
}

// ServerConfig configures a Server. Zero values mean the documented defaults.
type ServerConfig struct {
	// Users lists the accepted accounts; at least one is required.
	Users []User
	// TLSConfig terminates TLS on accepted connections. Nil means the
	// connections given to Serve are already secured (or a test's pipes).
	// Without NextProtos and GetConfigForClient of its own, the server
	// agrees "http/1.1" with a client that offers it (browsers and probers
	// do), as a web server would, and no protocol with other clients.
	TLSConfig *tls.Config
	// PaddingScheme is pushed to clients that use another one. Empty means
	// the default scheme.
	PaddingScheme []byte
	// AuthTimeout is the one deadline, counted from accept, for the TLS
	// handshake and the whole authentication preamble, however many bytes
	// arrive in however many records (default 10s). A connection not
	// authenticated by then is untrusted (see Fallback).
	AuthTimeout time.Duration
	// Fallback, if set, is a "host:port" (plain TCP, usually an HTTP
	// server) to which connections that fail authentication are relayed
	// with the bytes already read, decrypted, so that a prober meets that
	// site: at once for a wrong hash, an HTTP request or an early EOF, at
	// AuthTimeout for fewer than 34 bytes. Empty: the server answers like a
	// plain web server, an HTTP request with net/http's 400 answer and
	// anything else with a close at AuthTimeout.
	Fallback string
	// ConnectTimeout bounds the dial to a stream's destination (default 10s).
	ConnectTimeout time.Duration
	// DestinationTimeout bounds the wait for a new stream's destination
	// address (default 30s).
	DestinationTimeout time.Duration
	// Dial opens outbound TCP connections, to a destination that passed the
	// destination policy (always as "ip:port") and to Fallback; nil uses
	// net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// LookupNetIP resolves destination names, TCP and UDP; nil uses
	// net.DefaultResolver. The server resolves names itself so that the
	// destination policy sees the addresses it will connect to.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// LocalDestinations: may streams reach the server's own loopback,
	// unspecified, link-local and interface addresses? Default LocalAuto:
	// refused on a listener with a non-loopback address, allowed on a
	// loopback one. Logged by Serve at start.
	LocalDestinations LocalDestinations
	// DenyPrivateDestinations refuses private ranges as well (10/8,
	// 172.16/12, 192.168/16, 100.64/10, fc00::/7, fec0::/10). Default off.
	DenyPrivateDestinations bool
	// MaxSessions bounds the authenticated sessions carried at once
	// (default 4096, DefaultMaxSessions). A client beyond it gets an Alert
	// and its connection is closed, with a warning in the log.
	MaxSessions int
	// MaxSessionsPerUser bounds the sessions one user holds at once, so
	// that one user cannot take all MaxSessions. Zero means no bound of its
	// own. A client beyond it gets the same Alert. Mind that an AnyTLS
	// client opens one session per connection it carries at once.
	MaxSessionsPerUser int
	// MaxStreamsPerSession bounds the streams open at once on one session
	// (default 1024); a SYN beyond it is answered with FIN and logged.
	MaxStreamsPerSession int
	// StreamBuffer and SessionBuffer bound buffered received data (defaults
	// 1 MiB per stream, 32 MiB per session). A stream over its bound is
	// held (alone on its session) or reset (with siblings), with a log line.
	StreamBuffer  int
	SessionBuffer int
	// HalfCloseIdle bounds the silence of a relay after one side finished
	// (default 2m).
	HalfCloseIdle time.Duration
	// SessionIdleTimeout closes a session that has no streams and from
	// which nothing was received for this long (default 5m; negative: never).
	SessionIdleTimeout time.Duration
	// WriteTimeout closes a session whose single write to the client stalls
	// this long because the client stopped reading (default 2m; negative:
	// never).
	WriteTimeout time.Duration
	// UDPIdleTimeout ends a UDP association (UDP over TCP) that carried no
	// datagram for this long, and bounds the wait for its request (default
	// 2m, DefaultUDPIdleTimeout).
	UDPIdleTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with the configuration at once.
func (c *ServerConfig) Validate() error {
	errs := checkUsers(c.Users)
	if len(c.PaddingScheme) > 0 {
		if _, err := padding.Parse(c.PaddingScheme); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Fallback != "" {
		if err := checkHostPort(c.Fallback); err != nil {
			errs = append(errs, fmt.Errorf("fallback %w", err))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"auth timeout", c.AuthTimeout}, {"connect timeout", c.ConnectTimeout},
		{"destination timeout", c.DestinationTimeout}, {"half-close idle", c.HalfCloseIdle},
		{"UDP idle timeout", c.UDPIdleTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.LocalDestinations < LocalAuto || c.LocalDestinations > LocalDeny {
		errs = append(errs, fmt.Errorf("unknown local destination policy %d", int(c.LocalDestinations)))
	}
	if c.MaxSessions < 0 || c.MaxSessionsPerUser < 0 || c.MaxStreamsPerSession < 0 || c.StreamBuffer < 0 || c.SessionBuffer < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	return errors.Join(errs...)
}

// agreeHTTP11 makes c select "http/1.1" by ALPN for clients that offer it,
// unless c negotiates protocols itself. Setting NextProtos alone would fail
// the handshake of a client that offers only other protocols.
func agreeHTTP11(c *tls.Config) {
	if len(c.NextProtos) > 0 || c.GetConfigForClient != nil {
		return
	}
	h11 := c.Clone()
	h11.NextProtos = []string{"http/1.1"}
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, "http/1.1") {
			return h11, nil
		}
		return nil, nil
	}
}

// checkUsers lists what is wrong with a list of accounts.
func checkUsers(users []User) []error {
	var errs []error
	if len(users) == 0 {
		errs = append(errs, errors.New("no users: set at least one password"))
	}
	seen := map[string]string{}
	for i, u := range users {
		if u.Password == "" {
			errs = append(errs, fmt.Errorf("user %d (%q) has an empty password", i+1, u.Name))
		}
		if other, ok := seen[u.Password]; ok && u.Password != "" {
			errs = append(errs, fmt.Errorf("users %q and %q share a password; each needs its own", other, u.Name))
		}
		seen[u.Password] = u.Name
	}
	return errs
}

type userEntry struct {
	name string
	hash [wire.AuthHashLen]byte
}

// Server accepts AnyTLS clients and relays their streams.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	dial   func(ctx context.Context, network, address string) (net.Conn, error) // fallback
	out    [2]*outbound.Dialer                                                  // allowing, refusing local destinations
	users  atomic.Pointer[[]userEntry]
	scheme atomic.Pointer[padding.Scheme]

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{} // not (yet) trusted
	origins   map[net.Conn]struct{} // the fallback origin sides of relayed strangers
	sessions  map[*liveSession]struct{}
	closed    bool
	draining  bool

	refused      spacedWarning  // sessions refused at the limit
	userRefused  spacedWarning  // sessions refused at MaxSessionsPerUser
	fallbackDown spacedWarning  // strangers not relayed: the fallback origin failed
	fallbackFull spacedWarning  // strangers not relayed: MaxFallbackRelays reached
	fallbacks    int            // strangers being relayed to the fallback
	maxFallbacks int            // MaxFallbackRelays (lower in tests)
	perUser      map[string]int // sessions per user

	wg sync.WaitGroup // connections and streams being served

	poller sockio.Poller // where idle session readers and relay pumps wait
}

// NewServer validates cfg and returns a server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("anytls: server config: %w", err)
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.DestinationTimeout == 0 {
		cfg.DestinationTimeout = DefaultDestinationTimeout
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLSConfig != nil {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
		cfg.TLSConfig.DynamicRecordSizingDisabled = true
		agreeHTTP11(cfg.TLSConfig)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		dial:      cfg.Dial,
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
		origins:   map[net.Conn]struct{}{},
		sessions:  map[*liveSession]struct{}{},

		maxFallbacks: MaxFallbackRelays,
		perUser:      map[string]int{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		s.dial = d.DialContext
	}
	s.out = newDialers(&s.cfg)
	s.SetUsers(cfg.Users)
	scheme := padding.Default()
	if len(cfg.PaddingScheme) > 0 {
		scheme, _ = padding.Parse(cfg.PaddingScheme)
	}
	s.scheme.Store(scheme)
	return s, nil
}

// SetUsers replaces the accepted accounts; live sessions are kept. A list
// that NewServer would refuse (none, an empty password, a shared one) is
// refused, and the accounts stay as they were.
func (s *Server) SetUsers(users []User) error {
	if errs := checkUsers(users); len(errs) > 0 {
		return fmt.Errorf("anytls: users: %w", errors.Join(errs...))
	}
	list := make([]userEntry, len(users))
	for i, u := range users {
		list[i] = userEntry{name: u.Name, hash: sha256.Sum256([]byte(u.Password))}
	}
	s.users.Store(&list)
	return nil
}

// SetPaddingScheme replaces the scheme pushed to clients from now on.
func (s *Server) SetPaddingScheme(text []byte) error {
	sc, err := padding.Parse(text)
	if err != nil {
		return err
	}
	s.scheme.Store(sc)
	return nil
}

// PaddingSchemeMD5 returns the md5 of the scheme pushed to clients.
func (s *Server) PaddingSchemeMD5() string { return s.scheme.Load().MD5() }

// Serve accepts connections on ln until Shutdown or Close, and then returns
// ErrServerClosed. Accept errors (such as running out of file descriptors)
// are retried with a backoff; only a listener closed by someone else ends
// Serve early, with its error. ln is closed when Serve returns (also when
// it is called after Shutdown or Close, returning ErrServerClosed at once).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	out := s.outboundFor(ln.Addr())
	s.log.Info("destination policy", "listener", ln.Addr().String(), "policy", out.Policy.String(),
		"local_destinations", s.cfg.LocalDestinations.String())
	if s.cfg.LocalDestinations == LocalAuto && isLoopback(ln.Addr()) {
		s.log.Warn("listening on loopback, so clients may reach this host's own services; "+
			"if a proxy on this host forwards outside clients here, set local destinations to deny",
			"listener", ln.Addr().String())
	}
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.stopping() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(backoff*2, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		if !s.begin() {
			conn.Close()
			return ErrServerClosed
		}
		go s.serveConn(conn, out, s.wg.Done)
	}
}

// stopping reports whether Shutdown or Close has begun.
func (s *Server) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.draining
}

// track adds c to (or removes it from) the connections that are not yet
// trusted, which Shutdown and Close close; add fails once they have begun.
func (s *Server) track(c net.Conn, add bool) bool { return s.trackIn(s.conns, c, add) }

// trackOrigin is track for the fallback origin's side of a relayed stranger,
// kept apart so that Stats counts each stranger once.
func (s *Server) trackOrigin(c net.Conn, add bool) bool { return s.trackIn(s.origins, c, add) }

func (s *Server) trackIn(set map[net.Conn]struct{}, c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed || s.draining {
			return false
		}
		set[c] = struct{}{}
	} else {
		delete(set, c)
	}
	return true
}

// Close stops every listener and connection at once and waits for the
// server's goroutines to exit. See Shutdown for a graceful stop.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	for c := range s.origins {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.poller.Wait() // sessions and relays have ended, and woke what they parked
	return nil
}

// ServeConn serves one accepted connection until it ends. The destination
// policy for its streams follows the connection's local address (see
// LocalDestinations). After Shutdown or Close it closes raw at once.
func (s *Server) ServeConn(raw net.Conn) {
	if !s.begin() {
		raw.Close()
		return
	}
	ended := make(chan struct{})
	// on a goroutine of its own: the caller waits for the session without
	// the stack the TLS handshake grew
	go s.serveConn(raw, s.outboundFor(raw.LocalAddr()), func() { close(ended) })
	<-ended
	s.wg.Done()
}

// serveConn serves one connection; the caller counts it in s.wg. It
// returns once the session runs (on goroutines of its own, see
// session.Session.Start) or has failed to start; done is called when the
// connection has ended and is closed.
func (s *Server) serveConn(raw net.Conn, out *outbound.Dialer, done func()) {
	if !s.track(raw, true) {
		raw.Close()
		done()
		return
	}
	end := func() {
		s.track(raw, false)
		raw.Close()
		done()
	}
	remote := "unknown"
	if a := raw.RemoteAddr(); a != nil {
		remote = a.String()
	}
	raw.SetDeadline(time.Now().Add(s.cfg.AuthTimeout))
	conn, user, key, ok := s.preTrust(raw, remote)
	if !ok {
		end()
		return
	}
	raw.SetDeadline(time.Time{})
	log := s.log.With("remote", remote, "user", user)
	var batch *sockio.Batcher
	if tc, ok := conn.(*tls.Conn); ok {
		batch, _ = tc.NetConn().(*sockio.Batcher)
	}
	ls := &liveSession{user: key}
	ls.sess = session.NewServer(conn, session.Config{
		Batch:         batch,
		Poller:        &s.poller,
		ServerScheme:  s.scheme.Load,
		MaxStreams:    s.cfg.MaxStreamsPerSession,
		StreamBuffer:  s.cfg.StreamBuffer,
		SessionBuffer: s.cfg.SessionBuffer,
		IdleTimeout:   s.cfg.SessionIdleTimeout,
		WriteTimeout:  s.cfg.WriteTimeout,
		Logger:        log,
		OnStream: func(st *session.Stream) {
			s.wg.Add(1) // in the read loop, while serveConn still counts
			go func() {
				if !s.streamStarted(ls) {
					st.SendSYNACK(ErrServerClosed)
					st.Close()
					s.wg.Done()
					return
				}
				s.serveStream(st, out, log, func() {
					s.streamEnded(ls)
					s.wg.Done()
				})
			}()
		},
	})
	if err := s.addSession(ls, raw); err != nil {
		s.refuseSession(conn, err, remote, user)
		end()
		return
	}
	log.Debug("session started")
	stop := context.AfterFunc(s.ctx, ls.sess.Abort)
	ls.sess.Start(func(err error) {
		stop()
		s.removeSession(ls)
		log.Debug("session ended", "err", err)
		end()
	})
}

// authenticate compares the hash against every user in constant time.
func (s *Server) authenticate(hash []byte) (string, bool) {
	name, found := "", 0
	for _, u := range *s.users.Load() {
		if subtle.ConstantTimeCompare(hash, u.hash[:]) == 1 {
			name, found = u.name, 1
		}
	}
	return name, found == 1
}

// finOnCloseWrite lets the relay end a stream (FIN) when the destination has
// finished sending: AnyTLS has no half-close, and the client needs the EOF.
type finOnCloseWrite struct {
	*session.Stream
}

func (f finOnCloseWrite) CloseWrite() error { return f.Stream.Close() }

// serveStream reads a stream's destination, dials it, reports the outcome
// with SYNACK and relays.
func (s *Server) serveStream(st *session.Stream, out *outbound.Dialer, log *slog.Logger, finish func()) {
	relayed := false
	defer func() {
		if !relayed {
			st.Close()
			finish()
		}
	}()
	st.SetReadDeadline(time.Now().Add(s.cfg.DestinationTimeout))
	dst, err := wire.ReadAddr(st, wire.SOCKS)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		if isTimeout(err) {
			log.Info("stream closed: no destination within the destination timeout", "stream", st.ID(),
				"timeout", s.cfg.DestinationTimeout)
		} else {
			log.Debug("reading stream destination failed", "stream", st.ID(), "err", err)
		}
		return
	}
	if ok, legacy := uot.Magic(dst); ok {
		s.serveUDP(st, legacy, out, log)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	conn, err := out.DialContext(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		if errors.Is(err, outbound.ErrRefused) {
			log.Info("destination refused", "stream", st.ID(), "destination", dst.String(), "err", err)
		} else {
			log.Info("outbound connection failed", "stream", st.ID(), "destination", dst.String(), "err", err)
		}
		st.SendSYNACK(err)
		return
	}
	if err := st.SendSYNACK(nil); err != nil {
		conn.Close()
		return
	}
	log.Debug("relaying", "stream", st.ID(), "destination", dst.String())
	// The relay runs without this goroutine, which ends here: its stack,
	// grown by the dial and the SYNACK, is not kept for the stream's life.
	relayed = true
	// Close (or Shutdown's drain timeout) ends the relay by closing the
	// destination: a stream the client ended with FIN still delivers what is
	// queued, and a destination that reads nothing would hold it for ever.
	// A pump parked on conn is woken by the relay when the stream fails
	// (Close ends the sessions too), but not after the client's FIN has
	// already ended the stream: WakeAll resumes it now rather than at the
	// poller's next sweep (the first call wakes them all; later ones find
	// little left).
	stop := context.AfterFunc(s.ctx, func() { conn.Close(); s.poller.WakeAll() })
	opt := relay.Options{HalfCloseIdle: s.cfg.HalfCloseIdle, Poller: &s.poller}
	relay.Start(finOnCloseWrite{st}, conn, opt, func(stats relay.Stats, err error) {
		stop()
		if err != nil && !errors.Is(err, session.ErrClosedByPeer) && !errors.Is(err, session.ErrSessionClosed) {
			log.Debug("relay ended with an error", "destination", dst.String(), "err", err)
		}
		log.Debug("stream done", "stream", st.ID(), "up", stats.AToB, "down", stats.BToA)
		finish()
	})
}
