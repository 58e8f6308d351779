package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/internal/deadline"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
)

// Recorder records exchanges. Begin must make the request part durable before it returns
// nil when the recorder is in strict mode; End and Refused queue and return at once. None
// of them keeps x, or what it refers to, after it returns.
type Recorder interface {
	Begin(ctx context.Context, x *recorder.Exchange, extra ...string) error
	End(x *recorder.Exchange, extra ...string)
	Refused(x *recorder.Exchange, extra ...string)
	// Redacted returns x as it would be recorded: redacted.
	Redacted(x *recorder.Exchange, extra ...string) (*recorder.Exchange, error)
	// RedactString returns s redacted as a record would be.
	RedactString(s string, extra ...string) string
	BodyLimit() int64
}

// recording is the per-request state of the record: what was captured so far.
type recording struct {
	x       *recorder.Exchange // set by the record stage once the request part is written
	header  http.Header        // the client's request headers as received
	secrets []string           // the client's bearer token, and any query access_token: redacted by value
	reqBody []byte             // captured request body, at most the body limit
	reqSize int64              // bytes of the request body known: its length, or the limit + 1
	body    []byte             // buffered request body (body conditions), when there is one
	// mode is the route's record mode once the record stage ran: config.RecordNone
	// leaves a forwarded exchange unrecorded, config.RecordMetadata keeps no bodies.
	mode string
}

// record writes the request part of the exchange before it is forwarded: in strict mode
// it is durable first, and a request that cannot be recorded is refused with 503 and
// never reaches the upstream.
func (g *Gateway) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		if g.rec == nil {
			next.ServeHTTP(w, r)
			return
		}
		info.rec.mode = recordMode(info.route)
		switch info.rec.mode {
		case config.RecordNone:
			// The deployment exempted this route: nothing is recorded unless it is refused
			// or fails after this stage (finishRecord).
			next.ServeHTTP(w, r)
			return
		case config.RecordMetadata:
			// No body is read ahead: the size is what the request declares.
			info.rec.reqBody, info.rec.reqSize = nil, max(r.ContentLength, 0)
		default:
			if rf := info.rec.captureBody(r, g.rec.BodyLimit()); rf != nil {
				g.refuse(w, info, rf)
				return
			}
		}
		x := g.exchange(r, info)
		ctx, rs := info.span.Stage(r.Context(), "keyhole.record")
		err := g.rec.Begin(ctx, x, info.rec.secrets...)
		rs.End("", errCode(err, "recorder_unavailable"))
		if err != nil {
			// The access-log line says why (cause); the recorder logs, once, that its
			// store cannot be written, not once per request it refuses.
			g.refuse(w, info, &refusal{status: http.StatusServiceUnavailable, code: "recorder_unavailable",
				msg: "the request could not be recorded, so it was not forwarded", decision: labelError, cause: err})
			return
		}
		info.rec.x = x
		next.ServeHTTP(w, r)
	})
}

// captureBody keeps the first limit bytes of the request body for the record. A body the
// gateway buffered to judge is reused; a streamed one is read up to the limit now (so the
// record written before forwarding holds it), and the rest streams on to the upstream
// unbuffered.
func (rc *recording) captureBody(r *http.Request, limit int64) *refusal {
	if rc.body != nil || r.Body == nil || r.Body == http.NoBody {
		rc.reqBody, rc.reqSize = rc.body, int64(len(rc.body))
		if int64(len(rc.reqBody)) > limit {
			rc.reqBody = rc.reqBody[:limit]
		}
		return nil
	}
	// One byte more than the limit tells a body that fits from one that does not.
	// The read deadline is the body's own (deadline.Body) and stays set for the rest,
	// which streams on: clearing it here let a client stall the upload for ever.
	prefix, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return bodyError(err)
	}
	rc.reqBody, rc.reqSize = prefix, int64(len(prefix))
	if rc.reqSize > limit {
		rc.reqBody = prefix[:limit]
	}
	r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(prefix), r.Body), c: r.Body}
	return nil
}

// refusedBodyWait bounds how long a refusal waits for the start of a body no stage has
// read yet, for the record: a refused client cannot hold its connection with it.
const refusedBodyWait = time.Second

// keepRefused keeps, for the record of a request refused before the record stage, the
// start of its body (at most limit bytes): the bytes a stage read (rc.body, the whole
// body or what arrived before a read failed), else what arrives within refusedBodyWait.
// declared is the request's Content-Length (-1 unknown): a larger declared size is
// recorded as the size of a body cut short.
func (rc *recording) keepRefused(b *deadline.Body, declared, limit int64) {
	if rc.reqSize > 0 {
		return
	}
	body := rc.body
	if body == nil && b != nil && b.BytesRead() == 0 && !b.Done() {
		b.Shorten(refusedBodyWait)
		body, _ = io.ReadAll(io.LimitReader(b, limit+1))
	}
	if len(body) == 0 {
		return
	}
	rc.reqBody, rc.reqSize = body, max(int64(len(body)), declared)
	if int64(len(body)) > limit {
		rc.reqBody = body[:limit]
	}
}

