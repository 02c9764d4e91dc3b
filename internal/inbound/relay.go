package inbound

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// pipe prepares an established CONNECT for the relay and returns the job;
// release (which closes remote) runs when the job finishes, or at once when
// the preparation fails (nil is returned then). Bytes the client sent after
// its request, already in br, go to remote first.
func (s *Server) pipe(local net.Conn, br *bufio.Reader, remote net.Conn, release func() error, dst wire.Addr, log *slog.Logger) *relayJob {
	if err := local.SetDeadline(time.Time{}); err != nil {
		log.Debug("inbound: clear deadline", "dst", dst.String(), "err", err)
		release()
		return nil
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := remote.Write(b); err != nil {
			log.Debug("inbound: forward early data", "dst", dst.String(), "err", err)
			release()
			return nil
		}
		_, _ = br.Discard(n)
	}
	return &relayJob{local: local, remote: remote, release: release, dst: dst, log: log, start: time.Now()}
}

// relayJob is an established connection to relay.
type relayJob struct {
	local, remote net.Conn
	release       func() error
	dst           wire.Addr
	log           *slog.Logger
	start         time.Time
}

// run relays with relay (which blocks), then finishes.
func (j *relayJob) run(relay func(local, remote net.Conn)) {
	relay(j.local, j.remote)
	j.finish()
}

// finish releases the tunnel connection once the relay is over.
func (j *relayJob) finish() {
	j.release()
	j.log.Debug("inbound: relay done", "dst", j.dst.String(), "duration", time.Since(j.start))
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
