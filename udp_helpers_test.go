package anytls_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/inbound"
	"github.com/anytls-suite/anytls/internal/udptest"
	"github.com/anytls-suite/anytls/internal/wire"
)

// mixedSizes returns n datagram sizes between lo and hi: the edges (lo, hi,
// and sizes around the frame and MTU limits) often, the rest log-uniform so
// that small and large datagrams both appear in numbers.
func mixedSizes(n, lo, hi int) []int {
	edges := []int{hi, lo, lo + 1, lo + 2, 4, 5, 8, 1200, 1472, 16384, 16385, 32768, hi - 10, hi - 1}
	r := rand.New(rand.NewPCG(3, 7))
	sizes := make([]int, n)
	for i := range sizes {
		if i%50 == 0 {
			sizes[i] = edges[(i/50)%len(edges)]
		} else {
			sizes[i] = int(math.Exp(r.Float64() * math.Log(float64(hi))))
		}
		sizes[i] = min(max(sizes[i], lo), hi)
	}
	return sizes
}

// payloadBlock supplies the bytes of every test datagram.
var payloadBlock = func() []byte {
	b := make([]byte, 8192+0xFFFF)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}()

// datagram builds datagram seq of the given size for the sender key. From 4
// bytes on it starts with key<<24 | seq (so a reply names its sender and
// number) followed by bytes that depend on both; shorter ones are the low
// bytes of seq.
func datagram(key byte, seq, size int) []byte {
	p := make([]byte, size)
	if size < 4 {
		copy(p, []byte{byte(seq), byte(seq >> 8), byte(seq >> 16)})
		return p
	}
	binary.BigEndian.PutUint32(p, uint32(key)<<24|uint32(seq))
	off := (seq*7919 + int(key)*104729) % 8192
	copy(p[4:], payloadBlock[off:])
	return p
}

// dgramLink is one end of a datagram path under test.
type dgramLink struct {
	// send sends datagram number i.
	send func(i int, p []byte) error
	// recv returns the next datagram into buf and its source ("" if the
	// path does not say). It returns an error once the link is closed.
	recv func(buf []byte) (int, string, error)
	// close ends the link, which unblocks recv.
	close func()
}

type exchangeConfig struct {
	key         byte
	window      int                // datagrams in flight at most
	windowBytes int                // bytes in flight at most
	rto         time.Duration      // resend a datagram not answered for this long
	maxResends  int                // per datagram
	timeout     time.Duration      // for the whole exchange
	from        func(i int) string // expected source of reply i, or nil
}

func (c *exchangeConfig) defaults() {
	if c.window == 0 {
		c.window = 64
	}
	if c.windowBytes == 0 {
		c.windowBytes = 1 << 20
	}
	if c.rto == 0 {
		c.rto = time.Second
	}
	if c.maxResends == 0 {
		c.maxResends = 5
	}
	if c.timeout == 0 {
		c.timeout = 90 * time.Second
	}
}

type exchangeStats struct {
	datagrams, resent int
	bytes             int64
	elapsed           time.Duration
}

type reply struct {
	seq  int    // -1 for a datagram under 4 bytes
	tiny []byte // its content
	from string
	err  error
}

