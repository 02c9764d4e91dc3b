package main

// The load: what the harness does through each implementation. Every
// connection goes to the target child, whose first byte selects what it does
// (see serveTarget), and every exchange ends with the target closing, so
// that no stream lingers into the next measurement.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

// dialer opens a connection to the target through one implementation.
type dialer func(ctx context.Context) (net.Conn, error)

// opTimeout bounds each short exchange; drainTimeout the end of a bulk one.
const (
	opTimeout    = 10 * time.Second
	drainTimeout = 30 * time.Second
)

func directDialer(target string) dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}
}

func tunnelDialer(t tunnel, target wire.Addr) dialer {
	return func(ctx context.Context) (net.Conn, error) { return t.DialTCP(ctx, target) }
}

// socksDialer connects through a SOCKS5 proxy the way curl does: greeting,
// method reply, CONNECT, reply.
func socksDialer(proxy string, target netip.AddrPort) dialer {
	req := []byte{5, 1, 0, 1}
	req = append(req, target.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, target.Port())
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", proxy)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(opTimeout))
		if err := socksHandshake(c, req); err != nil {
			c.Close()
			return nil, err
		}
		c.SetDeadline(time.Time{})
		return c, nil
	}
}

func socksHandshake(c net.Conn, req []byte) error {
	var b [4 + 16 + 2]byte
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:2]); err != nil {
		return fmt.Errorf("socks greeting: %w", err)
	}
	if b[0] != 5 || b[1] != 0 {
		return fmt.Errorf("socks method reply % x", b[:2])
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:4]); err != nil {
		return fmt.Errorf("socks reply: %w", err)
	}
	if b[1] != 0 {
		return fmt.Errorf("socks reply code %d", b[1])
	}
	var n int
	switch b[3] {
	case 1:
		n = 4 + 2
	case 4:
		n = 16 + 2
	case 3:
		if _, err := io.ReadFull(c, b[:1]); err != nil {
			return err
		}
		n = int(b[0]) + 2
	default:
		return fmt.Errorf("socks reply address type %d", b[3])
	}
	_, err := io.CopyN(io.Discard, c, int64(n))
	return err
}

