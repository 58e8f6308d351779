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
