package wire

import (
	"fmt"
	"strings"
	"testing"
)

func TestSettingsAppend(t *testing.T) {
	tests := []struct {
		s    Settings
		want string
	}{
		{nil, ""},
		{Settings{}, ""},
		{Settings{{"v", "2"}}, "v=2"},
		{
			Settings{{KeyVersion, "2"}, {KeyClient, "anytls-suite/0.1.0"}, {KeyPaddingMD5, "75cff2ad89aadf5e257059ee571ebe11"}},
			"v=2\nclient=anytls-suite/0.1.0\npadding-md5=75cff2ad89aadf5e257059ee571ebe11",
		},
		{Settings{{"b", "1"}, {"a", "2"}, {"b", "3"}}, "b=1\na=2\nb=3"}, // order kept, no sorting
		{Settings{{"", ""}}, "="},
		{Settings{{"k", "a=b"}}, "k=a=b"},
	}
	for _, tt := range tests {
		got := string(tt.s.Append([]byte("X:")))
		if got != "X:"+tt.want {
			t.Errorf("%v.Append = %q, want %q", tt.s, got, "X:"+tt.want)
		}
		if strings.HasSuffix(got, "\n") {
			t.Errorf("%v.Append has a trailing newline", tt.s)
		}
	}
}

func TestParseSettings(t *testing.T) {
	tests := []struct {
		in   string
		want Settings
	}{
		{"", nil},
		{"\n", nil},
		{"\n\n\n", nil},
		{"v=2", Settings{{"v", "2"}}},
		{"v=2\n", Settings{{"v", "2"}}},
		{"v=2\n\n", Settings{{"v", "2"}}},
		{"\nv=2", Settings{{"v", "2"}}},
		{"noequals", nil},
		{"noequals\nv=2\nalso none\nclient=x/1", Settings{{"v", "2"}, {"client", "x/1"}}},
		{"k=a=b=c", Settings{{"k", "a=b=c"}}},
		{"=value", Settings{{"", "value"}}},
		{"key=", Settings{{"key", ""}}},
		{"=", Settings{{"", ""}}},
		{"v=2\nv=1", Settings{{"v", "2"}, {"v", "1"}}},
		{" v = 2 ", Settings{{" v ", " 2 "}}}, // no trimming
		{"v=2\r\nclient=x", Settings{{"v", "2\r"}, {"client", "x"}}},
		{
			"v=2\nclient=anytls-suite/0.1.0\npadding-md5=75cff2ad89aadf5e257059ee571ebe11",
			Settings{{"v", "2"}, {"client", "anytls-suite/0.1.0"}, {"padding-md5", "75cff2ad89aadf5e257059ee571ebe11"}},
		},
	}
	for _, tt := range tests {
		got := ParseSettings([]byte(tt.in))
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("ParseSettings(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseSettingsCopies(t *testing.T) {
	b := []byte("k=v")
	s := ParseSettings(b)
	b[0], b[2] = 'X', 'Y'
	if s[0].Key != "k" || s[0].Value != "v" {
		t.Fatalf("settings alias the input: %q", s)
	}
}

func TestParseSettingsLimit(t *testing.T) {
	var sb strings.Builder
	for i := 0; i < MaxSettingsLines+50; i++ {
		fmt.Fprintf(&sb, "k%d=%d\n", i, i)
	}
	s := ParseSettings([]byte(sb.String()))
	if len(s) != MaxSettingsLines {
		t.Fatalf("kept %d lines, want %d", len(s), MaxSettingsLines)
	}
	if s[MaxSettingsLines-1].Key != fmt.Sprintf("k%d", MaxSettingsLines-1) {
		t.Fatalf("last kept line %q", s[MaxSettingsLines-1])
	}
}

func TestSettingsGet(t *testing.T) {
	s := ParseSettings([]byte("a=1\nb=\na=2"))
	if v, ok := s.Get("a"); !ok || v != "2" {
		t.Errorf("Get(a) = %q, %v; want the last value 2, as sing-anytls reads it", v, ok)
	}
	if v, ok := s.Get("b"); !ok || v != "" {
		t.Errorf("Get(b) = %q, %v", v, ok)
	}
	if v, ok := s.Get("c"); ok || v != "" {
		t.Errorf("Get(c) = %q, %v", v, ok)
	}
	var empty Settings
	if _, ok := empty.Get("a"); ok {
		t.Error("Get on nil settings found a key")
	}
}

func TestSettingsVersion(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"v=2", 2},
		{"v=1", 1},
		{"", 1},
		{"client=x", 1},
		{"v=abc", 1},
		{"v=0", 1},
		{"v=99999", 99999},
		{"v=", 1},
		{"v=-2", 1},
		{"v=+2", 2}, // strconv.Atoi, as sing-anytls
		{"v= 2", 1},
		{"v=2 ", 1},
		{"v=2.0", 1},
		{"v=3", 3},
		{"v=9999", 9999},
		{"v=0002", 2},
		{"client=x\nv=2", 2},
		{"v=2\nv=1", 1}, // the last wins, as in sing-anytls
		{"v=1\nv=2", 2},
		{"v=99999999999999999999", 1},
		{"V=2", 1}, // keys are case-sensitive
	}
	for _, tt := range tests {
		if got := ParseSettings([]byte(tt.in)).Version(); got != tt.want {
			t.Errorf("Version(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add([]byte("v=2\nclient=anytls-suite/0.1.0\npadding-md5=75cff2ad89aadf5e257059ee571ebe11"))
	f.Add([]byte("v=2"))
	f.Add([]byte(""))
	f.Add([]byte("\n\n=\n==\nx"))
	f.Add([]byte("v=2\r\nk=a=b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := ParseSettings(b)
		if len(s) > MaxSettingsLines {
			t.Fatalf("%d lines", len(s))
		}
		for _, kv := range s {
			if strings.Contains(kv.Key, "=") || strings.Contains(kv.Key, "\n") || strings.Contains(kv.Value, "\n") {
				t.Fatalf("bad setting %q", kv)
			}
		}
		enc := s.Append(nil)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding is longer (%d) than the input (%d)", len(enc), len(b))
		}
		if len(enc) > 0 && enc[len(enc)-1] == '\n' {
			t.Fatalf("trailing newline in %q", enc)
		}
		s2 := ParseSettings(enc)
		if len(s2) != len(s) {
			t.Fatalf("re-parse gave %d settings, want %d", len(s2), len(s))
		}
		for i := range s {
			if s[i] != s2[i] {
				t.Fatalf("setting %d: %q != %q", i, s2[i], s[i])
			}
		}
		if s.Version() != s2.Version() {
			t.Fatalf("Version changed")
		}
		if v := s.Version(); v < 1 {
			t.Fatalf("Version() = %d", v)
		}
	})
}
