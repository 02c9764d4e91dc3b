//go:build !unix

package main

import "time"

// cpuTime is not measured on this system.
func cpuTime() time.Duration { return 0 }

// residentBytes is not measured on this system.
func residentBytes() int64 { return 0 }

// machineBusy is not known on this system.
func machineBusy() (time.Duration, bool) { return 0, false }
