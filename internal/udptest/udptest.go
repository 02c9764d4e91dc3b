// Package udptest holds UDP helpers for tests: an echo server on loopback and
// a check for IPv6. Only tests import it.
package udptest

import (
	"net"
	"net/netip"
	"testing"
)

// SocketBuffer is asked for the echo server's socket buffers (the kernel caps
// it at net.core.rmem_max and wmem_max), so that a window of large datagrams
// fits without loss.
const SocketBuffer = 4 << 20

// Echo runs a UDP echo server on addr ("127.0.0.1:0", "[::1]:0") until the
// test ends and returns its address. Each datagram goes back to its sender
// unchanged.
func Echo(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(SocketBuffer)
	pc.SetWriteBuffer(SocketBuffer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 0xFFFF)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// HaveIPv6 reports whether UDP works on the IPv6 loopback, logging why not.
func HaveIPv6(t testing.TB) bool {
	t.Helper()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback, IPv6 cases skipped: %v", err)
		return false
	}
	pc.Close()
	return true
}
