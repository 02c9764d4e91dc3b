package uot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/wire"
)

const testTimeout = 10 * time.Second

func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, goleak.IgnoreCurrent())
		}
	})
}

// pipe returns the two ends of a TCP connection on loopback, closed at the
// end of the test, with a deadline on the peer's end. (Not net.Pipe: a
// conn writes its request at once, before the test reads.)
func pipe(t *testing.T) (client, peer net.Conn) {
	a, b := testnet.Pair(t)
	b.SetDeadline(time.Now().Add(testTimeout))
	return a, b
}

// background runs f in a goroutine and returns a function that waits for it
// and fails the test with its error.
func background(t *testing.T, f func() error) (wait func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return func() {
		t.Helper()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func write(w io.Writer, b []byte) func() error {
	return func() error { _, err := w.Write(b); return err }
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestPacketConnWire(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	pc, err := NewPacketConn(c, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// the request (sent when the association opens), then the packet
	wait := background(t, func() error {
		_, err := pc.WriteTo([]byte("abc"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53})
		return err
	})
	want := mustHex(t, "00 01 00000000 0000   00 7f000001 0035 0003 616263")
	if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("request and first packet %x, want %x", got, want)
	}
	wait()
	for _, c := range []struct {
		addr net.Addr
		hex  string
	}{
		{DomainAddr{Name: "example.com", Port: 8080}, "02 0b 6578616d706c652e636f6d 1f90 0001 78"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}, "01 20010db8000000000000000000000001 01bb 0001 78"},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}, "00 7f000001 0035 0001 78"}, // parsed from String()
	} {
		wait := background(t, func() error { _, err := pc.WriteTo([]byte("x"), c.addr); return err })
		want := mustHex(t, c.hex)
		if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("to %v: %x, want %x", c.addr, got, want)
		}
		wait()
	}
	// packets from the server, with their sources
	for _, c := range []struct {
		hex  string
		addr string
	}{
		{"01 20010db8000000000000000000000001 01bb 0002 6869", "[2001:db8::1]:443"},
		{"00 7f000001 0035 0002 6869", "127.0.0.1:53"},
		{"02 0b 6578616d706c652e636f6d 1f90 0002 6869", "example.com:8080"},
	} {
		wait := background(t, write(peer, mustHex(t, c.hex)))
		buf := make([]byte, 10)
		n, addr, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hi" || addr.String() != c.addr || addr.Network() != "udp" {
			t.Fatalf("ReadFrom = %q, %v, %v; want hi from %s", buf[:n], addr, err, c.addr)
		}
		wait()
	}
	if _, ok := pc.LocalAddr().(*net.UDPAddr); !ok {
		t.Fatalf("LocalAddr %T", pc.LocalAddr())
	}
	pc.Close()
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read after Close: %v", err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v", err)
	}
}

func TestConnWire(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	dst := wire.Addr{Name: "example.com", Port: 8080}
	conn, err := NewConn(c, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if conn.RemoteAddr().String() != "example.com:8080" {
		t.Fatalf("RemoteAddr %v", conn.RemoteAddr())
	}
	wait := background(t, write(conn, []byte("abc")))
	want := mustHex(t, "01 03 0b 6578616d706c652e636f6d 1f90   0003 616263")
	if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("request and first packet %x, want %x", got, want)
	}
	wait()
	wait = background(t, write(conn, nil))
	if got := readN(t, peer, 2); !bytes.Equal(got, []byte{0, 0}) {
		t.Fatalf("empty packet %x", got)
	}
	wait()
	wait = background(t, write(peer, mustHex(t, "0002 6869 0000")))
	buf := make([]byte, 10)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n, err := conn.Read(buf); err != nil || n != 0 {
		t.Fatalf("empty packet: Read = %d, %v", n, err)
	}
	wait()
	// the server ends the association: io.EOF
	peer.Close()
	if _, err := conn.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v", err)
	}
}

func TestLegacyPacketConnSendsNoRequest(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	pc, err := NewPacketConn(c, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	wait := background(t, func() error {
		_, err := pc.WriteTo([]byte("a"), &net.UDPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 5})
		return err
	})
	want := mustHex(t, "00 01020304 0005 0001 61")
	if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("legacy write %x, want %x", got, want)
	}
	wait()
}

func TestConnTruncatesAndDropsOversized(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	conn, _ := NewConn(c, v4, nil)
	stream := mustHex(t, "000a 30313233343536373839")
	stream = append(stream, 0xff, 0xe4)
	stream = append(stream, make([]byte, MaxPacketSize+1)...)
	stream = append(stream, mustHex(t, "0002 6f6b")...)
	wait := background(t, write(peer, stream))
	buf := make([]byte, 4)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "0123" {
		t.Fatalf("truncated read %q %v", buf[:n], err)
	}
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("read after an oversized packet %q %v", buf[:n], err)
	}
	wait()
	if _, err := conn.Write(make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("oversized write: %v", err)
	}
}

