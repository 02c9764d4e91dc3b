package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// phase is one measurement, run for every implementation in turn.
type phase struct {
	key  string // as in -phases
	name string
	// profile: the CPU profile tag this phase starts (first) or stops (last)
	profTag             string
	profStart, profStop bool
	run                 func(ctx context.Context, l *live) (string, error)
}

// cpuAcc adds up the CPU time of both sides over the throughput phases.
type cpuAcc struct {
	client, server time.Duration
	bytes          int64
	clientKnown    bool
}

func runRound(ctx context.Context, w io.Writer, lives []*live, round int, last bool, res *results, o options) error {
	cpu := map[string]*cpuAcc{}
	for _, l := range lives {
		cpu[l.spec.name] = &cpuAcc{clientKnown: l.client != nil}
	}
	set := func(metric string, l *live, v float64) { res.set(metric, l.spec.name, round, v) }

	phases := []phase{
		{key: "cold", name: "cold start", run: func(ctx context.Context, l *live) (string, error) {
			d, err := measureCold(ctx, l.dial, l.fresh, o.colds)
			if err != nil {
				return "", err
			}
			v := ms(percentile(d, 50))
			set("cold", l, v)
			return fmt.Sprintf("%.2f ms", v), nil
		}},
		{key: "open", name: "open", run: func(ctx context.Context, l *live) (string, error) {
			d, err := measureOpen(ctx, l.dial, o.opens)
			if err != nil {
				return "", err
			}
			p50, p99 := us(percentile(d, 50)), us(percentile(d, 99))
			set("open50", l, p50)
			set("open99", l, p99)
			return fmt.Sprintf("%.0f/%.0f µs", p50, p99), nil
		}},
		{key: "rtt", name: "1 KiB rtt", profTag: "rtt", run: func(ctx context.Context, l *live) (string, error) {
			var cpu cpuSpan
			d, err := measureRTT(ctx, l.dial, o.rtts, 1024, cpu.begin(l), cpu.end(l))
			if err == nil {
				err = cpu.err
			}
			if err != nil {
				return "", err
			}
			p50, p99 := us(percentile(d, 50)), us(percentile(d, 99))
			set("rtt50", l, p50)
			set("rtt99", l, p99)
			client, server := cpu.used()
			if l.client != nil {
				set("cpurttc", l, us(client)/float64(len(d)))
			}
			if l.server != nil {
				set("cpurtts", l, us(server)/float64(len(d)))
			}
			return fmt.Sprintf("%.0f/%.0f µs", p50, p99), nil
		}},
	}
	for _, c := range bulkCases {
		phases = append(phases, phase{
			key:     c.key,
			name:    c.key,
			profTag: "bulk",
			run: func(ctx context.Context, l *live) (string, error) {
				var span cpuSpan
				r, err := measureBulk(ctx, l.dial, c.streams, c.up, o.dur, span.begin(l), span.end(l))
				if err == nil {
					err = span.err
				}
				if err != nil {
					return "", err
				}
				client, server := span.used()
				acc := cpu[l.spec.name]
				acc.client += client
				acc.server += server
				acc.bytes += r.bytes
				set(c.key, l, r.mbps())
				if o.verbose {
					mb := float64(r.bytes) / 1e6
					return fmt.Sprintf("%.0f MB/s (CPU %.2f/%.2f ms/MB)", r.mbps(), ms(client)/mb, ms(server)/mb), nil
				}
				return fmt.Sprintf("%.0f MB/s", r.mbps()), nil
			},
		})
	}
	phases = append(phases, phase{key: "idle", name: "idle memory", run: func(ctx context.Context, l *live) (string, error) {
		if l.client == nil {
			return "", nil // measured through the SOCKS5 path only
		}
		var snaps [][2]childStats
		snap := func() error {
			s, err := l.snapshot(true)
			snaps = append(snaps, s)
			if err == nil && len(snaps) == 2 && o.profile != "" && last {
				err = l.heapProfile(o.profile, "idle")
			}
			return err
		}
		if err := measureIdle(ctx, l.dial, o.idle, snap); err != nil {
			return "", err
		}
		per := func(side int, f func(childStats) int64) float64 {
			return float64(f(snaps[1][side])-f(snaps[0][side])) / float64(o.idle) / 1024
		}
		rss := func(s childStats) int64 { return s.RSS }
		heap := func(s childStats) int64 { return s.Heap + s.Stacks }
		set("memc", l, per(0, rss))
		set("mems", l, per(1, rss))
		set("heapc", l, per(0, heap))
		set("heaps", l, per(1, heap))
		if o.verbose {
			stacks := func(s childStats) int64 { return s.Stacks }
			gs := func(s childStats) int64 { return int64(s.Goroutines) }
			gper := func(side int) float64 { return per(side, gs) * 1024 }
			th := func(side int) int { return snaps[1][side].Threads - snaps[0][side].Threads }
			var classes []string
			for _, name := range slices.Sorted(maps.Keys(snaps[1][0].Classes)) {
				c := func(s childStats) int64 { return s.Classes[name] }
				if d0, d1 := per(0, c), per(1, c); math.Abs(d0) >= 0.05 || math.Abs(d1) >= 0.05 {
					classes = append(classes, fmt.Sprintf("%s %.1f/%.1f", name, d0, d1))
				}
			}
			return fmt.Sprintf("RSS %.1f/%.1f KiB, stacks %.1f/%.1f KiB, goroutines %.2f/%.2f per stream, threads +%d/+%d; memory classes (KiB): %s",
				per(0, rss), per(1, rss), per(0, stacks), per(1, stacks), gper(0), gper(1), th(0), th(1), strings.Join(classes, ", ")), nil
		}
		return fmt.Sprintf("RSS %.1f/%.1f KiB", per(0, rss), per(1, rss)), nil
	}})

	phases = selectPhases(phases, o.phases)
	for _, ph := range phases {
		var line []string
		for _, l := range lives {
			if err := ctx.Err(); err != nil {
				return err
			}
			prof := o.profile != "" && last && ph.profTag != "" && l.client != nil
			if prof && ph.profStart {
				if err := l.profile(o.profile, ph.profTag, true); err != nil {
					return err
				}
			}
			s, err := ph.run(ctx, l)
			if prof && ph.profStop {
				if err := l.profile(o.profile, ph.profTag, false); err != nil {
					return err
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s = "FAILED"
				res.failures++
				fmt.Fprintf(w, "  %s %s: %v\n", ph.name, l.spec.name, err)
			}
			if s != "" {
				line = append(line, l.spec.name+" "+s)
			}
		}
		fmt.Fprintf(w, "  %-11s %s\n", ph.name, strings.Join(line, " | "))
	}
	for _, l := range lives {
		acc := cpu[l.spec.name]
		if acc.bytes == 0 || l.server == nil {
			continue
		}
		mb := float64(acc.bytes) / 1e6
		if acc.clientKnown {
			set("cpuc", l, ms(acc.client)/mb)
		}
		set("cpus", l, ms(acc.server)/mb)
	}
	return nil
}

// cpuSpan reads the CPU time both sides of an implementation use between
// begin and end.
type cpuSpan struct {
	before, after [2]childStats
	err           error
}

func (c *cpuSpan) begin(l *live) func() {
	return func() { c.before, c.err = l.snapshot(false) }
}

func (c *cpuSpan) end(l *live) func() {
	return func() {
		if c.err == nil {
			c.after, c.err = l.snapshot(false)
		}
	}
}

// used returns the client's and the server's CPU time in the span.
func (c *cpuSpan) used() (client, server time.Duration) {
	return c.after[0].CPU - c.before[0].CPU, c.after[1].CPU - c.before[1].CPU
}

// phaseKeys lists the phases in the order a round runs them.
func phaseKeys() []string {
	keys := []string{"cold", "open", "rtt"}
	for _, c := range bulkCases {
		keys = append(keys, c.key)
	}
	return append(keys, "idle")
}

// selectPhases keeps the phases named in keys and marks where each CPU
// profile starts (first phase with the tag) and stops (last).
func selectPhases(all []phase, keys []string) []phase {
	var out []phase
	for _, ph := range all {
		if slices.Contains(keys, ph.key) {
			out = append(out, ph)
		}
	}
	for i := range out {
		tag := out[i].profTag
		if tag == "" {
			continue
		}
		out[i].profStart = !slices.ContainsFunc(out[:i], func(p phase) bool { return p.profTag == tag })
		out[i].profStop = !slices.ContainsFunc(out[i+1:], func(p phase) bool { return p.profTag == tag })
	}
	return out
}

// bulkCase is one throughput measurement.
type bulkCase struct {
	key     string
	streams int
	up      bool
}

var bulkCases = []bulkCase{
	{"up1", 1, true}, {"down1", 1, false},
	{"up16", 16, true}, {"down16", 16, false},
	{"up64", 64, true}, {"down64", 64, false},
}

// percentile returns the p-th percentile (nearest rank) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
func us(d time.Duration) float64 { return float64(d) / 1e3 }
