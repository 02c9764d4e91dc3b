package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoundOrder(t *testing.T) {
	specs, err := selectImpls("ours,sing,tls")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for r := range 6 {
		got := strings.Join(names(roundOrder(specs, r)), " ")
		if seen[got] {
			t.Errorf("round %d repeats the order %q", r, got)
		}
		seen[got] = true
	}
	if got := strings.Join(names(roundOrder(specs, 1)), " "); got != "tls sing ours" {
		t.Errorf("round 1 = %q, want the first round reversed", got)
	}
}

func TestSelectImpls(t *testing.T) {
	if _, err := selectImpls("ours,nope"); err == nil {
		t.Error("unknown implementation accepted")
	}
	if _, err := selectImpls(" , "); err == nil {
		t.Error("empty selection accepted")
	}
	got, err := selectImpls("sing, ours,sing")
	if err != nil || strings.Join(names(got), " ") != "sing ours" {
		t.Errorf("selectImpls = %v, %v", names(got), err)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0, 1}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestMedianAndRatios(t *testing.T) {
	nan := math.NaN()
	if got := median([]float64{3, nan, 1, 2}); got != 2 {
		t.Errorf("median = %v, want 2 (NaN ignored)", got)
	}
	if got := median([]float64{4, 1}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
	if !math.IsNaN(median([]float64{nan})) {
		t.Error("median of no value is not NaN")
	}
	specs, _ := selectImpls("ours,sing")
	r := newResults(specs, 3)
	for i, v := range []float64{10, 20, 30} {
		r.set("up1", "ours", i, v)
	}
	r.set("up1", "sing", 0, 5)
	r.set("up1", "sing", 1, 0)
	got := r.ratios("up1", "ours", "sing")
	if got[0] != 2 || !math.IsNaN(got[1]) || !math.IsNaN(got[2]) {
		t.Errorf("ratios = %v, want [2 NaN NaN]", got)
	}
	if s := formatRatios(got); s != "2.00 (2.00 – –)" {
		t.Errorf("formatRatios = %q", s)
	}
}

func TestSelectPhases(t *testing.T) {
	var all []phase
	for _, k := range phaseKeys() {
		ph := phase{key: k}
		if strings.HasPrefix(k, "up") || strings.HasPrefix(k, "down") {
			ph.profTag = "bulk"
		}
		all = append(all, ph)
	}
	got := selectPhases(all, []string{"idle", "down1", "up16", "down64"})
	var keys []string
	for _, p := range got {
		keys = append(keys, p.key)
	}
	if !slices.Equal(keys, []string{"down1", "up16", "down64", "idle"}) {
		t.Fatalf("phases = %v, want the round's order", keys)
	}
	if !got[0].profStart || got[0].profStop || got[1].profStart || got[1].profStop || !got[2].profStop {
		t.Errorf("bulk profile should start at down1 and stop at down64: %+v", got)
	}
}

func TestParseFlagsQuick(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-rounds", "2"})
	if err != nil {
		t.Fatal(err)
	}
	if o.rounds != 2 || o.dur != 100*time.Millisecond || o.idle != 20 {
		t.Errorf("quick with -rounds 2: rounds %d, duration %v, idle %d", o.rounds, o.dur, o.idle)
	}
	if _, err := parseFlags([]string{"-phases", "rtt,bogus"}); err == nil {
		t.Error("unknown phase accepted")
	}
	if _, err := parseFlags([]string{"-rounds", "0"}); err == nil {
		t.Error("zero rounds accepted")
	}
}

func TestUpdateDoc(t *testing.T) {
	specs, _ := selectImpls("ours,sing,tls,direct,ours-lib")
	r := newResults(specs, 1)
	r.set("rtt50", "ours", 0, 40)
	r.set("rtt50", "sing", 0, 80)
	r.orders = [][]string{names(specs)}
	m := meta{Date: "2026-01-02", Cores: 2, Command: "go run ./bench/cmd/anytls-bench"}
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	before := "# Benchmarks\n\nintro\n\n" + docBegin + "\nold\n" + docEnd + "\n\n## UDP\n\nkept\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // rewriting is idempotent
		if err := updateDoc(path, filepath.Join(filepath.Dir(path), "plot.svg"), r, m); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	doc := string(b)
	for _, want := range []string{"# Benchmarks\n\nintro\n\n" + docBegin, docEnd + "\n\n## UDP\n\nkept\n",
		"](plot.svg)", "| 1 KiB round trip p50 (µs ↓) | 40 | 80 | – | – | 0.50 | – | – |", "2026-01-02"} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q:\n%s", want, doc)
		}
	}
	if strings.Count(doc, docBegin) != 1 || strings.Contains(doc, "\nold\n") {
		t.Errorf("generated section not replaced exactly once:\n%s", doc)
	}
	if svg := renderSVG(r, m); !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "sing-anytls") {
		t.Errorf("svg looks wrong: %.200s", svg)
	}
}
