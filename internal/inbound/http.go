package inbound

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// HTTP proxying:
//
//	CONNECT host:port HTTP/1.1   -> dial, "200 Connection established", relay
//	GET http://host[:80]/p HTTP/1.1 -> forwarded in origin form (GET /p) over
//	                                 an http.Transport that dials through the
//	                                 Dialer; the connection stays open for the
//	                                 next request when both sides allow it
//
// Errors: 400 malformed or unsupported request (origin form, https:// in
// absolute form), 407 missing or wrong credentials, 431 oversized head,
// 502 dial or upstream failure, 504 a destination that did not answer in
// time.

// maxHeadBytes bounds a request line plus headers: more than browsers
// send, and small enough that a local client holding many requests cannot
// run the proxy out of memory (parsed, a head of many tiny headers takes
// about ten times its size).
const maxHeadBytes = 64 << 10

// errHeadTooLarge is returned by headLimitReader past maxHeadBytes.
var errHeadTooLarge = errors.New("anytls: HTTP request head too large")

// headLimitReader caps what may be read from the connection while a request
// head is parsed; it is unlimited otherwise.
type headLimitReader struct {
	r       io.Reader
	limited bool
	n       int64
}

func (l *headLimitReader) setLimit(n int64) { l.limited, l.n = true, n }
func (l *headLimitReader) unlimit()         { l.limited = false }

func (l *headLimitReader) Read(p []byte) (int, error) {
	if !l.limited {
		return l.r.Read(p)
	}
	if l.n <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// serveHTTP serves proxy requests on c until the client is done, a request
// fails, or a CONNECT hands the connection over to the relay.
func (s *Server) serveHTTP(c net.Conn, br *bufio.Reader, lr *headLimitReader, log *slog.Logger) *relayJob {
	for first := true; ; first = false {
		if !first {
			// Idle keep-alive connections wait at most HandshakeTimeout.
			if err := c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
				return nil
			}
		}
		lr.setLimit(maxHeadBytes)
		skipEmptyLines(br)
		req, err := http.ReadRequest(br)
		lr.unlimit()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, errHeadTooLarge):
				log.Info("inbound: HTTP request head too large")
				s.writeHTTPError(c, http.StatusRequestHeaderFieldsTooLarge, "request head too large", nil)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
				errors.Is(err, net.ErrClosed), errors.As(err, &ne):
				log.Debug("inbound: HTTP read request", "err", err)
			default:
				log.Debug("inbound: malformed HTTP request", "err", err)
				s.writeHTTPError(c, http.StatusBadRequest, "malformed request", nil)
			}
			return nil
		}
		// Bodies and responses may take long; only heads are timed.
		if err := c.SetDeadline(time.Time{}); err != nil {
			return nil
		}
		if ok, present := s.httpAuthorized(req); !ok {
			if present {
				log.Warn("inbound: HTTP proxy authentication failed", "dst", req.Host)
			} else {
				log.Debug("inbound: HTTP proxy request without credentials", "dst", req.Host)
			}
			s.writeHTTPError(c, http.StatusProxyAuthRequired, "proxy authentication required",
				http.Header{"Proxy-Authenticate": {`Basic realm="anytls"`}})
			return nil
		}
		if req.Method == http.MethodConnect {
			return s.httpConnect(c, br, req, log)
		}
		if !s.httpForward(c, br, req, log) {
			return nil
		}
	}
}

// httpAuthorized checks Proxy-Authorization: Basic. present reports whether
// the client sent credentials at all.
func (s *Server) httpAuthorized(req *http.Request) (ok, present bool) {
	if !s.auth {
		return true, false
	}
	h := req.Header.Get("Proxy-Authorization")
	if h == "" {
		return false, false
	}
	scheme, cred, found := strings.Cut(strings.TrimSpace(h), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return false, true
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false, true
	}
	user, pass, found := strings.Cut(string(raw), ":")
	if !found {
		return false, true
	}
	return s.checkCredentials([]byte(user), []byte(pass)), true
}

