package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// base is when the test exchanges begin; exchange i is received i seconds later.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// xid returns the id of exchange i: ids sort like i, as ULIDs sort by time.
func xid(i int) string { return fmt.Sprintf("x%06d", i) }

// pair returns the request and response entries of exchange i.
func pair(i int, subject, route, decision string, status int) (*recorder.Entry, *recorder.Entry) {
	at := base.Add(time.Duration(i) * time.Second)
	req := &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: xid(i), At: at,
		Data:    fmt.Appendf(nil, `{"id":%q,"decision":%q,"request":{"method":"GET","path":"/v1/items/%d"}}`, xid(i), decision, i),
		Subject: subject, Route: route, Decision: decision, Method: "GET", Path: fmt.Sprintf("/v1/items/%d", i)}
	resp := &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: xid(i), At: at.Add(10 * time.Millisecond),
		Data:  fmt.Appendf(nil, `{"decision":%q,"response":{"status":%d}}`, decision, status),
		Route: route, Decision: decision, Status: status}
	return req, resp
}

// appendPairs appends exchanges from to to-1 (request then response), batch entries
// per Append.
func appendPairs(t testing.TB, s Store, from, to, batch int) {
	t.Helper()
	var es []*recorder.Entry
	for i := from; i < to; i++ {
		req, resp := pair(i, "alice", "items", "allowed", 200)
		es = append(es, req, resp)
	}
	for len(es) > 0 {
		n := min(batch, len(es))
		if err := s.Append(t.Context(), es[:n]); err != nil {
			t.Fatalf("Append: %v", err)
		}
		es = es[n:]
	}
}

