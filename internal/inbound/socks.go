package inbound

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// SOCKS5 handshake (RFC 1928, RFC 1929):
//
//	client greeting   VER=5 NMETHODS(1) METHODS(NMETHODS)
//	server choice     VER=5 METHOD(1)            0xFF = no acceptable method
//	[user/pass]       VER=1 ULEN(1) UNAME PLEN(1) PASSWD
//	[auth status]     VER=1 STATUS(1)            0 = success, else close
//	request           VER=5 CMD(1) RSV(1) DST.ADDR (wire.SOCKS) DST.PORT(2)
//	reply             VER=5 REP(1) RSV(1) BND.ADDR (wire.SOCKS) BND.PORT(2)
const (
	socksVersion5 = 0x05
	socksVersion4 = 0x04

	socksMethodNoAuth       = 0x00
	socksMethodUserPass     = 0x02
	socksMethodNoAcceptable = 0xFF

	socksAuthVersion = 0x01
	socksAuthSuccess = 0x00
	socksAuthFailure = 0x01
)

// socksCmd is the CMD field of a SOCKS5 request.
type socksCmd byte

const (
	socksCmdConnect      socksCmd = 0x01
	socksCmdBind         socksCmd = 0x02
	socksCmdUDPAssociate socksCmd = 0x03
)

func (c socksCmd) String() string {
	switch c {
	case socksCmdConnect:
		return "CONNECT"
	case socksCmdBind:
		return "BIND"
	case socksCmdUDPAssociate:
		return "UDP ASSOCIATE"
	}
	return "command 0x" + strconv.FormatUint(uint64(c), 16)
}

// socksRequest is a parsed SOCKS5 request, handed to the command's handler
// after authentication. The handler runs on the connection's goroutine and
// owns the connection until it returns; the server then closes it. A handler
// must wait for any goroutine it starts before returning, so that Close can
// wait for it, and must register sockets it opens (Server.register) so that
// Close can close them.
type socksRequest struct {
	ctx    context.Context    // ends at the handshake deadline or on Close; long-lived work uses Server.ctx
	cancel context.CancelFunc // ends ctx once the handshake is over, so that a long relay holds no timer
	conn   net.Conn
	br     *bufio.Reader // may hold bytes the client sent after the request
	cmd    socksCmd
	dst    wire.Addr
	log    *slog.Logger
	grace  time.Duration // for writing a failure reply after the deadline
}

// reply sends the request's reply. An invalid bnd is sent as 0.0.0.0:0. A
// failure reply gets a write deadline of its own: a dial that failed at
// the handshake deadline has used up the connection's.
func (r *socksRequest) reply(code byte, bnd wire.Addr) error {
	if code != SOCKSReplySucceeded {
		_ = r.conn.SetWriteDeadline(time.Now().Add(r.grace))
	}
	return writeSOCKSReply(r.conn, code, bnd)
}

