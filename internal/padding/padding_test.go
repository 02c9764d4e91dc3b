package padding

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const defaultMD5 = "75cff2ad89aadf5e257059ee571ebe11"

func TestDefault(t *testing.T) {
	s := Default()
	if got := s.MD5(); got != defaultMD5 {
		t.Errorf("Default().MD5() = %s, want %s", got, defaultMD5)
	}
	sum := md5.Sum([]byte(DefaultText))
	if hex.EncodeToString(sum[:]) != defaultMD5 {
		t.Errorf("md5(DefaultText) = %x", sum)
	}
	if s.Stop() != 8 {
		t.Errorf("Stop() = %d, want 8", s.Stop())
	}
	if !bytes.Equal(s.Raw(), []byte(DefaultText)) {
		t.Errorf("Raw() differs from DefaultText")
	}
	if got := s.AuthPadding(); got != 30 {
		t.Errorf("AuthPadding() = %d, want 30", got)
	}
	want := [][]Part{
		{{Min: 30, Max: 30}},
		{{Min: 100, Max: 400}},
		{{Min: 400, Max: 500}, {Check: true}, {Min: 500, Max: 1000}, {Check: true}, {Min: 500, Max: 1000},
			{Check: true}, {Min: 500, Max: 1000}, {Check: true}, {Min: 500, Max: 1000}},
		{{Min: 9, Max: 9}, {Min: 500, Max: 1000}},
		{{Min: 500, Max: 1000}},
		{{Min: 500, Max: 1000}},
		{{Min: 500, Max: 1000}},
		{{Min: 500, Max: 1000}},
	}
	for i, w := range want {
		if got := s.Line(i); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("Line(%d) = %v, want %v", i, got, w)
		}
	}
	for _, i := range []int{-1, 8, 9, 1000} {
		if got := s.Line(i); got != nil {
			t.Errorf("Line(%d) = %v, want nil", i, got)
		}
	}
}

func TestDefaultShared(t *testing.T) {
	a, b := Default(), Default()
	if a != b {
		t.Fatal("Default parsed the scheme again: every session would hold its own copy")
	}
	if a.MD5() != "75cff2ad89aadf5e257059ee571ebe11" {
		t.Fatalf("md5 = %s", a.MD5())
	}
}

func TestParseRawIsCopied(t *testing.T) {
	in := []byte("stop=1\n0=5-5")
	s, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	in[5] = '9'
	if string(s.Raw()) != "stop=1\n0=5-5" {
		t.Fatalf("Raw aliases the input: %q", s.Raw())
	}
	sum := md5.Sum([]byte("stop=1\n0=5-5"))
	if s.MD5() != hex.EncodeToString(sum[:]) {
		t.Fatalf("MD5 = %s", s.MD5())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line int // 0: the message must not name a line
	}{
		{"missing stop", "0=30-30\n1=100-400", 0},
		{"empty", "", 0},
		{"stop letters", "stop=x", 1},
		{"stop empty", "0=1-2\nstop=", 2},
		{"stop negative", "stop=-1", 1},
		{"stop too big", "stop=1025", 1},
		{"stop float", "\n\nstop=1.5", 3},
		{"stop space", "stop= 8", 1},
		{"letters", "stop=2\n0=a-b", 2},
		{"half letters", "stop=2\n0=1-b", 2},
		{"zero min", "stop=2\n1=0-5", 2},
		{"reversed with zero", "stop=2\n1=5-0", 2},
		{"reversed too large", "stop=2\n1=70000-5", 2},
		{"too large", "stop=2\n1=70000-70001", 2},
		{"max too large", "stop=2\n1=1-65536", 2},
		{"negative", "stop=2\n1=-5-5", 2},
		{"trailing comma", "stop=3\n0=30-30\n1=100-400\n2=400-500,", 4},
		{"trailing comma after c", "stop=3\n2=400-500,c,", 2},
		{"leading comma", "stop=3\n2=,400-500", 2},
		{"double comma", "stop=3\n2=400-500,,500-600", 2},
		{"empty value", "stop=3\n0=", 2},
		{"single number", "stop=3\n0=30", 2},
		{"three numbers", "stop=3\n0=1-2-3", 2},
		{"capital C", "stop=3\n0=1-2,C", 2},
		{"write number too big", "stop=2\n1024=1-2", 2},
		{"bad line after stop", "0=30-30\nstop=8\n\n\n5=x", 5},
		{"CRLF", "stop=8\r\n0=30-30", 1},
	}
	for _, tt := range tests {
		s, err := Parse([]byte(tt.in))
		if err == nil {
			t.Errorf("%s: Parse(%q) succeeded: stop=%d", tt.name, tt.in, s.Stop())
			continue
		}
		if s != nil {
			t.Errorf("%s: non-nil scheme with error", tt.name)
		}
		if !errors.Is(err, ErrScheme) {
			t.Errorf("%s: error %v does not wrap ErrScheme", tt.name, err)
		}
		msg := err.Error()
		if tt.line > 0 && !strings.Contains(msg, fmt.Sprintf("line %d", tt.line)) {
			t.Errorf("%s: error %q does not name line %d", tt.name, msg, tt.line)
		}
		if tt.line == 0 && strings.Contains(msg, "line ") && !strings.Contains(msg, "stop=N line") {
			t.Errorf("%s: error %q names a line", tt.name, msg)
		}
	}
}

