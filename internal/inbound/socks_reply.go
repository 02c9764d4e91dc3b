package inbound

import (
	"errors"
	"net"
	"strconv"
	"syscall"
)

// SOCKS5 reply codes (RFC 1928 section 6, the REP field).
const (
	SOCKSReplySucceeded           byte = 0x00
	SOCKSReplyGeneralFailure      byte = 0x01
	SOCKSReplyNotAllowed          byte = 0x02
	SOCKSReplyNetworkUnreachable  byte = 0x03
	SOCKSReplyHostUnreachable     byte = 0x04
	SOCKSReplyConnectionRefused   byte = 0x05
	SOCKSReplyTTLExpired          byte = 0x06
	SOCKSReplyCommandNotSupported byte = 0x07
	SOCKSReplyAddressNotSupported byte = 0x08
)

// SOCKSReplyCode maps a dial error to the SOCKS5 reply code sent to the
// client:
//
//   - an error in the chain with a method SOCKSReply() byte: that code, so a
//     Dialer can choose the code itself;
//   - connection refused: 0x05;
//   - network unreachable: 0x03;
//   - host unreachable, DNS failures (*net.DNSError) and timeouts
//     (net.Error with Timeout() true, context.DeadlineExceeded): 0x04;
//   - nil: 0x00; anything else: 0x01 general failure.
func SOCKSReplyCode(err error) byte {
	if err == nil {
		return SOCKSReplySucceeded
	}
	var r interface{ SOCKSReply() byte }
	if errors.As(err, &r) {
		return r.SOCKSReply()
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return SOCKSReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return SOCKSReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return SOCKSReplyHostUnreachable
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return SOCKSReplyHostUnreachable
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return SOCKSReplyHostUnreachable
	}
	return SOCKSReplyGeneralFailure
}

// socksReplyName names a reply code for logs.
func socksReplyName(code byte) string {
	switch code {
	case SOCKSReplySucceeded:
		return "succeeded"
	case SOCKSReplyGeneralFailure:
		return "general failure"
	case SOCKSReplyNotAllowed:
		return "not allowed by ruleset"
	case SOCKSReplyNetworkUnreachable:
		return "network unreachable"
	case SOCKSReplyHostUnreachable:
		return "host unreachable"
	case SOCKSReplyConnectionRefused:
		return "connection refused"
	case SOCKSReplyTTLExpired:
		return "TTL expired"
	case SOCKSReplyCommandNotSupported:
		return "command not supported"
	case SOCKSReplyAddressNotSupported:
		return "address type not supported"
	}
	return "reply 0x" + strconv.FormatUint(uint64(code), 16)
}
