//go:build !unix

package sockio

import "io"

// sockReader has no way below the net package here.
type sockReader struct{}

func newSockReader(io.Reader) (sockReader, bool) { return sockReader{}, false }

func (*sockReader) wait() error { return ErrWouldBlock }

func (*sockReader) tryRead([]byte) (int, error) { return 0, ErrWouldBlock }

// ReadWaiter is not available here: nil means reads hold their buffer while
// they wait.
func ReadWaiter(io.Reader) func() error { return nil }

// NewTryWriter is not available here: nil means writes may block.
func NewTryWriter(io.Writer) TryWriter { return nil }

// NewTryReader is not available here: nil means reads may block.
func NewTryReader(io.Reader) func(p []byte) (int, error) { return nil }
