package main

import "testing"

// TestTargets checks issue 17's targets against medians on either side of each limit.
func TestTargets(t *testing.T) {
	runs := func(rs ...run1) report { return report{Runs: rs} }
	r := func(scenario, target string, res result) run1 {
		return run1{Scenario: scenario, Target: target, Round: 1, Result: res}
	}
	for _, c := range []struct {
		name string
		rep  report
		want map[string]bool
	}{
		{"small GET c=32", runs(
			r("small GET c=32", "nginx", result{ReqPerSec: 20000, P99ms: 2}),
			r("small GET c=32", "go-proxy", result{ReqPerSec: 10000}),
			r("small GET c=32", "keyhole", result{ReqPerSec: 7100, P99ms: 4.2}),
		), map[string]bool{"small GET c=32: keyhole req/s ÷ go-proxy req/s": true, "small GET c=32: keyhole p99 ÷ nginx p99": false}},
		{"small GET c=1", runs(
			r("small GET c=1", "go-proxy", result{P50ms: 0.2}),
			r("small GET c=1", "keyhole", result{P50ms: 0.45}),
		), map[string]bool{"small GET c=1: keyhole p50 − go-proxy p50 (ms)": true}},
		{"100KB", runs(
			r("100KB GET c=8", "go-proxy", result{ReqPerSec: 10000, CPUusPerReq: 100}),
			r("100KB GET c=8", "keyhole", result{ReqPerSec: 4900, CPUusPerReq: 290}),
			r("100KB GET c=8", "keyhole masked", result{ReqPerSec: 3500}),
		), map[string]bool{"100KB GET c=8: keyhole req/s ÷ go-proxy req/s": false, "100KB GET c=8: keyhole CPU/req ÷ go-proxy CPU/req": true,
			"100KB GET c=8: masked req/s ÷ unmasked req/s": true}},
		{"1MB", runs(r("1MB masked c=50", "keyhole masked", result{ReqPerSec: 851, PeakRSSMB: 120})),
			map[string]bool{"1MB masked c=50: req/s (2× the issue's 426)": false, "1MB masked c=50: keyhole peak RSS (MB)": true}},
		{"open loop", runs(
			r(openLoopScenario, "direct", result{P99ms: 0.3}),
			r(openLoopScenario, "keyhole", result{P99ms: 0.9}),
		), map[string]bool{openLoopScenario + ": keyhole p99 − direct p99 (ms)": false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.rep.summarise()
			got := map[string]bool{}
			for _, x := range c.rep.Targets {
				got[x.Name] = x.Met
			}
			if len(got) != len(c.want) {
				t.Errorf("targets %v, want %v", got, c.want)
			}
			for name, met := range c.want {
				if m, ok := got[name]; !ok || m != met {
					t.Errorf("%s: met %v (present %v), want met %v", name, m, ok, met)
				}
			}
		})
	}
}

// TestPairedRatio: the PostgreSQL target pairs the two targets round by round.
func TestPairedRatio(t *testing.T) {
	run := func(round int, target string, rps float64) run1 {
		return run1{Scenario: "s", Target: target, Round: round, Result: result{ReqPerSec: rps}}
	}
	tests := []struct {
		name string
		runs []run1
		want float64
		ok   bool
	}{
		// The load halves in round 2: the medians' ratio would be 1000 ÷ 2000 = 0.5.
		{"load changes between rounds", []run1{run(1, "b", 2000), run(1, "a", 1800), run(2, "b", 1000), run(2, "a", 900), run(3, "b", 2100), run(3, "a", 1000)}, 0.9, true},
		{"a round without a", []run1{run(1, "b", 1000), run(1, "a", 800), run(2, "b", 1000)}, 0.8, true},
		{"other scenarios and targets", []run1{run(1, "b", 1000), {Scenario: "t", Target: "a", Round: 1, Result: result{ReqPerSec: 500}}, run(1, "c", 500)}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := report{Runs: tt.runs}
			got, ok := r.pairedRatio("s", "a", "b")
			if ok != tt.ok || got < tt.want-1e-9 || got > tt.want+1e-9 {
				t.Errorf("pairedRatio = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
