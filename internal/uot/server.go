package uot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// Server defaults.
const (
	// DefaultIdleTimeout ends an association that carried no packet, in
	// either direction, for this long. It also bounds the wait for the
	// request, which version 2 clients send in front of their first packet.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultResolveTimeout bounds the resolution of one domain name.
	DefaultResolveTimeout = 10 * time.Second
)

const (
	// socketBuffer is the receive and send buffer asked for the UDP socket
	// (the kernel may grant less): room for a burst of large datagrams.
	socketBuffer = 1 << 20
	// Resolved names are cached per association, at most cacheSize of them
	// for cacheTTL each (failures for failTTL), so that non-connect packets
	// to a name do not cost a lookup each.
	cacheSize = 64
	cacheTTL  = time.Minute
	failTTL   = 10 * time.Second
)

// ServerOptions configures Serve. Zero values mean the defaults.
type ServerOptions struct {
	// IdleTimeout: see DefaultIdleTimeout.
	IdleTimeout time.Duration
	// ResolveTimeout: see DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// Ready is called once, when the UDP socket is open (nil) or could not be
	// opened (the error): the caller reports it to the client with SYNACK.
	// If it returns an error for a ready socket, Serve ends. nil: no report.
	Ready func(err error) error
	// ListenPacket opens the association's UDP socket; nil uses
	// net.ListenConfig with ("udp", ":0"): a dual-stack socket where IPv6 is
	// available, IPv4 otherwise.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)
	// LookupNetIP resolves domain names; nil uses net.DefaultResolver. The
	// first IPv4 address found is used, else the first IPv6 address.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// Allow, if not nil, vets every destination address, given as an IP or
	// resolved from a name, before a datagram goes there: an error refuses
	// it (connect mode: the association fails with that error, reported by
	// Ready; otherwise the datagram is dropped). The server's destination
	// policy plugs in here, with LookupNetIP filtering names the same way.
	Allow func(netip.Addr) error
	// Logger receives debug logs (dropped packets, the association's end);
	// nil discards them.
	Logger *slog.Logger
}

func (o *ServerOptions) setDefaults() {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.ResolveTimeout <= 0 {
		o.ResolveTimeout = DefaultResolveTimeout
	}
	if o.Ready == nil {
		o.Ready = func(error) error { return nil }
	}
	if o.ListenPacket == nil {
		var lc net.ListenConfig
		o.ListenPacket = lc.ListenPacket
	}
	if o.LookupNetIP == nil {
		o.LookupNetIP = net.DefaultResolver.LookupNetIP
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// udpSocket is the part of *net.UDPConn the relay uses, without allocating
// an address per packet.
type udpSocket interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// genericSocket adapts any net.PacketConn to udpSocket.
type genericSocket struct{ net.PacketConn }

func (g genericSocket) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, addr, err := g.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	a, err := AddrFromNet(addr)
	return n, a.AddrPort(), err
}

func (g genericSocket) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return g.WriteTo(b, net.UDPAddrFromAddrPort(addr))
}

// association is the server side of one UoT stream.
type association struct {
	opts    ServerOptions
	stream  net.Conn
	connect bool
	dst     netip.AddrPort // connect mode
	sock    udpSocket
	log     *slog.Logger
	cache   map[string]cacheEntry // used by the uplink goroutine only

	closeOnce sync.Once
	closers   []io.Closer
	mu        sync.Mutex // guards closers against closeAll
	idle      atomic.Bool
}

type cacheEntry struct {
	ip      netip.Addr
	err     error
	expires time.Time
}

