package inbound

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// pipe hands an established CONNECT over to the relay. Bytes the client sent
// after its request, already in br, go to remote first. The caller closes
// both connections afterwards.
func (s *Server) pipe(local net.Conn, br *bufio.Reader, remote net.Conn, dst wire.Addr, log *slog.Logger) {
	if err := local.SetDeadline(time.Time{}); err != nil {
		log.Debug("inbound: clear deadline", "dst", dst.String(), "err", err)
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := remote.Write(b); err != nil {
			log.Debug("inbound: forward early data", "dst", dst.String(), "err", err)
			return
		}
		_, _ = br.Discard(n)
	}
	start := time.Now()
	s.relay(local, remote)
	log.Debug("inbound: relay done", "dst", dst.String(), "duration", time.Since(start))
}

// defaultRelay copies both ways until both directions end, then closes both
// connections.
func defaultRelay(local, remote net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(remote, local)
	}()
	copyHalf(local, remote)
	<-done
	local.Close()
	remote.Close()
}

// copyHalf copies src to dst until src ends. After a clean EOF it half-closes
// dst so that its peer sees the end too. After an error, or when dst cannot
// half-close, it closes both connections, which ends the other direction.
func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
	src.Close()
}
