// Package inbound is the client's local proxy listener: SOCKS5 and HTTP
// proxying on one port, in front of a Dialer that reaches destinations through
// the tunnel.
//
// Protocol selection, by the first byte a client sends:
//
//	0x05       SOCKS5 (RFC 1928), with RFC 1929 user/pass auth when configured
//	0x04       SOCKS4: not supported, the connection is closed
//	otherwise  HTTP/1.x: CONNECT host:port, or plain requests in absolute form
//	           (GET http://host/path) forwarded with keep-alive
//
// Connection flow:
//
//	accept -> handshake (bounded by Config.HandshakeTimeout, dial included)
//	       -> Dialer.DialTCP(dst) -> success reply -> Config.Relay(local, remote)
//
// SOCKS5 UDP ASSOCIATE (socks_udp.go), when the Dialer is also a PacketDialer:
//
//	handshake -> relay UDP socket + PacketDialer.ListenPacket -> reply with the
//	relay address -> relay datagrams until the control connection closes
//
// A Server owns every goroutine it starts and every connection it accepted or
// dialled; Close closes them all and returns after those goroutines exit.
package inbound

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Dialer opens a TCP connection to dst through the tunnel. ctx bounds the dial
// only; the returned connection outlives it. DialTCP must return soon after ctx
// is done: Server.Close cancels it and then waits for the dial to return.
type Dialer interface {
	DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error)
}

// DefaultHandshakeTimeout bounds a handshake when Config.HandshakeTimeout is 0.
const DefaultHandshakeTimeout = 30 * time.Second

const (
	// maxCredentialLen is the RFC 1929 limit on user name and password.
	maxCredentialLen = 255
	// transportIdleTimeout closes idle upstream connections of plain HTTP
	// forwarding.
	transportIdleTimeout = 30 * time.Second
	// readBufferSize is the size of the per-connection handshake reader.
	readBufferSize = 4096
	// Accept backoff after a temporary error.
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// Errors.
var (
	// ErrInvalidConfig is wrapped by every Validate and New error.
	ErrInvalidConfig = errors.New("anytls: invalid inbound config")
	// ErrServerClosed is returned by Serve after Close, and by dials attempted
	// while the server is closing. It wraps net.ErrClosed.
	ErrServerClosed = fmt.Errorf("anytls: inbound server closed: %w", net.ErrClosed)
)

// Config configures a Server. The zero value is usable: no authentication, a
// 30s handshake timeout, no logging, the default relay.
type Config struct {
	// Username and Password are optional. When set, SOCKS5 clients must
	// authenticate with RFC 1929 user/pass and HTTP clients must send
	// Proxy-Authorization: Basic. Both or neither must be set.
	Username, Password string
	// HandshakeTimeout bounds the SOCKS/HTTP handshake, including the dial,
	// and the idle time before each request on a keep-alive HTTP connection.
	// 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Relay pumps bytes after a successful CONNECT. It must return once either
	// connection fails or is closed; the server closes both connections after
	// it returns, and on Close. nil means a bidirectional copy that
	// half-closes where the connections support CloseWrite.
	Relay func(local, remote net.Conn)
	// StartRelay, if not nil, is used instead of Relay: it starts the relay
	// and returns at once, and calls done once when both connections are
	// closed (relay.Start). The handshake's goroutine then ends before the
	// relay begins, and an idle relay holds only the goroutines it needs.
	StartRelay func(local, remote net.Conn, done func())
	// Poller is the one StartRelay's relays park in (relay.Options), if
	// any: Close wakes what is parked there once it has closed the
	// connections, so that Close need not wait for the Poller's sweep.
	Poller *sockio.Poller
}

// Validate reports every problem of c at once; each wraps ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if (c.Username == "") != (c.Password == "") {
		bad("Username and Password must be set together")
	}
	if len(c.Username) > maxCredentialLen {
		bad("Username longer than %d bytes", maxCredentialLen)
	}
	if len(c.Password) > maxCredentialLen {
		bad("Password longer than %d bytes", maxCredentialLen)
	}
	for _, r := range c.Username {
		if r == ':' {
			bad("Username must not contain ':' (HTTP Basic cannot carry it)")
			break
		}
	}
	if c.HandshakeTimeout < 0 {
		bad("negative HandshakeTimeout %v", c.HandshakeTimeout)
	}
	return errors.Join(errs...)
}

