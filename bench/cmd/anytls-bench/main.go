// Command anytls-bench measures AnyTLS implementations side by side on
// loopback, with the same load for each:
//
//   - ours: anytls-suite's server, and its client behind the SOCKS5 front end
//     that anytls-client runs (internal/inbound, internal/relay);
//   - sing: github.com/anytls/sing-anytls v0.0.11 (what sing-box ships): its
//     Service behind a TLS listener, relaying with sing's bufio.CopyConn, and
//     its Client.CreateProxy behind the same SOCKS5 front end as ours;
//   - tls: a plain TLS relay, one TLS connection per proxied connection with
//     the destination in front (what TLS alone costs: our ceiling), behind
//     the same SOCKS5 front end;
//   - direct: a TCP connection straight to the target (the floor);
//   - ours-lib, sing-lib, tls-lib: the same clients called as a library
//     (Client.DialContext, CreateProxy, tls.Dial) from the harness process,
//     without SOCKS5.
//
// Process layout. The harness re-executes itself with -child ROLE for each
// server, each SOCKS5 client and the target (echo, sink and source), so that
// CPU time and memory are read per process (getrusage and /proc/self/statm,
// asked over the child's stdin). Every address is 127.0.0.1. Children are
// started afresh for every round; they exit when the harness closes their
// stdin, and by themselves after -max-life.
//
// A round runs every phase (cold start, open latency, round trips, six
// throughput cases, idle memory) and within each phase every implementation,
// in an order that changes from round to round (A B C, C B A, B C A, ...).
// The summary gives each metric's median over rounds and, per round, the
// ratio of ours to each other implementation (paired: measured minutes
// apart on the same machine state), with the median of those ratios.
//
//	go run ./bench/cmd/anytls-bench                 # default run, about 3 minutes on 2 cores
//	go run ./bench/cmd/anytls-bench -quick          # seconds: proves the harness works
//	go run ./bench/cmd/anytls-bench -doc docs/benchmarks.md -svg docs/benchmarks.svg
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/anytls-suite/anytls/internal/wire"
)

type options struct {
	rounds  int
	dur     time.Duration
	opens   int
	rtts    int
	idle    int
	colds   int
	impls   string
	phases  []string
	quick   bool
	doc     string
	svg     string
	jsonOut string
	profile string
	quiet   time.Duration
	redo    int
	timeout time.Duration
	verbose bool

	child   string
	server  string
	maxLife time.Duration
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("anytls-bench", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; the order of implementations changes every round")
	fs.DurationVar(&o.dur, "duration", 500*time.Millisecond, "length of each throughput case")
	fs.IntVar(&o.opens, "opens", 500, "sequential short connections per round for open latency")
	fs.IntVar(&o.rtts, "rtts", 1000, "1 KiB round trips per round")
	fs.IntVar(&o.idle, "idle", 1000, "idle streams held open for the memory measurement")
	fs.IntVar(&o.colds, "colds", 5, "cold starts (fresh client) per round")
	fs.StringVar(&o.impls, "impls", strings.Join(implNames(), ","), "implementations to run, comma-separated")
	phases := fs.String("phases", strings.Join(phaseKeys(), ","), "phases to run, comma-separated")
	fs.BoolVar(&o.quick, "quick", false, "a run of seconds (1 round, small counts) that proves the harness works; explicit flags still apply")
	fs.StringVar(&o.doc, "doc", "", "rewrite the generated section of this markdown file (docs/benchmarks.md)")
	fs.StringVar(&o.svg, "svg", "", "write the plot to this SVG file")
	fs.StringVar(&o.jsonOut, "json", "", "write every measured value to this JSON file")
	fs.StringVar(&o.profile, "profile", "", "write profiles of each client and server process in the last round into this directory: CPU during throughput and round trips, heap with the idle streams open")
	fs.DurationVar(&o.quiet, "quiet", 0, "before each round, wait up to this long until other processes leave the CPU alone (0: do not wait)")
	fs.IntVar(&o.redo, "redo", 0, "run a round again when other processes took more than 10% of the CPU during it, at most this many times in all")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "abort the whole run after this long (the default grows by -quiet for each round and redo)")
	fs.BoolVar(&o.verbose, "v", false, "show the children's stderr and more progress")
	fs.StringVar(&o.child, "child", "", "internal: run as this child role")
	fs.StringVar(&o.server, "server", "", "internal: the server a client child uses")
	fs.DurationVar(&o.maxLife, "max-life", 30*time.Minute, "internal: a child exits after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(*phases, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(phaseKeys(), p) {
			return o, fmt.Errorf("unknown phase %q (have %s)", p, strings.Join(phaseKeys(), ", "))
		}
		o.phases = append(o.phases, p)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		quick := map[string]func(){
			"rounds":   func() { o.rounds = 1 },
			"duration": func() { o.dur = 100 * time.Millisecond },
			"opens":    func() { o.opens = 20 },
			"rtts":     func() { o.rtts = 100 },
			"idle":     func() { o.idle = 20 },
			"colds":    func() { o.colds = 1 },
			"timeout":  func() { o.timeout = 3 * time.Minute },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	if o.redo < 0 || o.quiet < 0 {
		return o, errors.New("-redo and -quiet must not be negative")
	}
	if !set["timeout"] {
		o.timeout += o.quiet * time.Duration(o.rounds+o.redo)
	}
	if o.rounds < 1 || o.dur <= 0 || o.opens < 1 || o.rtts < 1 || o.idle < 1 || o.colds < 1 {
		return o, errors.New("-rounds, -duration, -opens, -rtts, -idle and -colds must be positive")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "anytls-bench:", err)
		os.Exit(2)
	}
	if o.child != "" {
		if err := runChild(o.child, o.server, o.maxLife); err != nil {
			fmt.Fprintf(os.Stderr, "anytls-bench child %s: %v\n", o.child, err)
			os.Exit(1)
		}
		return
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "anytls-bench:", err)
		os.Exit(1)
	}
}

