package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// runOpenLoop drives l open-loop with vegeta's library: l.rate requests a second on a
// fixed schedule for l.duration, over at most l.conns keep-alive connections, whatever
// the target's latency. A closed loop (wrk) waits for each answer before it sends the
// next request, so a target that stalls is sent less and its queueing never shows; here
// a request that waits for a free connection waits on the clock, and its latency counts
// from when it was due to start. Every request times out after 10 s, and the run stops
// early when ctx ends.
func runOpenLoop(ctx context.Context, l load) (result, error) {
	if l.rate <= 0 || l.conns <= 0 {
		return result{}, fmt.Errorf("open loop: rate %d and connections %d must be positive", l.rate, l.conns)
	}
	hdr := http.Header{}
	for k, v := range l.header {
		hdr.Set(k, v)
	}
	if l.token != "" {
		hdr.Set("Authorization", "Bearer "+l.token)
	}
	targeter := vegeta.NewStaticTargeter(vegeta.Target{Method: cmp.Or(l.method, http.MethodGet), URL: l.url + l.path, Body: []byte(l.body), Header: hdr})
	atk := vegeta.NewAttacker(
		vegeta.Workers(uint64(l.conns)),
		// Workers beyond the connections wait for one inside the transport, on the clock;
		// one second's worth bounds the goroutines a stuck target can cost.
		vegeta.MaxWorkers(uint64(max(l.rate, l.conns))),
		vegeta.MaxConnections(l.conns),
		vegeta.Connections(l.conns),
		vegeta.KeepAlive(true),
		vegeta.HTTP2(false),
		vegeta.Proxy(nil),
		vegeta.Redirects(vegeta.NoFollow),
		vegeta.Timeout(10*time.Second),
	)
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			atk.Stop()
		case <-stopped:
		}
	}()
	var m vegeta.Metrics
	var r result
	for res := range atk.Attack(targeter, vegeta.ConstantPacer{Freq: l.rate, Per: time.Second}, l.duration, "") {
		m.Add(res)
		switch {
		case res.Code == 0:
			r.Errors++
		case res.Code < 200 || res.Code > 299:
			r.Non2xx++
		}
	}
	m.Close()
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.Requests, r.ReqPerSec, r.SentPerSec = int64(m.Requests), m.Throughput, m.Rate
	r.P50ms, r.P90ms, r.P99ms = ms(m.Latencies.P50), ms(m.Latencies.P90), ms(m.Latencies.P99)
	return r, nil
}
