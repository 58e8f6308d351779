package main

import "testing"

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