func run(o options, w io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	specs, err := selectImpls(o.impls)
	if err != nil {
		return err
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	started := time.Now()
	target, err := startChild(ctx, "target", "", o.timeout+time.Minute, o.verbose)
	if err != nil {
		return err
	}
	defer target.stop()
	ap, err := netip.ParseAddrPort(target.addr)
	if err != nil {
		return err
	}
	res := newResults(specs, o.rounds)
	fmt.Fprintf(w, "anytls-bench: %d round(s) of %s; %v per throughput case, %d opens, %d round trips, %d idle streams, %d cold starts\n",
		o.rounds, strings.Join(names(specs), " "), o.dur, o.opens, o.rtts, o.idle, o.colds)
	redos := o.redo
	for r := 0; r < o.rounds; {
		if o.quiet > 0 {
			if err := waitQuiet(ctx, w, target, o.quiet); err != nil {
				return err
			}
		}
		order := roundOrder(specs, r)
		fmt.Fprintf(w, "round %d/%d: %s\n", r+1, o.rounds, strings.Join(names(order), " "))
		other, share, err := playRound(ctx, w, target, ap, order, r, res, o)
		if err != nil {
			return err
		}
		if share > maxOtherShare && redos > 0 {
			redos--
			res.redone++
			res.clearRound(r)
			fmt.Fprintf(w, "  other load took %.0f%% of the machine: the round is run again\n", 100*share)
			continue
		}
		res.orders = append(res.orders, names(order))
		if other >= 0 {
			res.otherCPU = append(res.otherCPU, other)
		}
		r++
	}
	res.elapsed = time.Since(started)
	fmt.Fprintln(w)
	res.printSummary(w)
	if res.failures > 0 {
		return fmt.Errorf("%d measurement(s) failed; no file written", res.failures)
	}
	meta := newMeta(o, res)
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, res, meta); err != nil {
			return err
		}
	}
	if o.svg != "" {
		if err := os.WriteFile(o.svg, renderSVG(res, meta), 0o644); err != nil {
			return err
		}
	}
	if o.doc != "" {
		if err := updateDoc(o.doc, o.svg, res, meta); err != nil {
			return err
		}
	}
	return nil
}

// maxOtherShare is the share of the machine's CPU that other processes may
// take during a round before -redo runs it again.
const maxOtherShare = 0.10

