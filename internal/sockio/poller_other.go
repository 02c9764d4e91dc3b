//go:build !linux

package sockio

type poller struct{}

// Park parks nothing on this system: it returns 0.
func (*Poller) Park(*Reader, func()) uint64 { return 0 }

// Wake does nothing on this system.
func (*Poller) Wake(uint64) {}

// WakeAll does nothing on this system.
func (*Poller) WakeAll() {}

// Wait returns at once on this system.
func (*Poller) Wait() {}

// Parked returns 0 on this system.
func (*Poller) Parked() int { return 0 }
