// Package anytls is an AnyTLS client and server.
//
// AnyTLS carries proxied TCP connections ("streams") over a pooled TLS
// connection ("session") and shapes the sizes of the client's first writes
// with a padding scheme that the server can push, so that the TLS handshake
// of the proxied connection does not show through. This package speaks
// protocol version 2 byte for byte with the other implementations
// (anytls-go, sing-box, mihomo) and falls back to version 1 with older peers.
//
// A client:
//
//	c, err := anytls.NewClient(anytls.ClientConfig{
//		Server:    "example.com:443",
//		Password:  "secret",
//	})
//	conn, err := c.DialContext(ctx, "tcp", "example.org:80")
//
// UDP travels as sing-box's UDP over TCP (version 2): ListenPacket returns a
// net.PacketConn, and DialContext with "udp" a connected net.Conn; a server
// relays such streams to UDP sockets.
//
// A server:
//
//	s, err := anytls.NewServer(anytls.ServerConfig{
//		Users:     []anytls.User{{Name: "alice", Password: "secret"}},
//		TLSConfig: tlsConfig,
//	})
//	err = s.Serve(listener)
package anytls

import (
	"errors"

	"github.com/anytls-suite/anytls/internal/padding"
	"github.com/anytls-suite/anytls/internal/session"
)

// Version is this implementation's version.
const Version = "0.1.0"

// DefaultClientName is what a client announces in its Settings by default.
const DefaultClientName = "anytls-suite/" + Version

// DefaultPaddingScheme is the padding scheme every AnyTLS implementation
// starts from.
const DefaultPaddingScheme = padding.DefaultText

// Errors returned by streams and sessions. Match them with errors.Is.
var (
	// ErrSessionClosed: the session carrying a stream ended (see the wrapped
	// cause).
	ErrSessionClosed = session.ErrSessionClosed
	// ErrStreamClosed: the stream was closed locally (wraps net.ErrClosed).
	ErrStreamClosed error = session.ErrStreamClosed
	// ErrClosedByPeer: a write after the peer closed the stream.
	ErrClosedByPeer = session.ErrClosedByPeer
	// ErrBufferOverflow: the stream's reader fell too far behind while other
	// streams shared its session, so it was reset.
	ErrBufferOverflow = session.ErrBufferOverflow
	// ErrNoAnswer: the server closed a new session without answering,
	// typically because the password is wrong.
	ErrNoAnswer = session.ErrNoAnswer
	// ErrProtocol: the peer broke the protocol.
	ErrProtocol = session.ErrProtocol
	// ErrSYNACKTimeout: a v2 server did not confirm the stream within
	// ClientConfig.SYNACKTimeout. Only that stream fails; the error is a
	// net.Error whose Timeout reports true.
	ErrSYNACKTimeout = session.ErrSYNACKTimeout
	// ErrHeartbeatTimeout: nothing arrived within
	// ClientConfig.HeartbeatTimeout of a probe, so the session was closed
	// (streams on it see ErrSessionClosed wrapping this cause).
	ErrHeartbeatTimeout = session.ErrHeartbeatTimeout
)

// RemoteError is returned on a stream whose destination the server could not
// reach; Text is the server's reason.
type RemoteError = session.RemoteError

// AlertError is the cause of a session closed by an Alert from the server.
type AlertError = session.AlertError

// IsRemoteError reports whether err carries a server-reported dial failure.
func IsRemoteError(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}
