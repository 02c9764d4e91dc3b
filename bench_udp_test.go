package anytls_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/anytls-suite/anytls/internal/udptest"
)

// BenchmarkTunnel measures echo throughput through our client and server
// over TLS on loopback: TCP (one stream, 32 KiB writes) beside UDP
// datagrams of several sizes in connect mode and in non-connect mode. MB/s
// counts the payload one way; every byte also comes back. For UDP, each
// operation is one datagram sent and its echo received and checked, with
// up to 64 datagrams (1 MiB) in flight; datagrams/s is the rate of
// completed round trips and "resent" the datagrams UDP lost on loopback.
//
//	go test -run '^$' -bench BenchmarkTunnel -benchtime 3s .
func BenchmarkTunnel(b *testing.B) {
	echoTCP := startEcho(b)
	echoUDP := udptest.Echo(b, "127.0.0.1:0")
	addr, _, pin := startServer(b, nil)
	c := newClient(b, addr, pin, nil)
	ctx := context.Background()

	b.Run("tcp-32KiB", func(b *testing.B) {
		conn, err := c.DialContext(ctx, "tcp", echoTCP)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		chunk := make([]byte, 32<<10)
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		b.ResetTimer()
		errc := make(chan error, 1)
		go func() {
			for range b.N {
				if _, err := conn.Write(chunk); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		if _, err := io.CopyN(io.Discard, conn, int64(b.N)*int64(len(chunk))); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	})

	udp := func(b *testing.B, size int, link func() dgramLink) {
		sizes := make([]int, b.N)
		for i := range sizes {
			sizes[i] = size
		}
		l := link()
		b.SetBytes(int64(size))
		b.ReportAllocs()
		b.ResetTimer()
		st := exchange(b, l, sizes, exchangeConfig{})
		b.ReportMetric(float64(st.datagrams)/st.elapsed.Seconds(), "datagrams/s")
		b.ReportMetric(float64(st.resent), "resent")
	}
	for _, size := range []int{64, 1200, 16384, 65507} {
		b.Run(fmt.Sprintf("udp-connect-%d", size), func(b *testing.B) {
			udp(b, size, func() dgramLink {
				conn, err := c.DialContext(ctx, "udp", echoUDP.String())
				if err != nil {
					b.Fatal(err)
				}
				return connLink(conn)
			})
		})
	}
	b.Run("udp-packet-1200", func(b *testing.B) {
		udp(b, 1200, func() dgramLink {
			pc, err := c.ListenPacket(ctx)
			if err != nil {
				b.Fatal(err)
			}
			dst := net.UDPAddrFromAddrPort(echoUDP)
			return packetLink(pc, func(int) net.Addr { return dst })
		})
	})
}