// httpConnect serves CONNECT host:port.
func (s *Server) httpConnect(c net.Conn, br *bufio.Reader, req *http.Request, log *slog.Logger) *relayJob {
	dst, err := wire.ParseAddr(req.URL.Host)
	if err != nil || dst.Port == 0 {
		log.Info("inbound: bad CONNECT target", "target", req.RequestURI)
		s.writeHTTPError(c, http.StatusBadRequest, "CONNECT needs host:port", nil)
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	remote, release, err := s.dial(ctx, dst)
	cancel()
	if err != nil {
		if errors.Is(err, ErrServerClosed) {
			log.Debug("inbound: dial aborted by close", "dst", dst.String())
			return nil
		}
		log.Info("inbound: dial failed", "dst", dst.String(), "err", err)
		s.writeHTTPError(c, http.StatusBadGateway, fmt.Sprintf("dial %s: %v", dst, err), nil)
		return nil
	}
	if err := c.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		release()
		return nil
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		log.Debug("inbound: CONNECT reply", "dst", dst.String(), "err", err)
		release()
		return nil
	}
	log.Debug("inbound: HTTP CONNECT", "dst", dst.String())
	return s.pipe(c, br, remote, release, dst, log)
}

// httpForward forwards one absolute-form request and writes the response. It
// reports whether the connection can carry another request.
func (s *Server) httpForward(c net.Conn, br *bufio.Reader, req *http.Request, log *slog.Logger) bool {
	if req.URL.Scheme != "http" || req.URL.Host == "" {
		msg := "only CONNECT and absolute-form http:// requests are supported"
		if req.URL.Scheme == "https" {
			msg = "https:// in absolute form is not supported; use CONNECT"
		}
		log.Info("inbound: unsupported HTTP request", "method", req.Method, "target", req.RequestURI)
		s.writeHTTPError(c, http.StatusBadRequest, msg, nil)
		return false
	}
	dst, err := urlAddr(req)
	if err != nil {
		log.Info("inbound: bad HTTP request host", "host", req.URL.Host, "err", err)
		s.writeHTTPError(c, http.StatusBadRequest, "bad host", nil)
		return false
	}

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	out := req.WithContext(ctx)
	out.RequestURI = ""
	out.Close = false
	removeHopByHop(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // keep net/http from adding its own
	}
	var body *requestBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &requestBody{r: req.Body}
		out.Body = body
		if req.ProtoAtLeast(1, 1) && strings.EqualFold(out.Header.Get("Expect"), "100-continue") {
			out.Header.Del("Expect")
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return false
			}
		}
	}

	var stopWatch func()
	if body == nil {
		stopWatch = watchClient(c, br, !req.ProtoAtLeast(1, 1) || req.Close, cancel)
	}
	resp, err := s.transport.RoundTrip(out)
	if stopWatch != nil {
		stopWatch()
	}
	if err != nil {
		if s.isClosed() {
			log.Debug("inbound: HTTP request aborted by close", "dst", dst.String())
			return false
		}
		if ctx.Err() != nil {
			log.Debug("inbound: HTTP client left before the response", "dst", dst.String())
			return false
		}
		log.Info("inbound: HTTP request failed", "dst", dst.String(), "err", err)
		code, msg := http.StatusBadGateway, err.Error()
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			msg = "the destination closed the connection without a complete answer"
		case errors.As(err, &ne) && ne.Timeout():
			code = http.StatusGatewayTimeout
		}
		s.writeHTTPError(c, code, msg, nil)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 1 {
		// Only 101 reaches here, and Upgrade was removed from the request.
		log.Info("inbound: unexpected informational response", "dst", dst.String(), "status", resp.Status)
		s.writeHTTPError(c, http.StatusBadGateway, "unexpected "+resp.Status, nil)
		return false
	}
	removeHopByHop(resp.Header)
	keepAlive := req.ProtoAtLeast(1, 1) && !req.Close
	keepAlive, err = writeResponse(c, resp, req, keepAlive)
	if err != nil {
		log.Debug("inbound: HTTP response", "dst", dst.String(), "err", err)
		return false
	}
	log.Debug("inbound: HTTP", "method", req.Method, "dst", dst.String(), "status", resp.StatusCode)
	// A body the upstream did not read to the end is still on the wire ahead
	// of the next request (and may still be read by the transport).
	return keepAlive && (body == nil || body.eof.Load())
}

// skipEmptyLines drops up to two empty lines in front of a request line, as
// RFC 9112 section 2.2 asks (a client may send a CRLF after a body).
func skipEmptyLines(br *bufio.Reader) {
	for range 4 {
		b, err := br.Peek(1)
		if err != nil || (b[0] != '\r' && b[0] != '\n') {
			return
		}
		br.Discard(1)
	}
}