func verify(t *testing.T, s Store) recorder.Report {
	t.Helper()
	rep, err := recorder.Verify(t.Context(), s, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func count(t *testing.T, s Store) int64 {
	t.Helper()
	n, err := s.Count(t.Context())
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

// testAppendUnsynced checks that an unsynced append joins the one chain like any
// other, that Sync succeeds, and that a read-only store refuses to sync.
func testAppendUnsynced(t *testing.T, b Backend) {
	s, db := b.open(t)
	req, resp := pair(1, "alice", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{req}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendUnsynced(t.Context(), []*recorder.Entry{resp}); err != nil {
		t.Fatal(err)
	}
	if resp.Seq != 2 || resp.PrevHash != req.Hash {
		t.Errorf("unsynced entry Seq %d PrevHash %.8s, want 2 linked to %.8s", resp.Seq, resp.PrevHash, req.Hash)
	}
	rec, err := s.Get(t.Context(), req.ExchangeID)
	if err != nil || rec.Response == nil || rec.Response.Status != 200 {
		t.Errorf("Get = %+v, %v; want the exchange completed by the unsynced response", rec, err)
	}
	if rep, err := recorder.Verify(t.Context(), s, nil); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Errorf("Sync: %v", err)
	}
	ro := b.OpenReadOnly(t, db.dsn)
	if err := ro.Sync(t.Context()); err == nil {
		t.Error("a read-only store synced")
	}
	if err := ro.Probe(t.Context()); err == nil {
		t.Error("a read-only store probed writable")
	}
	if err := s.Probe(t.Context()); err != nil {
		t.Errorf("Probe: %v", err)
	}
}

func testAppendGet(t *testing.T, b Backend) {
	s, _ := b.open(t)
	req, resp := pair(1, "alice", "items", "allowed", 201)
	req.Tool = "lookup_customer"
	lone, _ := pair(2, "bob", "items", "forbidden", 0) // refused before a response was recorded
	if err := s.Append(t.Context(), []*recorder.Entry{req, lone, resp}); err != nil {
		t.Fatal(err)
	}
	if req.Seq != 1 || lone.Seq != 2 || resp.Seq != 3 {
		t.Errorf("Seq = %d, %d, %d, want 1, 2, 3", req.Seq, lone.Seq, resp.Seq)
	}
	if req.PrevHash != recorder.GenesisHash || lone.PrevHash != req.Hash || resp.PrevHash != lone.Hash {
		t.Errorf("entries are not linked in order")
	}

	rec, err := s.Get(t.Context(), xid(1))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !equalEntry(rec.Request, *req) {
		t.Errorf("Get request = %+v, want %+v", rec.Request, *req)
	}
	if rec.Response == nil || !equalEntry(*rec.Response, *resp) {
		t.Errorf("Get response = %+v, want %+v", rec.Response, *resp)
	}
	rec, err = s.Get(t.Context(), xid(2))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if rec.Response != nil {
		t.Errorf("Get(%s).Response = %+v, want nil", xid(2), rec.Response)
	}
	// A response in a later batch completes its exchange; one without a request is
	// only chained.
	_, loneResp := pair(2, "bob", "items", "forbidden", 403)
	_, orphan := pair(3, "carol", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{orphan, loneResp}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(t.Context(), xid(2)); err != nil || rec.Response == nil || rec.Response.Seq != loneResp.Seq {
		t.Errorf("Get(%s) after its response = %+v, %v; want response %d", xid(2), rec, err, loneResp.Seq)
	}
	if recs, _, err := s.List(t.Context(), recorder.Filter{Status: 403}); err != nil || len(recs) != 1 || recs[0].Request.ExchangeID != xid(2) {
		t.Errorf("List(Status 403) = %+v, %v; want %s", recs, err, xid(2))
	}
	if _, err := s.Get(t.Context(), xid(3)); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("Get(%s) with only a response = %v, want ErrNotFound", xid(3), err)
	}
	if _, err := s.Get(t.Context(), "missing"); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
	}

	es, err := s.Entries(t.Context(), 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || !equalEntry(es[0], *lone) || !equalEntry(es[1], *resp) || !equalEntry(es[2], *orphan) {
		t.Errorf("Entries(1, 3) = %+v, want entries 2 to 4", es)
	}
	if es, err := s.Entries(t.Context(), 5, 10); err != nil || len(es) != 0 {
		t.Errorf("Entries(5, 10) = %+v, %v; want none", es, err)
	}
	if n := count(t, s); n != 5 {
		t.Errorf("Count = %d, want 5", n)
	}
}

func equalEntry(a, b recorder.Entry) bool {
	return a.Seq == b.Seq && a.Kind == b.Kind && a.ExchangeID == b.ExchangeID && a.At.Equal(b.At) &&
		bytes.Equal(a.Data, b.Data) && a.PrevHash == b.PrevHash && a.Hash == b.Hash &&
		a.Subject == b.Subject && a.Route == b.Route && a.Decision == b.Decision &&
		a.Method == b.Method && a.Path == b.Path && a.Status == b.Status && a.Tool == b.Tool
}

func testAppendAllOrNothing(t *testing.T, b Backend) {
	s, _ := b.open(t)
	appendPairs(t, s, 0, 2, 4)
	good, _ := pair(10, "alice", "items", "allowed", 200)
	tests := []struct {
		name  string
		batch []*recorder.Entry
	}{
		{"nil entry", []*recorder.Entry{good, nil}},
		{"unknown kind", []*recorder.Entry{good, {Kind: "note", At: base}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Append(t.Context(), tt.batch); err == nil {
				t.Fatal("Append = nil, want an error")
			}
			if good.Seq != 0 || good.Hash != "" {
				t.Errorf("failed Append set Seq %d, Hash %q", good.Seq, good.Hash)
			}
			if n := count(t, s); n != 4 {
				t.Errorf("Count = %d, want 4", n)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Append(ctx, []*recorder.Entry{good}); !errors.Is(err, context.Canceled) {
			t.Errorf("Append = %v, want context.Canceled", err)
		}
		if n := count(t, s); n != 4 {
			t.Errorf("Count = %d, want 4", n)
		}
	})
}

func testDuplicateID(t *testing.T, b Backend) {
	s, _ := b.open(t)
	req1, resp1 := pair(1, "alice", "items", "allowed", 200)
	req2, resp2 := pair(1, "mallory", "admin", "denied", 403)
	other, _ := pair(2, "bob", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{req1, resp1, req2, other, resp2}); err != nil {
		t.Fatalf("Append with a duplicate id: %v", err)
	}
	rec, err := s.Get(t.Context(), xid(1))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Request.Seq != req1.Seq || rec.Response == nil || rec.Response.Seq != resp1.Seq {
		t.Errorf("Get(%s) = request %d, response %v; want the first pair %d, %d", xid(1), rec.Request.Seq, rec.Response, req1.Seq, resp1.Seq)
	}
	if _, err := s.Get(t.Context(), xid(2)); err != nil {
		t.Errorf("Get(%s) in the same batch: %v", xid(2), err)
	}
	if rep := verify(t, s); !rep.OK || rep.Entries != 5 {
		t.Errorf("Verify = %+v, want OK with 5 entries", rep)
	}
}

func testList(t *testing.T, b Backend) {
	s, _ := b.open(t)
	// 30 exchanges: subject alternates alice/bob, route by thirds, every fifth denied,
	// two whose response changed the decision.
	changed := func(i int) bool { return i == 4 || i == 26 }
	var es []*recorder.Entry
	for i := range 30 {
		subject := []string{"alice", "bob"}[i%2]
		route := []string{"items", "orders", "admin"}[i%3]
		decision, status := "allowed", 200
		if i%5 == 0 {
			decision, status = "denied", 403
		}
		req, resp := pair(i, subject, route, decision, status)
		if changed(i) { // allowed, then the upstream failed: the response decides
			resp.Decision, resp.Status = "error", 502
		}
		if i%7 == 3 {
			req.Tool = "lookup_customer" // tools/call on an mcp route
		}
		if i == 29 { // the newest has no response yet
			es = append(es, req)
			continue
		}
		es = append(es, req, resp)
	}
	if err := s.Append(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	ids := func(from, to int, keep func(i int) bool) []string {
		var out []string
		for i := to - 1; i >= from; i-- {
			if keep == nil || keep(i) {
				out = append(out, xid(i))
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    recorder.Filter
		want []string
	}{
		{"all, newest first", recorder.Filter{}, ids(0, 30, nil)},
		{"limit", recorder.Filter{Limit: 3}, ids(27, 30, nil)},
		{"subject", recorder.Filter{Subject: "bob"}, ids(0, 30, func(i int) bool { return i%2 == 1 })},
		{"route", recorder.Filter{Route: "admin"}, ids(0, 30, func(i int) bool { return i%3 == 2 })},
		{"decision", recorder.Filter{Decision: "denied"}, ids(0, 30, func(i int) bool { return i%5 == 0 })},
		{"decision of the response", recorder.Filter{Decision: "error"}, ids(0, 30, changed)},
		{"decision the response changed", recorder.Filter{Decision: "allowed", Until: base.Add(5 * time.Second)}, ids(1, 4, nil)},
		{"status", recorder.Filter{Status: 403}, ids(0, 30, func(i int) bool { return i%5 == 0 })},
		{"tool", recorder.Filter{Tool: "lookup_customer"}, ids(0, 30, func(i int) bool { return i%7 == 3 })},
		{"tool and subject", recorder.Filter{Tool: "lookup_customer", Subject: "bob"}, ids(0, 30, func(i int) bool { return i%7 == 3 && i%2 == 1 })},
		{"since", recorder.Filter{Since: base.Add(25 * time.Second)}, ids(25, 30, nil)},
		{"until", recorder.Filter{Until: base.Add(3 * time.Second)}, ids(0, 3, nil)},
		{"since and until", recorder.Filter{Since: base.Add(10 * time.Second), Until: base.Add(12 * time.Second)}, ids(10, 12, nil)},
		{"cursor", recorder.Filter{Cursor: xid(5)}, ids(0, 5, nil)},
		{"combined", recorder.Filter{Subject: "alice", Route: "items", Status: 200}, ids(0, 30, func(i int) bool { return i%2 == 0 && i%3 == 0 && i%5 != 0 })},
		{"nothing", recorder.Filter{Subject: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, next, err := s.List(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range recs {
				got = append(got, r.Request.ExchangeID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.f, got, tt.want)
			}
			wantNext := ""
			if tt.f.Limit > 0 && len(tt.want) == tt.f.Limit {
				wantNext = tt.want[len(tt.want)-1]
			}
			if next != wantNext {
				t.Errorf("List(%+v) next = %q, want %q", tt.f, next, wantNext)
			}
		})
	}

	t.Run("records are whole", func(t *testing.T) {
		recs, _, err := s.List(t.Context(), recorder.Filter{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if recs[0].Response != nil {
			t.Errorf("newest exchange has response %+v, want nil", recs[0].Response)
		}
		want28req, want28resp := es[len(es)-3], es[len(es)-2]
		if !equalEntry(recs[1].Request, *want28req) || recs[1].Response == nil || !equalEntry(*recs[1].Response, *want28resp) {
			t.Errorf("List record = %+v, want entries %d and %d", recs[1], want28req.Seq, want28resp.Seq)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var got []string
		f := recorder.Filter{Subject: "alice", Limit: 4}
		pages := 0
		for {
			recs, next, err := s.List(t.Context(), f)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, r := range recs {
				got = append(got, r.Request.ExchangeID)
			}
			if next == "" {
				break
			}
			f.Cursor = next
		}
		want := ids(0, 30, func(i int) bool { return i%2 == 0 })
		if !slices.Equal(got, want) {
			t.Errorf("paged List = %v, want %v", got, want)
		}
		if pages != 4 { // 15 exchanges, 4 a page
			t.Errorf("pages = %d, want 4", pages)
		}
	})
}

func testListLimit(t *testing.T, b Backend) {
	s, _ := b.open(t)
	var es []*recorder.Entry
	for i := range maxListLimit + 1 {
		req, _ := pair(i, "alice", "items", "allowed", 200)
		es = append(es, req)
	}
	if err := s.Append(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		limit, want int
	}{
		{0, defaultListLimit},
		{-1, defaultListLimit},
		{1, 1},
		{5000, maxListLimit},
	}
	for _, tt := range tests {
		recs, next, err := s.List(t.Context(), recorder.Filter{Limit: tt.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != tt.want {
			t.Errorf("List(Limit %d) = %d records, want %d", tt.limit, len(recs), tt.want)
		}
		if next == "" {
			t.Errorf("List(Limit %d) next = \"\", want a cursor", tt.limit)
		}
	}
	recs, next, err := s.List(t.Context(), recorder.Filter{Cursor: xid(maxListLimit), Limit: maxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != maxListLimit || next != "" { // exchanges 0 to 999: exactly one full page
		t.Errorf("last full page = %d records, next %q; want %d, \"\"", len(recs), next, maxListLimit)
	}
}

func testChainTamper(t *testing.T, b Backend) {
	// Each case builds 300 exchanges (600 entries) in batches, checks the chain, then
	// changes the file directly.
	tests := []struct {
		name      string
		tamper    func(t *testing.T, s Store, db db)
		wantBreak int64
	}{
		{
			name: "edit data",
			tamper: func(t *testing.T, s Store, db db) {
				db.exec(t, `UPDATE entries SET data = ? WHERE seq = 123`, []byte(`{"decision":"allowed"}`))
			},
			wantBreak: 123,
		},
		{
			name: "edit index fields only",
			tamper: func(t *testing.T, s Store, db db) {
				// Not covered by the hash: the chain stays sound, and Data still tells the truth.
				db.exec(t, `UPDATE entries SET subject = 'nobody' WHERE seq = 123`)
			},
			wantBreak: 0,
		},
		{
			name: "delete a row",
			tamper: func(t *testing.T, s Store, db db) {
				db.exec(t, `DELETE FROM entries WHERE seq = 200`)
			},
			wantBreak: 201,
		},
		{
			name: "swap data",
			tamper: func(t *testing.T, s Store, db db) {
				a, b := entryAt(t, s, 301), entryAt(t, s, 351) // two request entries
				db.exec(t, `UPDATE entries SET data = ? WHERE seq = 301`, b.Data)
				db.exec(t, `UPDATE entries SET data = ? WHERE seq = 351`, a.Data)
			},
			wantBreak: 301,
		},
		{
			name: "swap seq",
			tamper: func(t *testing.T, s Store, db db) {
				db.exec(t, `UPDATE entries SET seq = -1 WHERE seq = 301`)
				db.exec(t, `UPDATE entries SET seq = 301 WHERE seq = 351`)
				db.exec(t, `UPDATE entries SET seq = 351 WHERE seq = -1`)
			},
			wantBreak: 301,
		},
		{
			name: "relink and rehash one row",
			tamper: func(t *testing.T, s Store, db db) {
				e := entryAt(t, s, 401)
				e.Data = []byte(`{"id":"x000001","decision":"allowed"}`)
				recorder.Seal(&e, strings.Repeat("ab", 32))
				db.exec(t, `UPDATE entries SET data = ?, prev_hash = ?, hash = ? WHERE seq = 401`, e.Data, e.PrevHash, e.Hash)
			},
			wantBreak: 401,
		},
		{
			name: "edit and rehash one row",
			tamper: func(t *testing.T, s Store, db db) {
				e := entryAt(t, s, 401)
				e.Data = []byte(`{"id":"x000001","decision":"allowed"}`)
				recorder.Seal(&e, e.PrevHash)
				db.exec(t, `UPDATE entries SET data = ?, hash = ? WHERE seq = 401`, e.Data, e.Hash)
			},
			wantBreak: 402, // the next entry no longer links to it
		},
		{
			name: "delete the first rows without a checkpoint",
			tamper: func(t *testing.T, s Store, db db) {
				db.exec(t, `DELETE FROM entries WHERE seq <= 10`)
			},
			wantBreak: 11,
		},
		{
			name: "forge a genesis",
			tamper: func(t *testing.T, s Store, db db) {
				e := entryAt(t, s, 1)
				recorder.Seal(&e, strings.Repeat("cd", 32))
				db.exec(t, `UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = 1`, e.PrevHash, e.Hash)
			},
			// Verify checks where the chain starts only when no link is broken, and
			// entry 2 no longer links to the rehashed entry 1.
			wantBreak: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case has its own database
			s, db := b.open(t)
			// Batches of several sizes.
			appendPairs(t, s, 0, 10, 1)
			appendPairs(t, s, 10, 150, 37)
			appendPairs(t, s, 150, 300, 256)
			if rep := verify(t, s); !rep.OK || rep.Entries != 600 {
				t.Fatalf("Verify before = %+v, want OK with 600 entries", rep)
			}
			tt.tamper(t, s, db)
			rep := verify(t, s)
			if tt.wantBreak == 0 {
				if !rep.OK {
					t.Errorf("Verify = %+v, want OK", rep)
				}
				return
			}
			if rep.OK || rep.Break == nil {
				t.Fatalf("Verify = %+v, want a break at %d", rep, tt.wantBreak)
			}
			if rep.Break.Seq != tt.wantBreak {
				t.Errorf("Break = %+v, want at %d", *rep.Break, tt.wantBreak)
			}
		})
	}
}

// entryAt returns the entry with sequence number seq.
func entryAt(t *testing.T, s Store, seq int64) recorder.Entry {
	t.Helper()
	es, err := s.Entries(t.Context(), seq-1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Seq != seq {
		t.Fatalf("Entries(%d, 1) = %+v, want entry %d", seq-1, es, seq)
	}
	return es[0]
}

func testTruncationChangesHead(t *testing.T, b Backend) {
	s, db := b.open(t)
	appendPairs(t, s, 0, 50, 16)
	before := verify(t, s)
	db.exec(t, `DELETE FROM entries WHERE seq > 97`)
	after := verify(t, s)
	// The chain alone cannot tell a cut tail from a chain that ended there ...
	if !after.OK || after.Last != 97 {
		t.Errorf("Verify after truncation = %+v, want OK ending at 97", after)
	}
	// ... but a head anchored elsewhere can.
	if after.Head == before.Head {
		t.Errorf("Head after truncation = %s, unchanged", after.Head)
	}
}

func testPrune(t *testing.T, b Backend) {
	s, _ := b.open(t)
	appendPairs(t, s, 0, 100, 64) // 200 entries; exchange i received at base+i s

	n, err := s.Prune(t.Context(), base.Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("Prune(nothing older) = %d, %v; want 0", n, err)
	}
	if c := count(t, s); c != 200 {
		t.Fatalf("Count after a prune of nothing = %d, want 200 (no checkpoint)", c)
	}

	// Exchanges 0 to 39 go: 80 entries.
	n, err = s.Prune(t.Context(), base.Add(40*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if n != 80 {
		t.Errorf("Prune = %d, want 80", n)
	}
	rep := verify(t, s)
	if !rep.OK || rep.Pruned != 80 || rep.First != 81 || rep.Entries != 121 {
		t.Errorf("Verify after prune = %+v, want OK, Pruned 80, First 81, 121 entries", rep)
	}
	if _, err := s.Get(t.Context(), xid(39)); !errors.Is(err, recorder.ErrNotFound) {
		t.Errorf("Get(pruned %s) error = %v, want ErrNotFound", xid(39), err)
	}
	recs, _, err := s.List(t.Context(), recorder.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 60 || recs[len(recs)-1].Request.ExchangeID != xid(40) {
		t.Errorf("List after prune = %d exchanges, want 60 from %s", len(recs), xid(40))
	}

	// Twice: 40 to 59 go.
	n, err = s.Prune(t.Context(), base.Add(60*time.Second))
	if err != nil || n != 40 {
		t.Errorf("second Prune = %d, %v; want 40", n, err)
	}
	if rep := verify(t, s); !rep.OK || rep.Pruned != 120 {
		t.Errorf("Verify after second prune = %+v, want OK, Pruned 120", rep)
	}

	// Everything, the first checkpoints included: the new checkpoint links to the head.
	if _, err := s.Prune(t.Context(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rep = verify(t, s)
	if !rep.OK || rep.Entries != 1 || rep.Pruned != rep.First-1 {
		t.Errorf("Verify after pruning everything = %+v, want OK with the checkpoint alone", rep)
	}
	if recs, _, _ := s.List(t.Context(), recorder.Filter{}); len(recs) != 0 {
		t.Errorf("List after pruning everything = %d exchanges, want 0", len(recs))
	}
	// The chain goes on from the checkpoint.
	appendPairs(t, s, 200, 205, 4)
	if rep := verify(t, s); !rep.OK || rep.Entries != 11 {
		t.Errorf("Verify after appending = %+v, want OK with 11 entries", rep)
	}
}

// Retention running while an auditor verifies must not show up as a break: the entries
// Verify was about to read are gone, but their deletion is vouched for.
func testVerifyDuringPrune(t *testing.T, b Backend) {
	s, db := b.open(t)
	appendPairs(t, s, 0, 1500, 256) // 3000 entries: Verify reads them in three pages
	pruned := false
	rep, err := recorder.Verify(t.Context(), s, func(done, total int64) {
		if !pruned {
			pruned = true
			// After the first page: exchanges 0 to 999 (entries 1 to 2000) go.
			if n, err := s.Prune(t.Context(), base.Add(1000*time.Second)); err != nil || n != 2000 {
				t.Errorf("Prune = %d, %v; want 2000", n, err)
			}
		}
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK || rep.Pruned != 2000 || rep.First != 2001 {
		t.Errorf("Verify while pruning = %+v, want OK, First 2001, Pruned 2000", rep)
	}

	// A real gap is still one: delete entries from the middle.
	db.exec(t, `DELETE FROM entries WHERE seq BETWEEN 2500 AND 2510`)
	if rep := verify(t, s); rep.OK || rep.Break == nil || rep.Break.Seq != 2511 {
		t.Errorf("Verify after deleting 2500-2510 = %+v, want a break at 2511", rep)
	}
}

func testPrunePrefixOnly(t *testing.T, b Backend) {
	s, _ := b.open(t)
	appendPairs(t, s, 0, 20, 64) // seq 1 to 40
	// A long request's response is written late but carries an early time.
	late := &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: xid(0), At: base, Data: []byte(`{}`)}
	if err := s.Append(t.Context(), []*recorder.Entry{late}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(t.Context(), base.Add(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if n != 30 { // exchanges 0 to 14; exchange 15 is not older and the late entry is behind it
		t.Errorf("Prune = %d, want 30", n)
	}
	if e := entryAt(t, s, 31); e.ExchangeID != xid(15) {
		t.Errorf("first entry after prune is of %s, want %s", e.ExchangeID, xid(15))
	}
	if e := entryAt(t, s, late.Seq); !e.At.Equal(base) {
		t.Errorf("late entry at %v, want kept", e.At)
	}
	if rep := verify(t, s); !rep.OK || rep.Pruned != 30 {
		t.Errorf("Verify = %+v, want OK, Pruned 30", rep)
	}
}

func testPruneChunks(t *testing.T, b Backend) {
	s, _ := b.open(t)
	b.SetPruneChunk(s, 7)
	appendPairs(t, s, 0, 30, 64)
	n, err := s.Prune(t.Context(), time.Now().Add(time.Hour)) // everything
	if err != nil {
		t.Fatal(err)
	}
	if n != 60 {
		t.Errorf("Prune = %d, want 60", n)
	}
	// 60 entries in chunks of 7: 9 checkpoints, none of them pruned by this Prune.
	rep := verify(t, s)
	if !rep.OK || rep.Pruned != 60 || rep.Entries != 9 {
		t.Errorf("Verify = %+v, want OK, Pruned 60, 9 checkpoints", rep)
	}
	es, err := s.Entries(t.Context(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Kind != recorder.KindCheckpoint {
			t.Errorf("entry %d is a %s, want a checkpoint", e.Seq, e.Kind)
		}
	}
}

// testConcurrentStores appends from three stores on one database at once, as three
// gateway replicas (or processes) would: the chain is one line, gap-free, verifiable.
func testConcurrentStores(t *testing.T, b Backend) {
	s, db := b.open(t)
	stores := db.replicas(t, s, 3)
	const workers, batches, size = 4, 15, 6 // per store
	var mu sync.Mutex
	var seqs []int64
	var wg sync.WaitGroup
	for si, s := range stores {
		for w := range workers {
			wg.Go(func() {
				for bi := range batches {
					es := make([]*recorder.Entry, 0, size)
					for k := range size / 2 {
						req, resp := pair(((si*workers+w)*batches+bi)*size+k, "alice", "items", "allowed", 200)
						es = append(es, req, resp)
					}
					if err := s.Append(t.Context(), es); err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					mu.Lock()
					for _, e := range es {
						seqs = append(seqs, e.Seq)
					}
					mu.Unlock()
				}
			})
		}
	}
	// Readers run while the writers write.
	wg.Go(func() {
		for range 20 {
			if _, _, err := stores[0].List(t.Context(), recorder.Filter{Limit: 10}); err != nil {
				t.Errorf("List: %v", err)
				return
			}
		}
	})
	wg.Wait()

	total := len(stores) * workers * batches * size
	slices.Sort(seqs)
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("sequence numbers given out = %v..., want 1 to %d once each", seqs[:i+1], total)
		}
	}
	if len(seqs) != total {
		t.Errorf("entries appended = %d, want %d", len(seqs), total)
	}
	for _, s := range stores {
		if n := count(t, s); n != int64(total) {
			t.Errorf("Count = %d, want %d", n, total)
		}
		if rep := verify(t, s); !rep.OK || rep.Entries != int64(total) {
			t.Errorf("Verify = %+v, want OK with %d entries", rep, total)
		}
	}
	recs, _, err := s.List(t.Context(), recorder.Filter{Limit: 1000})
	if err != nil || len(recs) != total/2 {
		t.Errorf("List = %d exchanges, %v; want %d", len(recs), err, total/2)
	}
}

// testPruneConcurrent prunes from three stores at once while a fourth appends: what is
// left verifies, and every old exchange went exactly once.
func testPruneConcurrent(t *testing.T, b Backend) {
	s, db := b.open(t)
	appendPairs(t, s, 0, 300, 64) // 600 entries
	stores := db.replicas(t, s, 4)
	var deleted atomic.Int64
	var wg sync.WaitGroup
	for _, p := range stores[1:] {
		wg.Go(func() {
			n, err := p.Prune(t.Context(), base.Add(200*time.Second))
			if err != nil {
				t.Errorf("Prune: %v", err)
			}
			deleted.Add(n)
		})
	}
	wg.Go(func() { appendPairs(t, stores[0], 1000, 1020, 8) })
	wg.Wait()
	// A replica that found another one pruning left the rest to it or to the next
	// round; one more round finishes.
	n, err := s.Prune(t.Context(), base.Add(200*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	deleted.Add(n)
	if got := deleted.Load(); got != 400 {
		t.Errorf("entries pruned = %d, want 400 (exchanges 0 to 199, each once)", got)
	}
	rep := verify(t, s)
	if !rep.OK || rep.Pruned != 400 {
		t.Errorf("Verify = %+v, want OK, Pruned 400", rep)
	}
	if _, err := s.Get(t.Context(), xid(200)); err != nil {
		t.Errorf("Get(%s) after prune: %v", xid(200), err)
	}
}

// testReopen closes a store and opens its database again: the chain goes on from where
// it was, and what one store committed another one reads at once.
func testReopen(t *testing.T, b Backend) {
	dsn := b.New(t)
	s := b.Open(t, dsn)
	appendPairs(t, s, 0, 10, 8)
	head := verify(t, s).Head

	// Durable on return: another handle sees the rows before the first is closed.
	other := b.Open(t, dsn)
	if n := count(t, other); n != 20 {
		t.Errorf("Count from a second handle = %d, want 20", n)
	}
	if _, err := other.Get(t.Context(), xid(9)); err != nil {
		t.Errorf("Get from a second handle: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = b.Open(t, dsn)
	rep := verify(t, s)
	if !rep.OK || rep.Entries != 20 || rep.Head != head {
		t.Errorf("Verify after reopen = %+v, want OK, 20 entries, head %s", rep, head)
	}
	next, _ := pair(10, "alice", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{next}); err != nil {
		t.Fatal(err)
	}
	if next.Seq != 21 || next.PrevHash != head {
		t.Errorf("first entry after reopen: Seq %d, PrevHash %s; want 21, %s", next.Seq, next.PrevHash, head)
	}
}

// testOpenReadOnly checks the auditors' way in: an existing store reads and verifies,
// and every write is refused and changes nothing.
func testOpenReadOnly(t *testing.T, b Backend) {
	s, db := b.open(t)
	appendPairs(t, s, 0, 10, 8)
	ro := b.OpenReadOnly(t, db.dsn)
	if rep, err := recorder.Verify(t.Context(), ro, nil); err != nil || !rep.OK || rep.Entries != 20 {
		t.Errorf("Verify read-only = %+v, %v; want OK, 20 entries", rep, err)
	}
	if recs, _, err := ro.List(t.Context(), recorder.Filter{}); err != nil || len(recs) != 10 {
		t.Errorf("List read-only = %d, %v; want 10", len(recs), err)
	}
	req, _ := pair(99, "alice", "items", "allowed", 200)
	if err := ro.Append(t.Context(), []*recorder.Entry{req}); err == nil {
		t.Error("Append on a read-only store = nil error, want one")
	}
	if err := ro.AppendUnsynced(t.Context(), []*recorder.Entry{req}); err == nil {
		t.Error("AppendUnsynced on a read-only store = nil error, want one")
	}
	if _, err := ro.Prune(t.Context(), time.Now()); err == nil {
		t.Error("Prune on a read-only store = nil error, want one")
	}
	if c := count(t, s); c != 20 {
		t.Errorf("store holds %d entries after refused writes, want 20", c)
	}
}