func writeSOCKSReply(w io.Writer, code byte, bnd wire.Addr) error {
	if !bnd.Valid() {
		bnd = wire.Addr{IP: netip.IPv4Unspecified()}
	}
	buf := make([]byte, 0, 3+wire.MaxAddrLen)
	buf = append(buf, socksVersion5, code, 0x00)
	buf, err := wire.AppendAddr(buf, bnd, wire.SOCKS)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// socksHandler returns the handler of cmd, or nil if the command is not
// supported. UDP ASSOCIATE (socks_udp.go) needs a Dialer that is also a
// PacketDialer.
func (s *Server) socksHandler(cmd socksCmd) func(*socksRequest) *relayJob {
	switch cmd {
	case socksCmdConnect:
		return s.socksConnect
	case socksCmdUDPAssociate:
		if _, ok := s.dialer.(PacketDialer); ok {
			return func(req *socksRequest) *relayJob {
				s.socksUDPAssociate(req)
				return nil
			}
		}
	}
	return nil
}

// serveSOCKS5 runs the handshake on c (whose first byte, already peeked, is
// 0x05) and dispatches the request.
func (s *Server) serveSOCKS5(c net.Conn, br *bufio.Reader, deadline time.Time, log *slog.Logger) *relayJob {
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()

	// Greeting.
	var buf [2 + 255]byte
	if _, err := io.ReadFull(br, buf[:2]); err != nil {
		log.Debug("inbound: SOCKS5 greeting", "err", err)
		return nil
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(br, methods); err != nil {
		log.Debug("inbound: SOCKS5 greeting", "err", err)
		return nil
	}
	want := byte(socksMethodNoAuth)
	if s.auth {
		want = socksMethodUserPass
	}
	chosen := byte(socksMethodNoAcceptable)
	if bytes.IndexByte(methods, want) >= 0 {
		chosen = want
	}
	if _, err := c.Write([]byte{socksVersion5, chosen}); err != nil {
		log.Debug("inbound: SOCKS5 method reply", "err", err)
		return nil
	}
	if chosen == socksMethodNoAcceptable {
		log.Info("inbound: SOCKS5 client offers no acceptable auth method",
			"offered", fmt.Sprintf("% x", methods), "want", fmt.Sprintf("%02x", want))
		return nil
	}
	if chosen == socksMethodUserPass && !s.socksUserPass(c, br, log) {
		return nil
	}

	// Request.
	var hdr [3]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		log.Debug("inbound: SOCKS5 request", "err", err)
		return nil
	}
	if hdr[0] != socksVersion5 {
		log.Debug("inbound: SOCKS5 request with bad version", "version", hdr[0])
		return nil
	}
	cmd := socksCmd(hdr[1])
	dst, err := wire.ReadAddr(br, wire.SOCKS)
	if err != nil {
		switch {
		case errors.Is(err, wire.ErrAddrType):
			_ = writeSOCKSReply(c, SOCKSReplyAddressNotSupported, wire.Addr{})
			log.Info("inbound: SOCKS5 address type not supported", "cmd", cmd, "err", err)
		case errors.Is(err, wire.ErrEmptyName):
			_ = writeSOCKSReply(c, SOCKSReplyGeneralFailure, wire.Addr{})
			log.Info("inbound: SOCKS5 request with empty domain name", "cmd", cmd)
		default:
			log.Debug("inbound: SOCKS5 request address", "err", err)
		}
		return nil
	}
	req := &socksRequest{ctx: ctx, cancel: cancel, conn: c, br: br, cmd: cmd, dst: dst, log: log,
		grace: s.cfg.HandshakeTimeout}
	h := s.socksHandler(cmd)
	if h == nil {
		_ = req.reply(SOCKSReplyCommandNotSupported, wire.Addr{})
		log.Info("inbound: SOCKS5 command not supported", "cmd", cmd, "dst", dst.String())
		return nil
	}
	return h(req)
}

// socksUserPass runs the RFC 1929 sub-negotiation and reports success.
func (s *Server) socksUserPass(c net.Conn, br *bufio.Reader, log *slog.Logger) bool {
	var hdr [2]byte
	var user, pass [255]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		log.Debug("inbound: SOCKS5 auth", "err", err)
		return false
	}
	if hdr[0] != socksAuthVersion {
		log.Debug("inbound: SOCKS5 auth with bad version", "version", hdr[0])
		return false
	}
	u := user[:hdr[1]]
	if _, err := io.ReadFull(br, u); err != nil {
		log.Debug("inbound: SOCKS5 auth", "err", err)
		return false
	}
	if _, err := io.ReadFull(br, hdr[1:2]); err != nil {
		log.Debug("inbound: SOCKS5 auth", "err", err)
		return false
	}
	p := pass[:hdr[1]]
	if _, err := io.ReadFull(br, p); err != nil {
		log.Debug("inbound: SOCKS5 auth", "err", err)
		return false
	}
	ok := s.checkCredentials(u, p)
	status := byte(socksAuthSuccess)
	if !ok {
		status = socksAuthFailure
	}
	if _, err := c.Write([]byte{socksAuthVersion, status}); err != nil {
		log.Debug("inbound: SOCKS5 auth reply", "err", err)
		return false
	}
	if !ok {
		log.Warn("inbound: SOCKS5 authentication failed", "user", string(u))
	}
	return ok
}

// socksConnect serves CONNECT: dial, reply, and the relay job.
func (s *Server) socksConnect(req *socksRequest) *relayJob {
	remote, release, err := s.dial(req.ctx, req.dst)
	req.cancel()
	if err != nil {
		code := SOCKSReplyCode(err)
		_ = req.reply(code, wire.Addr{})
		if errors.Is(err, ErrServerClosed) {
			req.log.Debug("inbound: dial aborted by close", "dst", req.dst.String())
		} else {
			req.log.Info("inbound: dial failed", "dst", req.dst.String(), "reply", socksReplyName(code), "err", err)
		}
		return nil
	}
	if err := req.reply(SOCKSReplySucceeded, wire.Addr{}); err != nil {
		req.log.Debug("inbound: SOCKS5 reply", "dst", req.dst.String(), "err", err)
		release()
		return nil
	}
	req.log.Debug("inbound: SOCKS5 CONNECT", "dst", req.dst.String())
	return s.pipe(req.conn, req.br, remote, release, req.dst, req.log)
}