// watchClient reads ahead on the client's connection while the upstream
// prepares its answer to a request without a body, and calls cancel when
// the client leaves: a reset, or the end of its input, unless it may have
// only shut down its sending side (an HTTP/1.0 or "Connection: close"
// request, mayHalfClose), as nc -N does. Otherwise nothing would notice a
// departed client until the upstream answered, if ever. Data the client
// sends meanwhile (its next request) stays in br. stop ends the watch.
func watchClient(c net.Conn, br *bufio.Reader, mayHalfClose bool, cancel func()) (stop func()) {
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		_, err := br.Peek(1)
		if err == nil || stopping.Load() || (err == io.EOF && mayHalfClose) {
			return
		}
		cancel()
	}()
	return func() {
		stopping.Store(true)
		c.SetReadDeadline(time.Unix(1, 0)) // ends the Peek
		<-done
		c.SetReadDeadline(time.Time{})
	}
}

// urlAddr returns the destination of an absolute-form request, port 80 by
// default.
func urlAddr(req *http.Request) (wire.Addr, error) {
	host := req.URL.Hostname()
	port := uint16(80)
	if p := req.URL.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return wire.Addr{}, fmt.Errorf("%w: bad port %q", wire.ErrInvalidAddr, p)
		}
		port = uint16(n)
	}
	return wire.MakeAddr(host, port)
}

// requestBody hands a client's request body to the transport. It records
// whether the body was read to its end: only then may the connection's reader
// be used for the next request. It never closes the underlying body, whose
// Close would drain it from the connection concurrently.
type requestBody struct {
	r   io.Reader
	eof atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.eof.Load() {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }

// removeHopByHop deletes the headers that concern one connection only,
// including those named by Connection.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range [...]string{
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	} {
		h.Del(k)
	}
}

// writeResponse writes resp to the client in HTTP/1.1, framing the body
// itself: Content-Length when known, chunked for HTTP/1.1 clients otherwise,
// else until close. The body is streamed, each read written at once. It
// reports whether the connection can stay open.
func writeResponse(w io.Writer, resp *http.Response, req *http.Request, keepAlive bool) (bool, error) {
	h := resp.Header
	bodyless := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified
	chunked := false
	switch {
	case bodyless:
		// Content-Length, if any, describes the entity; keep it.
	case resp.ContentLength >= 0:
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	case req.ProtoAtLeast(1, 1):
		h.Del("Content-Length")
		h.Set("Transfer-Encoding", "chunked")
		chunked = true
		if len(resp.Trailer) > 0 {
			keys := make([]string, 0, len(resp.Trailer))
			for k := range resp.Trailer {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			h.Set("Trailer", strings.Join(keys, ", "))
		}
	default:
		h.Del("Content-Length")
		keepAlive = false
	}
	if !keepAlive {
		h.Set("Connection", "close")
	}
	text := strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)+" ")
	if text == "" {
		text = http.StatusText(resp.StatusCode)
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, text)
	if err := h.Write(bw); err != nil {
		return false, err
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return false, err
	}

	switch {
	case bodyless:
		return keepAlive, nil
	case resp.ContentLength >= 0:
		if _, err := io.CopyN(w, resp.Body, resp.ContentLength); err != nil {
			return false, err
		}
		return keepAlive, nil
	case chunked:
		cw := httputil.NewChunkedWriter(w)
		if _, err := io.Copy(cw, resp.Body); err != nil {
			return false, err
		}
		if err := cw.Close(); err != nil { // the last chunk, "0\r\n"
			return false, err
		}
		if err := resp.Trailer.Write(bw); err != nil {
			return false, err
		}
		bw.WriteString("\r\n")
		if err := bw.Flush(); err != nil {
			return false, err
		}
		return keepAlive, nil
	default:
		_, err := io.Copy(w, resp.Body)
		return false, err
	}
}

// writeHTTPError writes a short text/plain error response that closes the
// connection.
func (s *Server) writeHTTPError(c net.Conn, code int, msg string, hdr http.Header) {
	body := msg + "\n"
	h := http.Header{}
	for k, v := range hdr {
		h[k] = v
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.WriteString(body)
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	_, _ = io.WriteString(c, b.String())
}

// newTransport returns the transport of plain requests: every connection is
// dialled through the Dialer and registered with the server.
func (s *Server) newTransport() *http.Transport {
	return &http.Transport{
		DialContext:         s.transportDial,
		DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     transportIdleTimeout,
	}
}

func (s *Server) transportDial(ctx context.Context, _, addr string) (net.Conn, error) {
	dst, err := wire.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the transport may dial in the background
	defer stop()
	remote, release, err := s.dial(ctx, dst)
	if err != nil {
		return nil, err
	}
	return &releaseConn{Conn: remote, release: release}, nil
}

// releaseConn unregisters a transport connection from the server when the
// transport closes it.
type releaseConn struct {
	net.Conn
	release func() error
	closed  atomic.Bool
}

func (c *releaseConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	return c.release()
}
