package main

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// TestStatFields checks the /proc/pid/stat fields the harness reads: the parent pid, and
// user CPU time, which must grow by what a busy loop spends.
func TestStatFields(t *testing.T) {
	f := statFields(os.Getpid())
	if len(f) < 16 || f[4] != strconv.Itoa(os.Getppid()) {
		t.Fatalf("statFields(self)[4] = %q, want the parent pid %d", f[4], os.Getppid())
	}
	before, _ := strconv.ParseInt(f[14], 10, 64)
	x := 0
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		x++
	}
	after, _ := strconv.ParseInt(statFields(os.Getpid())[14], 10, 64)
	if after-before < 15 { // 300 ms of user time is 30 ticks; leave room for a busy machine
		t.Errorf("utime grew by %d ticks over a 300 ms busy loop (x=%d), want about 30", after-before, x)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}, {nil, 0}} {
		if got := med(c.in); got != c.want {
			t.Errorf("med(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
