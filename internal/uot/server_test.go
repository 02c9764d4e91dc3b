package uot

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anytls-suite/anytls/internal/udptest"
	"github.com/anytls-suite/anytls/internal/wire"
)

// testNames resolves "echo.test" to ::1 and 127.0.0.1 (in that order: IPv4
// must be preferred); other names do not exist.
func testNames(_ context.Context, _, host string) ([]netip.Addr, error) {
	if host == "echo.test" {
		return []netip.Addr{netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.1")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

type served struct {
	peer   net.Conn // the client's end of the stream
	ready  chan error
	done   chan error
	socks  chan net.PacketConn
	cancel context.CancelFunc
}

// startServe runs Serve on one end of a pipe until the test ends.
func startServe(t *testing.T, legacy bool, mod func(*ServerOptions)) *served {
	t.Helper()
	c, peer := pipe(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{peer: peer, ready: make(chan error, 1), done: make(chan error, 1), socks: make(chan net.PacketConn, 1), cancel: cancel}
	opts := ServerOptions{
		Ready:       func(err error) error { s.ready <- err; return nil },
		LookupNetIP: testNames,
		ListenPacket: func(ctx context.Context, network, addr string) (net.PacketConn, error) {
			var lc net.ListenConfig
			pc, err := lc.ListenPacket(ctx, network, addr)
			if err == nil {
				s.socks <- pc
			}
			return pc, err
		},
	}
	if mod != nil {
		mod(&opts)
	}
	go func() { s.done <- Serve(ctx, c, legacy, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return s
}

func (s *served) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := s.peer.Write(b); err != nil {
		t.Fatalf("writing to the server: %v", err)
	}
}

func (s *served) waitReady(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.ready:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Ready not called")
		return nil
	}
}

func (s *served) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
		return nil
	}
}

func request(t *testing.T, r Request) []byte {
	b, err := AppendRequest(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func packet(t *testing.T, connect bool, addr wire.Addr, p string) []byte {
	b, err := AppendPacket(nil, connect, addr, []byte(p))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeConnectMode(t *testing.T) {
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	dsts := map[string]wire.Addr{
		"ipv4":   wire.AddrFromAddrPort(echo4),
		"domain": {Name: "echo.test", Port: echo4.Port()},
	}
	if udptest.HaveIPv6(t) {
		dsts["ipv6"] = wire.AddrFromAddrPort(udptest.Echo(t, "[::1]:0"))
	}
	for name, dst := range dsts {
		t.Run(name, func(t *testing.T) {
			checkLeaks(t)
			s := startServe(t, false, nil)
			// request and first packet in one write, as sing's lazy client does
			s.send(t, append(request(t, Request{Connect: true, Destination: dst}), packet(t, true, wire.Addr{}, "ping")...))
			if err := s.waitReady(t); err != nil {
				t.Fatalf("Ready(%v)", err)
			}
			if got := readN(t, s.peer, 6); !bytes.Equal(got, mustHex(t, "0004 70696e67")) {
				t.Fatalf("reply %x", got)
			}
			big := string(bytes.Repeat([]byte{0x5a}, MaxPacketSize))
			s.send(t, packet(t, true, wire.Addr{}, big))
			rd := NewReader(s.peer)
			if _, p, err := rd.Next(true); err != nil || string(p) != big {
				t.Fatalf("largest packet: %d bytes, %v", len(p), err)
			}
			s.peer.Close()
			if err := s.wait(t); err != nil {
				t.Fatalf("Serve = %v after the client closed", err)
			}
		})
	}
}

func TestServeNonConnectMode(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	s := startServe(t, false, nil)
	s.send(t, request(t, Request{Destination: unspecified}))
	if err := s.waitReady(t); err != nil {
		t.Fatalf("Ready(%v)", err)
	}
	type replyCase struct {
		to   wire.Addr
		addr string // hex of the source address the reply must carry
		port uint16
	}
	cases := []replyCase{
		{wire.AddrFromAddrPort(echo4), "00 7f000001", echo4.Port()},
		{wire.Addr{Name: "echo.test", Port: echo4.Port()}, "00 7f000001", echo4.Port()},
	}
	if udptest.HaveIPv6(t) {
		echo6 := udptest.Echo(t, "[::1]:0")
		cases = append(cases, replyCase{wire.AddrFromAddrPort(echo6), "01 00000000000000000000000000000001", echo6.Port()})
	}
	for _, c := range cases {
		s.send(t, packet(t, false, c.to, "hey"))
		want := binary.BigEndian.AppendUint16(mustHex(t, c.addr), c.port)
		want = append(want, mustHex(t, "0003 686579")...)
		if got := readN(t, s.peer, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("to %v: reply %x, want %x", c.to, got, want)
		}
	}
}

func TestServeLegacy(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	s := startServe(t, true, nil)
	if err := s.waitReady(t); err != nil { // no request to wait for
		t.Fatalf("Ready(%v)", err)
	}
	s.send(t, packet(t, false, wire.AddrFromAddrPort(echo4), "v1"))
	rd := NewReader(s.peer)
	addr, p, err := rd.Next(false)
	if err != nil || string(p) != "v1" || addr != wire.AddrFromAddrPort(echo4) {
		t.Fatalf("reply %+v %q %v", addr, p, err)
	}
}

func TestServeReportsFailures(t *testing.T) {
	t.Run("unresolvable destination", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, nil)
		s.send(t, request(t, Request{Connect: true, Destination: wire.Addr{Name: "nowhere.test", Port: 53}}))
		var dnsErr *net.DNSError
		if err := s.waitReady(t); !errors.As(err, &dnsErr) {
			t.Fatalf("Ready(%v), want a DNS error", err)
		}
		if err := s.wait(t); !errors.As(err, &dnsErr) {
			t.Fatalf("Serve = %v", err)
		}
		if _, err := s.peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read %v, want io.EOF", err)
		}
	})
	t.Run("no socket", func(t *testing.T) {
		checkLeaks(t)
		errNoSocket := errors.New("no socket for you")
		s := startServe(t, true, func(o *ServerOptions) {
			o.ListenPacket = func(context.Context, string, string) (net.PacketConn, error) { return nil, errNoSocket }
		})
		if err := s.waitReady(t); !errors.Is(err, errNoSocket) {
			t.Fatalf("Ready(%v)", err)
		}
		if err := s.wait(t); !errors.Is(err, errNoSocket) {
			t.Fatalf("Serve = %v", err)
		}
	})
	t.Run("malformed request", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, nil)
		s.send(t, []byte{1, 9, 0, 0, 0, 0}) // address type 9
		if err := s.waitReady(t); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Ready(%v), want the malformed request reported", err)
		}
		if err := s.wait(t); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Serve = %v", err)
		}
	})
	t.Run("no request", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, func(o *ServerOptions) { o.IdleTimeout = 50 * time.Millisecond })
		if err := s.wait(t); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Serve = %v, want a deadline error", err)
		}
		select {
		case err := <-s.ready:
			t.Fatalf("Ready(%v) without a request", err)
		default:
		}
	})
}

