package anytls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/wire"
)

// Before a connection is trusted, it must not tell a prober anything that
// an ordinary HTTPS site would not. The rules (docs/architecture.md, "Before
// trust"):
//
//   - One deadline, AuthTimeout after accept, covers the TLS handshake and
//     the whole preamble, however many bytes arrive and in how many records.
//   - A connection that fails (wrong hash, fewer than 34 bytes by the
//     deadline or before the peer's close, an HTTP request) goes to the
//     fallback origin with the bytes already read, at once.
//   - Without a fallback the server plays a plain web server: an HTTP
//     request gets the answer net/http gives to a request it cannot parse;
//     anything else is read and dropped until the deadline (or the peer's
//     close), never closed at a byte count.

// Answers of Go's net/http, which the server gives in the same situations.
const (
	// httpBadRequest answers a request net/http cannot parse.
	httpBadRequest = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
	// httpOnTLSPort answers plain HTTP sent to a TLS port.
	httpOnTLSPort = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
	// maxRequestHead bounds what is read of an HTTP request head before the
	// answer, as a web server bounds its header buffer.
	maxRequestHead = 16 << 10
)

// Why a connection was not trusted; logged as "reason".
var (
	errWrongPassword = errors.New("wrong password")
	errHTTPRequest   = errors.New("HTTP request")
)

// httpMethods start the request lines that looksLikeHTTP recognises.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI"}

// looksLikeHTTP reports whether b starts like an HTTP/1 request line: a
// method, a space and the first byte of a request target. A password hash
// that starts this way (about 10 in 2^40) cannot be told apart from a
// request when the client splits its preamble before byte 34; ours never
// does.
func looksLikeHTTP(b []byte) bool {
	for _, m := range httpMethods {
		if len(b) > len(m)+1 && string(b[:len(m)]) == m && b[len(m)] == ' ' {
			switch b[len(m)+1] {
			case '/', '*', 'h', 'H':
				return true
			}
			if m == "CONNECT" {
				return true
			}
		}
	}
	return false
}

// startsWithMethod reports whether b starts with an HTTP method token (RFC
// 9110 tchar, any case, up to 24 bytes) and a space.
func startsWithMethod(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ':
			return i > 0
		case i >= 24:
			return false
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return false
}

// tlsHeaderLooksLikeHTTP is net/http's test for plain HTTP on a TLS port.
func tlsHeaderLooksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// failureReason names an authentication failure for the logs.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errWrongPassword):
		return "wrong password"
	case errors.Is(err, errHTTPRequest):
		return "HTTP request"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed early"
	}
	return "read error"
}

// preTrust runs the TLS handshake and reads the authentication preamble,
// under the deadline the caller has set on raw. It returns the connection
// to run a session on, the user's name, and a key that tells users apart (the
// hash they authenticated with); ok false means the connection
// was not trusted and has been dealt with (fallback, web answer, or the
// wait for the deadline): the caller only closes it.
func (s *Server) preTrust(raw net.Conn, remote string) (conn net.Conn, user, key string, ok bool) {
	conn = raw
	if s.cfg.TLSConfig != nil {
		tc := tls.Server(sockio.NewBatcher(raw), s.cfg.TLSConfig)
		if err := tc.Handshake(); err != nil { // Close and Shutdown close raw: no context needed
			s.log.Debug("TLS handshake failed", "remote", remote, "err", err)
			var rhe tls.RecordHeaderError
			if errors.As(err, &rhe) && rhe.Conn != nil && tlsHeaderLooksLikeHTTP(rhe.RecordHeader) {
				io.WriteString(rhe.Conn, httpOnTLSPort)
			}
			return nil, "", "", false
		}
		conn = tc
	}
	var pre [wire.AuthPrefixLen]byte
	n, err := readPreamble(conn, pre[:])
	if err == nil {
		if user, ok = s.authenticate(pre[:wire.AuthHashLen]); !ok {
			err = errWrongPassword
		}
	}
	if !ok {
		s.log.Debug("authentication failed", "remote", remote, "reason", failureReason(err), "read", n)
		s.untrusted(conn, pre[:n], err, remote)
		conn.Close() // with close_notify while the deadline allows, as net/http closes
		return nil, "", "", false
	}
	if pad := int(binary.BigEndian.Uint16(pre[wire.AuthHashLen:])); pad > 0 {
		if _, err := io.CopyN(io.Discard, conn, int64(pad)); err != nil {
			s.log.Debug("reading authentication padding failed", "remote", remote, "user", user, "err", err)
			return nil, "", "", false
		}
	}
	return conn, user, string(pre[:wire.AuthHashLen]), true
}

