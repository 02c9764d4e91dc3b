//go:build !unix

package relay

import "io"

// readWaiter is not available here: reads hold their buffer while waiting.
func readWaiter(io.Reader) func() error { return nil }
