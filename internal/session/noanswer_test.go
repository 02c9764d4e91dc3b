package session

import (
	"errors"
	"net"
	"testing"

	"github.com/anytls-suite/anytls/internal/wire"
)

// TestClientNoAnswer: a server that closes a new session before sending a
// single frame (what an AnyTLS server does on a wrong password) is reported
// as ErrNoAnswer, whether the close reaches the client as EOF or, because
// the server closed with the client's bytes unread, as a reset.
func TestClientNoAnswer(t *testing.T) {
	for _, tt := range []struct {
		name       string
		reset      bool
		firstFrame bool // the server answers once before closing
		want       bool // ErrNoAnswer expected
	}{
		{"eof", false, false, true},
		{"reset", true, false, true},
		{"eof-after-a-frame", false, true, false},
		{"reset-after-a-frame", true, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			sc, pc := tcpPair(t)
			sess := NewClient(sc, Config{Scheme: mustScheme(t, noShaping)})
			defer sess.Close()
			if tt.firstFrame {
				if _, err := pc.Write(frameBytes(wire.CmdServerSettings, 0, []byte("v=2"))); err != nil {
					t.Fatal(err)
				}
			}
			if tt.reset {
				pc.(*net.TCPConn).SetLinger(0) // close with RST
			}
			pc.Close()
			waitDone(t, sess.Done(), "session death")
			err := sess.Err()
			if got := errors.Is(err, ErrNoAnswer); got != tt.want {
				t.Fatalf("Err() = %v; ErrNoAnswer %v, want %v", err, got, tt.want)
			}
			if !errors.Is(err, ErrSessionClosed) {
				t.Fatalf("Err() = %v, want ErrSessionClosed", err)
			}
		})
	}
}
