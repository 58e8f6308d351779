package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// appendRoutes appends exchanges from to to-1, the even ones on route items and the odd
// ones on payments, and returns the SHA-256 of each entry's Data by sequence number.
func appendRoutes(t *testing.T, s Store, from, to int) map[int64]string {
	t.Helper()
	var es []*recorder.Entry
	for i := from; i < to; i++ {
		route := "items"
		if i%2 == 1 {
			route = "payments"
		}
		req, resp := pair(i, "alice", route, "allowed", 200)
		es = append(es, req, resp)
	}
	if err := s.Append(t.Context(), es); err != nil {
		t.Fatalf("Append: %v", err)
	}
	sums := make(map[int64]string, len(es))
	for _, e := range es {
		sum := sha256.Sum256(e.Data)
		sums[e.Seq] = hex.EncodeToString(sum[:])
	}
	return sums
}

// testExpire checks per-route retention: Expire makes stubs of the selected exchanges'
// entries, drops them from List and Get, appends one expiry entry, and the chain still
// verifies; a second run finds nothing; the other-routes rule takes what the routes
// named do not; Prune then deletes stubs with the prefix.
func testExpire(t *testing.T, b Backend) {
	s, _ := b.open(t)
	sums := appendRoutes(t, s, 0, 60) // exchange i: entries 2i+1 and 2i+2, received at base+i s
	if got := entryAt(t, s, 1).Version; got != recorder.ChainVersion {
		t.Fatalf("a new entry's Version = %d, want %d", got, recorder.ChainVersion)
	}

	items := recorder.ExpiryRule{Before: base.Add(30 * time.Second), Routes: []string{"items"}}
	n, err := s.Expire(t.Context(), items)
	if err != nil || n != 30 { // exchanges 0, 2, ..., 28: 15 requests and 15 responses
		t.Fatalf("Expire(items before 30s) = %d, %v; want 30", n, err)
	}
	rep := verify(t, s)
	if !rep.OK || rep.Expired != 30 || rep.Entries != 121 {
		t.Fatalf("Verify after Expire = %+v, want OK, 30 expired, 121 entries (one expiry entry)", rep)
	}
	for seq := int64(1); seq <= 2; seq++ { // exchange 0
		e := entryAt(t, s, seq)
		if len(e.Data) != 0 || e.DataHash != sums[seq] {
			t.Errorf("stub %d: Data %q, DataHash %q; want no Data and the Data's SHA-256 %s", seq, e.Data, e.DataHash, sums[seq])
		}
	}
	if e := entryAt(t, s, 3); e.DataHash != "" || len(e.Data) == 0 { // exchange 1, payments
		t.Errorf("entry 3 of route payments: DataHash %q, %d bytes of Data; want it whole", e.DataHash, len(e.Data))
	}
	if x := entryAt(t, s, 121); x.Kind != recorder.KindExpiry {
		t.Errorf("entry 121 is a %s entry, want the expiry entry", x.Kind)
	}
	for i, want := range map[int]bool{0: false, 28: false, 1: true, 29: true, 30: true} {
		_, err := s.Get(t.Context(), xid(i))
		if found := err == nil; found != want || (err != nil && !errors.Is(err, recorder.ErrNotFound)) {
			t.Errorf("Get(%s) error = %v, want found %v", xid(i), err, want)
		}
	}
	if recs, _, err := s.List(t.Context(), recorder.Filter{Route: "items", Limit: 1000}); err != nil || len(recs) != 15 {
		t.Errorf("List(items) after Expire = %d records, %v; want 15", len(recs), err)
	}

	if n, err := s.Expire(t.Context(), items); err != nil || n != 0 {
		t.Errorf("Expire again = %d, %v; want 0", n, err)
	}
	if c := count(t, s); c != 121 {
		t.Errorf("Count after a second Expire = %d, want 121 (no expiry entry for nothing)", c)
	}

	// recorder.retention's rule: every route but the ones with their own retention.
	others := recorder.ExpiryRule{Before: base.Add(20 * time.Second), Routes: []string{"items"}, OtherRoutes: true}
	if n, err := s.Expire(t.Context(), others); err != nil || n != 20 { // payments 1, 3, ..., 19
		t.Errorf("Expire(other routes before 20s) = %d, %v; want 20", n, err)
	}
	if rep := verify(t, s); !rep.OK || rep.Expired != 50 {
		t.Errorf("Verify = %+v, want OK with 50 expired", rep)
	}

	// Prune deletes the prefix, stubs and expiry entries with it.
	if n, err := s.Prune(t.Context(), base.Add(25*time.Second)); err != nil || n != 50 {
		t.Errorf("Prune(before 25s) = %d, %v; want 50", n, err)
	}
	if rep := verify(t, s); !rep.OK || rep.Pruned != 50 || rep.Expired != 4 { // exchanges 26 and 28
		t.Errorf("Verify after Prune = %+v, want OK, 50 pruned, 4 stubs left", rep)
	}
}