// Oversized packets and packets to unknown names are dropped; the stream
// stays in step and the next packet goes through.
func TestServeDropsBadPackets(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	s := startServe(t, false, nil)
	s.send(t, request(t, Request{Destination: unspecified}))
	s.waitReady(t)
	over := append(mustHex(t, "00 7f000001"), binary.BigEndian.AppendUint16(nil, echo4.Port())...)
	over = append(over, 0xff, 0xe4)
	over = append(over, make([]byte, MaxPacketSize+1)...)
	s.send(t, over)
	s.send(t, packet(t, false, wire.Addr{Name: "nowhere.test", Port: echo4.Port()}, "lost"))
	s.send(t, packet(t, false, wire.AddrFromAddrPort(echo4), "kept"))
	rd := NewReader(s.peer)
	if _, p, err := rd.Next(false); err != nil || string(p) != "kept" {
		t.Fatalf("first reply %q %v, want kept", p, err)
	}
}

func TestServeMalformedEndsStream(t *testing.T) {
	checkLeaks(t)
	s := startServe(t, false, nil)
	s.send(t, request(t, Request{Destination: unspecified}))
	s.waitReady(t)
	s.send(t, []byte{3, 1, 'a', 0, 1, 0, 0}) // 3 is a SOCKS code, not a UoT one
	if err := s.wait(t); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Serve = %v, want ErrMalformed", err)
	}
	if _, err := s.peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read %v, want io.EOF", err)
	}
}

func TestServeStrangers(t *testing.T) {
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	sockAddr := func(s *served) *net.UDPAddr {
		pc := <-s.socks
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: pc.LocalAddr().(*net.UDPAddr).Port}
	}
	t.Run("connect mode drops them", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, nil)
		s.send(t, request(t, Request{Connect: true, Destination: wire.AddrFromAddrPort(echo4)}))
		s.waitReady(t)
		if _, err := stranger.WriteTo([]byte("evil"), sockAddr(s)); err != nil {
			t.Fatal(err)
		}
		s.send(t, packet(t, true, wire.Addr{}, "ping"))
		if got := readN(t, s.peer, 6); !bytes.Equal(got, mustHex(t, "0004 70696e67")) {
			t.Fatalf("first reply %x, want ping", got)
		}
	})
	t.Run("non-connect mode relays them with their address", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, nil)
		s.send(t, request(t, Request{Destination: unspecified}))
		s.waitReady(t)
		if _, err := stranger.WriteTo([]byte("hello"), sockAddr(s)); err != nil {
			t.Fatal(err)
		}
		addr, p, err := NewReader(s.peer).Next(false)
		if err != nil || string(p) != "hello" || addr != wire.AddrFromAddrPort(stranger.LocalAddr().(*net.UDPAddr).AddrPort()) {
			t.Fatalf("relayed %+v %q %v", addr, p, err)
		}
	})
}

