package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/telemetry"
)

// TestOffCostsNothing checks that with telemetry off (a nil Tracer) every call the data
// plane makes is a no-op that allocates nothing.
func TestOffCostsNothing(t *testing.T) {
	var tr *telemetry.Tracer
	r := httptest.NewRequest("GET", "/crm/customers/42", nil)
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := r.Context()
	h := http.Header{}
	allocs := testing.AllocsPerRun(100, func() {
		c, s := tr.Start(ctx, r, "01JDX")
		_, v := s.Stage(c, "keyhole.verify_token")
		v.End("", "expired")
		_, u := s.Upstream(c, telemetry.Call{Upstream: "crm", Method: "GET", Scheme: "http", Host: "crm", BasePath: "/api", Path: "/x"})
		u.Inject(h)
		u.EndUpstream(200, "")
		if s.On() || s.TraceID() != "" {
			t.Fatal("a nil Tracer made a span")
		}
		s.EndRequest(telemetry.Outcome{Status: 200, Path: "/x", Route: "crm", Decision: "allowed"})
	})
	if allocs != 0 {
		t.Errorf("telemetry off: %v allocations per request, want 0", allocs)
	}
	if len(h) != 0 {
		t.Errorf("telemetry off injected %v", h)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of a nil Tracer = %v", err)
	}
}

// TestSampling checks the parent-based ratio sampler: at ratio 0 a request of its own is
// not exported and has no trace id for the record, while one whose client sampled its
// trace is; at ratio 1 every request is.
func TestSampling(t *testing.T) {
	const sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	for _, c := range []struct {
		name        string
		ratio       float64
		traceparent string
		exported    bool
	}{
		{"ratio 0, no parent", 0, "", false},
		{"ratio 0, sampled parent", 0, sampled, true},
		{"ratio 1, no parent", 1, "", true},
		{"ratio 1, unsampled parent", 1, unsampled, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rcv := testkit.NewOTLPReceiver(t)
			tr, err := telemetry.New(context.Background(), telemetry.Options{Endpoint: rcv.URL + "/", SampleRatio: c.ratio, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/x", nil)
			if c.traceparent != "" {
				r.Header.Set("Traceparent", c.traceparent)
			}
			_, s := tr.Start(r.Context(), r, "01JDX")
			id := s.TraceID()
			s.EndRequest(telemetry.Outcome{Status: 200, Path: "/x", Decision: "allowed"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if got := len(rcv.Spans()); got != map[bool]int{true: 1}[c.exported] {
				t.Errorf("%d spans exported, want exported %v", got, c.exported)
			}
			if (id != "") != c.exported {
				t.Errorf("TraceID = %q, want one only when sampled (%v)", id, c.exported)
			}
		})
	}
}
