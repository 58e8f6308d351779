package proxy

import (
	"context"
	"io"
	"mime"
	"net/http"
	"sync/atomic"
	"time"
)

// Kinds of keyhole_upstream_errors_total for a response body that failed after its
// headers arrived.
const (
	kindTruncated = "truncated" // ended early: Content-Length short, chunked cut, connection reset
	kindStalled   = "stalled"   // no byte within the upstream's timeout
)

// upstreamBodyError is an upstream response body that ended early or stalled. The
// client is not to blame: it is an upstream error (502 upstream_truncated or 504
// upstream_timeout while the gateway can still answer; recorded so when it cannot).
type upstreamBodyError struct {
	kind string // kindTruncated or kindStalled
	err  error
}

func (e *upstreamBodyError) Error() string {
	return "upstream response body " + e.kind + ": " + e.err.Error()
}
func (e *upstreamBodyError) Unwrap() error { return e.err }

// upstreamBody watches an upstream response body as the gateway reads it: it tells an
// upstream that cut the body, or stopped sending it, from a client that went away
// (before, both were recorded as 499 client_closed, and a masked route's stall as
// mask_failed once the client gave up), and it cuts off a stalled read.
type upstreamBody struct {
	body    io.ReadCloser
	info    *reqInfo
	ctx     context.Context // the upstream request's: done when the client left or the stall timer fired
	idle    time.Duration   // longest wait for a byte within one Read; 0: no limit
	timer   *time.Timer
	stalled atomic.Bool
}

// watchBody returns resp's body watched. A stall is a Read that waits longer than idle
// for the upstream: only the wait for the upstream counts, not the time the gateway takes
// to hand bytes to a slow client. Streamed framings (SSE, NDJSON) may be quiet between
// events for as long as they like, so they have no stall limit; an upstream that cuts
// them is still a truncation.
func watchBody(resp *http.Response, info *reqInfo, idle time.Duration, cancel context.CancelFunc) *upstreamBody {
	b := &upstreamBody{body: resp.Body, info: info, ctx: resp.Request.Context()}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); idle > 0 && !streamedType(ct) {
		b.idle = idle
		b.timer = time.AfterFunc(time.Hour, func() {
			b.stalled.Store(true)
			cancel() // unblocks the Read: the transport closes the connection
		})
		b.timer.Stop()
	}
	return b
}

// streamedType reports whether ct is an event stream or a stream of JSON lines.
func streamedType(ct string) bool {
	switch ct {
	case "text/event-stream", "application/x-ndjson", "application/ndjson", "application/jsonl",
		"application/x-jsonlines", "application/jsonlines":
		return true
	}
	return false
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.timer != nil {
		b.timer.Reset(b.idle)
	}
	n, err := b.body.Read(p)
	if b.timer != nil {
		b.timer.Stop()
	}
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case b.stalled.Load():
		err = &upstreamBodyError{kind: kindStalled, err: err}
	case b.ctx.Err() != nil:
		return n, err // the client went away: its own outcome, 499 client_closed
	default:
		err = &upstreamBodyError{kind: kindTruncated, err: err}
	}
	if b.info.upstreamCut == nil {
		b.info.upstreamCut = err.(*upstreamBodyError)
	}
	return n, err
}

func (b *upstreamBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	return b.body.Close()
}

// upstreamBodyFailed accounts for an upstream body that failed after the response
// began: the client has the status and part of the body, so nothing can be answered any
// more. What the gateway wrote is flushed first, so that the client has exactly what the
// record says it got (the server drops its buffer when the handler aborts); the
// connection is then cut, which a client sees as the truncation it is.
func (g *Gateway) upstreamBodyFailed(sw *statusWriter, info *reqInfo, ue *upstreamBodyError) {
	g.metrics.UpstreamErrors.WithLabelValues(info.upstream.name, ue.kind).Inc()
	_ = http.NewResponseController(sw).Flush()
	rf := statusFor(ue)
	info.refusal, info.decision = rf, labelError
	info.cutShort = true
}
