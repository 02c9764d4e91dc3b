// Package wire holds the byte layouts of the AnyTLS protocol: the frame
// header, the command set, the settings text, the authentication preamble and
// the SOCKS-style addresses used both for stream destinations and for UDP over
// TCP. Nothing here does I/O beyond reading a few bytes from an io.Reader, and
// the hot-path helpers allocate nothing.
//
// Protocol flow, after TLS:
//
//	client -> server  auth: sha256(password) [32] | padLen uint16 | padding [padLen]
//	client -> server  Settings (v=2, client=..., padding-md5=...)
//	client -> server  SYN sid=1, PSH sid=1 <destination>, PSH sid=1 <data>...
//	server -> client  ServerSettings (v=2) [+ UpdatePaddingScheme]
//	server -> client  SYNACK sid=1 (v2 only), PSH sid=1 <data>...
//	either            FIN sid=1 (closes the stream in both directions)
package wire

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Cmd is a frame command, the first byte of every frame header.
type Cmd uint8

// The eleven commands of protocol version 2. Commands 7 to 10 exist since
// version 2 and are only sent to a peer that announced v=2.
const (
	CmdWaste               Cmd = 0  // either way; data is padding, dropped
	CmdSYN                 Cmd = 1  // client -> server; opens streamId, no data
	CmdPSH                 Cmd = 2  // either way; data is stream payload
	CmdFIN                 Cmd = 3  // either way; closes streamId, no data
	CmdSettings            Cmd = 4  // client -> server; key=value lines
	CmdAlert               Cmd = 5  // server -> client; UTF-8 text, then close
	CmdUpdatePaddingScheme Cmd = 6  // server -> client; padding scheme text
	CmdSYNACK              Cmd = 7  // server -> client; empty = ok, else error text
	CmdHeartRequest        Cmd = 8  // either way; answered by HeartResponse
	CmdHeartResponse       Cmd = 9  // either way; same streamId as the request
	CmdServerSettings      Cmd = 10 // server -> client; key=value lines
)

var cmdNames = [...]string{
	CmdWaste:               "Waste",
	CmdSYN:                 "SYN",
	CmdPSH:                 "PSH",
	CmdFIN:                 "FIN",
	CmdSettings:            "Settings",
	CmdAlert:               "Alert",
	CmdUpdatePaddingScheme: "UpdatePaddingScheme",
	CmdSYNACK:              "SYNACK",
	CmdHeartRequest:        "HeartRequest",
	CmdHeartResponse:       "HeartResponse",
	CmdServerSettings:      "ServerSettings",
}

// String returns the command's protocol name, or "Cmd(N)" for an unknown one.
func (c Cmd) String() string {
	if int(c) < len(cmdNames) {
		return cmdNames[c]
	}
	return "Cmd(" + strconv.Itoa(int(c)) + ")"
}

// Known reports whether c is one of the eleven defined commands.
func (c Cmd) Known() bool { return int(c) < len(cmdNames) }

const (
	// HeaderLen is the size of a frame header:
	//
	//	cmd uint8 | streamId uint32 BE | length uint16 BE
	HeaderLen = 7
	// MaxPayload is the largest amount of data one frame can carry.
	MaxPayload = 65535
	// MaxFrameLen is the largest frame on the wire, header included.
	MaxFrameLen = HeaderLen + MaxPayload
)

// ErrPayloadTooLarge is returned when a frame's data would not fit the 16-bit
// length field. Callers split data into several frames instead.
var ErrPayloadTooLarge = errors.New("anytls: frame payload larger than 65535 bytes")

// Header is a frame header as it appears on the wire.
type Header [HeaderLen]byte

// Cmd returns the header's command.
func (h *Header) Cmd() Cmd { return Cmd(h[0]) }

// StreamID returns the header's stream id.
func (h *Header) StreamID() uint32 { return binary.BigEndian.Uint32(h[1:5]) }

// Length returns the number of data bytes that follow the header.
func (h *Header) Length() int { return int(binary.BigEndian.Uint16(h[5:7])) }

// Set fills the header. n must be at most MaxPayload; larger values are a
// programming error and panic rather than corrupt the stream.
func (h *Header) Set(cmd Cmd, sid uint32, n int) {
	if n < 0 || n > MaxPayload {
		panic(ErrPayloadTooLarge)
	}
	h[0] = byte(cmd)
	binary.BigEndian.PutUint32(h[1:5], sid)
	binary.BigEndian.PutUint16(h[5:7], uint16(n))
}

// String describes the header for logs.
func (h *Header) String() string {
	return h.Cmd().String() + " sid=" + strconv.FormatUint(uint64(h.StreamID()), 10) +
		" len=" + strconv.Itoa(h.Length())
}

// AppendHeader appends a frame header to dst. It returns ErrPayloadTooLarge if
// n does not fit the length field.
func AppendHeader(dst []byte, cmd Cmd, sid uint32, n int) ([]byte, error) {
	if n < 0 || n > MaxPayload {
		return dst, ErrPayloadTooLarge
	}
	return append(dst, byte(cmd), byte(sid>>24), byte(sid>>16), byte(sid>>8), byte(sid),
		byte(n>>8), byte(n)), nil
}

// AppendFrame appends a whole frame (header and data) to dst.
func AppendFrame(dst []byte, cmd Cmd, sid uint32, data []byte) ([]byte, error) {
	dst, err := AppendHeader(dst, cmd, sid, len(data))
	if err != nil {
		return dst, err
	}
	return append(dst, data...), nil
}

// AppendWaste appends Waste frames whose total size on the wire is exactly
// total bytes, headers included. total must be at least HeaderLen; smaller
// values append nothing. Totals above one frame are split over several.
func AppendWaste(dst []byte, total int) []byte {
	for total >= HeaderLen {
		n := total - HeaderLen
		if n > MaxPayload {
			n = MaxPayload
			// never leave a remainder too small for a header of its own
			if rest := total - HeaderLen - n; rest > 0 && rest < HeaderLen {
				n -= HeaderLen
			}
		}
		dst = append(dst, byte(CmdWaste), 0, 0, 0, 0, byte(n>>8), byte(n))
		dst = appendZeros(dst, n)
		total -= HeaderLen + n
	}
	return dst
}

func appendZeros(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		dst = dst[:len(dst)+n]
		clear(dst[len(dst)-n:])
		return dst
	}
	return append(dst, make([]byte, n)...)
}

// AuthHashLen is the size of the password hash that opens every connection.
const AuthHashLen = 32

// AuthPrefixLen is the fixed part of the authentication preamble:
//
//	sha256(password) [32] | padding0 length uint16 BE
const AuthPrefixLen = AuthHashLen + 2

// AppendAuth appends the authentication preamble: the password hash, the
// padding length and padLen zero bytes. padLen must fit in uint16.
func AppendAuth(dst []byte, hash *[AuthHashLen]byte, padLen int) ([]byte, error) {
	if padLen < 0 || padLen > MaxPayload {
		return dst, ErrPayloadTooLarge
	}
	dst = append(dst, hash[:]...)
	dst = append(dst, byte(padLen>>8), byte(padLen))
	return appendZeros(dst, padLen), nil
}
