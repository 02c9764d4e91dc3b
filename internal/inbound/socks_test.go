package inbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/wire"
)

var errAuthRejected = errors.New("test: auth rejected")

// socksGreeting returns the greeting (offering user/pass if user is set),
// the auth message, and the request, in client order.
func socksClientBytes(user, pass string, cmd socksCmd, dst wire.Addr) (greet, auth, req []byte) {
	if user != "" {
		greet = []byte{5, 1, socksMethodUserPass}
		auth = append([]byte{1, byte(len(user))}, user...)
		auth = append(auth, byte(len(pass)))
		auth = append(auth, pass...)
	} else {
		greet = []byte{5, 1, socksMethodNoAuth}
	}
	req, err := wire.AppendAddr([]byte{5, byte(cmd), 0}, dst, wire.SOCKS)
	if err != nil {
		panic(err)
	}
	return greet, auth, req
}

// socksHandshake runs a SOCKS5 client handshake on c and returns the reply
// code. It reads nothing past the reply. It checks that the bound address is
// 0.0.0.0:0.
func socksHandshake(c net.Conn, user, pass string, cmd socksCmd, dst wire.Addr) (byte, error) {
	greet, auth, req := socksClientBytes(user, pass, cmd, dst)
	if _, err := c.Write(greet); err != nil {
		return 0, err
	}
	var b [2]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	if b != [2]byte{5, greet[2]} {
		return 0, fmt.Errorf("method reply % x", b)
	}
	if auth != nil {
		if _, err := c.Write(auth); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return 0, err
		}
		if b != [2]byte{1, 0} {
			return 0, fmt.Errorf("%w: % x", errAuthRejected, b)
		}
	}
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var h [3]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, err
	}
	if h[0] != 5 || h[2] != 0 {
		return 0, fmt.Errorf("reply header % x", h)
	}
	bnd, err := wire.ReadAddr(c, wire.SOCKS)
	if err != nil {
		return 0, err
	}
	if want := (wire.Addr{IP: netip.IPv4Unspecified()}); bnd != want {
		return 0, fmt.Errorf("BND %v, want %v", bnd, want)
	}
	return h[1], nil
}

