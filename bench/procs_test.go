package main

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestStatFields checks the /proc/pid/stat fields the harness reads: the parent pid, and
// user CPU time, which must agree with what getrusage says a busy loop spent.
func TestStatFields(t *testing.T) {
	f := statFields(os.Getpid())
	if len(f) < 16 || f[4] != strconv.Itoa(os.Getppid()) {
		t.Fatalf("statFields(self)[4] = %q, want the parent pid %d", f[4], os.Getppid())
	}
	userTime := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano())
	}
	before, _ := strconv.ParseInt(f[14], 10, 64)
	ruBefore := userTime()
	x := 0
	// Spin until 300 ms of user time are spent, however busy the machine is.
	for start := time.Now(); time.Since(start) < 20*time.Second; {
		for range 1 << 20 {
			x++
		}
		if userTime()-ruBefore >= 300*time.Millisecond {
			break
		}
	}
	after, _ := strconv.ParseInt(statFields(os.Getpid())[14], 10, 64)
	spent := (userTime() - ruBefore).Milliseconds() / 10 // ticks of 10 ms
	if got := after - before; got < spent-5 || got > spent+5 {
		t.Errorf("utime grew by %d ticks while getrusage counted %d (x=%d)", got, spent, x)
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
