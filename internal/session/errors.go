package session

import (
	"errors"
	"net"
	"strings"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrSessionClosed is wrapped by every error caused by the session ending:
	// a local Close, a broken connection, an Alert from the server.
	ErrSessionClosed = errors.New("anytls: session closed")
	// ErrStreamClosed is returned by operations on a stream after its own
	// Close. It wraps net.ErrClosed.
	ErrStreamClosed = &wrapErr{msg: "anytls: stream closed", err: net.ErrClosed}
	// ErrClosedByPeer is returned by Write after the peer sent FIN: the peer
	// closed the stream in both directions.
	ErrClosedByPeer = errors.New("anytls: stream closed by peer")
	// ErrBufferOverflow resets a stream whose reader fell so far behind that
	// its receive buffer hit its limit while other streams shared the session.
	ErrBufferOverflow = errors.New("anytls: stream receive buffer full, stream reset")
	// ErrTooManyStreams refuses a stream beyond the session's limit.
	ErrTooManyStreams = errors.New("anytls: too many streams on the session")
	// ErrNoAnswer is the cause of a client session that the server closed
	// before sending a single frame: most often a wrong password, or a
	// server that does not speak AnyTLS.
	ErrNoAnswer = errors.New("server closed the connection without answering (wrong password, or not an AnyTLS server?)")
	// ErrProtocol is wrapped by errors about a peer breaking the protocol.
	ErrProtocol = errors.New("anytls: protocol violation")
)

type wrapErr struct {
	msg string
	err error
}

func (e *wrapErr) Error() string { return e.msg }
func (e *wrapErr) Unwrap() error { return e.err }

// RemoteError is the error text a server reported in SYNACK: it could not
// reach the stream's destination.
type RemoteError struct {
	Text string
}

// Error returns the server's reason, prefixed.
func (e *RemoteError) Error() string { return "anytls: server reported: " + e.Text }

// SOCKSReply maps the server's reason to a SOCKS5 reply code (RFC 1928), for
// a local proxy that waits for SYNACK. The text is another program's error
// message, so this reads the usual wordings of dial errors and falls back to
// "general failure".
func (e *RemoteError) SOCKSReply() byte {
	t := strings.ToLower(e.Text)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(t, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("connection refused"):
		return 0x05
	case has("not allowed", "forbidden", "denied", "policy"):
		return 0x02
	case has("network is unreachable"):
		return 0x03
	case has("no such host", "host is unreachable", "no route to host", "timeout", "timed out", "server misbehaving"):
		return 0x04
	}
	return 0x01
}

// AlertError carries the text of an Alert frame, after which the session is
// closed.
type AlertError struct {
	Text string
}

// Error returns the server's alert text, prefixed.
func (e *AlertError) Error() string { return "anytls: alert from server: " + e.Text }

// closedError wraps a session's cause of death so that errors.Is matches both
// ErrSessionClosed and the cause.
type closedError struct {
	cause error
}

func (e *closedError) Error() string {
	if e.cause == nil {
		return ErrSessionClosed.Error()
	}
	return ErrSessionClosed.Error() + ": " + e.cause.Error()
}

func (e *closedError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrSessionClosed}
	}
	return []error{ErrSessionClosed, e.cause}
}