// echoRoundTrip writes msg and expects it back.
func echoRoundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestSOCKS5Connect(t *testing.T) {
	checkGoroutines(t)
	echo4 := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	d := &fakeDialer{names: map[string]string{"echo.test": "127.0.0.1"}}
	s, addr := startServer(t, Config{}, d)

	tests := []struct {
		name string
		dst  func(t *testing.T) wire.Addr
	}{
		{"ipv4", func(t *testing.T) wire.Addr { return wire.AddrFromAddrPort(echo4.AddrPort()) }},
		{"domain", func(t *testing.T) wire.Addr { return wire.Addr{Name: "echo.test", Port: uint16(echo4.Port)} }},
		{"ipv6", func(t *testing.T) wire.Addr {
			ln, err := net.Listen("tcp", "[::1]:0")
			if err != nil {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			ln.Close()
			return wire.AddrFromAddrPort(startEcho(t, "[::1]:0").(*net.TCPAddr).AddrPort())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := tt.dst(t)
			c := dialProxy(t, addr)
			rep, err := socksHandshake(c, "", "", socksCmdConnect, dst)
			if err != nil || rep != SOCKSReplySucceeded {
				t.Fatalf("handshake: rep %d, %v", rep, err)
			}
			if got := d.lastDial(); got != dst {
				t.Fatalf("dialled %v, want %v", got, dst)
			}
			echoRoundTrip(t, c, "hello "+tt.name)
			echoRoundTrip(t, c, string(bytes.Repeat([]byte("x"), 100_000)))
			// Half-close travels to the target and back.
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if rest := expectEOF(t, c); len(rest) != 0 {
				t.Fatalf("unexpected data %q", rest)
			}
		})
	}
	waitConns(t, s)
}

// TestSOCKS5EarlyData sends greeting, request and payload in one write over a
// pipe: the payload sits in the server's read buffer and must reach the
// target first.
func TestSOCKS5EarlyData(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	s, err := New(Config{Logger: testLogger(t)}, &fakeDialer{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(server)
	}()
	client.SetDeadline(time.Now().Add(testTimeout))
	greet, _, req := socksClientBytes("", "", socksCmdConnect, wire.AddrFromAddrPort(echo.AddrPort()))
	msg := append(append(greet, req...), "early"...)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	want := []byte{5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	got := make([]byte, len(want)+len("early"))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) || string(got[len(want):]) != "early" {
		t.Fatalf("got % x", got)
	}
	client.Close()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("ServeConn did not return")
	}
}

func TestSOCKS5UserPass(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	dst := wire.AddrFromAddrPort(echo.AddrPort())
	_, addr := startServer(t, Config{Username: "alice", Password: "s3cret"}, &fakeDialer{})

	t.Run("success", func(t *testing.T) {
		c := dialProxy(t, addr)
		rep, err := socksHandshake(c, "alice", "s3cret", socksCmdConnect, dst)
		if err != nil || rep != 0 {
			t.Fatalf("handshake: rep %d, %v", rep, err)
		}
		echoRoundTrip(t, c, "authenticated")
	})
	for _, cred := range [][2]string{{"alice", "wrong"}, {"bob", "s3cret"}, {"alice", "s3cret0"}, {"a", "b"}} {
		t.Run("reject "+cred[0]+":"+cred[1], func(t *testing.T) {
			c := dialProxy(t, addr)
			_, err := socksHandshake(c, cred[0], cred[1], socksCmdConnect, dst)
			if !errors.Is(err, errAuthRejected) {
				t.Fatalf("handshake: %v, want rejection", err)
			}
			expectEOF(t, c)
		})
	}
	t.Run("no-auth offered", func(t *testing.T) {
		c := dialProxy(t, addr)
		c.Write([]byte{5, 1, socksMethodNoAuth})
		if got := expectEOF(t, c); !bytes.Equal(got, []byte{5, 0xFF}) {
			t.Fatalf("got % x, want 05 ff", got)
		}
	})
	t.Run("bad auth version", func(t *testing.T) {
		c := dialProxy(t, addr)
		c.Write([]byte{5, 1, socksMethodUserPass, 5, 1, 'a', 1, 'b'})
		if got := expectEOF(t, c); !bytes.Equal(got, []byte{5, 2}) {
			t.Fatalf("got % x, want 05 02", got)
		}
	})
}

func TestSOCKS5NoAcceptableMethod(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, Config{}, &fakeDialer{})
	for _, greet := range [][]byte{
		{5, 1, socksMethodUserPass},
		{5, 0},
		{5, 3, 0x01, 0x03, 0x80},
	} {
		t.Run(fmt.Sprintf("% x", greet), func(t *testing.T) {
			c := dialProxy(t, addr)
			c.Write(greet)
			if got := expectEOF(t, c); !bytes.Equal(got, []byte{5, 0xFF}) {
				t.Fatalf("got % x, want 05 ff", got)
			}
		})
	}
	t.Run("many methods", func(t *testing.T) {
		greet := []byte{5, 255}
		for i := range 255 {
			greet = append(greet, byte(254-i)) // 0x00 comes last
		}
		c := dialProxy(t, addr)
		c.Write(greet)
		var b [2]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b != [2]byte{5, 0} {
			t.Fatalf("got % x, %v", b, err)
		}
	})
}

func TestSOCKS5UnsupportedCommand(t *testing.T) {
	checkGoroutines(t)
	d := &fakeDialer{}
	_, addr := startServer(t, Config{}, d)
	dst := wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9}
	for _, cmd := range []socksCmd{socksCmdBind, socksCmdUDPAssociate, 0x00, 0x04, 0xFF} {
		t.Run(cmd.String(), func(t *testing.T) {
			c := dialProxy(t, addr)
			rep, err := socksHandshake(c, "", "", cmd, dst)
			if err != nil || rep != SOCKSReplyCommandNotSupported {
				t.Fatalf("rep %d, %v; want 7", rep, err)
			}
			expectEOF(t, c)
		})
	}
	if got := d.lastDial(); got.Valid() {
		t.Fatalf("dialled %v for an unsupported command", got)
	}
	t.Run("bad address type", func(t *testing.T) {
		c := dialProxy(t, addr)
		c.Write([]byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80})
		want := []byte{5, 0, 5, SOCKSReplyAddressNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}
		if got := expectEOF(t, c); !bytes.Equal(got, want) {
			t.Fatalf("got % x, want % x", got, want)
		}
	})
}

