// Package padding parses AnyTLS padding schemes and computes the record sizes
// that shape a client's first writes.
//
// A scheme is key=value text (the same syntax as Settings):
//
//	stop=8
//	0=30-30
//	1=100-400
//	2=400-500,c,500-1000,c,500-1000
//
// "stop=K" means writes 0..K-1 are shaped. Line i lists, for write number i,
// record sizes as ranges "a-b" and check marks "c". A Scheme is immutable once
// parsed, so one value can be shared by any number of sessions.
package padding

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
)

// DefaultText is the scheme every implementation starts from. Its md5 is
// 75cff2ad89aadf5e257059ee571ebe11.
const DefaultText = `stop=8
0=30-30
1=100-400
2=400-500,c,500-1000,c,500-1000,c,500-1000,c,500-1000
3=9-9,500-1000
4=500-1000
5=500-1000
6=500-1000
7=500-1000`

// CheckMark is the value Sizes uses for a "c" entry: stop the write here if the
// data is used up.
const CheckMark = -1

// MaxSize is the largest record size a scheme may name.
const MaxSize = 65535

// MaxStop bounds "stop"; no implementation shapes more writes than this.
const MaxStop = 1024

// ErrScheme is wrapped by every parse error.
var ErrScheme = errors.New("anytls: invalid padding scheme")

// Part is one entry of a scheme line: a size range, or a check mark.
type Part struct {
	Min, Max int  // inclusive bounds as written; Max is drawn only when Min == Max
	Check    bool // a "c" entry
}

// Scheme is a parsed, immutable padding scheme.
type Scheme struct {
	raw   []byte
	md5   string
	stop  int
	lines [][]Part // index = write number, nil when the line is missing
	auth  []Part   // line 0, kept even when stop is 0 (AuthPadding)
}

// Parse parses a scheme. Errors name the offending line. Lines without '=' are
// ignored, as are keys other than "stop" and write numbers, so that a scheme
// from a newer peer still parses. The raw text is kept as given: its md5 is
// what peers compare.
func Parse(raw []byte) (*Scheme, error) { return parse(raw, false) }

// ParseLenient parses a scheme as other AnyTLS clients read one that a
// server pushes: an item that is not a range or c is skipped (a trailing
// comma, "x", "0-10"), a range is cut to 1-MaxSize, write numbers from
// MaxStop on are ignored and stop is cut to MaxStop. Only a missing or
// unreadable stop fails. Lines keep their places: an item skipped here
// shifts nothing else.
func ParseLenient(raw []byte) (*Scheme, error) { return parse(raw, true) }

func parse(raw []byte, lenient bool) (*Scheme, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes of text, more than one frame carries (%d)", ErrScheme, len(raw), MaxSize)
	}
	s := &Scheme{raw: bytes.Clone(raw)}
	sum := md5.Sum(raw)
	s.md5 = hex.EncodeToString(sum[:])
	haveStop := false
	byNum := map[int][]Part{}
	rest := raw
	for lineNo := 1; len(rest) > 0; lineNo++ {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		eq := bytes.IndexByte(line, '=')
		if eq < 0 {
			continue
		}
		key, val := string(line[:eq]), string(line[eq+1:])
		if key == "stop" {
			n, err := strconv.Atoi(val)
			if lenient && err == nil && n > MaxStop {
				n = MaxStop
			}
			if err != nil || n < 0 || n > MaxStop {
				return nil, fmt.Errorf("%w: line %d: stop=%q is not a number from 0 to %d", ErrScheme, lineNo, val, MaxStop)
			}
			s.stop, haveStop = n, true
			continue
		}
		num, err := strconv.Atoi(key)
		if err != nil || num < 0 || strconv.Itoa(num) != key {
			continue // not a write number: tolerated for forward compatibility
		}
		if num >= MaxStop {
			if lenient {
				continue
			}
			return nil, fmt.Errorf("%w: line %d: write number %d is above %d", ErrScheme, lineNo, num, MaxStop-1)
		}
		if lenient {
			byNum[num] = parseLineLenient(val)
			continue
		}
		parts, err := parseLine(val)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d (%q): %v", ErrScheme, lineNo, line, err)
		}
		byNum[num] = parts
	}
	if !haveStop {
		return nil, fmt.Errorf("%w: no stop=N line", ErrScheme)
	}
	s.auth = byNum[0]
	s.lines = make([][]Part, s.stop)
	for num, parts := range byNum {
		if num < s.stop {
			s.lines[num] = parts
		}
	}
	return s, nil
}

