package export_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/internal/pgtest"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/postgres"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// The secrets of the push tests: an upstream credential the records must redact, a
// caller's token, and the SIEM's own token in the webhook URL and a header.
const (
	upstreamKey = "upstream-key-1234"
	callerToken = "eyJ.caller-secret"
	siemToken   = "siem-token-5678"
)

// openStore opens a new SQLite store file; open opens another handle on it, as another
// gateway process sharing the file would.
func openStore(t *testing.T) (*sqlite.Store, func() *sqlite.Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "k.db")
	open := func() *sqlite.Store {
		st, err := sqlite.OpenPath(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return open(), open
}

// record writes n completed exchanges, ids from..from+n-1, through a real recorder, each
// carrying credentials the record redacts and a masked body.
func record(t *testing.T, st recorder.Store, from, n int) {
	t.Helper()
	ctx := context.Background()
	rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{upstreamKey})}, recorder.Options{})
	for i := from; i < from+n; i++ {
		now := time.Now()
		x := &recorder.Exchange{ID: xid(i), ReceivedAt: now, ForwardedAt: &now, RespondedAt: &now, Route: "crm-read", Decision: "allowed",
			Upstream: "crm", Identity: &recorder.Identity{Issuer: "https://idp.example", Subject: "alice", ClientID: "agent"},
			Request: recorder.Request{Method: "GET", Path: fmt.Sprintf("/crm/customers/%d", i),
				Header: http.Header{"Authorization": {"Bearer " + callerToken}, "X-Api-Key": {upstreamKey}}},
			Response: &recorder.Response{Status: 200, Body: recorder.NewBody([]byte(`{"ssn":"***-**-6789"}`), 21)}}
		if err := rec.Begin(ctx, x); err != nil {
			t.Fatal(err)
		}
		rec.End(x)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func xid(i int) string { return fmt.Sprintf("01JX%022d", i) }

// siem is an httptest SIEM intake: it keeps every line it accepted, and answers a post
// with fail when fail says so.
type siem struct {
	srv   *httptest.Server
	mu    sync.Mutex
	posts int
	ids   []string // in the order received, duplicates kept
	raw   bytes.Buffer
	// fail, when set, may answer post number n (from 1) itself and report that it did:
	// the post is then not accepted.
	fail func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newSIEM(t *testing.T, fail func(n int, w http.ResponseWriter, r *http.Request) bool) *siem {
	s := &siem{fail: fail}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *siem) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.posts++
	n := s.posts
	s.mu.Unlock()
	if r.URL.Query().Get("token") != siemToken || r.Header.Get("Authorization") != "Splunk "+siemToken ||
		r.Header.Get("Content-Type") != "application/x-ndjson" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if s.fail != nil && s.fail(n, w, r) {
		return
	}
	var body bytes.Buffer
	body.ReadFrom(r.Body)
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(body.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			ID       string `json:"id"`
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
			ClassUID int `json:"class_uid"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			http.Error(w, "bad line", http.StatusBadRequest)
			return
		}
		switch {
		case line.ID != "":
			ids = append(ids, line.ID)
		case line.ClassUID == export.ClassHTTPActivity:
			ids = append(ids, line.Metadata.UID)
		}
	}
	s.mu.Lock()
	s.ids = append(s.ids, ids...)
	s.raw.Write(body.Bytes())
	s.mu.Unlock()
}

func (s *siem) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// url is the webhook URL, carrying the SIEM's token.
func (s *siem) url() string { return s.srv.URL + "/services/collector/raw?token=" + siemToken }

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pushMetrics are fresh collectors for one pusher.
func pushMetrics() export.PushMetrics {
	return export.PushMetrics{
		Lag:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "lag"}),
		Active:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "active"}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "delivered"}),
		Errors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "errors"}, []string{"kind"}),
	}
}

// pusher runs a Pusher on st until the test ends or stop is called; stop waits for Run
// to return.
func pusher(t *testing.T, st export.PushStore, c export.PushConfig, o export.PushOptions) (stop func()) {
	t.Helper()
	if o.Lease == 0 {
		o.Lease = time.Second
	}
	o.MinBackoff, o.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	p := export.NewPusher(st, func() *export.PushConfig { return &c }, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func config(s *siem, format string, batch int) export.PushConfig {
	return export.PushConfig{URL: s.url(), Format: format, Batch: batch, Interval: 50 * time.Millisecond, Timeout: 300 * time.Millisecond,
		Headers: map[string]string{"Authorization": "Splunk " + siemToken}}
}

func ids(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, xid(i))
	}
	return out
}

// TestPushRetries checks that a SIEM that fails the first posts, however it fails,
// delays the exchanges but loses none: each arrives once, in chain order, the errors
// are counted by kind, the lag shows the delay while it lasts and is 0 once caught up.
func TestPushRetries(t *testing.T) {
	tests := []struct {
		name, format, kind string
		fail               func(w http.ResponseWriter, r *http.Request)
	}{
		{"503", export.JSONL, "http", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}},
		{"400 ocsf", export.OCSF, "http", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "indexer disabled", http.StatusBadRequest)
		}},
		{"redirect", export.JSONL, "http", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
		}},
		{"connection cut", export.JSONL, "network", func(w http.ResponseWriter, r *http.Request) {
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
		}},
		{"timeout", export.JSONL, "network", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}},
	}
	const failures = 3
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := openStore(t)
			record(t, st, 0, 7)
			s := newSIEM(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
				if n > failures {
					return false
				}
				tt.fail(w, r)
				return true
			})
			m := pushMetrics()
			var sawLag bool
			pusher(t, st, config(s, tt.format, 3), export.PushOptions{Metrics: m})
			waitFor(t, "every exchange delivered", func() bool {
				if testutil.ToFloat64(m.Lag) > 0 {
					sawLag = true
				}
				return len(s.received()) >= 7
			})
			if got, want := s.received(), ids(0, 7); !slices.Equal(got, want) {
				t.Errorf("SIEM received %v, want %v (each once, in chain order)", got, want)
			}
			if got := testutil.ToFloat64(m.Errors.WithLabelValues(tt.kind)); got != failures {
				t.Errorf("keyhole_export_errors_total{kind=%q} = %v, want %d", tt.kind, got, failures)
			}
			if !sawLag {
				t.Error("keyhole_export_lag_seconds stayed 0 while the SIEM failed")
			}
			waitFor(t, "lag 0", func() bool { return testutil.ToFloat64(m.Lag) == 0 })
			if got := testutil.ToFloat64(m.Delivered); got != 7 {
				t.Errorf("keyhole_export_delivered_total = %v, want 7", got)
			}
			if got := testutil.ToFloat64(m.Active); got != 1 {
				t.Errorf("keyhole_export_active = %v, want 1", got)
			}
		})
	}
}

// TestPushResumes checks that a restarted gateway resumes after the last batch the SIEM
// acknowledged: after a clean stop nothing is sent twice; after a stop in the middle of
// a post that was never answered, only that batch is sent again; nothing is ever lost.
func TestPushResumes(t *testing.T) {
	t.Run("clean stop", func(t *testing.T) {
		st, open := openStore(t)
		s := newSIEM(t, nil)
		record(t, st, 0, 5)
		stop := pusher(t, st, config(s, export.JSONL, 2), export.PushOptions{})
		waitFor(t, "first 5", func() bool { return len(s.received()) == 5 })
		stop()
		record(t, st, 5, 4)
		// Another process, as a restarted gateway is: a new holder on a new handle.
		pusher(t, open(), config(s, export.JSONL, 2), export.PushOptions{})
		waitFor(t, "all 9", func() bool { return len(s.received()) >= 9 })
		time.Sleep(200 * time.Millisecond) // a duplicate would come now
		if got, want := s.received(), ids(0, 9); !slices.Equal(got, want) {
			t.Errorf("SIEM received %v, want %v", got, want)
		}
	})
	t.Run("stop during a post", func(t *testing.T) {
		st, open := openStore(t)
		hang := make(chan struct{})
		var hung sync.Once
		// The second post is taken in but never answered: the gateway stops first.
		s := newSIEM(t, nil)
		s.fail = func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n != 2 {
				return false
			}
			var body bytes.Buffer
			body.ReadFrom(r.Body)
			s.mu.Lock()
			s.ids = append(s.ids, "in-flight")
			s.mu.Unlock()
			hung.Do(func() { close(hang) })
			<-r.Context().Done()
			return true
		}
		record(t, st, 0, 6)
		c := config(s, export.JSONL, 2)
		c.Timeout = 5 * time.Second
		stop := pusher(t, st, c, export.PushOptions{})
		<-hang
		stop()
		pusher(t, open(), config(s, export.JSONL, 2), export.PushOptions{})
		waitFor(t, "all 6", func() bool { return len(s.received()) >= 7 })
		time.Sleep(200 * time.Millisecond)
		// The batch in flight (exchanges 2 and 3) went unacknowledged and is sent again.
		want := slices.Concat(ids(0, 2), []string{"in-flight"}, ids(2, 4))
		if got := s.received(); !slices.Equal(got, want) {
			t.Errorf("SIEM received %v, want %v", got, want)
		}
	})
}

// sharedStore is a store several gateways share.
type sharedStore interface {
	recorder.Store
	export.CursorStore
}

// TestPushOneLeaseholder checks that of two gateways on one store, SQLite or PostgreSQL,
// one pushes, so the SIEM gets each exchange once, and that when it stops the other
// takes over at once.
func TestPushOneLeaseholder(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T) (sharedStore, func() sharedStore)
	}{
		{"sqlite", func(t *testing.T) (sharedStore, func() sharedStore) {
			st, open := openStore(t)
			return st, func() sharedStore { return open() }
		}},
		{"postgres", func(t *testing.T) (sharedStore, func() sharedStore) {
			dsn := pgtest.DSN(t)
			open := func() sharedStore {
				st, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 4})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			return open(), open
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, open := b.open(t)
			testOneLeaseholder(t, st, open)
		})
	}
}

func testOneLeaseholder(t *testing.T, st sharedStore, open func() sharedStore) {
	s := newSIEM(t, nil)
	m1, m2 := pushMetrics(), pushMetrics()
	stop1 := pusher(t, st, config(s, export.JSONL, 4), export.PushOptions{Holder: "gw-1", Metrics: m1, Lease: time.Minute})
	waitFor(t, "gw-1 to take the lease", func() bool { return testutil.ToFloat64(m1.Active) == 1 })
	pusher(t, open(), config(s, export.JSONL, 4), export.PushOptions{Holder: "gw-2", Metrics: m2, Lease: time.Minute})
	record(t, st, 0, 10)
	waitFor(t, "10 delivered", func() bool { return len(s.received()) >= 10 })
	time.Sleep(300 * time.Millisecond)
	if got, want := s.received(), ids(0, 10); !slices.Equal(got, want) {
		t.Errorf("SIEM received %v, want %v", got, want)
	}
	if a1, a2 := testutil.ToFloat64(m1.Active), testutil.ToFloat64(m2.Active); a1 != 1 || a2 != 0 {
		t.Errorf("active = %v and %v, want 1 and 0", a1, a2)
	}
	// A minute's lease: only the release lets gw-2 take over this fast.
	stop1()
	record(t, st, 10, 3)
	waitFor(t, "gw-2 to deliver", func() bool { return len(s.received()) >= 13 })
	if got, want := s.received(), ids(0, 13); !slices.Equal(got, want) {
		t.Errorf("SIEM received %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(m2.Active); got != 1 {
		t.Errorf("gw-2 active = %v, want 1", got)
	}
}

// TestPushSecrets checks that what reaches the SIEM keeps credentials redacted and
// masked values masked, and that the SIEM's own token, in the URL and a header, is in
// no log line and no error while the SIEM refuses or cannot be reached.
func TestPushSecrets(t *testing.T) {
	st, _ := openStore(t)
	record(t, st, 0, 3)
	for _, format := range []string{export.JSONL, export.OCSF} {
		s := newSIEM(t, nil)
		stop := pusher(t, st, config(s, format, 10), export.PushOptions{Name: format})
		waitFor(t, format+" delivered", func() bool { return len(s.received()) == 3 })
		stop()
		s.mu.Lock()
		raw := s.raw.String()
		s.mu.Unlock()
		for _, secret := range []string{upstreamKey, callerToken, "6789\"x", siemToken} {
			if strings.Contains(raw, secret) {
				t.Errorf("%s: the SIEM received %q:\n%s", format, secret, raw)
			}
		}
		if !strings.Contains(raw, recorder.Redacted) {
			t.Errorf("%s: no redacted header in what was pushed:\n%s", format, raw)
		}
		if format == export.JSONL && !strings.Contains(raw, `***-**-6789`) {
			t.Errorf("jsonl: the masked body is not pushed as recorded:\n%s", raw)
		}
	}

	// A SIEM that refuses, then one that is gone: every failure is logged.
	var logs testkit.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	refusing := newSIEM(t, func(int, http.ResponseWriter, *http.Request) bool { return false })
	c := config(refusing, export.JSONL, 10)
	c.Headers = map[string]string{"Authorization": "Splunk wrong-" + siemToken}
	m := pushMetrics()
	stop := pusher(t, st, c, export.PushOptions{Name: "refused", Log: log, Metrics: m})
	waitFor(t, "refusals", func() bool { return testutil.ToFloat64(m.Errors.WithLabelValues("http")) >= 2 })
	stop()
	gone := newSIEM(t, nil)
	gone.srv.Close()
	m = pushMetrics()
	stop = pusher(t, st, config(gone, export.JSONL, 10), export.PushOptions{Name: "gone", Log: log, Metrics: m})
	waitFor(t, "network errors", func() bool { return testutil.ToFloat64(m.Errors.WithLabelValues("network")) >= 2 })
	stop()
	out := logs.String()
	if !strings.Contains(out, "answered 401") || !strings.Contains(out, "connection refused") {
		t.Errorf("logs do not say why the pushes failed:\n%s", out)
	}
	for _, secret := range []string{siemToken, "/services/collector/raw"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs hold %q:\n%s", secret, out)
		}
	}
}
