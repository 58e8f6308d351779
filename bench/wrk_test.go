package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// TestWrkSendsTheLoad runs wrk with the harness's script against a server that notes what
// it received: the method, path, body and headers of a load must be what every request
// carries, for GET loads and for the MCP scenario's POST.
func TestWrkSendsTheLoad(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		if os.Getenv("KEYHOLE_REQUIRE_WRK") == "1" {
			t.Fatal("wrk is not installed, and KEYHOLE_REQUIRE_WRK=1 (CI) makes its absence a failure")
		}
		t.Skip("wrk is not installed (apt-get install -y wrk)")
	}
	for _, l := range []load{
		{path: "/small", token: "tok"},
		{path: "/mcp", token: "tok", method: http.MethodPost, body: mcpCall,
			header: map[string]string{"Content-Type": "application/json", "X-Api-Key": benchAPIKey}},
	} {
		t.Run(l.path, func(t *testing.T) {
			var mu sync.Mutex
			seen := map[string]int{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				seen[r.Method+" "+r.URL.Path+" "+string(b)+" "+r.Header.Get("Authorization")+" "+r.Header.Get("Content-Type")+" "+r.Header.Get("X-Api-Key")]++
				mu.Unlock()
			}))
			defer srv.Close()
			l.url, l.conns, l.duration = srv.URL, 2, time.Second
			r, err := runWrk(context.Background(), t.TempDir(), l)
			if err != nil {
				t.Fatal(err)
			}
			method := l.method
			if method == "" {
				method = http.MethodGet
			}
			want := method + " " + l.path + " " + l.body + " Bearer tok " + l.header["Content-Type"] + " " + l.header["X-Api-Key"]
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 || seen[want] == 0 || r.Requests == 0 {
				t.Errorf("wrk sent %v (%d requests), want only %q", seen, r.Requests, want)
			}
		})
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:8080/small
  1 threads and 32 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.50ms
     99%    1.02s
  40000 requests in 5.00s, 10.00MB read
  Socket errors: connect 0, read 1, write 2, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   8000.50
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := result{Requests: 40000, ReqPerSec: 8000.5, P50ms: 0.812, P90ms: 2.5, P99ms: 1020, Non2xx: 7, Errors: 6}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
}
