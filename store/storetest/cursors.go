package storetest

import (
	"sync"
	"testing"
	"time"
)

// cursorStep is one step of a cursor test: who calls what at which second, and what it
// must answer.
type cursorStep struct {
	op       string // lease, advance, release
	holder   string
	name     string // "" is "siem"
	at       int    // seconds after base: now
	ttl      int    // seconds: until = now + ttl
	after    int64  // advance: the new cursor
	wantHeld bool
	wantAt   int64 // lease: the cursor returned when held
}

// testCursorLease checks the export cursor's lease: one holder at a time, renewals,
// expiry, release, fencing of a holder that lost the lease, and names apart.
func testCursorLease(t *testing.T, b Backend) {
	s, _ := b.open(t)
	steps := []cursorStep{
		{op: "lease", holder: "a", at: 0, ttl: 30, wantHeld: true, wantAt: 0},
		{op: "lease", holder: "b", at: 1, ttl: 30, wantHeld: false},
		{op: "advance", holder: "b", at: 1, ttl: 30, after: 99, wantHeld: false},
		{op: "advance", holder: "a", at: 2, ttl: 30, after: 10, wantHeld: true},
		{op: "lease", holder: "a", at: 3, ttl: 30, wantHeld: true, wantAt: 10},
		// a renewed until 33: b waits, then takes over once a's lease ran out.
		{op: "lease", holder: "b", at: 32, ttl: 30, wantHeld: false},
		{op: "lease", holder: "b", at: 34, ttl: 30, wantHeld: true, wantAt: 10},
		// a, back from a pause, is fenced off: it cannot move the cursor b owns.
		{op: "advance", holder: "a", at: 35, ttl: 30, after: 50, wantHeld: false},
		{op: "lease", holder: "a", at: 35, ttl: 30, wantHeld: false},
		{op: "advance", holder: "b", at: 36, ttl: 30, after: 20, wantHeld: true},
		// A release that is not the holder's changes nothing; the holder's frees it at once.
		{op: "release", holder: "a", at: 37},
		{op: "lease", holder: "c", at: 37, ttl: 30, wantHeld: false},
		{op: "release", holder: "b", at: 38},
		{op: "lease", holder: "c", at: 38, ttl: 30, wantHeld: true, wantAt: 20},
		// Another name is another cursor and another lease.
		{op: "lease", holder: "a", name: "other", at: 39, ttl: 30, wantHeld: true, wantAt: 0},
		{op: "lease", holder: "c", at: 40, ttl: 30, wantHeld: true, wantAt: 20},
	}
	for i, st := range steps {
		name := st.name
		if name == "" {
			name = "siem"
		}
		now := base.Add(time.Duration(st.at) * time.Second)
		until := now.Add(time.Duration(st.ttl) * time.Second)
		switch st.op {
		case "lease":
			after, held, err := s.LeaseCursor(t.Context(), name, st.holder, now, until)
			if err != nil {
				t.Fatalf("step %d: LeaseCursor: %v", i, err)
			}
			if held != st.wantHeld || held && after != st.wantAt {
				t.Errorf("step %d: LeaseCursor(%s, %s, +%ds) = %d, %t; want %d, %t", i, name, st.holder, st.at, after, held, st.wantAt, st.wantHeld)
			}
		case "advance":
			held, err := s.AdvanceCursor(t.Context(), name, st.holder, st.after, now, until)
			if err != nil {
				t.Fatalf("step %d: AdvanceCursor: %v", i, err)
			}
			if held != st.wantHeld {
				t.Errorf("step %d: AdvanceCursor(%s, %s, %d) = %t, want %t", i, name, st.holder, st.after, held, st.wantHeld)
			}
		case "release":
			if err := s.ReleaseCursor(t.Context(), name, st.holder); err != nil {
				t.Fatalf("step %d: ReleaseCursor: %v", i, err)
			}
		}
	}
}

// testCursorDurable checks that the cursor outlives the store that set it: a gateway
// restarted, or another replica, resumes after it.
func testCursorDurable(t *testing.T, b Backend) {
	dsn := b.New(t)
	s := b.Open(t, dsn)
	now := base
	if _, held, err := s.LeaseCursor(t.Context(), "siem", "a", now, now.Add(time.Minute)); err != nil || !held {
		t.Fatalf("LeaseCursor = %t, %v; want held", held, err)
	}
	if held, err := s.AdvanceCursor(t.Context(), "siem", "a", 42, now, now.Add(time.Minute)); err != nil || !held {
		t.Fatalf("AdvanceCursor = %t, %v; want held", held, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = b.Open(t, dsn)
	// The same holder (a restarted process keeps no name) would wait out the lease;
	// here it is released as a clean shutdown releases it.
	if after, held, err := s.LeaseCursor(t.Context(), "siem", "a", now.Add(time.Second), now.Add(time.Minute)); err != nil || !held || after != 42 {
		t.Errorf("LeaseCursor after reopen = %d, %t, %v; want 42, held", after, held, err)
	}
	if err := s.ReleaseCursor(t.Context(), "siem", "a"); err != nil {
		t.Fatal(err)
	}
	other := b.Open(t, dsn)
	if after, held, err := other.LeaseCursor(t.Context(), "siem", "b", now.Add(2*time.Second), now.Add(time.Minute)); err != nil || !held || after != 42 {
		t.Errorf("LeaseCursor of another replica after release = %d, %t, %v; want 42, held", after, held, err)
	}
	ro := b.OpenReadOnly(t, dsn)
	if _, _, err := ro.LeaseCursor(t.Context(), "siem", "c", now.Add(time.Hour), now.Add(2*time.Hour)); err == nil {
		t.Error("LeaseCursor on a read-only store = nil error, want one")
	}
	if _, err := ro.AdvanceCursor(t.Context(), "siem", "b", 50, now, now); err == nil {
		t.Error("AdvanceCursor on a read-only store = nil error, want one")
	}
}

// testCursorLeaseRace checks that of replicas racing for a free lease, exactly one
// gets it, for a new name and for one whose lease ran out.
func testCursorLeaseRace(t *testing.T, b Backend) {
	s, db := b.open(t)
	stores := db.replicas(t, s, 4)
	for round, now := range []time.Time{base, base.Add(time.Hour)} {
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		for i, st := range stores {
			for w := range 3 {
				holder := string(rune('a'+i)) + string(rune('0'+w)) + string(rune('0'+round))
				wg.Go(func() {
					_, held, err := st.LeaseCursor(t.Context(), "siem", holder, now, now.Add(time.Minute))
					if err != nil {
						t.Errorf("LeaseCursor: %v", err)
						return
					}
					if held {
						mu.Lock()
						winners = append(winners, holder)
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Errorf("round %d: %d holders got the lease (%v), want exactly 1", round, len(winners), winners)
		}
	}
}
