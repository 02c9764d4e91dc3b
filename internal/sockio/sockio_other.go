//go:build !unix

package sockio

import "io"

// A Reader has no way below the net package here: NewReader reports false.
type Reader struct{}

// NewReader reports that no Reader works here.
func NewReader(io.Reader) (Reader, bool) { return Reader{}, false }

// Wait is not available here.
func (*Reader) Wait() error { return ErrWouldBlock }

// TryRead is not available here.
func (*Reader) TryRead([]byte) (int, error) { return 0, ErrWouldBlock }

// NewTryWriter is not available here: nil means writes may block.
func NewTryWriter(io.Writer) TryWriter { return nil }