// Server serves SOCKS5 and HTTP proxy clients. Create it with New.
type Server struct {
	cfg        Config
	dialer     Dialer
	log        *slog.Logger
	relay      func(local, remote net.Conn)
	startRelay func(local, remote net.Conn, done func())
	transport  *http.Transport

	auth             bool // credentials are required
	userSum, passSum [sha256.Size]byte

	ctx    context.Context // canceled by Close: aborts dials and round trips
	cancel context.CancelFunc

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // Serve loops and connection handlers

	mu        sync.Mutex // guards the fields below
	closed    bool
	nextID    uint64
	listeners map[uint64]net.Listener
	conns     map[uint64]io.Closer // accepted and dialled connections
}

// New returns a Server that reaches destinations through d.
func New(cfg Config, d Dialer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("%w: nil Dialer", ErrInvalidConfig)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	s := &Server{
		cfg:        cfg,
		dialer:     d,
		log:        cfg.Logger,
		relay:      cfg.Relay,
		startRelay: cfg.StartRelay,
		listeners:  make(map[uint64]net.Listener),
		conns:      make(map[uint64]io.Closer),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.relay == nil {
		s.relay = defaultRelay
	}
	if cfg.Username != "" {
		s.auth = true
		s.userSum = sha256.Sum256([]byte(cfg.Username))
		s.passSum = sha256.Sum256([]byte(cfg.Password))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.transport = s.newTransport()
	return s, nil
}

// Serve accepts connections on ln and handles each in its own goroutine. It
// retries temporary accept errors with backoff. After Close it returns
// ErrServerClosed (which wraps net.ErrClosed); Serve closes ln before
// returning.
func (s *Server) Serve(ln net.Listener) error {
	id, ok := s.trackListener(ln)
	if !ok {
		ln.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	defer s.untrackListener(id)
	s.log.Info("inbound: listening", "addr", ln.Addr().String())

	delay := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !isTemporary(err) {
				s.log.Warn("inbound: accept failed, stop serving", "addr", ln.Addr().String(), "err", err)
				return fmt.Errorf("anytls: inbound accept: %w", err)
			}
			if delay == 0 {
				delay = minAcceptDelay
			} else {
				delay = min(2*delay, maxAcceptDelay)
			}
			s.log.Warn("inbound: temporary accept error, retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		delay = 0
		id, ok := s.trackConn(c)
		if !ok {
			c.Close()
			return ErrServerClosed
		}
		go s.serveConn(id, c)
	}
}

// ServeConn handles one accepted connection and returns when it is done. It
// closes c. After Close it closes c at once.
func (s *Server) ServeConn(c net.Conn) {
	id, ok := s.trackConn(c)
	if !ok {
		c.Close()
		return
	}
	defer s.wg.Done()
	defer s.untrackConn(id, c)
	job := s.handle(c)
	if job == nil {
		return
	}
	if s.startRelay == nil {
		job.run(s.relay)
		return
	}
	done := make(chan struct{})
	s.startRelay(job.local, job.remote, func() {
		job.finish()
		close(done)
	})
	<-done
}

// serveConn serves a connection accepted by Serve. The handshake runs on
// this goroutine, which ends after it: its deep calls (the parsing, the dial
// through the tunnel, the first TLS writes) leave a stack that a goroutine
// keeps, only halved at each garbage collection, for as long as it lives.
// The relay runs on its own goroutines (Config.StartRelay), or on a fresh
// one.
func (s *Server) serveConn(id uint64, c net.Conn) {
	job := s.handle(c)
	if job == nil {
		s.untrackConn(id, c)
		s.wg.Done()
		return
	}
	after := func() {
		job.finish()
		s.untrackConn(id, c)
		s.wg.Done()
	}
	if s.startRelay != nil {
		s.startRelay(job.local, job.remote, after)
		return
	}
	go func() {
		s.relay(job.local, job.remote)
		after()
	}()
}

// Close closes the listeners given to Serve and every live connection, then
// waits for every goroutine the server started (and every ServeConn call) to
// return. It returns the first error closing a listener; later calls return
// nil after waiting as well. (Upstream connections of plain HTTP forwarding
// are closed too; net/http's own goroutines for them exit right after, not
// necessarily before Close returns.)
func (s *Server) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.mu.Lock()
		s.closed = true
		lns := s.listeners
		conns := s.conns
		s.listeners = map[uint64]net.Listener{}
		s.conns = map[uint64]io.Closer{}
		s.mu.Unlock()

		s.cancel()
		for _, ln := range lns {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) && s.closeErr == nil {
				s.closeErr = err
			}
		}
		for _, c := range conns {
			c.Close()
		}
		s.cfg.Poller.WakeAll()
		s.transport.CloseIdleConnections()
	})
	s.wg.Wait()
	// Handlers are gone; drop anything a round trip parked meanwhile.
	s.transport.CloseIdleConnections()
	if first {
		return s.closeErr
	}
	return nil
}