// exchange sends one datagram per size through link to an echo server and
// checks that every one comes back whole and exactly once, from the expected
// source, with no stranger among the replies. It keeps a window of
// datagrams in flight and matches replies by sequence number; a datagram
// lost on the way (UDP may drop under load) is resent up to maxResends
// times and must then arrive.
func exchange(tb testing.TB, link dgramLink, sizes []int, cfg exchangeConfig) exchangeStats {
	tb.Helper()
	cfg.defaults()
	replies := make(chan reply, 256)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 0xFFFF+1)
		for {
			n, from, err := link.recv(buf)
			if err != nil {
				select {
				case replies <- reply{err: err}:
				case <-time.After(time.Second): // nobody listens any more
				}
				return
			}
			replies <- checkReply(cfg.key, sizes, buf[:n], from)
		}
	}()
	defer func() {
		link.close()
		for {
			select {
			case <-replies:
			case <-recvDone:
				return
			}
		}
	}()

	type flight struct {
		sent  time.Time
		tries int
	}
	n := len(sizes)
	inflight := make(map[int]*flight)
	acked := make([]bool, n)
	resent := make([]bool, n)
	var st exchangeStats
	inflightBytes, next, done := 0, 0, 0
	start := time.Now()
	deadline := time.NewTimer(cfg.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(cfg.rto / 4)
	defer tick.Stop()
	send := func(i int) {
		if err := link.send(i, datagram(cfg.key, i, sizes[i])); err != nil {
			tb.Fatalf("sending datagram %d (%d bytes): %v", i, sizes[i], err)
		}
	}
	for done < n {
		for next < n && (len(inflight) == 0 || (len(inflight) < cfg.window && inflightBytes+sizes[next] <= cfg.windowBytes)) {
			send(next)
			inflight[next] = &flight{sent: time.Now()}
			inflightBytes += sizes[next]
			next++
		}
		select {
		case r := <-replies:
			if r.err != nil {
				tb.Fatalf("after %d of %d datagrams: %v", done, n, r.err)
			}
			seq := r.seq
			if seq < 0 { // under 4 bytes: match the content among those in flight
				for i := range inflight {
					if sizes[i] == len(r.tiny) && bytes.Equal(datagram(cfg.key, i, sizes[i]), r.tiny) {
						seq = i
						break
					}
				}
				if seq < 0 {
					if isDuplicateTiny(cfg.key, sizes, r.tiny, acked, resent) {
						continue
					}
					tb.Fatalf("a %d-byte reply % x matches no datagram in flight", len(r.tiny), r.tiny)
				}
			}
			if acked[seq] {
				if !resent[seq] {
					tb.Fatalf("datagram %d came back twice but was sent once", seq)
				}
				continue
			}
			if inflight[seq] == nil {
				tb.Fatalf("reply %d before it was sent", seq)
			}
			if cfg.from != nil && r.from != cfg.from(seq) {
				tb.Fatalf("reply %d from %s, want %s", seq, r.from, cfg.from(seq))
			}
			acked[seq] = true
			delete(inflight, seq)
			inflightBytes -= sizes[seq]
			st.bytes += int64(sizes[seq])
			done++
		case <-tick.C:
			for i, f := range inflight {
				if time.Since(f.sent) < cfg.rto {
					continue
				}
				if f.tries >= cfg.maxResends {
					tb.Fatalf("datagram %d (%d bytes) lost %d times", i, sizes[i], f.tries+1)
				}
				f.tries++
				f.sent = time.Now()
				resent[i] = true
				st.resent++
				send(i)
			}
		case <-deadline.C:
			tb.Fatalf("timeout: %d of %d datagrams came back (%d in flight)", done, n, len(inflight))
		}
	}
	st.datagrams = n
	st.elapsed = time.Since(start)
	return st
}

// isDuplicateTiny reports whether a short reply is a second copy of a resent
// datagram.
func isDuplicateTiny(key byte, sizes []int, p []byte, acked, resent []bool) bool {
	for i, s := range sizes {
		if s == len(p) && acked[i] && resent[i] && bytes.Equal(datagram(key, i, s), p) {
			return true
		}
	}
	return false
}

// checkReply identifies a reply and checks its bytes.
func checkReply(key byte, sizes []int, p []byte, from string) reply {
	if len(p) < 4 {
		return reply{seq: -1, tiny: bytes.Clone(p), from: from}
	}
	h := binary.BigEndian.Uint32(p)
	if k := byte(h >> 24); k != key {
		return reply{err: fmt.Errorf("a reply of %d bytes belongs to sender %d, not %d", len(p), k, key)}
	}
	seq := int(h & 0xFFFFFF)
	if seq >= len(sizes) || sizes[seq] != len(p) {
		return reply{err: fmt.Errorf("reply %d has %d bytes: wrong size or number", seq, len(p))}
	}
	if !bytes.Equal(p, datagram(key, seq, len(p))) {
		return reply{err: fmt.Errorf("reply %d (%d bytes) is corrupt", seq, len(p))}
	}
	return reply{seq: seq, from: from}
}

// connLink is a connected datagram conn (connect mode).
func connLink(c net.Conn) dgramLink {
	return dgramLink{
		send:  func(_ int, p []byte) error { _, err := c.Write(p); return err },
		recv:  func(buf []byte) (int, string, error) { n, err := c.Read(buf); return n, "", err },
		close: func() { c.Close() },
	}
}

// packetLink is a net.PacketConn sending datagram i to dst(i).
func packetLink(pc net.PacketConn, dst func(i int) net.Addr) dgramLink {
	return dgramLink{
		send: func(i int, p []byte) error { _, err := pc.WriteTo(p, dst(i)); return err },
		recv: func(buf []byte) (int, string, error) {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return 0, "", err
			}
			return n, from.String(), nil
		},
		close: func() { pc.Close() },
	}
}