// replyErr lets a Dialer choose the SOCKS reply.
type replyErr byte

func (e replyErr) Error() string    { return fmt.Sprintf("reply %d", byte(e)) }
func (e replyErr) SOCKSReply() byte { return byte(e) }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestSOCKSReplyCode(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	tests := []struct {
		name string
		err  error
		want byte
	}{
		{"nil", nil, 0x00},
		{"refused", opErr(syscall.ECONNREFUSED), 0x05},
		{"refused wrapped", fmt.Errorf("tunnel: %w", opErr(syscall.ECONNREFUSED)), 0x05},
		{"host unreachable", opErr(syscall.EHOSTUNREACH), 0x04},
		{"network unreachable", opErr(syscall.ENETUNREACH), 0x03},
		{"timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, 0x04},
		{"deadline", context.DeadlineExceeded, 0x04},
		{"dns", &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, 0x04},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "x", IsTimeout: true}, 0x04},
		{"custom", fmt.Errorf("wrapped: %w", replyErr(0x02)), 0x02},
		{"custom beats refused", errors.Join(opErr(syscall.ECONNREFUSED), replyErr(0x03)), 0x03},
		{"other", errors.New("boom"), 0x01},
		{"canceled", context.Canceled, 0x01},
	}
	for _, tt := range tests {
		if got := SOCKSReplyCode(tt.err); got != tt.want {
			t.Errorf("%s: SOCKSReplyCode(%v) = %#x, want %#x", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestSOCKS5DialErrors(t *testing.T) {
	checkGoroutines(t)
	// A port with nothing listening: the real dial is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := wire.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	ln.Close()

	d := &fakeDialer{}
	_, addr := startServer(t, Config{}, d)
	tests := []struct {
		name string
		fail error
		dst  wire.Addr
		want byte
	}{
		{"refused", nil, closed, SOCKSReplyConnectionRefused},
		{"unknown name", nil, wire.Addr{Name: "nowhere.invalid", Port: 80}, SOCKSReplyHostUnreachable},
		{"timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, closed, SOCKSReplyHostUnreachable},
		{"custom", replyErr(SOCKSReplyNotAllowed), closed, SOCKSReplyNotAllowed},
		{"other", errors.New("tunnel broken"), closed, SOCKSReplyGeneralFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fail != nil {
				d.setFail(failWith(tt.fail))
			} else {
				d.setFail(nil)
			}
			c := dialProxy(t, addr)
			rep, err := socksHandshake(c, "", "", socksCmdConnect, tt.dst)
			if err != nil || rep != tt.want {
				t.Fatalf("rep %#x, %v; want %#x", rep, err, tt.want)
			}
			expectEOF(t, c)
		})
	}
}

func TestSOCKS4Closed(t *testing.T) {
	_, addr := startServer(t, Config{}, &fakeDialer{})
	c := dialProxy(t, addr)
	c.Write([]byte{4, 1, 0, 80, 127, 0, 0, 1, 0})
	if got := expectEOF(t, c); len(got) != 0 {
		t.Fatalf("got %q, want nothing", got)
	}
}

// TestSOCKS5Truncated feeds every prefix of a valid handshake, then EOF: the
// server must close without panicking, and leave nothing behind.
func TestSOCKS5Truncated(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	d := &fakeDialer{names: map[string]string{"echo.test": "127.0.0.1"}}
	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			cfg := Config{}
			user, pass := "", ""
			if auth {
				cfg.Username, cfg.Password = "user", "pass"
				user, pass = cfg.Username, cfg.Password
			}
			s, addr := startServer(t, cfg, d)
			for _, dst := range []wire.Addr{
				{Name: "echo.test", Port: uint16(echo.Port)},
				wire.AddrFromAddrPort(echo.AddrPort()),
				{IP: netip.IPv6Loopback(), Port: uint16(echo.Port)}, // dial refused or fails: fine
			} {
				greet, authMsg, req := socksClientBytes(user, pass, socksCmdConnect, dst)
				full := append(append(append([]byte{}, greet...), authMsg...), req...)
				for i := 1; i <= len(full); i++ {
					c := dialProxy(t, addr)
					if _, err := c.Write(full[:i]); err != nil {
						t.Fatal(err)
					}
					if err := c.CloseWrite(); err != nil {
						t.Fatal(err)
					}
					expectEOF(t, c)
					c.Close()
				}
			}
			waitConns(t, s)
		})
	}
}

