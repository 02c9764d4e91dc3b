//go:build unix

package anytls_test

import (
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleSessionsCPU opens n pooled sessions (client and server in this process)
// with the given idle heartbeat and returns the CPU time the process spends
// over window while they sit idle.
func idleSessionsCPU(b *testing.B, n int, heartbeat, window time.Duration) time.Duration {
	echo := startEcho(b)
	addr, _, pin := startServer(b, nil)
	c := newClient(b, addr, pin, func(cfg *anytls.ClientConfig) {
		cfg.MinIdleSessions = n
		cfg.IdleTimeout = time.Hour
		cfg.IdleHeartbeat = heartbeat
		// the verdict check after each probe schedules the next one, so it
		// must come before the next heartbeat is due
		cfg.HeartbeatTimeout = heartbeat * 3 / 4
	})
	ctx := testContext(b, 5*time.Minute)
	// n streams at once make n sessions; closing them leaves n idle
	var conns []interface{ Close() error }
	for i := 0; i < n; i++ {
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err != nil {
			b.Fatal(err)
		}
		echoRoundTrip(b, conn, []byte("x"))
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		conn.Close()
	}
	if open, idle := c.Sessions(); open != n || idle != n {
		b.Fatalf("%d sessions, %d idle; want %d", open, idle, n)
	}
	time.Sleep(heartbeat) // let the first round start
	start := cpuTime()
	time.Sleep(window)
	return cpuTime() - start
}

// BenchmarkIdleHeartbeatCost measures what idle heartbeats cost: CPU per
// heartbeat (client and server side together, over real TLS), from the
// difference between idle sessions probed every 200ms and idle sessions never
// probed, and what that makes for 1,000 idle pooled sessions at the default
// interval (the target is under 1% of one core).
//
//	go test -run '^$' -bench IdleHeartbeatCost -benchtime 1x .
func BenchmarkIdleHeartbeatCost(b *testing.B) {
	const (
		n      = 200
		fast   = 200 * time.Millisecond
		window = 3 * time.Second
	)
	for i := 0; i < b.N; i++ {
		base := idleSessionsCPU(b, n, -1, window)
		busy := idleSessionsCPU(b, n, fast, window)
		beats := float64(n) * float64(window) / float64(fast)
		per := time.Duration(float64(busy-base) / beats)
		if per < 0 {
			per = 0
		}
		perSec := 1000.0 / anytls.DefaultIdleHeartbeat.Seconds() // heartbeats/s for 1,000 sessions
		pct := float64(per) * perSec / float64(time.Second) * 100
		b.ReportMetric(float64(per.Nanoseconds())/1000, "µs/heartbeat")
		b.ReportMetric(pct, "%CPU@1000idle")
		b.Logf("idle CPU over %v: %v without heartbeats, %v with %d sessions probed every %v; "+
			"%v per heartbeat; 1,000 idle sessions at the default %v interval: %.4f%% of one core",
			window, base, busy, n, fast, per, anytls.DefaultIdleHeartbeat, pct)
	}
}