// tunnelDialer is what cmd/anytls-client puts behind its local proxy.
type tunnelDialer struct{ c *anytls.Client }

func (d tunnelDialer) DialTCP(ctx context.Context, dst wire.Addr) (net.Conn, error) {
	return d.c.DialContext(ctx, "tcp", dst.String())
}

func (d tunnelDialer) ListenPacket(ctx context.Context) (net.PacketConn, error) {
	return d.c.ListenPacket(ctx)
}

// startSOCKS runs our local proxy in front of c on addr and returns its
// address.
func startSOCKS(t testing.TB, c *anytls.Client, addr string) string {
	t.Helper()
	s, err := inbound.New(inbound.Config{Logger: testLogger(t).With("side", "socks")}, tunnelDialer{c})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); <-done })
	return ln.Addr().String()
}

// socksUDP is a SOCKS5 UDP client: a control connection and a UDP socket on
// the same loopback family as the proxy.
type socksUDP struct {
	ctrl  net.Conn
	sock  *net.UDPConn
	relay netip.AddrPort
}

// socksAssociate runs UDP ASSOCIATE against the proxy at addr.
func socksAssociate(t testing.TB, proxy string) *socksUDP {
	t.Helper()
	ctrl, err := net.DialTimeout("tcp", proxy, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	// greeting (no auth) + UDP ASSOCIATE from 0.0.0.0:0
	if _, err := ctrl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var h [5]byte
	if _, err := io.ReadFull(ctrl, h[:2]); err != nil || h[0] != 5 || h[1] != 0 {
		t.Fatalf("method reply % x, %v", h[:2], err)
	}
	if _, err := io.ReadFull(ctrl, h[:3]); err != nil || h[0] != 5 || h[1] != 0 {
		t.Fatalf("UDP ASSOCIATE reply % x, %v", h[:3], err)
	}
	bnd, err := wire.ReadAddr(ctrl, wire.SOCKS)
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetDeadline(time.Time{})
	local := ctrl.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	sock.SetReadBuffer(udptest.SocketBuffer)
	sock.SetWriteBuffer(udptest.SocketBuffer)
	u := &socksUDP{ctrl: ctrl, sock: sock, relay: bnd.AddrPort()}
	t.Cleanup(u.close)
	return u
}

func (u *socksUDP) close() {
	u.ctrl.Close()
	u.sock.Close()
}

// link sends datagram i to dst(i) through the relay. The returned source of
// a reply is the address in its SOCKS header.
func (u *socksUDP) link(dst func(i int) wire.Addr) dgramLink {
	var out []byte
	return dgramLink{
		send: func(i int, p []byte) error {
			var err error
			if out, err = wire.AppendAddr(append(out[:0], 0, 0, 0), dst(i), wire.SOCKS); err != nil {
				return err
			}
			_, err = u.sock.WriteToUDPAddrPort(append(out, p...), u.relay)
			return err
		},
		recv: func(buf []byte) (int, string, error) {
			n, from, err := u.sock.ReadFromUDPAddrPort(buf)
			if err != nil {
				return 0, "", err
			}
			if from != u.relay || n < 4 || buf[2] != 0 {
				return 0, "", fmt.Errorf("bad datagram from %v: % x", from, buf[:min(n, 16)])
			}
			src, an, err := wire.DecodeAddr(buf[3:n], wire.SOCKS)
			if err != nil {
				return 0, "", fmt.Errorf("bad SOCKS header: %w", err)
			}
			return copy(buf, buf[3+an:n]), src.String(), nil
		},
		close: u.close,
	}
}

// maxSOCKSPayload is the largest payload a SOCKS5 UDP client can send to a
// relay on the family of proxy: the 10-byte header must fit in one UDP
// datagram, which IPv4 limits to 65507 bytes.
func maxSOCKSPayload(proxy string) int {
	if netip.MustParseAddrPort(proxy).Addr().Is6() {
		return anytls.MaxUDPPayload
	}
	return anytls.MaxUDPPayload - 10
}

// socksListenAddr prefers IPv6 loopback, where a SOCKS5 datagram with its
// header can carry the largest payload.
func socksListenAddr(t testing.TB) string {
	if udptest.HaveIPv6(t) {
		return "[::1]:0"
	}
	t.Log("SOCKS5 UDP over IPv4 loopback: payloads limited to 65497 bytes by the 10-byte header")
	return "127.0.0.1:0"
}