// testExpireChunks checks that Expire works in bounded transactions, each with its own
// expiry entry, and that the chain verifies.
func testExpireChunks(t *testing.T, b Backend) {
	s, _ := b.open(t)
	b.SetPruneChunk(s, 40) // 4 exchanges per Expire transaction
	appendRoutes(t, s, 0, 40)
	n, err := s.Expire(t.Context(), recorder.ExpiryRule{Before: base.Add(time.Hour), OtherRoutes: true})
	if err != nil || n != 80 {
		t.Fatalf("Expire(everything) = %d, %v; want 80", n, err)
	}
	if rep := verify(t, s); !rep.OK || rep.Expired != 80 || rep.Entries != 90 { // 10 expiry entries
		t.Errorf("Verify = %+v, want OK, 80 expired, 90 entries", rep)
	}
	if recs, _, _ := s.List(t.Context(), recorder.Filter{}); len(recs) != 0 {
		t.Errorf("List after expiring everything = %d records, want 0", len(recs))
	}
}

// testExpireTamper checks that a stub no expiry entry vouches for, an edited stub and an
// entry moved to the other chain version are breaks.
func testExpireTamper(t *testing.T, b Backend) {
	tests := []struct {
		name      string
		tamper    func(t *testing.T, s Store, db db, sums map[int64]string)
		wantBreak int64
	}{
		{
			name: "content removed without an expiry entry",
			tamper: func(t *testing.T, s Store, db db, sums map[int64]string) {
				db.exec(t, `UPDATE entries SET data = ?, data_sha256 = ? WHERE seq = 41`, []byte{}, sums[41])
			},
			wantBreak: 41,
		},
		{
			name: "stub's digest edited",
			tamper: func(t *testing.T, s Store, db db, sums map[int64]string) {
				db.exec(t, `UPDATE entries SET data_sha256 = ? WHERE seq = 1`, strings.Repeat("0", 64))
			},
			wantBreak: 1,
		},
		{
			name: "chain version changed",
			tamper: func(t *testing.T, s Store, db db, sums map[int64]string) {
				db.exec(t, `UPDATE entries SET chain_v = 1 WHERE seq = 45`)
			},
			wantBreak: 45,
		},
		{
			name: "unknown chain version",
			tamper: func(t *testing.T, s Store, db db, sums map[int64]string) {
				db.exec(t, `UPDATE entries SET chain_v = 9 WHERE seq = 46`)
			},
			wantBreak: 46,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, db := b.open(t)
			sums := appendRoutes(t, s, 0, 30)
			if _, err := s.Expire(t.Context(), recorder.ExpiryRule{Before: base.Add(10 * time.Second), Routes: []string{"items"}}); err != nil {
				t.Fatal(err)
			}
			if rep := verify(t, s); !rep.OK || rep.Expired != 10 {
				t.Fatalf("Verify before = %+v, want OK with 10 expired", rep)
			}
			tt.tamper(t, s, db, sums)
			rep := verify(t, s)
			if rep.OK || rep.Break == nil || rep.Break.Seq != tt.wantBreak {
				t.Errorf("Verify = %+v (break %+v), want a break at %d", rep, rep.Break, tt.wantBreak)
			}
		})
	}
}
