package recorder_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"syscall"
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
	small := []byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","plan":"pro"}`)
	var large []byte // 64 KiB of JSON, as the load harness's 100 KB answer is recorded
	large = append(large, `{"customers":[`...)
	for i := 0; len(large) < 64<<10-200; i++ {
		large = fmt.Appendf(large, `{"id":%d,"name":"Customer %d","email":"c%d@example.com","ssn":"078-05-1120","card":"4242424242424242"},`, i, i, i)
	}
	large = append(large[:len(large)-1], "]}"...)
	for _, c := range []struct {
		name    string
		clients int
		body    []byte
	}{{"clients=1", 1, small}, {"clients=64", 64, small}, {"clients=8/body=64KiB", 8, large}} {
		clients := c.clients
		b.Run(c.name, func(b *testing.B) {
			st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			txs := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "txs"})
			rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{"a-credential-value-0123456789"})},
				recorder.Options{Metrics: recorder.Metrics{WriteSeconds: txs}})
			body := recorder.NewBody(c.body, int64(len(c.body)))
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
			cpu0 := processCPU(b)
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
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/exchange")
			var m dto.Metric
			if err := txs.Write(&m); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(m.GetHistogram().GetSampleCount())/float64(b.N), "txs/exchange")
		})
	}
}

// processCPU is the process's user and system CPU time so far: the writer goroutine's
// and SQLite's included.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