func parseLine(val string) ([]Part, error) {
	var parts []Part
	for len(val) > 0 || parts == nil {
		item := val
		if i := strings.IndexByte(val, ','); i >= 0 {
			item, val = val[:i], val[i+1:]
			if val == "" {
				return nil, errors.New("trailing comma")
			}
		} else {
			val = ""
		}
		if item == "c" {
			parts = append(parts, Part{Check: true})
			continue
		}
		dash := strings.IndexByte(item, '-')
		if dash < 0 {
			return nil, fmt.Errorf("%q is neither a range a-b nor c", item)
		}
		lo, err1 := strconv.Atoi(item[:dash])
		hi, err2 := strconv.Atoi(item[dash+1:])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q is not a range of two numbers", item)
		}
		if lo > hi {
			lo, hi = hi, lo // "500-100" means 100-500, as in the reference
		}
		if lo < 1 || hi > MaxSize {
			return nil, fmt.Errorf("range %q must lie within 1-%d", item, MaxSize)
		}
		parts = append(parts, Part{Min: lo, Max: hi})
	}
	return parts, nil
}

// parseLineLenient is parseLine skipping the items it cannot read.
func parseLineLenient(val string) []Part {
	parts := []Part{}
	for _, item := range strings.Split(val, ",") {
		if item == "c" {
			parts = append(parts, Part{Check: true})
			continue
		}
		a, b, ok := strings.Cut(item, "-")
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if lo < 1 || lo > MaxSize {
			continue
		}
		parts = append(parts, Part{Min: lo, Max: min(hi, MaxSize)})
	}
	return parts
}

// Default returns the parsed default scheme. A Scheme is never modified
// after parsing, so every caller shares one.
func Default() *Scheme { return defaultScheme() }

var defaultScheme = sync.OnceValue(func() *Scheme {
	s, err := Parse([]byte(DefaultText))
	if err != nil {
		panic(err) // the constant above is known to parse
	}
	return s
})

// Raw returns the scheme text exactly as parsed. Callers must not modify it.
func (s *Scheme) Raw() []byte { return s.raw }

// MD5 returns the lowercase hex md5 of the raw text.
func (s *Scheme) MD5() string { return s.md5 }

// Stop returns the number of shaped writes.
func (s *Scheme) Stop() int { return s.stop }

// Line returns the parts of write i, or nil when the line is missing or i is
// not below Stop.
func (s *Scheme) Line(i int) []Part {
	if i < 0 || i >= len(s.lines) {
		return nil
	}
	return s.lines[i]
}

// Sizes appends to dst the record sizes for write number i, with CheckMark for
// each "c". A range a-b draws uniformly from [a, b) as the reference does
// (b itself only when a == b). It returns dst unchanged for a missing line.
func (s *Scheme) Sizes(dst []int, i int) []int {
	for _, p := range s.Line(i) {
		switch {
		case p.Check:
			dst = append(dst, CheckMark)
		case p.Min == p.Max:
			dst = append(dst, p.Min)
		default:
			dst = append(dst, p.Min+rand.IntN(p.Max-p.Min))
		}
	}
	return dst
}

// AuthPadding returns the padding0 length for the authentication preamble:
// the first size of line 0, or 0 without one.
func (s *Scheme) AuthPadding() int {
	for _, p := range s.auth {
		if p.Check {
			continue
		}
		if p.Min == p.Max {
			return p.Min
		}
		return p.Min + rand.IntN(p.Max-p.Min)
	}
	return 0
}

// Normalize turns scheme text read from a file into the form peers parse:
// CRLF becomes LF, and leading and trailing white space is removed.
func Normalize(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.TrimSpace(b)
}
