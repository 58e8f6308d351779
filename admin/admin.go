// Package admin serves Keyhole's admin plane: health, readiness, Prometheus metrics, the
// auditor API (exchanges, HAR export, replay, chain verification) and, in development,
// the built-in token issuer.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyholehq/keyhole/internal/deadline"
)

// Options configures the admin handler.
type Options struct {
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Ready reports nil when the gateway can serve traffic (config loaded, store reachable,
	// keys fetched for every issuer), or an error that says what is missing.
	Ready func() error
	// DevIssuer, when not nil, is mounted at DevPath (e.g. "/dev") with the prefix stripped.
	DevIssuer http.Handler
	DevPath   string
	// API, when not nil, serves the auditor API under /api/v1.
	API *API
	// Console, when not nil, serves the web console: every path under /ui/, unstripped.
	Console http.Handler
	// Pprof serves Go's profiles under /debug/pprof/ (keyhole serve --pprof): for
	// measuring the gateway under load, off by default.
	Pprof bool
}

// The admin plane's bodies are small JSON objects: a body may pause adminBodyIdle and take
// adminBodyTimeout in all; a response write may wait adminWriteIdle on a client that does
// not read (reset on progress, so a long HAR export to a reading client lives).
const (
	adminBodyIdle    = 10 * time.Second
	adminBodyTimeout = 30 * time.Second
	adminWriteIdle   = 30 * time.Second
)

// New returns the admin plane's handler. It is safe for concurrent use. Every request
// body is read under a deadline, and an answer written before the body has ended (a 401,
// a 403) closes the connection instead of waiting for the rest of it.
func New(o Options) http.Handler {
	return deadline.Handler(newRouter(o), adminBodyIdle, adminBodyTimeout, adminWriteIdle)
}

// NewOps returns the operations listener's handler (ops.listen): /healthz, /readyz and
// /metrics as New serves them, and nothing else — no admin API, console, dev issuer or
// profiles — so probes and Prometheus can reach it where the admin plane must not be
// reachable. It is safe for concurrent use.
func NewOps(gatherer prometheus.Gatherer, ready func() error) http.Handler {
	r := chi.NewRouter()
	probes(r, gatherer, ready)
	return deadline.Handler(r, adminBodyIdle, adminBodyTimeout, adminWriteIdle)
}

// probes mounts /healthz, /readyz and /metrics on r.
func probes(r chi.Router, gatherer prometheus.Gatherer, ready func() error) {
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
}

func newRouter(o Options) http.Handler {
	r := chi.NewRouter()
	probes(r, o.Gatherer, o.Ready)
	if o.DevIssuer != nil {
		r.Mount(o.DevPath, http.StripPrefix(o.DevPath, o.DevIssuer))
	}
	if o.API != nil {
		o.API.mount(r)
	}
	if o.Console != nil {
		r.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
		r.Handle("/ui/*", o.Console)
	}
	if o.Pprof {
		r.HandleFunc("/debug/pprof/", pprof.Index)
		r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		r.HandleFunc("/debug/pprof/profile", pprof.Profile)
		r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		r.HandleFunc("/debug/pprof/trace", pprof.Trace)
		r.Handle("/debug/pprof/{name}", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			pprof.Handler(chi.URLParam(req, "name")).ServeHTTP(w, req)
		}))
	}
	return r
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
