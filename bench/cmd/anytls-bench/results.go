package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// metric is one measured quantity.
type metric struct {
	key, name, unit string
	higher          bool // higher is better
	decimals        int
}

var metricDefs = []metric{
	{"up1", "upload, 1 stream", "MB/s", true, 0},
	{"down1", "download, 1 stream", "MB/s", true, 0},
	{"up16", "upload, 16 streams", "MB/s", true, 0},
	{"down16", "download, 16 streams", "MB/s", true, 0},
	{"up64", "upload, 64 streams", "MB/s", true, 0},
	{"down64", "download, 64 streams", "MB/s", true, 0},
	{"open50", "open latency p50", "µs", false, 0},
	{"open99", "open latency p99", "µs", false, 0},
	{"rtt50", "1 KiB round trip p50", "µs", false, 0},
	{"rtt99", "1 KiB round trip p99", "µs", false, 0},
	{"cold", "cold start", "ms", false, 2},
	{"cpurttc", "client CPU per round trip", "µs", false, 1},
	{"cpurtts", "server CPU per round trip", "µs", false, 1},
	{"cpuc", "client CPU per MB", "ms", false, 2},
	{"cpus", "server CPU per MB", "ms", false, 2},
	{"memc", "client RSS per idle stream", "KiB", false, 1},
	{"mems", "server RSS per idle stream", "KiB", false, 1},
	{"heapc", "client heap+stacks per idle stream", "KiB", false, 1},
	{"heaps", "server heap+stacks per idle stream", "KiB", false, 1},
}

// arrow says which way is better: ↑ higher, ↓ lower.
func (m metric) arrow() string {
	if m.higher {
		return "↑"
	}
	return "↓"
}

func (m metric) format(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.*f", m.decimals, v)
}

// results holds every value: metric → implementation → one per round (NaN
// where it was not measured or failed).
type results struct {
	impls    []implSpec
	rounds   int
	vals     map[string]map[string][]float64
	orders   [][]string
	elapsed  time.Duration
	failures int // measurements that failed
	// otherCPU is, per round, the CPU time the machine spent outside the
	// harness and its children: other load that disturbed the measurement.
	otherCPU []time.Duration
	redone   int // rounds run again because of other load
}

func newResults(impls []implSpec, rounds int) *results {
	r := &results{impls: impls, rounds: rounds, vals: map[string]map[string][]float64{}}
	for _, m := range metricDefs {
		r.vals[m.key] = map[string][]float64{}
		for _, s := range impls {
			v := make([]float64, rounds)
			for i := range v {
				v[i] = math.NaN()
			}
			r.vals[m.key][s.name] = v
		}
	}
	return r
}

// clearRound forgets the values of a round that is run again.
func (r *results) clearRound(round int) {
	for _, byImpl := range r.vals {
		for _, v := range byImpl {
			v[round] = math.NaN()
		}
	}
}

func (r *results) set(metric, impl string, round int, v float64) {
	r.vals[metric][impl][round] = v
}

// median of an implementation's rounds, NaN if none was measured.
func (r *results) median(metric, impl string) float64 {
	return median(r.vals[metric][impl])
}

// ratios returns a ÷ b for every round.
func (r *results) ratios(metric, a, b string) []float64 {
	va, vb := r.vals[metric][a], r.vals[metric][b]
	out := make([]float64, r.rounds)
	for i := range out {
		out[i] = va[i] / vb[i]
		if vb[i] == 0 || math.IsInf(out[i], 0) {
			out[i] = math.NaN()
		}
	}
	return out
}

func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// family is a base implementation and those it is compared with.
type family struct {
	title   string
	base    implSpec
	members []implSpec // base first
}

func (r *results) families() []family {
	var out []family
	for _, base := range []string{"ours", "ours-lib"} {
		var f family
		for _, s := range r.impls {
			if s.base == base {
				f.members = append(f.members, s)
			}
			if s.name == base {
				f.base = s
			}
		}
		if f.base.name == "" {
			continue
		}
		if i := slices.IndexFunc(f.members, func(s implSpec) bool { return s.name == base }); i > 0 {
			f.members[0], f.members[i] = f.members[i], f.members[0]
		}
		f.title = "Through the SOCKS5 front end"
		if base == "ours-lib" {
			f.title = "Library path (the client called from the harness process)"
		}
		out = append(out, f)
	}
	return out
}

// measured reports whether any implementation of f has a value for m.
func (r *results) measured(f family, m metric) bool {
	for _, s := range f.members {
		if !math.IsNaN(r.median(m.key, s.name)) {
			return true
		}
	}
	return false
}

func formatRatios(v []float64) string {
	med := median(v)
	if math.IsNaN(med) {
		return "–"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = "–"
		if !math.IsNaN(x) {
			parts[i] = fmt.Sprintf("%.2f", x)
		}
	}
	if len(v) == 1 {
		return fmt.Sprintf("%.2f", med)
	}
	return fmt.Sprintf("%.2f (%s)", med, strings.Join(parts, " "))
}

func (r *results) printSummary(w io.Writer) {
	fmt.Fprintf(w, "medians of %d round(s); ratio = ours ÷ other, median (per round); took %v\n",
		r.rounds, r.elapsed.Round(time.Second))
	for _, f := range r.families() {
		fmt.Fprintf(w, "\n%s\n", f.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := []string{"metric", "unit"}
		for _, s := range f.members {
			head = append(head, s.name)
		}
		for _, s := range f.members[1:] {
			head = append(head, f.base.name+"/"+s.name)
		}
		fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
		for _, m := range metricDefs {
			if !r.measured(f, m) {
				continue
			}
			row := []string{m.name, m.unit + " " + m.arrow()}
			for _, s := range f.members {
				row = append(row, m.format(r.median(m.key, s.name)))
			}
			for _, s := range f.members[1:] {
				row = append(row, formatRatios(r.ratios(m.key, f.base.name, s.name)))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
	}
}

// writeJSON dumps every value, for comparing runs.
func writeJSON(path string, r *results, m meta) error {
	type out struct {
		Meta   meta                             `json:"meta"`
		Orders [][]string                       `json:"orders"`
		Values map[string]map[string][]*float64 `json:"values"`
	}
	o := out{Meta: m, Orders: r.orders, Values: map[string]map[string][]*float64{}}
	for metric, byImpl := range r.vals {
		o.Values[metric] = map[string][]*float64{}
		for impl, v := range byImpl {
			p := make([]*float64, len(v))
			for i, x := range v {
				if !math.IsNaN(x) {
					p[i] = &x
				}
			}
			o.Values[metric][impl] = p
		}
	}
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
