package wire

import "bytes"

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
// order. Keys are not required to be unique; Get returns the first.
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

// Get returns the value of the first line with key k.
func (s Settings) Get(k string) (string, bool) {
	for _, kv := range s {
		if kv.Key == k {
			return kv.Value, true
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
// "v", or 1 when it is missing or not a small positive number.
func (s Settings) Version() int {
	v, ok := s.Get(KeyVersion)
	if !ok || v == "" || len(v) > 4 {
		return 1
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 1
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 {
		return 1
	}
	return n
}