// handle sniffs the protocol and serves one client connection. When the
// connection is to be relayed it returns the job; nil means the connection
// is done.
func (s *Server) handle(c net.Conn) *relayJob {
	log := s.log.With("client", c.RemoteAddr().String())
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if err := c.SetDeadline(deadline); err != nil {
		log.Debug("inbound: set deadline", "err", err)
		return nil
	}
	lr := &headLimitReader{r: c}
	br := bufio.NewReaderSize(lr, readBufferSize)
	first, err := br.Peek(1)
	if err != nil {
		log.Debug("inbound: no data from client", "err", err)
		return nil
	}
	switch first[0] {
	case socksVersion5:
		return s.serveSOCKS5(c, br, deadline, log)
	case socksVersion4:
		log.Info("inbound: SOCKS4 is not supported, closing")
		return nil
	default:
		return s.serveHTTP(c, br, lr, log)
	}
}

// checkCredentials compares in constant time, lengths included (the digests
// have a fixed size).
func (s *Server) checkCredentials(user, pass []byte) bool {
	u := sha256.Sum256(user)
	p := sha256.Sum256(pass)
	return subtle.ConstantTimeCompare(u[:], s.userSum[:])&subtle.ConstantTimeCompare(p[:], s.passSum[:]) == 1
}

// dial opens a tunnel connection to dst and registers it so that Close can
// close it. The returned release closes the connection and unregisters it.
func (s *Server) dial(ctx context.Context, dst wire.Addr) (net.Conn, func() error, error) {
	remote, err := s.dialer.DialTCP(ctx, dst)
	if err != nil {
		if s.isClosed() {
			return nil, nil, fmt.Errorf("%w (dial %s: %w)", ErrServerClosed, dst, err)
		}
		return nil, nil, err
	}
	id, ok := s.register(remote)
	if !ok {
		remote.Close()
		return nil, nil, ErrServerClosed
	}
	return remote, func() error { return s.unregister(id, remote) }, nil
}

// trackListener registers ln and counts the Serve loop in wg.
func (s *Server) trackListener(ln net.Listener) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	s.nextID++
	s.listeners[s.nextID] = ln
	s.wg.Add(1)
	return s.nextID, true
}

func (s *Server) untrackListener(id uint64) {
	s.mu.Lock()
	ln, ok := s.listeners[id]
	delete(s.listeners, id)
	s.mu.Unlock()
	if ok {
		ln.Close()
	}
}

// trackConn registers an accepted connection and counts its handler in wg.
func (s *Server) trackConn(c net.Conn) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	s.nextID++
	s.conns[s.nextID] = c
	s.wg.Add(1)
	return s.nextID, true
}

func (s *Server) untrackConn(id uint64, c net.Conn) {
	s.unregister(id, c)
}

// register records a connection the server must close on Close.
func (s *Server) register(c io.Closer) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false
	}
	s.nextID++
	s.conns[s.nextID] = c
	return s.nextID, true
}

// unregister forgets and closes a connection.
func (s *Server) unregister(id uint64, c io.Closer) error {
	s.mu.Lock()
	delete(s.conns, id)
	s.mu.Unlock()
	return c.Close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// numConns reports the number of live connections (for tests).
func (s *Server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// isTemporary reports whether an accept error is worth retrying.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
