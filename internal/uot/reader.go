package uot

import (
	"bufio"
	"io"

	"github.com/anytls-suite/anytls/internal/wire"
)

// readerSize holds the longest packet the wire can express (a domain address,
// the length field and 65535 bytes), so that a whole packet can be looked at
// before any of it is consumed.
const readerSize = MaxHeaderLen + maxLength

// Reader reads a UoT stream: the request, then packets. A packet is consumed
// only once it is complete, so a read cut short by a deadline leaves the
// stream at the same packet boundary and can simply be retried. A Reader is
// not safe for concurrent use.
type Reader struct {
	br   *bufio.Reader
	skip int // size of the packet last returned, consumed by the next call
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readerSize)}
}

// peekWhole peeks the next item, whose size size() reports from a prefix.
func (r *Reader) peekWhole(size func([]byte, bool) (int, bool, error), connect bool) ([]byte, error) {
	if r.skip > 0 {
		// Peeked whole before, so buffered: Discard does no I/O.
		_, _ = r.br.Discard(r.skip)
		r.skip = 0
	}
	need := 1
	for {
		b, err := r.br.Peek(need)
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n, more, err := size(b, connect)
		if err != nil {
			return nil, err
		}
		need = n
		if !more && len(b) >= n {
			return b[:n], nil
		}
	}
}

// ReadRequest reads the version 2 request. It returns io.EOF if the stream
// ends before it, io.ErrUnexpectedEOF if it ends inside it, and an error
// wrapping ErrMalformed for an undecodable address.
func (r *Reader) ReadRequest() (Request, error) {
	b, err := r.peekWhole(requestSize, false)
	if err != nil {
		return Request{}, err
	}
	req, n, err := DecodeRequest(b)
	if err != nil {
		return Request{}, err
	}
	r.skip = n
	return req, nil
}

// Next returns the next packet: its address (the zero Addr in connect mode)
// and its payload, which stays valid until the next call. It returns io.EOF
// when the stream ends at a packet boundary and io.ErrUnexpectedEOF inside a
// packet. ErrPacketTooLarge reports a packet that was consumed and must be
// dropped: call Next again. An error wrapping ErrMalformed is final: the
// stream cannot be resynchronised. Any other error (a deadline) consumed
// nothing; Next may be called again.
func (r *Reader) Next(connect bool) (wire.Addr, []byte, error) {
	b, err := r.peekWhole(packetLen, connect)
	if err != nil {
		return wire.Addr{}, nil, err
	}
	addr, payload, n, err := DecodePacket(b, connect)
	r.skip = n
	return addr, payload, err
}

func requestSize(b []byte, _ bool) (int, bool, error) { return requestLen(b) }
