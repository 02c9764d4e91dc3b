package anytls_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/wire"
)

// FuzzServeConn throws what a remote peer can send, before and after
// authentication, at a server connection: the preamble (right, wrong,
// short, split), then frames. The server must neither panic nor hang: each
// connection ends once the peer has closed. Nothing leaves the machine:
// dials and lookups fail, and inputs naming UDP over TCP are skipped.
func FuzzServeConn(f *testing.F) {
	good := preamble(testPassword, 30)
	frame := func(cmd wire.Cmd, sid uint32, data []byte) []byte {
		b, _ := wire.AppendFrame(nil, cmd, sid, data)
		return b
	}
	settings := wire.Settings{{Key: "v", Value: "2"}, {Key: "padding-md5", Value: "x"}}.Append(nil)
	addr, _ := wire.AppendAddr(nil, wire.Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80}, wire.SOCKS)
	name, _ := wire.AppendAddr(nil, wire.Addr{Name: "example.test", Port: 443}, wire.SOCKS)
	session := bytes.Join([][]byte{
		frame(wire.CmdSettings, 0, settings), frame(wire.CmdSYN, 1, nil), frame(wire.CmdPSH, 1, addr),
		frame(wire.CmdPSH, 1, []byte("hello")), frame(wire.CmdHeartRequest, 0, nil), frame(wire.CmdSYN, 2, nil),
		frame(wire.CmdPSH, 2, name), frame(wire.CmdFIN, 1, nil), frame(wire.CmdWaste, 0, make([]byte, 40)),
		frame(wire.Cmd(200), 7, []byte("unknown")), frame(wire.CmdAlert, 0, []byte("bye")),
	}, nil)
	for _, seed := range [][]byte{
		nil, {0}, good[:33], good, append(good, session...), preamble("wrong", 30),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []byte("GET /"),
		[]byte("FOO / HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n"), // any method, after a failed hash
		append(good, frame(wire.CmdSYN, 1, nil)...),                              // SYN before Settings
		append(good[:len(good)-5], 0xff, 0xff),                                   // padding longer than sent
	} {
		f.Add(seed)
	}
	srv, _ := newServer(f, func(c *anytls.ServerConfig) {
		c.TLSConfig = nil // plain pipes: the bytes reach the preamble reader as they are
		c.AuthTimeout = 200 * time.Millisecond
		c.DestinationTimeout = 200 * time.Millisecond
		c.Dial = func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("fuzzing: no dialing")
		}
		c.LookupNetIP = func(context.Context, string, string) ([]netip.Addr, error) {
			return nil, errors.New("fuzzing: no lookups")
		}
	})
	f.Cleanup(func() { srv.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.Contains(data, []byte("udp-over-tcp")) {
			return // would open UDP sockets towards fuzzed addresses
		}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(server)
		}()
		go io.Copy(io.Discard, client) // the server's answers
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ServeConn did not return for %d bytes %q", len(data), data)
		}
	})
}
