package anytls

import (
	"errors"
	"log/slog"

	"github.com/anytls-suite/anytls/internal/outbound"
	"github.com/anytls-suite/anytls/internal/session"
	"github.com/anytls-suite/anytls/internal/uot"
)

// DefaultUDPIdleTimeout ends a UDP association that carried no datagram, in
// either direction, for this long.
const DefaultUDPIdleTimeout = uot.DefaultIdleTimeout

// serveUDP serves a stream whose destination asked for UDP over TCP: the
// uot handler opens the UDP socket, reports it with SYNACK and relays.
func (s *Server) serveUDP(st *session.Stream, legacy bool, out *outbound.Dialer, log *slog.Logger) {
	log = log.With("stream", st.ID())
	err := uot.Serve(s.ctx, st, legacy, uot.ServerOptions{
		IdleTimeout:    s.cfg.UDPIdleTimeout,
		ResolveTimeout: s.cfg.ConnectTimeout,
		LookupNetIP:    out.LookupNetIP,
		Allow:          out.Check,
		Ready: func(err error) error {
			if errors.Is(err, outbound.ErrRefused) {
				log.Info("UDP destination refused", "err", err)
			} else if err != nil {
				log.Info("UDP association failed", "err", err)
			}
			return st.SendSYNACK(err)
		},
		Logger: log,
	})
	if err != nil {
		log.Debug("UDP association ended with an error", "err", err)
	}
}