// playRound runs one round with fresh children. It returns the CPU time
// other processes used meanwhile (-1 when unknown) and their share of the
// machine.
func playRound(ctx context.Context, w io.Writer, target *child, ap netip.AddrPort, order []implSpec, r int, res *results, o options) (time.Duration, float64, error) {
	start := time.Now()
	busy0, busyOK := machineBusy()
	own0, err := ownCPU(target, nil)
	if err != nil {
		return 0, 0, err
	}
	lives, err := startRound(ctx, order, ap, o)
	if err != nil {
		return 0, 0, err
	}
	err = runRound(ctx, w, lives, r, r == o.rounds-1, res, o)
	own1, cerr := ownCPU(target, lives)
	busy1, _ := machineBusy()
	stopRound(lives)
	if err != nil {
		return 0, 0, err
	}
	if cerr != nil {
		return 0, 0, cerr
	}
	if !busyOK {
		return -1, 0, nil
	}
	// children started in this round count from zero; a little of what is
	// left is the kernel's own work
	other := max(0, (busy1-busy0)-(own1-own0))
	share := other.Seconds() / (time.Since(start).Seconds() * float64(runtime.NumCPU()))
	fmt.Fprintf(w, "  other processes used %.1f s of CPU during the round (%.0f%% of the machine)\n", other.Seconds(), 100*share)
	return other, share, nil
}

// waitQuiet waits, up to limit, until other processes use less than 5% of
// the machine's CPU over two seconds.
func waitQuiet(ctx context.Context, w io.Writer, target *child, limit time.Duration) error {
	const window = 2 * time.Second
	deadline := time.Now().Add(limit)
	for said := false; time.Now().Before(deadline); said = true {
		b0, ok := machineBusy()
		if !ok {
			return nil
		}
		o0, err := ownCPU(target, nil)
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		b1, _ := machineBusy()
		o1, err := ownCPU(target, nil)
		if err != nil {
			return err
		}
		if other := (b1 - b0) - (o1 - o0); other.Seconds() < 0.05*window.Seconds()*float64(runtime.NumCPU()) {
			return nil
		}
		if !said {
			fmt.Fprintf(w, "  waiting up to %v for other processes to leave the CPU alone\n", limit)
		}
	}
	fmt.Fprintln(w, "  the machine is still busy; going on")
	return nil
}

// ownCPU adds up the CPU time of the harness, the target and the round's
// children (whose count starts at zero with the round).
func ownCPU(target *child, lives []*live) (time.Duration, error) {
	total := cpuTime()
	seen := map[*child]bool{}
	for _, c := range []*child{target} {
		seen[c] = true
	}
	for _, l := range lives {
		for _, c := range l.sides() {
			if c != nil {
				seen[c] = true
			}
		}
	}
	for c := range seen {
		s, err := c.stats()
		if err != nil {
			return 0, err
		}
		total += s.CPU
	}
	return total, nil
}

// implSpec describes one implementation under test.
type implSpec struct {
	name  string // as in -impls
	label string // in tables
	kind  string // "ours", "sing", "tls"; "" for direct
	lib   bool   // the client runs in the harness process
	base  string // the implementation ratios are taken from ("ours" or "ours-lib")
}

var allImpls = []implSpec{
	{name: "ours", label: "anytls-suite", kind: "ours", base: "ours"},
	{name: "sing", label: "sing-anytls", kind: "sing", base: "ours"},
	{name: "tls", label: "TLS relay", kind: "tls", base: "ours"},
	{name: "direct", label: "direct TCP", base: "ours"},
	{name: "ours-lib", label: "anytls-suite (library)", kind: "ours", lib: true, base: "ours-lib"},
	{name: "sing-lib", label: "sing-anytls (library)", kind: "sing", lib: true, base: "ours-lib"},
	{name: "tls-lib", label: "TLS relay (library)", kind: "tls", lib: true, base: "ours-lib"},
}

func implNames() []string { return names(allImpls) }

