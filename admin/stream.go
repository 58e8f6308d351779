package admin

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
)

// streamHeartbeat is how long a stream stays silent at most: then it writes a blank line,
// so that proxies and load balancers do not cut an idle stream. It is well below the admin
// plane's write idle timeout and the 60 s idle cut of common proxies.
const streamHeartbeat = 15 * time.Second

// CloseStreams ends every stream of a, now and from now on: http.Server.Shutdown waits
// for handlers to return and does not cancel their contexts, so register it with
// RegisterOnShutdown. It is safe to call more than once.
func (a *API) CloseStreams() {
	done := a.streamsDone()
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	select {
	case <-done:
	default:
		close(done)
	}
}

// streamsDone returns the channel CloseStreams closes.
func (a *API) streamsDone() chan struct{} {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
	}
	return a.done
}

func (a *API) product() export.Product {
	host, _ := os.Hostname()
	return export.Product{Version: a.Version, Hostname: host}
}

// stream serves GET /api/v1/exchanges/stream?after=CURSOR&format=ocsf|jsonl: every
// completed exchange after the cursor in chain order, then live as they commit, as
// newline-delimited JSON. A blank line is a heartbeat. Each batch is flushed.
func (a *API) stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := export.ParseCursor(q.Get("after"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", "after: "+err.Error())
		return
	}
	format, err := export.ParseFormat(q.Get("format"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	done := a.streamsDone()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	enc := export.NewEncoder(format, a.product())
	ctl := http.NewResponseController(w)
	started := false
	last := time.Now()
	start := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("X-Accel-Buffering", "no") // nginx: pass each batch on at once
			w.WriteHeader(http.StatusOK)
		}
	}
	write := func(b []byte) error {
		start()
		if _, err := w.Write(b); err != nil {
			return err
		}
		last = time.Now()
		return ctl.Flush()
	}
	var buf []byte
	emit := func(items []export.Item) error {
		buf = buf[:0]
		for _, it := range items {
			if buf, err = enc.Append(buf, it); err != nil {
				return err
			}
		}
		return write(buf)
	}
	idle := func() error {
		if !started {
			// The backlog is read: the answer starts, so a client sees it is connected.
			return write(nil)
		}
		if time.Since(last) < streamHeartbeat {
			return nil
		}
		return write([]byte("\n"))
	}
	err = export.Tail{Poll: a.StreamPoll}.Run(ctx, a.Store, after, true, emit, idle)
	switch {
	case err == nil:
	case !started:
		// Nothing was sent: a clean JSON error rather than an empty stream.
		a.storeError(w, err)
	default:
		// The client reconnects after the last cursor it has.
		if ctx.Err() == nil {
			a.Log.Warn("admin: exchange stream cut short", "error", err.Error())
		}
	}
}

// exportLines serves GET /api/v1/exchanges.ndjson?format=ocsf|jsonl and the list
// filters: the matching completed exchanges, newest first (as the list), one or two
// lines each, like the HAR export but bounded the same way.
func (a *API) exportLines(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	format, err := export.ParseFormat(r.URL.Query().Get("format"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	limit := f.Limit
	if limit == 0 || limit > maxExport {
		limit = maxExport
	}
	f.Limit = min(limit, 1000)
	recs, next, err := a.Store.List(r.Context(), f)
	if err != nil {
		a.storeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	enc := export.NewEncoder(format, a.product())
	n := 0
	var buf []byte
	for {
		buf, err = appendRecords(enc, buf[:0], recs)
		if err == nil {
			_, err = w.Write(buf)
		}
		if err != nil {
			a.Log.Warn("admin: export cut short", "error", err.Error())
			return
		}
		n += len(recs)
		if next == "" || n >= limit {
			return
		}
		f.Cursor, f.Limit = next, min(limit-n, 1000)
		if recs, next, err = a.Store.List(r.Context(), f); err != nil {
			a.Log.Warn("admin: export cut short", "error", err.Error())
			return
		}
	}
}

// appendRecords appends the lines of the completed records among recs.
func appendRecords(enc *export.Encoder, b []byte, recs []recorder.Record) ([]byte, error) {
	for _, rec := range recs {
		if rec.Response == nil {
			continue
		}
		it, err := export.ItemOf(rec)
		if err != nil {
			return nil, err
		}
		if b, err = enc.Append(b, it); err != nil {
			return nil, err
		}
	}
	return b, nil
}
