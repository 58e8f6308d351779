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

	rec = recorder.New(st, recorder.Policy{}, recorder.Options{Retention: recorder.Retention{Keep: 24 * time.Hour}})
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

// TestRecorderRouteRetention checks that a route's own retention, shorter than the
// global one, makes stubs of that route's older records in the background, keeps the
// other routes' records whole, and leaves a chain that verifies.
func TestRecorderRouteRetention(t *testing.T) {
	st := openStore(t)
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	old := time.Now().Add(-48 * time.Hour)
	for i := range 6 {
		x := exchange(i)
		x.ReceivedAt, x.RespondedAt = old, &old
		x.Route = []string{"chat", "payments"}[i%2]
		rec.Refused(x)
	}
	rec.Close(context.Background())

	rec = recorder.New(st, recorder.Policy{}, recorder.Options{Retention: recorder.Retention{Keep: 90 * 24 * time.Hour,
		Routes: map[string]time.Duration{"chat": 24 * time.Hour}}})
	defer rec.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := st.Get(context.Background(), exchange(0).ID); errors.Is(err, recorder.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the chat route's old exchanges were not expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 1; i < 6; i += 2 {
		if _, err := st.Get(context.Background(), exchange(i).ID); err != nil {
			t.Errorf("a payments exchange expired with chat's retention: %v", err)
		}
	}
	rep, err := recorder.Verify(context.Background(), st, nil)
	if err != nil || !rep.OK || rep.Expired != 6 || rep.Entries != 13 {
		t.Errorf("Verify after retention = %+v, %v; want OK with 6 stubs in 13 entries", rep, err)
	}
}

// syncLog is a real store that notes, batch by batch, whether the recorder asked for
// a synced or an unsynced commit, and when it asked for a sync on its own.
type syncLog struct {
	*sqlite.Store
	mu    sync.Mutex
	calls []string // "sync:<kinds>", "unsynced:<kinds>" or "fsync"
}

func (s *syncLog) note(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func kinds(es []*recorder.Entry) string {
	k := ""
	for _, e := range es {
		k += e.Kind[:3]
	}
	return k
}

func (s *syncLog) Append(ctx context.Context, es []*recorder.Entry) error {
	s.note("sync:" + kinds(es))
	return s.Store.Append(ctx, es)
}

func (s *syncLog) AppendUnsynced(ctx context.Context, es []*recorder.Entry) error {
	s.note("unsynced:" + kinds(es))
	return s.Store.AppendUnsynced(ctx, es)
}

func (s *syncLog) Sync(ctx context.Context) error {
	s.note("fsync")
	return s.Store.Sync(ctx)
}

func (s *syncLog) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// waitCalls waits until the store has seen n calls, and returns them.
func (s *syncLog) waitCalls(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if c := s.get(); len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the store has seen %q, want %d calls", within, s.get(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRecorderSyncsWhatRequestsWaitFor checks that a strict request entry is committed
// synced, that a response no request waits for is committed without the sync, that the
// writer syncs it within a second although no more traffic comes, and that Close syncs
// what is left.
func TestRecorderSyncsWhatRequestsWaitFor(t *testing.T) {
	st := &syncLog{Store: openStore(t)}
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	x := exchange(1)
	begun := time.Now()
	if err := rec.Begin(context.Background(), x); err != nil {
		t.Fatal(err)
	}
	rec.End(x)
	calls := st.waitCalls(t, 2, 5*time.Second)
	if calls[0] != "sync:req" {
		t.Errorf("strict request committed as %q, want sync:req", calls[0])
	}
	// On a machine so slow that a second passed, the response is rightly synced.
	if time.Since(begun) < 900*time.Millisecond && calls[1] != "unsynced:res" {
		t.Errorf("a response alone committed as %q, want unsynced:res", calls[1])
	}
	if calls[1] == "unsynced:res" {
		if calls = st.waitCalls(t, 3, 3*time.Second); calls[2] != "fsync" {
			t.Errorf("calls %q: the quiet writer did not sync the unsynced response", calls)
		}
	}

	y := exchange(2)
	if err := rec.Begin(context.Background(), y); err != nil {
		t.Fatal(err)
	}
	rec.End(y)
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls = st.get()
	if last := calls[len(calls)-1]; last != "fsync" && last != "sync:res" {
		t.Errorf("calls %q: Close returned with the last response unsynced", calls)
	}
	if c, _ := st.Count(context.Background()); c != 4 {
		t.Errorf("store holds %d entries, want 4", c)
	}
}