func names(specs []implSpec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

func selectImpls(list string) ([]implSpec, error) {
	var out []implSpec
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		found := false
		for _, s := range allImpls {
			if s.name == name {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown implementation %q (have %s)", name, strings.Join(implNames(), ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no implementation selected")
	}
	return out, nil
}

// roundOrder rotates and reverses the order from round to round: for three
// implementations, rounds 0-5 run every permutation.
func roundOrder(specs []implSpec, round int) []implSpec {
	n := len(specs)
	out := make([]implSpec, n)
	for i := range specs {
		out[i] = specs[(i+round/2)%n]
	}
	if round%2 == 1 {
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// live is an implementation ready to be measured in one round.
type live struct {
	spec   implSpec
	server *child // nil for direct
	client *child // nil for the library path and direct
	lib    *swappable
	dial   dialer
	fresh  func() error
}

func startRound(ctx context.Context, order []implSpec, target netip.AddrPort, o options) ([]*live, error) {
	servers := map[string]*child{}
	var lives []*live
	fail := func(err error) ([]*live, error) {
		stopRound(lives)
		for _, s := range servers {
			s.stop()
		}
		return nil, err
	}
	life := o.timeout + time.Minute
	dst := wire.AddrFromAddrPort(target)
	for _, spec := range order {
		l := &live{spec: spec}
		if spec.kind == "" {
			l.dial = directDialer(target.String())
			l.fresh = func() error { return nil }
			lives = append(lives, l)
			continue
		}
		srv := servers[spec.kind]
		if srv == nil {
			var err error
			if srv, err = startChild(ctx, "server-"+spec.kind, "", life, o.verbose); err != nil {
				return fail(err)
			}
			servers[spec.kind] = srv
		}
		l.server = srv
		if spec.lib {
			sw, err := newSwappable(spec.kind, srv.addr)
			if err != nil {
				return fail(err)
			}
			l.lib = sw
			l.dial = tunnelDialer(sw, dst)
			l.fresh = sw.fresh
		} else {
			c, err := startChild(ctx, "client-"+spec.kind, srv.addr, life, o.verbose)
			if err != nil {
				return fail(err)
			}
			l.client = c
			l.dial = socksDialer(c.addr, target)
			l.fresh = func() error {
				_, err := c.call("fresh")
				return err
			}
		}
		lives = append(lives, l)
	}
	return lives, nil
}

// stopRound stops every child of the round (servers are shared).
func stopRound(lives []*live) {
	stopped := map[*child]bool{}
	for _, l := range lives {
		if l.lib != nil {
			l.lib.Close()
		}
		for _, c := range []*child{l.client, l.server} {
			if c != nil && !stopped[c] {
				stopped[c] = true
				c.stop()
			}
		}
	}
}

// sides returns the client and server children (either may be nil).
func (l *live) sides() [2]*child { return [2]*child{l.client, l.server} }

// snapshot reads both sides' stats; gc first runs their garbage collectors.
func (l *live) snapshot(gc bool) ([2]childStats, error) {
	var out [2]childStats
	for i, c := range l.sides() {
		if c == nil {
			continue
		}
		if gc {
			if _, err := c.call("gc"); err != nil {
				return out, err
			}
		}
		s, err := c.stats()
		if err != nil {
			return out, err
		}
		out[i] = s
	}
	return out, nil
}

// profile starts or stops CPU profiles in both sides' processes.
func (l *live) profile(dir, tag string, start bool) error {
	if !start {
		return l.each("prof-stop", "", "")
	}
	return l.each("prof-start", dir, tag)
}

// heapProfile writes heap profiles of both sides' processes.
func (l *live) heapProfile(dir, tag string) error { return l.each("heap-profile", dir, tag+"-heap") }

// each sends cmd to both sides, with a profile file name in dir when dir is
// set: DIR/IMPL-SIDE-TAG.pprof.
func (l *live) each(cmd, dir, tag string) error {
	for i, c := range l.sides() {
		if c == nil {
			continue
		}
		line := cmd
		if dir != "" {
			line = fmt.Sprintf("%s %s/%s-%s-%s.pprof", cmd, dir, l.spec.name, [2]string{"client", "server"}[i], tag)
		}
		if _, err := c.call(line); err != nil {
			return err
		}
	}
	return nil
}