// Serve relays the UoT stream to a UDP socket until the stream ends, ctx is
// done, or the association is idle for opts.IdleTimeout. The caller has read
// the stream's destination (Magic reported ok, legacy for version 1). Serve
// reads the request (version 2), resolves a connect-mode domain destination,
// opens the socket, calls opts.Ready, and relays packets both ways. It owns
// stream and closes it, with the socket, before it returns. It returns nil
// for an ordinary end (the client closed the stream, idle timeout, ctx),
// otherwise the reason.
func Serve(ctx context.Context, stream net.Conn, legacy bool, opts ServerOptions) error {
	opts.setDefaults()
	a := &association{opts: opts, stream: stream, log: opts.Logger, closers: []io.Closer{stream}}
	defer a.closeAll()
	stop := context.AfterFunc(ctx, a.closeAll)
	defer stop()

	rd := NewReader(stream)
	if !legacy {
		stream.SetReadDeadline(time.Now().Add(opts.IdleTimeout))
		req, err := rd.ReadRequest()
		stream.SetReadDeadline(time.Time{})
		if err != nil {
			err = fmt.Errorf("reading the UDP-over-TCP request: %w", err)
			if errors.Is(err, ErrMalformed) {
				opts.Ready(err) // the client learns why (not so for a silent or departed one)
			}
			return a.endErr(ctx, err)
		}
		a.connect = req.Connect
		if req.Connect {
			ip, err := a.resolve(ctx, req.Destination)
			if err != nil {
				opts.Ready(err)
				return a.endErr(ctx, err)
			}
			a.dst = netip.AddrPortFrom(ip, req.Destination.Port)
		}
	}
	pc, err := opts.ListenPacket(ctx, "udp", ":0")
	if err != nil {
		err = fmt.Errorf("open UDP socket: %w", err)
		opts.Ready(err)
		return a.endErr(ctx, err)
	}
	if !a.addCloser(pc) {
		return nil
	}
	if b, ok := pc.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		_ = b.SetReadBuffer(socketBuffer)
		_ = b.SetWriteBuffer(socketBuffer)
	}
	a.sock = genericSocket{pc}
	if s, ok := pc.(udpSocket); ok {
		a.sock = s
	}
	if err := opts.Ready(nil); err != nil {
		return err
	}
	a.log.Debug("uot: association open", "connect", a.connect, "destination", a.dst, "legacy", legacy, "socket", pc.LocalAddr())

	timer := newIdleTimer(opts.IdleTimeout, func() {
		a.idle.Store(true)
		a.closeAll()
	})
	defer timer.stop()
	// Whichever direction ends first closes everything, which ends the
	// other; its error is the association's.
	var wg sync.WaitGroup
	var first sync.Once
	var cause error
	end := func(err error) {
		first.Do(func() { cause = err })
		a.closeAll()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		end(a.downlink(timer))
	}()
	upErr := a.uplink(ctx, rd, timer)
	end(upErr)
	wg.Wait()
	if errors.Is(upErr, io.EOF) {
		cause = nil // the client closed the stream: whatever else failed after that is no news
	}
	err = a.endErr(ctx, cause)
	a.log.Debug("uot: association closed", "idle", a.idle.Load(), "err", err)
	return err
}

// addCloser registers c for closeAll; it closes c and reports false if the
// association is already closing.
func (a *association) addCloser(c io.Closer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closers == nil {
		c.Close()
		return false
	}
	a.closers = append(a.closers, c)
	return true
}

func (a *association) closeAll() {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		cs := a.closers
		a.closers = nil
		a.mu.Unlock()
		for _, c := range cs {
			c.Close()
		}
	})
}

// endErr maps the errors of an ordinary end (EOF, our own close after idle
// or cancellation) to nil.
func (a *association) endErr(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, io.EOF) || a.idle.Load() || ctx.Err() != nil {
		return nil
	}
	return err
}

// uplink sends the stream's packets from the UDP socket.
func (a *association) uplink(ctx context.Context, rd *Reader, timer *idleTimer) error {
	for {
		addr, payload, err := rd.Next(a.connect)
		if errors.Is(err, ErrPacketTooLarge) {
			timer.touch()
			a.log.Debug("uot: dropped an oversized packet", "to", addr, "err", err)
			continue
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				a.log.Info("uot: malformed packet from the client, closing the stream", "err", err)
			}
			return err
		}
		timer.touch()
		to := a.dst
		if !a.connect {
			ip, err := a.resolve(ctx, addr)
			if err != nil {
				a.log.Debug("uot: dropped a packet to an unresolvable or refused destination", "to", addr, "err", err)
				continue
			}
			to = netip.AddrPortFrom(ip, addr.Port)
		}
		if _, err := a.sock.WriteToUDPAddrPort(payload, to); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			a.log.Debug("uot: dropped a packet the socket refused", "to", to, "len", len(payload), "err", err)
		}
	}
}

