package inbound

import (
	"context"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// pipeDialer never touches the network: odd ports are refused, even ports get
// a connection whose peer has already hung up.
type pipeDialer struct{}

func (pipeDialer) DialTCP(_ context.Context, dst wire.Addr) (net.Conn, error) {
	if dst.Port%2 == 1 {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

// FuzzSOCKSHandshake plays arbitrary client bytes to ServeConn over a pipe,
// against a server without and with authentication. The server must not
// panic and must finish once the client has sent everything and hung up.
func FuzzSOCKSHandshake(f *testing.F) {
	v4 := wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 80}
	v6 := wire.Addr{IP: netip.IPv6Loopback(), Port: 443}
	name := wire.Addr{Name: "example.com", Port: 81}
	for _, dst := range []wire.Addr{v4, v6, name} {
		for _, cmd := range []socksCmd{socksCmdConnect, socksCmdBind, socksCmdUDPAssociate} {
			greet, _, req := socksClientBytes("", "", cmd, dst)
			f.Add(append(append(greet, req...), "data"...))
			greet, auth, req := socksClientBytes("user", "pass", cmd, dst)
			f.Add(append(append(append(greet, auth...), req...), "data"...))
		}
	}
	f.Add([]byte{5})
	f.Add([]byte{5, 0})
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	f.Add([]byte("CONNECT example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\nhello"))
	f.Add([]byte("GET http://example.com:81/ HTTP/1.1\r\nHost: example.com\r\n\r\n"))
	f.Add([]byte("POST http://example.com/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))

	servers := make([]*Server, 0, 2)
	for _, cfg := range []Config{{}, {Username: "user", Password: "pass"}} {
		cfg.HandshakeTimeout = 5 * time.Second
		s, err := New(cfg, pipeDialer{})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { s.Close() })
		servers = append(servers, s)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range servers {
			client, server := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.ServeConn(server)
			}()
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				io.Copy(io.Discard, client)
			}()
			client.Write(data) // fails early if the server stops reading
			client.Close()
			select {
			case <-done:
			case <-time.After(testTimeout):
				t.Fatalf("ServeConn did not return for %q", data)
			}
			<-drained
		}
	})
}