// prefixedBody is a request body whose first bytes were read ahead for the record.
type prefixedBody struct {
	io.Reader
	c io.Closer
}

func (b *prefixedBody) Close() error { return b.c.Close() }

// exchange returns the request part of the record of r.
func (g *Gateway) exchange(r *http.Request, info *reqInfo) *recorder.Exchange {
	x := &recorder.Exchange{ID: info.id, TraceID: info.span.TraceID(), ReceivedAt: info.start, Decision: info.decision, Reason: info.reason}
	if p := info.principal; p != nil {
		x.Identity = &recorder.Identity{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Groups: p.Groups, Scopes: p.Scopes, Claims: p.Claims}
	}
	if info.route != nil {
		x.Route = info.route.Name
		if c := info.route.Config; c != nil && c.Retention > 0 {
			x.Retention = c.Retention.String()
		}
	}
	x.Masked = info.mask != nil
	x.MCP = mcpRecord(r, info)
	if info.upstream != nil {
		x.Upstream = info.upstream.name
		x.Request.ForwardPath = info.forwardPath
	}
	x.Request.Method = r.Method
	x.Request.Path = info.path
	if x.Request.Path == "" {
		// Refused before canonicalisation: keep what was asked for, bounded.
		target, _, _ := strings.Cut(r.RequestURI, "?")
		x.Request.Path = truncate(target, 2048)
	}
	x.Request.Query = recordedQuery(r.URL.RawQuery)
	x.Request.Header = info.rec.header
	x.Request.Scheme = "http"
	if r.TLS != nil {
		x.Request.Scheme = "https"
	}
	x.Request.Host, x.Request.Protocol = truncate(r.Host, 300), r.Proto
	switch {
	case info.rec.mode == config.RecordMetadata:
		x.Record = config.RecordMetadata
		x.Request.Body = recorder.Body{Size: info.rec.reqSize, Truncated: info.rec.reqSize > 0}
	case info.decision != labelUnauthenticated && info.rec.reqSize > 0:
		// For a body longer than the limit, Size is a lower bound: the rest was streamed.
		x.Request.Body = recorder.NewCodedBody(info.rec.reqBody, info.rec.reqSize, r.Header.Values("Content-Encoding"), g.rec.BodyLimit())
	}
	return x
}

// recordedQuery returns the query for the record with the value of any access_token
// (which the gateway refuses, but a client may still send, its name in any case or
// encoding) replaced. It is kept whole (the server bounds it with the request line): a
// cut query would replay as a different request.
func recordedQuery(raw string) string {
	if plainASCII(raw) && !strings.Contains(strings.ToLower(raw), "access_token") {
		return raw // the common case: no name can decode or case-fold to access_token
	}
	parts := strings.Split(raw, "&")
	changed := false
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if dk, err := url.QueryUnescape(k); err != nil || strings.EqualFold(dk, "access_token") {
			parts[i], changed = k+"="+recorder.Redacted, true
		}
	}
	if !changed {
		return raw
	}
	return strings.Join(parts, "&")
}

// plainASCII reports whether s is ASCII without percent-encoding.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == '%' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// finishRecord writes the rest of the exchange once the client has its answer: the
// response part after a recorded request, or the whole exchange of a refused one.
func (g *Gateway) finishRecord(r *http.Request, sw *statusWriter, info *reqInfo, status int, elapsed time.Duration) {
	x := info.rec.x
	begun := x != nil
	if info.rec.mode == config.RecordNone && info.refusal == nil {
		return // an exempted route's exchange that went through
	}
	if !begun {
		x = g.exchange(r, info)
	}
	now := time.Now()
	x.RespondedAt = &now
	x.Decision = info.decision
	x.ApprovalID = info.approvalID
	if info.reason != "" {
		x.Reason = info.reason
	}
	if !info.forwarded.IsZero() {
		fwd := info.forwarded
		x.ForwardedAt = &fwd
	}
	if rf := info.refusal; rf != nil {
		x.Error, x.Reason = rf.code, rf.msg
	}
	x.Response = &recorder.Response{Status: status, Header: info.respHeader, Incomplete: info.cutShort}
	if x.Record == config.RecordMetadata && info.refusal == nil {
		x.Response.Body = recorder.Body{Size: sw.bytes, Truncated: sw.bytes > 0}
	} else {
		x.Response.Body = recorder.NewCodedBody(sw.captured, sw.bytes, info.respHeader.Values("Content-Encoding"), g.rec.BodyLimit())
	}
	sw.releaseCapture() // the body holds a copy
	x.Durations = recorder.Durations{TotalMS: ms(elapsed), UpstreamMS: ms(info.upstreamDur)}
	if begun {
		g.rec.End(x, info.rec.secrets...)
	} else {
		g.rec.Refused(x, info.rec.secrets...)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// recordMode returns the record mode of route: config.RecordFull unless its config says
// otherwise.
func recordMode(route *rules.Route) string {
	if route == nil || route.Config == nil || route.Config.Record == "" {
		return config.RecordFull
	}
	return route.Config.Record
}
