package main

// The child side: every server, client and the target run in their own
// process (this binary with -child ROLE) so that each one's CPU time and
// memory can be read on its own. A child prints "ready ADDR" on stdout, then
// answers one line per command read from stdin:
//
//	stats            {"cpu_ns":…,"rss":…,"heap":…,"stacks":…,"goroutines":…}
//	gc               runs the GC and returns freed memory to the OS; "ok"
//	fresh            (clients) replaces the client with a new one; "ok"
//	prof-start FILE  starts a CPU profile into FILE; "ok"
//	prof-stop        stops it; "ok"
//	heap-profile FILE  writes a heap profile (after a GC) into FILE; "ok"
//
// It exits when stdin closes, or after -max-life whatever happens.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/inbound"
	"github.com/anytls-suite/anytls/internal/relay"
	"github.com/anytls-suite/anytls/internal/sockio"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"github.com/anytls-suite/anytls/internal/wire"
	singanytls "github.com/anytls/sing-anytls"
	singpadding "github.com/anytls/sing-anytls/padding"
	singbufio "github.com/sagernet/sing/common/bufio"
	"github.com/sagernet/sing/common/logger"
	M "github.com/sagernet/sing/common/metadata"
	N "github.com/sagernet/sing/common/network"
)

// childStats is what a child reports about itself.
type childStats struct {
	CPU        time.Duration `json:"cpu_ns"`     // user + system CPU time
	RSS        int64         `json:"rss"`        // resident set size, bytes (0: unknown)
	Heap       int64         `json:"heap"`       // heap object bytes (live after "gc")
	Stacks     int64         `json:"stacks"`     // goroutine stack bytes
	Goroutines int           `json:"goroutines"` // goroutines running
	Threads    int           `json:"threads"`    // OS threads created so far
	// Classes holds the runtime's /memory/classes/ metrics (bytes), keyed by
	// name without that prefix and the unit.
	Classes map[string]int64 `json:"classes,omitempty"`
}

