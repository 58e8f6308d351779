package recorder_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// BenchmarkWriter measures how many exchanges per second the recorder sustains into a
// SQLite file, and how many transactions they take: each exchange a strict Begin
// (durable before it returns) and an End, from one client after another, or from 64
// concurrent ones, as a gateway under load makes them.
func BenchmarkWriter(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			txs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "txs"})
			rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{"a-credential-value-0123456789"})},
				recorder.Options{Metrics: recorder.Metrics{WriteSeconds: txs}})
			body := recorder.NewBody([]byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","plan":"pro"}`), 70)
			exchange := func() {
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
			b.ReportAllocs()
			start := time.Now()
			if clients == 1 {
				for b.Loop() {
					exchange()
				}
			} else {
				b.SetParallelism(max(1, clients/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						exchange()
					}
				})
			}
			if err := rec.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "exchanges/s")
			var m dto.Metric
			if err := txs.Write(&m); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(m.GetHistogram().GetSampleCount())/float64(b.N), "txs/exchange")
		})
	}
}

// BenchmarkRedacted measures encoding one exchange as the recorder stores it — both
// entries, redacted by header and by the values of three credentials (some 40 encoded
// forms) — for a small JSON response and for one of 64 KiB, a record's usual body limit.
func BenchmarkRedacted(b *testing.B) {
	rec := recorder.New(nil, recorder.Policy{Redactor: recorder.NewRedactor([]string{"X-Api-Key"},
		[]string{"crm-key-7f3a9c-0123456789", "Bearer billing-token-51e2-abcdef", "hash-key-0123456789abcdef"})}, recorder.Options{})
	small := []byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","plan":"pro"}`)
	var large []byte
	large = append(large, `{"customers":[`...)
	for i := 0; len(large) < 64<<10-200; i++ {
		large = fmt.Appendf(large, `{"id":%d,"name":"Customer %d","email":"c%d@example.com","ssn":"[REDACTED]","card":"************4242"},`, i, i, i)
	}
	large = append(large[:len(large)-1], "]}"...)
	for _, c := range []struct {
		name string
		body []byte
	}{{"small", small}, {"64KiB", large}} {
		b.Run(c.name, func(b *testing.B) {
			now := time.Now()
			x := &recorder.Exchange{ID: ulid.Make().String(), ReceivedAt: now, RespondedAt: &now, Route: "crm-read-customer", Decision: "allowed",
				Identity: &recorder.Identity{Subject: "agent", ClientID: "agent", Scopes: []string{"crm.read"}},
				Request: recorder.Request{Method: "GET", Path: "/crm/customers/42", ForwardPath: "/customers/42",
					Header: http.Header{"Accept": {"application/json"}, "Authorization": {"Bearer eyJhbGciOi.payload.sig"}, "User-Agent": {"agent/1.0"}}},
				Response: &recorder.Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Date": {"Wed, 25 Nov 2026 22:00:00 GMT"}},
					Body: recorder.NewBody(c.body, int64(len(c.body)))}}
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rec.Redacted(x, "eyJhbGciOi.payload.sig"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