// TestGarbageHandshakes throws random bytes at a live server.
func TestGarbageHandshakes(t *testing.T) {
	checkGoroutines(t)
	d := &fakeDialer{fail: failWith(errors.New("no dialling in this test"))}
	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			cfg := Config{}
			if auth {
				cfg.Username, cfg.Password = "user", "pass"
			}
			s, addr := startServer(t, cfg, d)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 200 {
				b := make([]byte, rng.IntN(64))
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				// Steer most inputs into the SOCKS5 parser at various depths.
				switch {
				case len(b) > 0 && i%4 != 3:
					b[0] = 5
					if len(b) > 2 && i%4 != 2 {
						b[1], b[2] = 1, socksMethodNoAuth
						if auth {
							b[2] = socksMethodUserPass
						}
					}
				}
				c := dialProxy(t, addr)
				c.Write(b)
				c.CloseWrite()
				expectEOF(t, c)
				c.Close()
			}
			waitConns(t, s)
		})
	}
}

// TestStartRelay: with Config.StartRelay the handshake's goroutine hands the
// connection to a relay that runs on its own; data, half-close and the
// clean-up (done, connection tracking, Close waiting) work as with Relay.
func TestStartRelay(t *testing.T) {
	checkGoroutines(t)
	echo := startEcho(t, "127.0.0.1:0").(*net.TCPAddr)
	var started, finished atomic.Int32
	cfg := Config{StartRelay: func(local, remote net.Conn, done func()) {
		started.Add(1)
		relay.Start(local, remote, relay.Options{}, func(relay.Stats, error) {
			finished.Add(1)
			done()
		})
	}}
	s, addr := startServer(t, cfg, &fakeDialer{})
	for i := range 3 {
		c := dialProxy(t, addr)
		rep, err := socksHandshake(c, "", "", socksCmdConnect, wire.AddrFromAddrPort(echo.AddrPort()))
		if err != nil || rep != SOCKSReplySucceeded {
			t.Fatalf("handshake: rep %d, %v", rep, err)
		}
		echoRoundTrip(t, c, fmt.Sprintf("hello %d", i))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest := expectEOF(t, c); len(rest) != 0 {
			t.Fatalf("unexpected data %q", rest)
		}
	}
	waitConns(t, s)
	if n, m := started.Load(), finished.Load(); n != 3 || m != 3 {
		t.Fatalf("relays started %d, finished %d; want 3, 3", n, m)
	}
}

// A dial still waiting at the handshake deadline fails with it; the client
// gets the failure reply all the same, not a bare close (the reply needs a
// write deadline of its own).
func TestSOCKS5ReplyAfterDialTimeout(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, Config{HandshakeTimeout: 300 * time.Millisecond}, blockingDialer{})
	c := dialProxy(t, addr)
	rep, err := socksHandshake(c, "", "", socksCmdConnect, wire.Addr{Name: "slow.test", Port: 80})
	if err != nil || rep != SOCKSReplyHostUnreachable {
		t.Fatalf("rep %#x, %v; want %#x (host unreachable)", rep, err, SOCKSReplyHostUnreachable)
	}
	expectEOF(t, c)
}

// blockingDialer waits for its context to end, as a dial to a server that
// does not answer does.
type blockingDialer struct{}

func (blockingDialer) DialTCP(ctx context.Context, _ wire.Addr) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
}