// A read deadline that passes inside a packet leaves it whole for the next
// read.
func TestConnReadDeadlineInsidePacket(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	pc, _ := NewPacketConn(c, false, nil)
	pkt := mustHex(t, "00 7f000001 0035 0005 68656c6c6f")
	rest := make(chan struct{})
	wait := background(t, func() error {
		if _, err := peer.Write(pkt[:9]); err != nil {
			return err
		}
		<-rest
		_, err := peer.Write(pkt[9:])
		return err
	})
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 10)
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom = %v, want a deadline error", err)
	}
	close(rest)
	pc.SetReadDeadline(time.Time{})
	n, addr, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || addr.String() != "127.0.0.1:53" {
		t.Fatalf("ReadFrom = %q %v %v", buf[:n], addr, err)
	}
	wait()
}

// Concurrent writers never interleave parts of two packets, also when a
// packet takes more than one frame.
func TestConcurrentWritesStayWhole(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	pc, _ := NewPacketConn(c, false, nil)
	const writers, each = 6, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				size := 4 + (w*each+i)*3271%MaxPacketSize
				p := bytes.Repeat([]byte{byte(w)}, size)
				binary.BigEndian.PutUint16(p, uint16(w))
				binary.BigEndian.PutUint16(p[2:], uint16(i))
				if _, err := pc.WriteTo(p, &net.UDPAddr{IP: net.IPv4(10, 0, 0, byte(w)), Port: 9}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	rd := NewReader(peer)
	if _, err := rd.ReadRequest(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for range writers * each {
		addr, p, err := rd.Next(false)
		if err != nil {
			t.Fatal(err)
		}
		w, i := int(binary.BigEndian.Uint16(p)), int(binary.BigEndian.Uint16(p[2:]))
		if w >= writers || i != next[w] || len(p) != 4+(w*each+i)*3271%MaxPacketSize ||
			addr.IP != netip.AddrFrom4([4]byte{10, 0, 0, byte(w)}) || bytes.Count(p[4:], []byte{byte(w)}) != len(p)-4 {
			t.Fatalf("packet from writer %d number %d (want %d) of %d bytes to %v is damaged", w, i, next[w], len(p), addr)
		}
		next[w]++
	}
	wg.Wait()
}

// brokenStream takes the request, then writes part of what it is given
// and fails.
type brokenStream struct {
	bufConn
	writes int
	closed bool
}

func (b *brokenStream) Write(p []byte) (int, error) {
	if b.writes++; b.writes == 1 {
		return len(p), nil
	}
	return len(p) / 2, os.ErrDeadlineExceeded
}
func (b *brokenStream) Close() error { b.closed = true; return nil }

func TestPartialWriteBreaksStream(t *testing.T) {
	s := &brokenStream{}
	conn, err := NewConn(s, v4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("abc")); !errors.Is(err, ErrStreamBroken) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %v, want ErrStreamBroken", err)
	}
	if !s.closed {
		t.Fatal("stream not closed")
	}
	if _, err := conn.Write([]byte("abc")); !errors.Is(err, ErrStreamBroken) {
		t.Fatalf("second Write = %v", err)
	}
}

func TestMalformedFromServerEndsStream(t *testing.T) {
	checkLeaks(t)
	c, peer := pipe(t)
	pc, _ := NewPacketConn(c, false, nil)
	wait := background(t, write(peer, []byte{7, 0, 0}))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ReadFrom = %v, want ErrMalformed", err)
	}
	wait()
	if _, err := NewReader(peer).ReadRequest(); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("peer read = %v, want io.EOF (stream closed)", err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("second ReadFrom = %v, want ErrMalformed", err)
	}
}

func TestAddrConversions(t *testing.T) {
	for _, c := range []struct {
		in   net.Addr
		want wire.Addr
	}{
		{&net.UDPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 5}, wire.Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 5}},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 5}, wire.Addr{IP: netip.IPv6Loopback(), Port: 5}},
		{DomainAddr{Name: "a.b", Port: 5}, wire.Addr{Name: "a.b", Port: 5}},
		{&DomainAddr{Name: "a.b", Port: 5}, wire.Addr{Name: "a.b", Port: 5}},
		{DomainAddr{Name: "1.2.3.4", Port: 5}, wire.Addr{IP: netip.MustParseAddr("1.2.3.4"), Port: 5}},
	} {
		got, err := AddrFromNet(c.in)
		if err != nil || got != c.want {
			t.Fatalf("AddrFromNet(%v) = %+v, %v", c.in, got, err)
		}
		if again, err := AddrFromNet(NetAddr(got)); err != nil || again != got {
			t.Fatalf("AddrFromNet(NetAddr(%+v)) = %+v, %v", got, again, err)
		}
	}
	for _, bad := range []net.Addr{nil, (*net.UDPAddr)(nil), &net.UDPAddr{Port: 5}, DomainAddr{Port: 5}} {
		if _, err := AddrFromNet(bad); err == nil {
			t.Fatalf("AddrFromNet(%#v) succeeded", bad)
		}
	}
	if ok, legacy := Magic(Destination(false)); !ok || legacy {
		t.Fatal("v2 destination not magic")
	}
	if ok, legacy := Magic(Destination(true)); !ok || !legacy {
		t.Fatal("v1 destination not legacy")
	}
	if ok, _ := Magic(wire.Addr{Name: "example.com"}); ok {
		t.Fatal("example.com is magic")
	}
}