// openOnce opens a connection, sends one byte and times until its echo
// comes back; then it reads to the end (the target closes) so that the
// stream is over before the next one opens.
func openOnce(ctx context.Context, dial dialer) (time.Duration, error) {
	t0 := time.Now()
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(t0.Add(opTimeout))
	if _, err := c.Write([]byte{modeOnce, 0x5a}); err != nil {
		return 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if b[0] != 0x5a {
		return 0, fmt.Errorf("echo %#x, want 0x5a", b[0])
	}
	if err := readToEnd(c); err != nil {
		return 0, err
	}
	return d, nil
}

// readToEnd waits for the peer to close. Errors other than timeouts count as
// the end: a stream torn down by its session is over too.
func readToEnd(c net.Conn) error {
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}

// measureOpen times n sequential short connections, after one not counted.
func measureOpen(ctx context.Context, dial dialer, n int) ([]time.Duration, error) {
	if _, err := openOnce(ctx, dial); err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, n)
	for range n {
		d, err := openOnce(ctx, dial)
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, ctx.Err()
}

// measureCold times the first connection through a fresh client, n times.
func measureCold(ctx context.Context, dial dialer, fresh func() error, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		if err := fresh(); err != nil {
			return out, err
		}
		time.Sleep(20 * time.Millisecond) // let the old client's sessions go
		d, err := openOnce(ctx, dial)
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// rttWarmup round trips go first on the stream and are not counted.
const rttWarmup = 50

// measureRTT times n round trips of size bytes on one stream. begin and
// end are called around the timed round trips.
func measureRTT(ctx context.Context, dial dialer, n, size int, begin, end func()) ([]time.Duration, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	total := n + rttWarmup
	c.SetDeadline(time.Now().Add(opTimeout + time.Duration(total)*time.Millisecond))
	hdr := []byte{modeRoundTrip, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(total))
	binary.BigEndian.PutUint32(hdr[5:], uint32(size))
	if _, err := c.Write(hdr); err != nil {
		return nil, err
	}
	msg, got := make([]byte, size), make([]byte, size)
	rand.Read(msg)
	out := make([]time.Duration, 0, n)
	for i := range total {
		if i == rttWarmup {
			begin()
		}
		msg[0] = byte(i)
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return out, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return out, err
		}
		d := time.Since(t0)
		if got[0] != byte(i) || got[size-1] != msg[size-1] {
			return out, errors.New("round trip: echo differs")
		}
		if i >= rttWarmup {
			out = append(out, d)
		}
	}
	end()
	return out, readToEnd(c)
}

// bulkResult is one throughput measurement.
type bulkResult struct {
	bytes   int64
	elapsed time.Duration
}

func (r bulkResult) mbps() float64 { return float64(r.bytes) / 1e6 / r.elapsed.Seconds() }

var payload = func() []byte {
	b := make([]byte, chunkSize)
	rand.Read(b)
	binary.BigEndian.PutUint32(b, chunkSize-4) // an upload frame header
	return b
}()

// measureBulk moves data for dur over streams concurrent connections, up
// (harness to target) or down. Upload ends when the target has confirmed
// every byte; download counts what arrived within dur. begin and end are
// called right before the data starts and right after it has all arrived,
// outside connection setup and teardown.
func measureBulk(ctx context.Context, dial dialer, streams int, up bool, dur time.Duration, begin, end func()) (bulkResult, error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dial(ctx)
		if err != nil {
			return bulkResult{}, err
		}
		conns = append(conns, c)
		if up {
			c.SetWriteDeadline(time.Now().Add(opTimeout))
			if _, err := c.Write([]byte{modeUpload}); err != nil {
				return bulkResult{}, err
			}
		}
	}
	var (
		mu       sync.Mutex
		total    int64
		last     time.Time
		firstErr error
	)
	record := func(n int64, at time.Time, err error) {
		mu.Lock()
		defer mu.Unlock()
		total += n
		if at.After(last) {
			last = at
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	begin()
	t0 := time.Now()
	stopAt := t0.Add(dur)
	var data, all sync.WaitGroup
	data.Add(streams)
	all.Add(streams)
	for _, c := range conns {
		c.SetDeadline(stopAt.Add(drainTimeout))
		if up {
			go func() {
				defer all.Done()
				n, at, err := upload(c, stopAt)
				record(n, at, err)
				data.Done()
			}()
			continue
		}
		go func() {
			defer all.Done()
			n, err := download(c, stopAt)
			record(n, stopAt, err)
			data.Done()
			if err == nil {
				// stop the source, and take what is in flight
				c.SetDeadline(time.Now().Add(drainTimeout))
				c.Write([]byte{'x'})
				readToEnd(c)
			}
		}()
	}
	data.Wait()
	end()
	all.Wait()
	if firstErr != nil {
		return bulkResult{}, firstErr
	}
	return bulkResult{bytes: total, elapsed: last.Sub(t0)}, nil
}

// upload writes 32 KiB frames until stopAt, then the end frame, and returns
// the byte count the target confirmed and when its answer arrived.
func upload(c net.Conn, stopAt time.Time) (int64, time.Time, error) {
	var sent int64
	for time.Now().Before(stopAt) {
		n, err := c.Write(payload)
		sent += int64(n)
		if err != nil {
			return 0, time.Time{}, err
		}
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil {
		return 0, time.Time{}, err
	}
	sent += 4
	var ack [9]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, time.Time{}, fmt.Errorf("upload answer: %w", err)
	}
	at := time.Now()
	got := int64(binary.BigEndian.Uint64(ack[1:]))
	if ack[0] != 'F' || got != sent {
		return 0, at, fmt.Errorf("upload: target got %d bytes of %d", got, sent)
	}
	return got, at, nil
}

// download asks the target to send and counts what arrives before stopAt.
func download(c net.Conn, stopAt time.Time) (int64, error) {
	if _, err := c.Write([]byte{modeDownload}); err != nil {
		return 0, err
	}
	c.SetReadDeadline(stopAt)
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("download: %w", err)
		}
	}
}

// measureIdle opens n streams, each confirmed end to end by one echoed
// byte, and leaves them open while snap reads the memory of client and
// server; then it closes them. snap is called before and after.
func measureIdle(ctx context.Context, dial dialer, n int, snap func() error) error {
	if err := snap(); err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.SetDeadline(time.Now().Add(opTimeout))
			c.Write([]byte{'x'}) // the target closes
		}
		for _, c := range conns {
			readToEnd(c)
			c.Close()
		}
	}()
	var b [1]byte
	for range n {
		c, err := dial(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(opTimeout))
		if _, err := c.Write([]byte{modeIdle, 1}); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return err
		}
		c.SetDeadline(time.Time{})
	}
	time.Sleep(300 * time.Millisecond)
	return snap()
}
