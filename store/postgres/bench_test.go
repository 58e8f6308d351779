package postgres

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyholehq/keyhole/internal/pgtest"
	"github.com/keyholehq/keyhole/recorder"
)

// BenchmarkAppend appends what the recorder appends, on a real PostgreSQL: each batch
// holds n new exchanges' request entries and the response entries of the n before, with
// records of a realistic size (n = 1 for a lone client, 8 under load), committed
// synchronously (Append: a batch a request waits for) or not (AppendUnsynced: responses).
func BenchmarkAppend(b *testing.B) {
	req := bytes.Repeat([]byte("q"), 900)
	resp := bytes.Repeat([]byte("r"), 1100)
	for _, mode := range []string{"sync", "unsynced"} {
		for _, n := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/exchanges=%d", mode, n), func(b *testing.B) {
				s := open(b, pgtest.DSN(b))
				appendFn := s.Append
				if mode == "unsynced" {
					appendFn = s.AppendUnsynced
				}
				var prev []string
				es := make([]*recorder.Entry, 0, 2*n)
				for b.Loop() {
					es = es[:0]
					ids := make([]string, n)
					for i := range ids {
						ids[i] = ulid.Make().String()
						es = append(es, &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: ids[i], At: time.Now(),
							Data: req, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items"})
					}
					for _, id := range prev {
						es = append(es, &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: id, At: time.Now(),
							Data: resp, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items", Status: 200})
					}
					prev = ids
					if err := appendFn(b.Context(), es); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*2*n)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}