func TestParseTolerated(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		stop  int
		lines map[int]string // fmt.Sprint of Line(i)
	}{
		{"unknown keys", "stop=2\nfoo=bar\nx-y=1-2\n0=5-5\nversion=3", 2, map[int]string{0: "[{5 5 false}]", 1: "[]"}},
		{"no equals", "hello\nstop=1\nworld\n0=5-5", 1, map[int]string{0: "[{5 5 false}]"}},
		{"non-canonical number keys are not write numbers", "stop=3\n01=1-1\n+1=2-2\n-1=3-3\n 1=4-4", 3, map[int]string{1: "[]"}},
		{"line beyond stop", "stop=2\n0=1-1\n1=2-2\n2=3-3\n100=4-4", 2, map[int]string{0: "[{1 1 false}]", 1: "[{2 2 false}]", 2: "[]"}},
		{"stop zero", "stop=0\n0=1-1", 0, map[int]string{0: "[]"}},
		{"stop max", "stop=1024\n1023=1-1", 1024, map[int]string{1023: "[{1 1 false}]", 1024: "[]"}},
		{"last duplicate wins", "stop=1\n0=1-1\n0=2-2", 1, map[int]string{0: "[{2 2 false}]"}},
		{"last stop wins", "stop=1\nstop=3\n2=1-1", 3, map[int]string{2: "[{1 1 false}]"}},
		{"only check", "stop=1\n0=c", 1, map[int]string{0: "[{0 0 true}]"}},
		{"extreme bounds", "stop=1\n0=1-65535", 1, map[int]string{0: "[{1 65535 false}]"}},
		{"trailing newline", "stop=1\n0=3-4\n", 1, map[int]string{0: "[{3 4 false}]"}},
		// sing-anytls swaps a range written high-low; a server may push one
		{"reversed range", "stop=2\n0=30-30\n1=500-100,c", 2, map[int]string{1: "[{100 500 false} {0 0 true}]"}},
	}
	for _, tt := range tests {
		s, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if s.Stop() != tt.stop {
			t.Errorf("%s: Stop() = %d, want %d", tt.name, s.Stop(), tt.stop)
		}
		for i, want := range tt.lines {
			if got := fmt.Sprint(s.Line(i)); got != want {
				t.Errorf("%s: Line(%d) = %s, want %s", tt.name, i, got, want)
			}
		}
		if s.MD5() != fmt.Sprintf("%x", md5.Sum([]byte(tt.in))) {
			t.Errorf("%s: MD5 not of the raw text", tt.name)
		}
	}
}

func TestSizesDefault(t *testing.T) {
	s := Default()
	const draws = 2000
	seen := map[[2]int]map[int]bool{} // (line, position) -> values seen
	for n := 0; n < draws; n++ {
		for i := 0; i < s.Stop(); i++ {
			sizes := s.Sizes(nil, i)
			line := s.Line(i)
			if len(sizes) != len(line) {
				t.Fatalf("line %d: %d sizes for %d parts", i, len(sizes), len(line))
			}
			for j, p := range line {
				v := sizes[j]
				switch {
				case p.Check:
					if v != CheckMark {
						t.Fatalf("line %d pos %d: %d, want CheckMark", i, j, v)
					}
				case p.Min == p.Max:
					if v != p.Min {
						t.Fatalf("line %d pos %d: %d, want %d", i, j, v, p.Min)
					}
				default:
					if v < p.Min || v >= p.Max {
						t.Fatalf("line %d pos %d: %d outside [%d, %d)", i, j, v, p.Min, p.Max)
					}
				}
				k := [2]int{i, j}
				if seen[k] == nil {
					seen[k] = map[int]bool{}
				}
				seen[k][v] = true
			}
		}
	}
	// Line 2 positions 1, 3, 5, 7 are check marks, line 3 starts with exactly 9.
	got := s.Sizes(nil, 2)
	for j, v := range got {
		if (v == CheckMark) != (j%2 == 1) {
			t.Errorf("Sizes(2) = %v: check marks misplaced", got)
			break
		}
	}
	if got := s.Sizes(nil, 3); got[0] != 9 {
		t.Errorf("Sizes(3) = %v, want 9 first", got)
	}
	if got := s.Sizes(nil, 0); len(got) != 1 || got[0] != 30 {
		t.Errorf("Sizes(0) = %v, want [30]", got)
	}
	// Sanity that the draws are random: 100-400 over 2000 draws has many values.
	if n := len(seen[[2]int{1, 0}]); n < 100 {
		t.Errorf("line 1 drew only %d distinct sizes in %d draws", n, draws)
	}
}

