package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/telemetry"

	"github.com/keyholehq/keyhole/recorder"
)

// BenchmarkProxyAllowed measures one whole allowed request through the gateway over real
// loopback connections: canonical path, cached token verification, rules, credential
// injection, forwarding to an httptest upstream and copying the answer back. Nothing is
// recorded; BenchmarkProxyRecorded adds strict recording, for the cost of it.
func BenchmarkProxyAllowed(b *testing.B) { benchProxy(b, newHarness(b)) }

// BenchmarkProxyRecorded is BenchmarkProxyAllowed with strict recording into SQLite: every
// request is durably committed (group commit, fsync) before it is forwarded.
func BenchmarkProxyRecorded(b *testing.B) {
	benchProxy(b, newRecordingHarness(b, recorder.Strict).harness)
}

// BenchmarkProxyRecordedLarge is BenchmarkProxyRecorded on a ~100 KB JSON answer that the
// upstream sends chunked, in writes of 4 KiB: the answers agents read most, captured for
// the record as they stream through.
func BenchmarkProxyRecordedLarge(b *testing.B) {
	rh := newRecordingHarness(b, recorder.Strict)
	rh.rec.SetPolicy(recorder.Policy{Mode: recorder.Strict, BodyLimit: 64 << 10, Redactor: recorder.NewRedactor([]string{"X-Api-Key"}, []string{crmKey})})
	var body []byte
	body = append(body, `{"customers":[`...)
	for i := 0; len(body) < 100_000; i++ {
		body = fmt.Appendf(body, `{"id":%d,"name":"Customer %d","email":"c%d@example.com","plan":"pro"},`, i, i, i)
	}
	body = append(body[:len(body)-1], "]}"...)
	benchProxyAnswer(b, rh.harness, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for p := body; len(p) > 0; {
			n := min(len(p), 4<<10)
			w.Write(p[:n])
			w.(http.Flusher).Flush()
			p = p[n:]
		}
	})
}

// BenchmarkProxyRecordedBestEffort records without waiting for the commit.
func BenchmarkProxyRecordedBestEffort(b *testing.B) {
	benchProxy(b, newRecordingHarness(b, recorder.BestEffort).harness)
}

// BenchmarkProxyTraced is BenchmarkProxyAllowed with every request traced (ratio 1) and
// exported to an in-process OTLP/HTTP receiver, for the cost of telemetry when it is on.
func BenchmarkProxyTraced(b *testing.B) {
	h := newHarness(b)
	rcv := testkit.NewOTLPReceiver(b)
	tr, err := telemetry.New(context.Background(), telemetry.Options{Endpoint: rcv.URL, SampleRatio: 1, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	h.gw.SetTracer(tr)
	benchProxy(b, h)
}

// benchParallelism is goroutines per CPU: 16 on 2 CPUs is 32 concurrent clients, where
// group commit shares each fsync among the requests waiting for it.
const benchParallelism = 16

func benchProxy(b *testing.B, h *harness) {
	benchProxyAnswer(b, h, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":42,"name":"Ada Lovelace","email":"ada@example.com"}`)
	})
}

// benchProxyAnswer measures allowed requests through h to an upstream that answers with
// respond.
func benchProxyAnswer(b *testing.B, h *harness, respond http.HandlerFunc) {
	h.crm.Respond = respond
	tok := h.token(b, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	client := h.srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", h.srv.URL+"/crm/customers/42", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for pb.Next() {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkDirect is the same request sent straight to the upstream, for comparison.
func BenchmarkDirect(b *testing.B) {
	h := newHarness(b)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":42,"name":"Ada Lovelace","email":"ada@example.com"}`)
	}
	client := h.crm.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(h.crm.URL + "/api/customers/42")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
