package recorder_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func exchange(i int) *recorder.Exchange {
	now := time.Now()
	return &recorder.Exchange{ID: fmt.Sprintf("01JD%022d", i), ReceivedAt: now, RespondedAt: &now, Decision: "allowed",
		Request: recorder.Request{Method: "GET", Path: "/x"}, Response: &recorder.Response{Status: 200}}
}

// TestRecorderStrictConcurrent checks that concurrent strict Begins all become durable,
// that they are written in shared transactions (group commit), and that Close writes
// every queued End before it returns.
func TestRecorderStrictConcurrent(t *testing.T) {
	st := openStore(t)
	writes := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "w"})
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{Metrics: recorder.Metrics{WriteSeconds: writes}})
	const n = 400
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := exchange(i)
			if err := rec.Begin(context.Background(), x); err != nil {
				t.Errorf("Begin: %v", err)
				return
			}
			if _, err := st.Get(context.Background(), x.ID); err != nil {
				t.Errorf("after strict Begin the request is not in the store: %v", err)
			}
			rec.End(x)
		}()
	}
	wg.Wait()
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.Count(context.Background()); c != 2*n {
		t.Errorf("store holds %d entries, want %d", c, 2*n)
	}
	var m dto.Metric
	if err := writes.Write(&m); err != nil {
		t.Fatal(err)
	}
	if txs := m.GetHistogram().GetSampleCount(); txs >= 2*n {
		t.Errorf("%d transactions for %d entries: group commit is not working", txs, 2*n)
	} else {
		t.Logf("%d entries in %d transactions", 2*n, txs)
	}
	rep, err := recorder.Verify(context.Background(), st, nil)
	if err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestRecorderStoreFailure checks both modes when the store cannot write: strict refuses
// with ErrUnavailable; best effort goes on and counts what it lost.
func TestRecorderStoreFailure(t *testing.T) {
	for _, mode := range []string{recorder.Strict, recorder.BestEffort} {
		t.Run(mode, func(t *testing.T) {
			st := openStore(t)
			st.Close()
			dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "d"})
			errs := prometheus.NewCounter(prometheus.CounterOpts{Name: "e"})
			rec := recorder.New(st, recorder.Policy{Mode: mode}, recorder.Options{Metrics: recorder.Metrics{Dropped: dropped, Errors: errs}})
			err := rec.Begin(context.Background(), exchange(1))
			rec.End(exchange(1))
			rec.Close(context.Background())
			if mode == recorder.Strict && !errors.Is(err, recorder.ErrUnavailable) {
				t.Errorf("strict Begin = %v, want ErrUnavailable", err)
			}
			if mode == recorder.BestEffort && err != nil {
				t.Errorf("best-effort Begin = %v, want nil", err)
			}
			if testutil.ToFloat64(errs) == 0 {
				t.Error("keyhole_recorder_errors_total did not count the failed transaction")
			}
			want := 2.0 // the request and the response
			if mode == recorder.Strict {
				want = 1 // the refused request is its caller's to report
			}
			if got := testutil.ToFloat64(dropped); got != want {
				t.Errorf("dropped = %v, want %v", got, want)
			}
		})
	}
}

// TestRecorderClosed checks that a closed recorder refuses strict records.
func TestRecorderClosed(t *testing.T) {
	rec := recorder.New(openStore(t), recorder.Policy{}, recorder.Options{})
	rec.Close(context.Background())
	if err := rec.Begin(context.Background(), exchange(1)); !errors.Is(err, recorder.ErrUnavailable) {
		t.Errorf("Begin after Close = %v, want ErrUnavailable", err)
	}
}

// TestRecorderRetention checks that a recorder with a retention period deletes older
// records in the background and that what remains still verifies.
func TestRecorderRetention(t *testing.T) {
	st := openStore(t)
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	old := time.Now().Add(-48 * time.Hour)
	for i := range 5 {
		x := exchange(i)
		x.ReceivedAt, x.RespondedAt = old, &old
		rec.Refused(x)
	}
	rec.Refused(exchange(99))
	rec.Close(context.Background())

	rec = recorder.New(st, recorder.Policy{}, recorder.Options{Retention: 24 * time.Hour})
	defer rec.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := st.Get(context.Background(), exchange(0).ID); errors.Is(err, recorder.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old exchanges were not pruned")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := st.Get(context.Background(), exchange(99).ID); err != nil {
		t.Errorf("the recent exchange was pruned too: %v", err)
	}
	rep, err := recorder.Verify(context.Background(), st, nil)
	if err != nil || !rep.OK || rep.Pruned != 10 {
		t.Errorf("Verify after retention = %+v, %v; want OK with 10 entries pruned", rep, err)
	}
}

// syncLog is a real store that notes, batch by batch, whether the recorder asked for
// a synced or an unsynced commit.
type syncLog struct {
	*sqlite.Store
	mu    sync.Mutex
	calls []string // "sync:<kinds>" or "unsynced:<kinds>"
}

func (s *syncLog) note(how string, es []*recorder.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kinds := ""
	for _, e := range es {
		kinds += e.Kind[:3]
	}
	s.calls = append(s.calls, how+":"+kinds)
}

func (s *syncLog) Append(ctx context.Context, es []*recorder.Entry) error {
	s.note("sync", es)
	return s.Store.Append(ctx, es)
}

func (s *syncLog) AppendUnsynced(ctx context.Context, es []*recorder.Entry) error {
	s.note("unsynced", es)
	return s.Store.AppendUnsynced(ctx, es)
}

func (s *syncLog) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[len(s.calls)-1]
}

// TestRecorderSyncsWhatRequestsWaitFor checks that a strict request entry is committed
// synced, that a batch nobody waits for (a response) is committed without the sync, and
// that the recorder syncs again once a second has passed without a synced commit.
func TestRecorderSyncsWhatRequestsWaitFor(t *testing.T) {
	st := &syncLog{Store: openStore(t)}
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	flush := func() {
		// A strict Begin returns after its own commit, which follows every entry queued before.
		t.Helper()
		if err := rec.Begin(context.Background(), exchange(99)); err != nil {
			t.Fatal(err)
		}
	}
	x := exchange(1)
	if err := rec.Begin(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	if got := st.last(); got != "sync:req" {
		t.Errorf("strict request committed as %q, want sync:req", got)
	}
	rec.End(x)
	flush()
	st.mu.Lock()
	calls := slices.Clone(st.calls)
	st.mu.Unlock()
	if !slices.Contains(calls, "unsynced:res") && !slices.Contains(calls, "sync:resreq") {
		t.Errorf("calls %q: the response was neither committed unsynced nor with the next request", calls)
	}
	if slices.Contains(calls, "sync:res") {
		t.Errorf("calls %q: a response alone was committed synced", calls)
	}
	time.Sleep(1100 * time.Millisecond)
	rec.End(exchange(99))
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := st.last(); got != "sync:res" {
		t.Errorf("after a second without a sync, a response batch committed as %q, want sync:res", got)
	}
	if c, _ := st.Count(context.Background()); c != 4 {
		t.Errorf("store holds %d entries, want 4", c)
	}
}
