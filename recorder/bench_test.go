package recorder_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// BenchmarkWriter measures how many exchanges per second the recorder sustains into a
// SQLite file: each one a strict Begin (durable before it returns) and an End, from 64
// concurrent requests, as a gateway under load makes them.
func BenchmarkWriter(b *testing.B) {
	st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{"a-credential-value-0123456789"})}, recorder.Options{})
	body := recorder.NewBody([]byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","plan":"pro"}`), 70)
	b.ReportAllocs()
	b.SetParallelism(32)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			x := &recorder.Exchange{ID: ulid.Make().String(), ReceivedAt: now, Route: "crm-read-customer", Decision: "allowed",
				Identity: &recorder.Identity{Subject: "agent", Scopes: []string{"crm.read"}},
				Request:  recorder.Request{Method: "GET", Path: "/crm/customers/42", Header: http.Header{"Accept": {"application/json"}}},
				Response: &recorder.Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body}}
			if err := rec.Begin(context.Background(), x); err != nil {
				b.Fatal(err)
			}
			x.RespondedAt = &now
			rec.End(x)
		}
	})
	if err := rec.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "exchanges/s")
}