func TestServeIdleAndCancel(t *testing.T) {
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	t.Run("idle", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, func(o *ServerOptions) { o.IdleTimeout = 100 * time.Millisecond })
		s.send(t, append(request(t, Request{Connect: true, Destination: wire.AddrFromAddrPort(echo4)}), packet(t, true, wire.Addr{}, "x")...))
		// the echo ("0001 78"), unless a stall outlasted the timeout, then EOF
		got, err := io.ReadAll(s.peer)
		if err != nil || (len(got) != 0 && !bytes.Equal(got, mustHex(t, "0001 78"))) {
			t.Fatalf("peer read %x, %v; want the echo then io.EOF after the idle timeout", got, err)
		}
		if err := s.wait(t); err != nil {
			t.Fatalf("Serve = %v after idling", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, true, nil)
		s.waitReady(t)
		s.cancel()
		if err := s.wait(t); err != nil {
			t.Fatalf("Serve = %v after cancel", err)
		}
		if _, err := s.peer.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("peer read %v, want io.EOF", err)
		}
	})
}

// The idle timer re-arms itself while there is traffic (checked without
// waiting: check runs as if the timer had fired).
func TestIdleTimerRearms(t *testing.T) {
	fired := make(chan struct{}, 1)
	it := newIdleTimer(time.Hour, func() { fired <- struct{}{} })
	defer it.stop()
	it.start = time.Now().Add(-2 * time.Hour)
	it.touch() // traffic just now
	it.check()
	select {
	case <-fired:
		t.Fatal("fired despite recent traffic")
	default:
	}
	it.last.Store(0) // last traffic two hours ago
	it.check()
	select {
	case <-fired:
	default:
		t.Fatal("did not fire after an idle period")
	}
}

// Names are looked up once per association, failures included.
func TestServeCachesNames(t *testing.T) {
	checkLeaks(t)
	echo4 := udptest.Echo(t, "127.0.0.1:0")
	var mu sync.Mutex
	lookups := map[string]int{}
	s := startServe(t, false, func(o *ServerOptions) {
		o.LookupNetIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			mu.Lock()
			lookups[host]++
			mu.Unlock()
			return testNames(ctx, network, host)
		}
	})
	s.send(t, request(t, Request{Destination: unspecified}))
	s.waitReady(t)
	for range 3 {
		s.send(t, packet(t, false, wire.Addr{Name: "nowhere.test", Port: echo4.Port()}, "lost"))
		s.send(t, packet(t, false, wire.Addr{Name: "echo.test", Port: echo4.Port()}, "kept"))
	}
	rd := NewReader(s.peer)
	for range 3 {
		if _, p, err := rd.Next(false); err != nil || string(p) != "kept" {
			t.Fatalf("reply %q %v", p, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if lookups["echo.test"] != 1 || lookups["nowhere.test"] != 1 {
		t.Fatalf("lookups %v, want one per name", lookups)
	}
}

// Allow vets every destination: a refused connect-mode destination fails the
// association with its error; refused non-connect packets, literal or
// resolved, are dropped while the next allowed one goes through.
func TestServeAllow(t *testing.T) {
	// listening on every address, the echo answers 127.0.0.2 as well: a
	// packet that got through would come back
	echo := udptest.Echo(t, "0.0.0.0:0")
	echo4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), echo.Port())
	errNo := errors.New("refused by test policy")
	refuse := netip.MustParseAddr("127.0.0.2")
	allow := func(o *ServerOptions) {
		o.Allow = func(ip netip.Addr) error {
			if ip == refuse {
				return errNo
			}
			return nil
		}
		o.LookupNetIP = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
			if host == "refused.test" {
				return []netip.Addr{refuse}, nil
			}
			return testNames(ctx, network, host)
		}
	}
	for _, dst := range []wire.Addr{{IP: refuse, Port: 53}, {Name: "refused.test", Port: 53}} {
		t.Run("connect "+dst.String(), func(t *testing.T) {
			checkLeaks(t)
			s := startServe(t, false, allow)
			s.send(t, request(t, Request{Connect: true, Destination: dst}))
			if err := s.waitReady(t); !errors.Is(err, errNo) {
				t.Fatalf("Ready(%v), want the policy's error", err)
			}
			if err := s.wait(t); !errors.Is(err, errNo) {
				t.Fatalf("Serve = %v", err)
			}
		})
	}
	t.Run("non-connect", func(t *testing.T) {
		checkLeaks(t)
		s := startServe(t, false, allow)
		s.send(t, request(t, Request{Destination: unspecified}))
		if err := s.waitReady(t); err != nil {
			t.Fatalf("Ready(%v)", err)
		}
		s.send(t, packet(t, false, wire.Addr{IP: refuse, Port: echo4.Port()}, "lost"))
		s.send(t, packet(t, false, wire.Addr{Name: "refused.test", Port: echo4.Port()}, "lost"))
		s.send(t, packet(t, false, wire.AddrFromAddrPort(echo4), "kept"))
		rd := NewReader(s.peer)
		if _, p, err := rd.Next(false); err != nil || string(p) != "kept" {
			t.Fatalf("first reply %q %v, want kept", p, err)
		}
	})
}