func readStats() childStats {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	metrics.Read(s)
	val := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	var cs []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") && d.Kind == metrics.KindUint64 {
			cs = append(cs, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(cs)
	classes := map[string]int64{}
	for _, c := range cs {
		name := strings.TrimSuffix(strings.TrimPrefix(c.Name, "/memory/classes/"), ":bytes")
		classes[name] = int64(c.Value.Uint64())
	}
	return childStats{
		Classes:    classes,
		CPU:        cpuTime(),
		RSS:        residentBytes(),
		Heap:       val(0),
		Stacks:     val(1),
		Goroutines: runtime.NumGoroutine(),
		Threads:    pprof.Lookup("threadcreate").Count(),
	}
}

// runChild runs one child role until stdin closes.
func runChild(role, server string, maxLife time.Duration) error {
	time.AfterFunc(maxLife, func() {
		fmt.Fprintf(os.Stderr, "anytls-bench child %s: -max-life %v reached, exiting\n", role, maxLife)
		os.Exit(3)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var fresh func() error
	switch role {
	case "target":
		go acceptLoop(ln, serveTarget)
	case "server-ours", "server-sing", "server-tls":
		if err := startServer(strings.TrimPrefix(role, "server-"), ln); err != nil {
			return err
		}
	case "client-ours", "client-sing", "client-tls":
		sw, err := newSwappable(strings.TrimPrefix(role, "client-"), server)
		if err != nil {
			return err
		}
		var poller sockio.Poller
		proxy, err := inbound.New(inbound.Config{
			Poller: &poller,
			// the relay anytls-client uses
			StartRelay: func(local, remote net.Conn, done func()) {
				relay.Start(local, remote, relay.Options{Poller: &poller}, func(relay.Stats, error) { done() })
			},
		}, sw)
		if err != nil {
			return err
		}
		go proxy.Serve(ln)
		fresh = sw.fresh
	default:
		return fmt.Errorf("unknown child role %q", role)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready %s\n", ln.Addr())
	out.Flush()
	return control(os.Stdin, out, fresh)
}

// control answers the harness's commands until in ends.
func control(in io.Reader, out *bufio.Writer, fresh func() error) error {
	var prof *os.File
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		var err error
		reply := "ok"
		switch cmd {
		case "stats":
			b, _ := json.Marshal(readStats())
			reply = string(b)
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
		case "fresh":
			if fresh == nil {
				err = errors.New("not a client")
				break
			}
			err = fresh()
		case "prof-start":
			if prof, err = os.Create(arg); err == nil {
				if err = pprof.StartCPUProfile(prof); err != nil {
					prof.Close()
					prof = nil
				}
			}
		case "heap-profile":
			var f *os.File
			if f, err = os.Create(arg); err == nil {
				runtime.GC()
				err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
			}
		case "prof-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				err = prof.Close()
				prof = nil
			}
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			reply = "error " + err.Error()
		}
		fmt.Fprintln(out, reply)
		if err := out.Flush(); err != nil {
			return err
		}
	}
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	return sc.Err()
}

func acceptLoop(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

// startServer runs one implementation's server on ln.
//
// Ours gets the certificate anytls-server makes for itself when it is given
// none (tlsutil.SelfSigned); the others get an ECDSA P-256 certificate, what
// a sing-box user or a TLS relay would typically deploy.
func startServer(kind string, ln net.Listener) error {
	var cert tls.Certificate
	var err error
	if kind == "ours" {
		cert, err = tlsutil.SelfSigned("localhost", "127.0.0.1")
	} else {
		cert, err = p256Certificate()
	}
	if err != nil {
		return err
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}}
	switch kind {
	case "ours":
		srv, err := anytls.NewServer(anytls.ServerConfig{
			Users:     []anytls.User{{Name: "bench", Password: benchPassword}},
			TLSConfig: tc,
		})
		if err != nil {
			return err
		}
		go srv.Serve(ln)
	case "sing":
		svc, err := singanytls.NewService(singanytls.ServiceConfig{
			PaddingScheme: singpadding.DefaultPaddingScheme,
			Users:         []singanytls.User{{Name: "bench", Password: benchPassword}},
			Handler:       singHandler{},
			Logger:        logger.NOP(),
		})
		if err != nil {
			return err
		}
		go acceptLoop(ln, func(c net.Conn) {
			defer c.Close()
			conn := tls.Server(c, tc)
			if conn.Handshake() != nil {
				return
			}
			svc.NewConnection(context.Background(), conn, M.SocksaddrFromNet(c.RemoteAddr()), nil)
		})
	case "tls":
		go acceptLoop(ln, func(c net.Conn) { serveTLSRelay(c, tc) })
	default:
		return fmt.Errorf("unknown server kind %q", kind)
	}
	return nil
}

// p256Certificate makes the self-signed ECDSA P-256 certificate of the other
// servers (fixed here, whatever tlsutil.SelfSigned comes to make).
func p256Certificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// singHandler is the outbound side of the sing-anytls server, as sing-box
// does it: dial, report success (SYNACK), then sing's bufio.CopyConn.
type singHandler struct{}

func (singHandler) NewConnectionEx(ctx context.Context, conn net.Conn, _, dst M.Socksaddr, _ N.CloseHandlerFunc) {
	defer conn.Close()
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		N.ReportHandshakeFailure(conn, err)
		return
	}
	defer out.Close()
	if err := N.ReportConnHandshakeSuccess(conn, conn); err != nil {
		return
	}
	singbufio.CopyConn(ctx, conn, out)
}

// serveTLSRelay is the plain TLS relay: TLS termination, the destination
// address, then a copy each way. It is what TLS alone costs.
func serveTLSRelay(c net.Conn, tc *tls.Config) {
	defer c.Close()
	conn := tls.Server(c, tc)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if conn.Handshake() != nil {
		return
	}
	dst, err := wire.ReadAddr(conn, wire.SOCKS)
	if err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	out, err := net.Dial("tcp", dst.String())
	if err != nil {
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(out, conn)
		out.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(conn, out)
	conn.CloseWrite()
	wg.Wait()
}

// Target modes: the first byte a connection sends to the target.
const (
	modeOnce      = 'o' // echo one byte, then close
	modeIdle      = 'i' // echo one byte, then close when another byte or EOF comes
	modeRoundTrip = 'r' // count(4) size(4), then echo count messages of size bytes, then close
	modeUpload    = 'u' // frames length(4) data until length 0; answer 'F' and the byte count(8), close
	modeDownload  = 'd' // send until any byte arrives, then close
)

const chunkSize = 32 << 10

// serveTarget is the destination of every benchmark stream.
func serveTarget(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	mode, err := br.ReadByte()
	if err != nil {
		return
	}
	switch mode {
	case modeOnce, modeIdle:
		b, err := br.ReadByte()
		if err != nil {
			return
		}
		if _, err := c.Write([]byte{b}); err != nil {
			return
		}
		if mode == modeIdle {
			br.ReadByte()
		}
	case modeRoundTrip:
		var h [8]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		count, size := binary.BigEndian.Uint32(h[:4]), binary.BigEndian.Uint32(h[4:])
		if size == 0 || size > 1<<20 {
			return
		}
		buf := make([]byte, size)
		for range count {
			if _, err := io.ReadFull(br, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case modeUpload:
		var total uint64
		var h [9]byte
		for {
			if _, err := io.ReadFull(br, h[:4]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(h[:4])
			total += 4 + uint64(n)
			if n == 0 {
				break
			}
			if _, err := br.Discard(int(n)); err != nil {
				return
			}
		}
		h[0] = 'F'
		binary.BigEndian.PutUint64(h[1:], total)
		c.Write(h[:])
	case modeDownload:
		stop := make(chan struct{})
		go func() {
			br.ReadByte()
			close(stop)
		}()
		buf := make([]byte, chunkSize)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
}