// downlink sends the UDP socket's packets down the stream. It reads each
// datagram behind room for the longest header and writes header and payload
// with one stream write.
func (a *association) downlink(timer *idleTimer) error {
	buf := make([]byte, MaxHeaderLen+maxLength)
	for {
		n, from, err := a.sock.ReadFromUDPAddrPort(buf[MaxHeaderLen:])
		if err != nil {
			return err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if a.connect && from != a.dst {
			a.log.Debug("uot: dropped a packet from a stranger in connect mode", "from", from, "want", a.dst)
			continue
		}
		if n > MaxPacketSize {
			a.log.Debug("uot: dropped an oversized packet", "from", from, "len", n)
			continue
		}
		timer.touch()
		src := wire.AddrFromAddrPort(from)
		start := MaxHeaderLen - HeaderLen(a.connect, src)
		if _, err := AppendHeader(buf[start:start], a.connect, src, n); err != nil {
			a.log.Debug("uot: dropped a packet", "from", from, "err", err)
			continue
		}
		if _, err := a.stream.Write(buf[start : MaxHeaderLen+n]); err != nil {
			return err
		}
	}
}

// resolve returns the IP of addr, looking a name up (IPv4 preferred) with a
// small per-association cache.
func (a *association) resolve(ctx context.Context, addr wire.Addr) (netip.Addr, error) {
	if !addr.IsName() {
		if !addr.IP.IsValid() {
			return netip.Addr{}, wire.ErrInvalidAddr
		}
		if a.opts.Allow != nil {
			if err := a.opts.Allow(addr.IP); err != nil {
				return netip.Addr{}, err
			}
		}
		return addr.IP, nil
	}
	now := time.Now()
	if e, ok := a.cache[addr.Name]; ok && now.Before(e.expires) {
		return e.ip, e.err
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.ResolveTimeout)
	ips, err := a.opts.LookupNetIP(ctx, "ip", addr.Name)
	cancel()
	if err == nil && len(ips) == 0 {
		err = &net.DNSError{Err: "no address", Name: addr.Name, IsNotFound: true}
	}
	e := cacheEntry{expires: now.Add(cacheTTL)}
	if err != nil {
		e.err, e.expires = fmt.Errorf("resolve %s: %w", addr.Name, err), now.Add(failTTL)
	} else {
		e.ip = ips[0].Unmap()
		for _, c := range ips {
			if c.Unmap().Is4() {
				e.ip = c.Unmap()
				break
			}
		}
		if a.opts.Allow != nil {
			if err := a.opts.Allow(e.ip); err != nil {
				e.ip, e.err, e.expires = netip.Addr{}, err, now.Add(failTTL)
			}
		}
	}
	if a.cache == nil || len(a.cache) >= cacheSize {
		a.cache = make(map[string]cacheEntry)
	}
	a.cache[addr.Name] = e
	return e.ip, e.err
}

// idleTimer calls fired once no touch happened for idle.
type idleTimer struct {
	idle  time.Duration
	start time.Time
	last  atomic.Int64 // time of the last touch, as nanoseconds since start
	fired func()

	mu      sync.Mutex // guards the fields below
	t       *time.Timer
	stopped bool
}

func newIdleTimer(idle time.Duration, fired func()) *idleTimer {
	it := &idleTimer{idle: idle, start: time.Now(), fired: fired}
	it.mu.Lock()
	it.t = time.AfterFunc(idle, it.check)
	it.mu.Unlock()
	return it
}

func (it *idleTimer) touch() { it.last.Store(int64(time.Since(it.start))) }

func (it *idleTimer) check() {
	quiet := time.Since(it.start) - time.Duration(it.last.Load())
	if quiet >= it.idle {
		it.fired()
		return
	}
	it.mu.Lock()
	if !it.stopped {
		it.t.Reset(it.idle - quiet)
	}
	it.mu.Unlock()
}

func (it *idleTimer) stop() {
	it.mu.Lock()
	it.stopped = true
	it.t.Stop()
	it.mu.Unlock()
}
