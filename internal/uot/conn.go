package uot

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// unspecified is the request destination sent in non-connect mode and the
// local address the client-side connections report.
var unspecified = wire.Addr{IP: netip.IPv4Unspecified()}

// conn is what PacketConn and Conn share: one stream, whose packets it reads
// and writes whole. Reads are serialised with rmu and writes with wmu, so
// that concurrent callers never interleave parts of two packets.
type conn struct {
	stream  net.Conn
	connect bool
	dst     wire.Addr // connect mode only
	log     *slog.Logger

	rmu sync.Mutex // guards rd
	rd  *Reader

	wmu  sync.Mutex // guards the fields below
	wbuf []byte
	werr error // set once a partial write broke the stream
}

func newConn(stream net.Conn, legacy, connect bool, dst wire.Addr, log *slog.Logger) (*conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &conn{stream: stream, connect: connect, dst: dst, log: log, rd: NewReader(stream)}
	if !legacy {
		// sent at once, not in front of the first packet: the server
		// confirms the stream (SYNACK) only once it has the request, and
		// an association may stay silent for longer than the client's
		// SYNACK timeout
		req, err := AppendRequest(make([]byte, 0, MaxRequestLen), Request{Connect: connect, Destination: dst})
		if err != nil {
			return nil, err
		}
		if _, err := stream.Write(req); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// readPacket copies the next packet into p, truncating it as a UDP socket
// does when p is too short. Oversized packets are dropped with a debug log.
func (c *conn) readPacket(p []byte) (int, wire.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		addr, payload, err := c.rd.Next(c.connect)
		if errors.Is(err, ErrPacketTooLarge) {
			c.log.Debug("uot: dropped an oversized packet from the server", "err", err)
			continue
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				c.stream.Close()
			}
			return 0, wire.Addr{}, err
		}
		if c.connect {
			addr = c.dst
		}
		return copy(p, payload), addr, nil
	}
}

// writePacket sends p as one packet. It returns ErrPacketTooLarge, sending nothing, for a payload over
// MaxPacketSize.
func (c *conn) writePacket(p []byte, addr wire.Addr) (int, error) {
	if len(p) > MaxPacketSize {
		return 0, fmt.Errorf("%w: %d bytes", ErrPacketTooLarge, len(p))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	b, err := AppendPacket(c.wbuf[:0], c.connect, addr, p)
	if err != nil {
		return 0, err
	}
	c.wbuf = b
	n, err := c.stream.Write(b)
	if err != nil {
		if n > 0 {
			c.werr = ErrStreamBroken
			c.stream.Close()
			return 0, fmt.Errorf("%w: %w", ErrStreamBroken, err)
		}
		return 0, err
	}
	return len(p), nil
}

// PacketConn is the client side of an association in non-connect mode: each
// packet carries its own address. It implements net.PacketConn and is safe
// for concurrent use.
type PacketConn struct {
	c *conn
}

// NewPacketConn returns a non-connect association over stream, which must
// have been opened to Destination(legacy). The version 2 request is sent in
// front of the first packet. log (nil for none) receives debug logs about
// dropped packets.
func NewPacketConn(stream net.Conn, legacy bool, log *slog.Logger) (*PacketConn, error) {
	c, err := newConn(stream, legacy, false, unspecified, log)
	if err != nil {
		return nil, err
	}
	return &PacketConn{c: c}, nil
}

// ReadFrom reads one packet into p; a packet longer than p is truncated. The
// address is a *net.UDPAddr, or a DomainAddr if the server named the source.
// It returns io.EOF once the server ended the association.
func (pc *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := pc.c.readPacket(p)
	if err != nil {
		return 0, nil, err
	}
	return n, NetAddr(addr), nil
}

// WriteTo sends p as one packet to addr: a *net.UDPAddr, a DomainAddr (the
// server resolves the name), or any net.Addr whose String is "host:port".
func (pc *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	a, err := AddrFromNet(addr)
	if err != nil {
		return 0, err
	}
	return pc.c.writePacket(p, a)
}

// ReadFromAddr is ReadFrom returning the address as a wire.Addr.
func (pc *PacketConn) ReadFromAddr(p []byte) (int, wire.Addr, error) {
	return pc.c.readPacket(p)
}

// WriteToAddr is WriteTo taking the address as a wire.Addr.
func (pc *PacketConn) WriteToAddr(p []byte, addr wire.Addr) (int, error) {
	return pc.c.writePacket(p, addr)
}

// Close ends the association.
func (pc *PacketConn) Close() error { return pc.c.stream.Close() }

// LocalAddr returns 0.0.0.0:0: the association's socket is on the server.
func (pc *PacketConn) LocalAddr() net.Addr { return NetAddr(unspecified) }

// SetDeadline sets the read and write deadlines.
func (pc *PacketConn) SetDeadline(t time.Time) error { return pc.c.stream.SetDeadline(t) }

// SetReadDeadline sets the deadline for ReadFrom.
func (pc *PacketConn) SetReadDeadline(t time.Time) error { return pc.c.stream.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for WriteTo.
func (pc *PacketConn) SetWriteDeadline(t time.Time) error { return pc.c.stream.SetWriteDeadline(t) }

// Conn is the client side of an association in connect mode: every packet
// goes to, and comes from, one destination. Each Read returns one packet and
// each Write sends one. It implements net.Conn and is safe for concurrent
// use.
type Conn struct {
	c *conn
}

// NewConn returns a connect-mode association to dst over stream, which must
// have been opened to Destination(false). The request is sent in front of
// the first packet.
func NewConn(stream net.Conn, dst wire.Addr, log *slog.Logger) (*Conn, error) {
	c, err := newConn(stream, false, true, dst, log)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

// Read reads one packet into p; a packet longer than p is truncated. It
// returns io.EOF once the server ended the association.
func (c *Conn) Read(p []byte) (int, error) {
	n, _, err := c.c.readPacket(p)
	return n, err
}

// Write sends p as one packet.
func (c *Conn) Write(p []byte) (int, error) { return c.c.writePacket(p, wire.Addr{}) }

// Close ends the association.
func (c *Conn) Close() error { return c.c.stream.Close() }

// LocalAddr returns 0.0.0.0:0: the association's socket is on the server.
func (c *Conn) LocalAddr() net.Addr { return NetAddr(unspecified) }

// RemoteAddr returns the destination.
func (c *Conn) RemoteAddr() net.Addr { return NetAddr(c.c.dst) }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.c.stream.SetDeadline(t) }

// SetReadDeadline sets the deadline for Read.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.stream.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for Write.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.stream.SetWriteDeadline(t) }
