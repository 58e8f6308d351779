package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestOpenLoopKeepsItsRateAndConnections runs the open loop against a server that answers
// slowly: the schedule's requests must all be sent with the load's header, over no more
// than the load's connections, and the wait for a connection must show in the latency.
func TestOpenLoopKeepsItsRateAndConnections(t *testing.T) {
	var mu sync.Mutex
	conns, requests, badAuth := 0, 0, 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/1kb" {
			badAuth++
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	// 200 req/s of 20 ms answers over 2 connections: at most 100 answers a second, so half
	// of the schedule queues for a connection, as a closed loop would never show.
	r, err := runOpenLoop(context.Background(), load{url: srv.URL, path: "/1kb", conns: 2, rate: 200, duration: time.Second, token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if requests < 180 || requests > 220 || r.Requests != int64(requests) || badAuth > 0 {
		t.Errorf("server saw %d requests (%d without the token or path), the loop counted %d; want ~200", requests, badAuth, r.Requests)
	}
	if conns > 2 {
		t.Errorf("the loop opened %d connections, want at most 2", conns)
	}
	if r.P99ms < 200 {
		t.Errorf("p99 %.1f ms: the queue for the two connections did not show in the latency", r.P99ms)
	}
	if r.Errors != 0 || r.Non2xx != 0 {
		t.Errorf("%d errors, %d non-2xx", r.Errors, r.Non2xx)
	}
}
