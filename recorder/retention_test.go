package recorder

import (
	"context"
	"reflect"
	"testing"
	"time"
)

func TestRetentionPlan(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name      string
		retention Retention
		rules     []ExpiryRule
		prune     time.Time
	}{
		{name: "nothing set keeps everything"},
		{name: "global only prunes", retention: Retention{Keep: 90 * day}, prune: ago(90 * day)},
		{
			name:      "a shorter route expires, the global prunes",
			retention: Retention{Keep: 90 * day, Routes: map[string]time.Duration{"chat": 7 * day}},
			rules:     []ExpiryRule{{Before: ago(7 * day), Routes: []string{"chat"}}},
			prune:     ago(90 * day),
		},
		{
			name:      "a longer route holds the prefix back; the other routes expire at the global",
			retention: Retention{Keep: 30 * day, Routes: map[string]time.Duration{"payments": 365 * day, "chat": 7 * day}},
			rules: []ExpiryRule{
				{Before: ago(7 * day), Routes: []string{"chat"}},
				{Before: ago(30 * day), Routes: []string{"chat", "payments"}, OtherRoutes: true},
			},
			prune: ago(365 * day),
		},
		{
			name:      "no global: routes expire, nothing is pruned",
			retention: Retention{Routes: map[string]time.Duration{"b": 7 * day, "a": 7 * day, "c": 30 * day}},
			rules: []ExpiryRule{
				{Before: ago(7 * day), Routes: []string{"a", "b"}},
				{Before: ago(30 * day), Routes: []string{"c"}},
			},
		},
		{
			name:      "a route as long as the longest is left to the prune",
			retention: Retention{Keep: 30 * day, Routes: map[string]time.Duration{"audit": 60 * day, "ops": 60 * day}},
			rules:     []ExpiryRule{{Before: ago(30 * day), Routes: []string{"audit", "ops"}, OtherRoutes: true}},
			prune:     ago(60 * day),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, prune := tt.retention.plan(now)
			if !reflect.DeepEqual(rules, tt.rules) || !prune.Equal(tt.prune) {
				t.Errorf("plan() = %+v, prune %v\nwant %+v, prune %v", rules, prune, tt.rules, tt.prune)
			}
		})
	}
}

// memStore is the part of a Store Verify reads: entries in sequence order.
type memStore struct {
	Store
	es []Entry
}

func (m *memStore) Count(context.Context) (int64, error) { return int64(len(m.es)), nil }

func (m *memStore) Entries(_ context.Context, after int64, limit int) ([]Entry, error) {
	var out []Entry
	for _, e := range m.es {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestChainVersions checks that a chain begun in version 1 (before stubs) and continued
// in version 2 verifies, that a version-1 entry cannot become a stub, and that a
// version-2 stub vouched for by an expiry entry verifies.
func TestChainVersions(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var es []Entry
	prev := GenesisHash
	add := func(e Entry, version int) {
		e.Seq = int64(len(es) + 1)
		if version == 1 {
			e.PrevHash, e.Version = prev, 1
			e.Hash = hashOf(&e)
		} else {
			Seal(&e, prev)
		}
		es = append(es, e)
		prev = e.Hash
	}
	add(Entry{Kind: KindRequest, ExchangeID: "a", At: at, Data: []byte(`{"id":"a"}`)}, 1)
	add(Entry{Kind: KindResponse, ExchangeID: "a", At: at, Data: []byte(`{"status":200}`)}, 1)
	add(Entry{Kind: KindRequest, ExchangeID: "b", At: at, Data: []byte(`{"id":"b"}`)}, 2)
	if _, ok := Stub(es[0]); ok {
		t.Error("Stub(version-1 entry) ok, want refused: its hash covers its Data")
	}
	stub, ok := Stub(es[2])
	if !ok || stub.Data != nil || len(stub.DataHash) != 64 {
		t.Fatalf("Stub(version-2 entry) = %+v, %v; want no Data and a SHA-256", stub, ok)
	}
	if _, ok := Stub(stub); ok {
		t.Error("Stub(stub) ok, want refused")
	}
	s := &memStore{es: es}
	if rep, err := Verify(t.Context(), s, nil); err != nil || !rep.OK || rep.Entries != 3 {
		t.Fatalf("Verify(v1 then v2) = %+v, %v; want OK with 3 entries", rep, err)
	}

	es[2] = stub
	s = &memStore{es: es}
	if rep, _ := Verify(t.Context(), s, nil); rep.OK || rep.Break == nil || rep.Break.Seq != 3 {
		t.Errorf("Verify(stub without an expiry entry) = %+v, want a break at 3", rep)
	}
	add(*Expiry([]int64{3}, ExpiryRule{Before: at, Routes: []string{"r"}}, at), 2)
	s = &memStore{es: es}
	if rep, err := Verify(t.Context(), s, nil); err != nil || !rep.OK || rep.Expired != 1 {
		t.Errorf("Verify(stub and its expiry entry) = %+v, %v; want OK with 1 expired", rep, err)
	}
}
