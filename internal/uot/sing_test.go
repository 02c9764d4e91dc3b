package uot

import (
	"bytes"
	"net"
	"testing"
	"time"

	M "github.com/sagernet/sing/common/metadata"
	singuot "github.com/sagernet/sing/common/uot"

	"github.com/anytls-suite/anytls/internal/wire"
)

// bufConn is a net.Conn that reads from r and records writes in w.
type bufConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *bufConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bufConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *bufConn) Close() error                     { return nil }
func (c *bufConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *bufConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bufConn) SetDeadline(time.Time) error      { return nil }
func (c *bufConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

func socksaddr(a wire.Addr) M.Socksaddr { return M.ParseSocksaddrHostPort(a.Host(), a.Port) }

// Our encoders produce the bytes sing's UoT code writes, and sing's reader
// takes ours.
func TestCodecMatchesSing(t *testing.T) {
	if got, want := singuot.MagicAddress, MagicAddress; got != want {
		t.Fatalf("magic %q, sing %q", want, got)
	}
	if got, want := singuot.LegacyMagicAddress, LegacyMagicAddress; got != want {
		t.Fatalf("legacy magic %q, sing %q", want, got)
	}
	for _, c := range requestCases {
		sb, err := singuot.EncodeRequest(singuot.Request{IsConnect: c.req.Connect, Destination: socksaddr(c.req.Destination)})
		if err != nil {
			t.Fatalf("%s: sing: %v", c.name, err)
		}
		ours, _ := AppendRequest(nil, c.req)
		if !bytes.Equal(sb.Bytes(), ours) {
			t.Fatalf("%s: request %x, sing %x", c.name, ours, sb.Bytes())
		}
		sreq, err := singuot.ReadRequest(bytes.NewReader(ours))
		if err != nil || sreq.IsConnect != c.req.Connect || sreq.Destination != socksaddr(c.req.Destination) {
			t.Fatalf("%s: sing read %+v, %v", c.name, sreq, err)
		}
		sb.Release()
	}
	for _, c := range packetCases {
		var dst M.Socksaddr
		if !c.connect {
			dst = socksaddr(c.addr)
		}
		w := &bufConn{r: bytes.NewReader(nil)}
		sc := singuot.NewConn(w, singuot.Request{IsConnect: c.connect, Destination: dst})
		if _, err := sc.WriteTo([]byte(c.payload), dst); err != nil {
			t.Fatalf("%s: sing write: %v", c.name, err)
		}
		ours, _ := AppendPacket(nil, c.connect, c.addr, []byte(c.payload))
		if !bytes.Equal(w.w.Bytes(), ours) {
			t.Fatalf("%s: packet %x, sing %x", c.name, ours, w.w.Bytes())
		}
		if c.addr.IsName() {
			continue // sing's ReadFrom returns an address only for IPs
		}
		r := &bufConn{r: bytes.NewReader(ours)}
		sc = singuot.NewConn(r, singuot.Request{IsConnect: c.connect, Destination: dst})
		buf := make([]byte, 100)
		n, addr, err := sc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != c.payload {
			t.Fatalf("%s: sing read %q, %v", c.name, buf[:n], err)
		}
		if !c.connect && M.SocksaddrFromNet(addr) != dst {
			t.Fatalf("%s: sing read address %v, want %v", c.name, addr, dst)
		}
	}
}
