package wire

import (
	"bytes"
	"strconv"
)

// Settings keys used by protocol version 2.
const (
	KeyVersion    = "v"           // protocol version, "2" for this implementation
	KeyClient     = "client"      // client software name/version
	KeyPaddingMD5 = "padding-md5" // lowercase hex md5 of the client's padding scheme
)

// Setting is one key=value line of a Settings or ServerSettings frame.
type Setting struct {
	Key, Value string
}

// Settings is the decoded form of a Settings or ServerSettings frame, in wire
// order. Keys are not required to be unique; Get returns the last, as
// sing-anytls reads them.
type Settings []Setting

// MaxSettingsLines bounds how many lines ParseSettings keeps; a frame is at
// most 65535 bytes, so this only limits the work done on garbage.
const MaxSettingsLines = 256

// ParseSettings decodes key=value lines joined by '\n'. Each line is split at
// its first '='; lines without one are ignored, as are lines past
// MaxSettingsLines. It never fails: the text is advisory.
func ParseSettings(b []byte) Settings {
	var s Settings
	for len(b) > 0 && len(s) < MaxSettingsLines {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if i := bytes.IndexByte(line, '='); i >= 0 {
			s = append(s, Setting{Key: string(line[:i]), Value: string(line[i+1:])})
		}
	}
	return s
}

// Get returns the value of the last line with key k.
func (s Settings) Get(k string) (string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].Key == k {
			return s[i].Value, true
		}
	}
	return "", false
}

// Append encodes the settings as key=value lines joined by '\n' with no
// trailing newline.
func (s Settings) Append(dst []byte) []byte {
	for i, kv := range s {
		if i > 0 {
			dst = append(dst, '\n')
		}
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
	}
	return dst
}

// Version returns the peer's announced protocol version: the integer value of
// "v" as strconv.Atoi reads it ("+2" and "002" are 2, as for sing-anytls),
// or 1 when it is missing, not a number or below 1.
func (s Settings) Version() int {
	v, ok := s.Get(KeyVersion)
	if !ok {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 1
	}
	return n
}