// readPreamble fills pre from conn, across as many reads (TLS records) as
// the client cut it into. It stops early, with errHTTPRequest, once the
// bytes read so far are the start of an HTTP request line.
func readPreamble(conn net.Conn, pre []byte) (int, error) {
	n := 0
	for n < len(pre) {
		m, err := conn.Read(pre[n:])
		n += m
		switch {
		case n == len(pre):
			return n, nil // an error with the last bytes shows up later
		case looksLikeHTTP(pre[:n]):
			return n, errHTTPRequest
		case err == io.EOF:
			return n, io.ErrUnexpectedEOF
		case err != nil:
			return n, err
		}
	}
	return n, nil
}

// untrusted deals with a connection that failed authentication: relayed to
// the fallback with the bytes already consumed, or else answered as a plain
// web server would.
func (s *Server) untrusted(conn net.Conn, consumed []byte, cause error, remote string) {
	if s.cfg.Fallback != "" {
		s.fallback(conn, consumed, remote)
		return
	}
	switch {
	case looksLikeHTTP(consumed), startsWithMethod(consumed):
		// (any method once the bytes failed as a password hash: a web
		// server answers whatever method it does not know)
		answerHTTP(conn, consumed)
	case errors.Is(cause, os.ErrDeadlineExceeded), errors.Is(cause, io.ErrUnexpectedEOF):
		// the deadline has passed, or the peer is gone: close now
	default:
		// read and drop until the deadline or the peer's close
		io.Copy(io.Discard, conn)
	}
}

// answerHTTP reads the rest of an HTTP request head (until its blank line,
// maxRequestHead bytes, or the deadline) and answers it as net/http answers
// a request it cannot parse. When the deadline passes first, it closes
// without an answer, as net/http does on its header timeout.
func answerHTTP(conn net.Conn, head []byte) {
	buf := make([]byte, maxRequestHead)
	n := copy(buf, head)
	for n < len(buf) && !bytes.Contains(buf[:n], []byte("\r\n\r\n")) && !bytes.Contains(buf[:n], []byte("\n\n")) {
		m, err := conn.Read(buf[n:])
		n += m
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			break
		}
	}
	io.WriteString(conn, httpBadRequest)
}

// fallback relays a connection that failed authentication to the fallback
// origin, replaying the bytes already read, so that the prober meets that
// site: its answer, and its close.
func (s *Server) fallback(conn net.Conn, consumed []byte, remote string) {
	// each relay holds two goroutines and a read buffer for as long as the
	// origin keeps the connection: bounded, a flood of strangers is closed
	s.mu.Lock()
	full := s.fallbacks >= s.maxFallbacks
	var warn bool
	var n int
	if full {
		warn, n = s.fallbackFull.event()
	} else {
		s.fallbacks++
	}
	s.mu.Unlock()
	if full {
		if warn {
			s.log.Warn("stranger closed: fallback relays at their limit", "limit", s.maxFallbacks, "closed", n)
		}
		return
	}
	defer func() {
		s.mu.Lock()
		s.fallbacks--
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	defer cancel()
	out, err := s.dial(ctx, "tcp", s.cfg.Fallback)
	if err != nil {
		s.mu.Lock()
		warn, n := s.fallbackDown.event()
		s.mu.Unlock()
		if warn {
			s.log.Warn("fallback origin unreachable", "fallback", s.cfg.Fallback, "err", err, "connections", n)
		} else {
			s.log.Debug("fallback origin unreachable (warned already)", "fallback", s.cfg.Fallback, "err", err)
		}
		return
	}
	// Shutdown and Close close this side too: once the prober has
	// half-closed, closing its side alone would leave the relay waiting
	// on the fallback origin for HalfCloseIdle
	if !s.trackOrigin(out, true) {
		out.Close()
		return
	}
	defer s.trackOrigin(out, false)
	if len(consumed) > 0 {
		if _, err := out.Write(consumed); err != nil {
			out.Close()
			return
		}
	}
	conn.SetDeadline(time.Time{})
	s.log.Debug("relaying to the fallback", "remote", remote, "fallback", s.cfg.Fallback, "replayed", len(consumed))
	relay.Relay(closeOnCloseWrite{conn}, out, relay.Options{HalfCloseIdle: s.cfg.HalfCloseIdle})
}

// closeOnCloseWrite closes the prober's connection as soon as the fallback
// origin has finished sending, as a web server closes its connection, rather
// than leaving the TLS connection half-closed.
type closeOnCloseWrite struct {
	net.Conn
}

func (c closeOnCloseWrite) CloseWrite() error { return c.Conn.Close() }
