package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// report is everything one harness run measured, as printed and as written to JSON.
type report struct {
	Machine    string    `json:"machine"`
	Commit     string    `json:"commit"`
	Started    time.Time `json:"started"`
	Rounds     int       `json:"rounds"`
	Duration   string    `json:"duration"`
	RecordMode string    `json:"record_mode"`
	Runs       []run1    `json:"runs"`
	Medians    []median  `json:"medians"`
	Targets    []check   `json:"targets"`
}

// run1 is one wrk run of one target in one round.
type run1 struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Round    int    `json:"round"`
	Result   result `json:"result"`
}

// median is the median over rounds of one target in one scenario, with ratios.
type median struct {
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`
	ReqPerSec   float64 `json:"req_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	CPUusPerReq float64 `json:"cpu_us_per_req"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	Non2xx      int64   `json:"non_2xx"`
	VsDirect    float64 `json:"throughput_vs_direct,omitempty"`
	VsNginx     float64 `json:"throughput_vs_nginx,omitempty"`
	P99VsNginx  float64 `json:"p99_vs_nginx,omitempty"`
}

// check is one of the performance issue's targets, met or not.
type check struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit string  `json:"limit"`
	Met   bool    `json:"met"`
}

func med(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// summarise computes the medians, the ratios and the target checks.
func (r *report) summarise() {
	type key struct{ scenario, target string }
	var order []key
	runs := map[key][]result{}
	for _, x := range r.Runs {
		k := key{x.Scenario, x.Target}
		if _, ok := runs[k]; !ok {
			order = append(order, k)
		}
		runs[k] = append(runs[k], x.Result)
	}
	byKey := map[key]*median{}
	for _, k := range order {
		var rps, p50, p90, p99, cpu, rss []float64
		m := &median{Scenario: k.scenario, Target: k.target}
		for _, x := range runs[k] {
			rps, p50, p90, p99 = append(rps, x.ReqPerSec), append(p50, x.P50ms), append(p90, x.P90ms), append(p99, x.P99ms)
			cpu, rss = append(cpu, x.CPUusPerReq), append(rss, x.PeakRSSMB)
			m.Non2xx += x.Non2xx
		}
		m.ReqPerSec, m.P50ms, m.P90ms, m.P99ms, m.CPUusPerReq, m.PeakRSSMB = med(rps), med(p50), med(p90), med(p99), med(cpu), slices.Max(rss)
		byKey[k] = m
	}
	for _, k := range order {
		m := byKey[k]
		if d := byKey[key{k.scenario, "direct"}]; d != nil && d.ReqPerSec > 0 {
			m.VsDirect = m.ReqPerSec / d.ReqPerSec
		}
		if n := byKey[key{k.scenario, "nginx"}]; n != nil && n.ReqPerSec > 0 {
			m.VsNginx = m.ReqPerSec / n.ReqPerSec
			if n.P99ms > 0 {
				m.P99VsNginx = m.P99ms / n.P99ms
			}
		}
		r.Medians = append(r.Medians, *m)
	}
	get := func(s, t string) *median { return byKey[key{s, t}] }
	add := func(name string, value float64, limit string, met bool) {
		r.Targets = append(r.Targets, check{Name: name, Value: value, Limit: limit, Met: met})
	}
	// The targets of issue 17 (record every exchange at the speed of the proxy), all with
	// the recorder as configured (strict unless -record-mode says otherwise).
	if k, g := get("small GET c=32", "keyhole"), get("small GET c=32", "go-proxy"); k != nil && g != nil {
		add("small GET c=32: keyhole req/s ÷ go-proxy req/s", k.ReqPerSec/g.ReqPerSec, "≥ 0.7", k.ReqPerSec >= 0.7*g.ReqPerSec)
	}
	if k := get("small GET c=32", "keyhole"); k != nil && k.P99VsNginx > 0 {
		add("small GET c=32: keyhole p99 ÷ nginx p99", k.P99VsNginx, "≤ 2", k.P99VsNginx <= 2)
	}
	if k, g := get("small GET c=1", "keyhole"), get("small GET c=1", "go-proxy"); k != nil && g != nil {
		add("small GET c=1: keyhole p50 − go-proxy p50 (ms)", k.P50ms-g.P50ms, "≤ 0.3", k.P50ms-g.P50ms <= 0.3)
	}
	if k, g := get("100KB GET c=8", "keyhole"), get("100KB GET c=8", "go-proxy"); k != nil && g != nil {
		add("100KB GET c=8: keyhole req/s ÷ go-proxy req/s", k.ReqPerSec/g.ReqPerSec, "≥ 0.5", k.ReqPerSec >= 0.5*g.ReqPerSec)
		if g.CPUusPerReq > 0 {
			add("100KB GET c=8: keyhole CPU/req ÷ go-proxy CPU/req", k.CPUusPerReq/g.CPUusPerReq, "≤ 3", k.CPUusPerReq <= 3*g.CPUusPerReq)
		}
	}
	// Issue 13's: Keyhole on PostgreSQL beside Keyhole on SQLite (with -store).
	if v, ok := r.pairedRatio("small GET c=32", pgTarget, "keyhole"); ok {
		add("small GET c=32: keyhole on PostgreSQL ÷ keyhole on SQLite, req/s", v, "≥ 0.8", v >= 0.8)
	}
	if m, u := get("100KB GET c=8", "keyhole masked"), get("100KB GET c=8", "keyhole"); m != nil && u != nil {
		add("100KB GET c=8: masked req/s ÷ unmasked req/s", m.ReqPerSec/u.ReqPerSec, "≥ 0.7", m.ReqPerSec >= 0.7*u.ReqPerSec)
	}
	if m := get("1MB masked c=50", "keyhole masked"); m != nil {
		add("1MB masked c=50: req/s (2× the issue's 426)", m.ReqPerSec, "≥ 852", m.ReqPerSec >= 2*hugeMaskedBaseline)
		add("1MB masked c=50: keyhole peak RSS (MB)", m.PeakRSSMB, "≤ 150", m.PeakRSSMB <= 150)
	}
	if k, d := get(openLoopScenario, "keyhole"), get(openLoopScenario, "direct"); k != nil && d != nil {
		add(openLoopScenario+": keyhole p99 − direct p99 (ms)", k.P99ms-d.P99ms, "≤ 0.5", k.P99ms-d.P99ms <= 0.5)
	}
}

// hugeMaskedBaseline is the 1 MB masked scenario's req/s when issue 17 was filed.
const hugeMaskedBaseline = 426

// pairedRatio is the median over rounds of a's req/s ÷ b's in scenario: the two run
// one after the other in each round, so a ratio of the same round's figures is spared
// most of what a shared machine's load does to both. ok is false without a round of both.
func (r *report) pairedRatio(scenario, a, b string) (v float64, ok bool) {
	type pair struct{ a, b float64 }
	rounds := map[int]*pair{}
	for _, x := range r.Runs {
		if x.Scenario != scenario || x.Target != a && x.Target != b {
			continue
		}
		p := rounds[x.Round]
		if p == nil {
			p = &pair{}
			rounds[x.Round] = p
		}
		if x.Target == a {
			p.a = x.Result.ReqPerSec
		} else {
			p.b = x.Result.ReqPerSec
		}
	}
	var ratios []float64
	for _, p := range rounds {
		if p.a > 0 && p.b > 0 {
			ratios = append(ratios, p.a/p.b)
		}
	}
	return med(ratios), len(ratios) > 0
}

// print writes the table of medians and the target checks.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nKeyhole load harness — %s — commit %s — recorder %s — %d rounds of %s, medians\n\n",
		r.Machine, r.Commit, r.RecordMode, r.Rounds, r.Duration)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\ttarget\treq/s\t× direct\t× nginx\tp50 ms\tp90 ms\tp99 ms\tp99 × nginx\tCPU µs/req\tpeak RSS MB\tnon-2xx\t")
	ratio := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, m := range r.Medians {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%.0f\t%.1f\t%d\t\n", m.Scenario, m.Target, m.ReqPerSec,
			ratio(m.VsDirect), ratio(m.VsNginx), m.P50ms, m.P90ms, m.P99ms, ratio(m.P99VsNginx), m.CPUusPerReq, m.PeakRSSMB, m.Non2xx)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nTargets (issue 17):")
	for _, c := range r.Targets {
		verdict := "met"
		if !c.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "  %-6s %-62s %8.2f  (%s)\n", verdict, c.Name, c.Value, c.Limit)
	}
	fmt.Fprintf(w, "\n%s: vegeta's open loop at a fixed rate; its req/s are 2xx answers a second.\n", openLoopScenario)
	fmt.Fprintln(w, "CPU µs/req is the target process's user+system time per request (for direct, the backend's own).")
}
