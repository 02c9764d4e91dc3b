package session

import (
	"math/bits"
	"sync"
)

// buffer is a pooled byte slice. Its capacity is always a power of two from
// minClass to maxClass, so that Put can find its pool again.
type buffer struct {
	b []byte
}

const (
	minShift = 9  // 512 bytes
	maxShift = 16 // 64 KiB: one frame's payload always fits
	classes  = maxShift - minShift + 1
)

// allocator hands out size-classed buffers. The zero value is ready to use.
// Pools are per allocator rather than per process so that a test can count
// what one session holds; in practice one allocator serves a whole program.
type allocator struct {
	pools [classes]sync.Pool
}

func classOf(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// get returns a buffer whose b has length n (n <= 64 KiB).
func (a *allocator) get(n int) *buffer {
	c := classOf(n)
	if v := a.pools[c].Get(); v != nil {
		buf := v.(*buffer)
		buf.b = buf.b[:n]
		return buf
	}
	return &buffer{b: make([]byte, n, 1<<(c+minShift))}
}

// put returns a buffer to its pool. Buffers of a foreign size are dropped.
func (a *allocator) put(buf *buffer) {
	c := cap(buf.b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	a.pools[bits.Len(uint(c))-1-minShift].Put(buf)
}