func TestSizesSmallRange(t *testing.T) {
	s, err := Parse([]byte("stop=3\n0=5-6\n1=7-7,c,1-2\n2=c,c"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 500; n++ {
		if got := s.Sizes(nil, 0); len(got) != 1 || got[0] != 5 {
			t.Fatalf("Sizes(0) of 5-6 = %v, want [5] (max excluded)", got)
		}
		if got := fmt.Sprint(s.Sizes(nil, 1)); got != "[7 -1 1]" {
			t.Fatalf("Sizes(1) = %s", got)
		}
		if got := fmt.Sprint(s.Sizes(nil, 2)); got != "[-1 -1]" {
			t.Fatalf("Sizes(2) = %s", got)
		}
	}
	// AuthPadding skips check marks and draws from [min, max).
	s2, err := Parse([]byte("stop=1\n0=c,10-11,99-99"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 100; n++ {
		if got := s2.AuthPadding(); got != 10 {
			t.Fatalf("AuthPadding = %d, want 10", got)
		}
	}
}

func TestSizesAppendsAndMissing(t *testing.T) {
	s, err := Parse([]byte("stop=4\n0=1-1\n2=2-2"))
	if err != nil {
		t.Fatal(err)
	}
	dst := []int{42}
	if got := s.Sizes(dst, 0); fmt.Sprint(got) != "[42 1]" {
		t.Errorf("Sizes appended %v", got)
	}
	for _, i := range []int{1, 3, 4, 5, 100, -1} {
		got := s.Sizes(dst, i)
		if len(got) != 1 || got[0] != 42 {
			t.Errorf("Sizes(%d) = %v, want dst unchanged", i, got)
		}
	}
	if s.Line(1) != nil {
		t.Errorf("missing line 1 = %v, want nil", s.Line(1))
	}
}

func TestLineBeyondStop(t *testing.T) {
	s, err := Parse([]byte("stop=1\n0=5-5\n1=6-6\n2=c"))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if got := s.Sizes(nil, i); len(got) != 0 {
			t.Errorf("Sizes(%d) beyond stop = %v, want nothing", i, got)
		}
	}
}

func TestAuthPadding(t *testing.T) {
	tests := []struct {
		in       string
		min, max int // inclusive bounds of the result
	}{
		{DefaultText, 30, 30},
		{"stop=1\n0=100-200", 100, 199},
		{"stop=1", 0, 0},
		{"stop=0\n0=30-30", 30, 30}, // line 0 counts whatever stop says, as for sing-anytls
		{"stop=1\n0=c", 0, 0},
		{"stop=2\n1=5-5", 0, 0},
	}
	for _, tt := range tests {
		s, err := Parse([]byte(tt.in))
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		for n := 0; n < 200; n++ {
			if got := s.AuthPadding(); got < tt.min || got > tt.max {
				t.Fatalf("%q: AuthPadding = %d, want within [%d, %d]", tt.in, got, tt.min, tt.max)
			}
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"stop=1\r\n0=5-5\r\n", "stop=1\n0=5-5"},
		{"\n\n  stop=1\n0=5-5\n\n\t ", "stop=1\n0=5-5"},
		{"\ufeffstop=1", "\ufeffstop=1"}, // a BOM is not white space: kept, and then the stop line is unknown
		{"", ""},
		{"\r\n", ""},
		{DefaultText + "\n", DefaultText},
		{strings.ReplaceAll(DefaultText, "\n", "\r\n") + "\r\n", DefaultText},
	}
	for _, tt := range tests {
		if got := string(Normalize([]byte(tt.in))); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// The CRLF default normalizes to the default md5.
	s, err := Parse(Normalize([]byte(strings.ReplaceAll(DefaultText, "\n", "\r\n") + "\r\n")))
	if err != nil || s.MD5() != defaultMD5 {
		t.Fatalf("normalized CRLF default: %v, %v", s, err)
	}
}

func FuzzPaddingParse(f *testing.F) {
	f.Add([]byte(DefaultText))
	f.Add([]byte("stop=1\n0=5-6"))
	f.Add([]byte("stop=3\n0=c\n1=1-65535,c,c\n2=9-9"))
	f.Add([]byte("stop=0"))
	f.Add([]byte("stop=1024\n1023=1-1"))
	f.Add([]byte("stop=2\n1=5-3"))
	f.Add([]byte("stop=2\n1=1-2,"))
	f.Add([]byte("0=30-30"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		lenient, lerr := ParseLenient(raw)
		s, err := Parse(raw)
		if err == nil && (lerr != nil || lenient.Stop() != s.Stop()) {
			t.Fatalf("the lenient parser disagrees with the strict one: %v", lerr)
		}
		for i := 0; err == nil && i < s.Stop(); i++ {
			if !slices.Equal(lenient.Line(i), s.Line(i)) {
				t.Fatalf("line %d: lenient %v, strict %v", i, lenient.Line(i), s.Line(i))
			}
		}
		if lerr == nil {
			for i := 0; i < lenient.Stop(); i++ {
				for _, p := range lenient.Line(i) {
					if !p.Check && (p.Min < 1 || p.Max > MaxSize || p.Min > p.Max) {
						t.Fatalf("lenient line %d has part %+v", i, p)
					}
				}
			}
		}
		if err != nil {
			if s != nil || !errors.Is(err, ErrScheme) {
				t.Fatalf("error %v does not wrap ErrScheme (scheme %v)", err, s)
			}
			return
		}
		sum := md5.Sum(raw)
		if s.MD5() != hex.EncodeToString(sum[:]) {
			t.Fatalf("MD5 %s != md5 of input", s.MD5())
		}
		if !bytes.Equal(s.Raw(), raw) {
			t.Fatal("Raw differs from input")
		}
		if s.Stop() < 0 || s.Stop() > MaxStop {
			t.Fatalf("Stop() = %d", s.Stop())
		}
		var buf []int
		for i := 0; i < s.Stop(); i++ {
			line := s.Line(i)
			buf = s.Sizes(buf[:0], i)
			if len(buf) != len(line) {
				t.Fatalf("line %d: %d sizes for %d parts", i, len(buf), len(line))
			}
			for j, p := range line {
				v := buf[j]
				if p.Check {
					if v != CheckMark {
						t.Fatalf("line %d pos %d: %d for a check mark", i, j, v)
					}
					continue
				}
				if p.Min < 1 || p.Max > MaxSize || p.Min > p.Max {
					t.Fatalf("line %d pos %d: bad part %+v", i, j, p)
				}
				if v < p.Min || v > p.Max || (p.Min < p.Max && v == p.Max) {
					t.Fatalf("line %d pos %d: size %d outside %+v", i, j, v, p)
				}
			}
		}
		if s.Line(s.Stop()) != nil || len(s.Sizes(nil, s.Stop())) != 0 {
			t.Fatal("line at stop is not empty")
		}
		if a := s.AuthPadding(); a < 0 || a > MaxSize {
			t.Fatalf("AuthPadding = %d", a)
		}
		// Normalizing and re-parsing an accepted scheme never panics.
		_, _ = Parse(Normalize(raw))
	})
}

// ParseLenient reads what a sing-anytls client reads from a pushed scheme:
// it skips the items it cannot read, and fails only without a stop.
func TestParseLenient(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
		want []Part
	}{
		{"stop=3\n1=100-400,", 1, []Part{{Min: 100, Max: 400}}},
		{"stop=3\n1=100-400,x,c", 1, []Part{{Min: 100, Max: 400}, {Check: true}}},
		{"stop=3\n1=", 1, []Part{}},
		{"stop=3\n1=0-10,100-400", 1, []Part{{Min: 100, Max: 400}}},
		{"stop=3\n1=500-70000", 1, []Part{{Min: 500, Max: MaxSize}}},
		{"stop=3\n1=1-2-3,7-7", 1, []Part{{Min: 7, Max: 7}}},
		{"stop=2000\n1=5-5\n1500=9-9", 1, []Part{{Min: 5, Max: 5}}},
	} {
		if _, err := Parse([]byte(tc.text)); err == nil {
			t.Errorf("%q: the strict parser accepts it; pick a case it refuses", tc.text)
		}
		s, err := ParseLenient([]byte(tc.text))
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		if got := s.Line(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("%q: line %d = %v, want %v", tc.text, tc.line, got, tc.want)
		}
		if s.MD5() != fmt.Sprintf("%x", md5.Sum([]byte(tc.text))) {
			t.Errorf("%q: md5 not of the raw text", tc.text)
		}
	}
	if s, err := ParseLenient([]byte("stop=2000\n1=5-5")); err != nil || s.Stop() != MaxStop {
		t.Errorf("stop=2000: %v, %v; want it cut to %d", s, err, MaxStop)
	}
	for _, text := range []string{"1=5-5", "stop=x\n1=5-5", "stop=-1"} {
		if _, err := ParseLenient([]byte(text)); err == nil {
			t.Errorf("%q: accepted without a usable stop", text)
		}
	}
}
