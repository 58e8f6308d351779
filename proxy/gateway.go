// Package proxy is Keyhole's data plane: it canonicalises the request, authenticates the
// bearer token, decides on the route, injects the upstream credential and forwards.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/connlimit"
	"github.com/keyholehq/keyhole/internal/deadline"
	"github.com/keyholehq/keyhole/masking"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/rules"
	"github.com/keyholehq/keyhole/scrub"
	"github.com/keyholehq/keyhole/telemetry"
)

// Verifier verifies a bearer token and returns its caller. A refusal is an *identity.Error.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*identity.Principal, error)
}

// State is what one configuration (and each reload) gives the data plane. It is immutable
// once built; the Gateway swaps whole States atomically.
type State struct {
	table     *rules.Table
	verifier  Verifier
	upstreams map[string]*upstream
	masks     map[string]*routeMask // by route name; only routes with mask or detect
	maxBody   int64
	// maxPending is approvals.max_pending_per_subject.
	maxPending int
	// approvalsURL is approvals.public_url without a trailing slash: the base of the
	// status URL a 202 approval_pending answer names.
	approvalsURL string
	// limits.request_body_idle_timeout, request_body_timeout, response_write_idle_timeout.
	bodyIdle, bodyTotal, writeIdle time.Duration
	// maxMaskedHeld is limits.max_masked_bytes_held.
	maxMaskedHeld int64
	// scrub removes every upstream's credential from responses; empty when none has one.
	scrub *scrub.Scrubber
	// maskHeaders holds each route's mask_headers, canonical, by route name.
	maskHeaders map[string][]string
	mcp         map[string]*mcpRoute // by route name; only mcp routes
	maxMCPList  int64                // limits.max_response_body_masked: list answers are buffered to filter
	mcpAuth     *mcpAuth             // OAuth discovery and challenges of mcp routes
}

// Gateway is the data-plane http.Handler. It is safe for concurrent use; Swap may be
// called while requests are being served, and each request sees one State throughout.
type Gateway struct {
	state    atomic.Pointer[State]
	log      *slog.Logger
	errorLog *log.Logger
	metrics  *metrics.Metrics
	buffers  bufferPool
	handler  http.Handler
	rec      Recorder          // nil: exchanges are not recorded
	ap       Approvals         // nil: routes with approval are refused
	tel      *telemetry.Tracer // nil: no traces
	// maskedHeld is the bytes of masked bodies held now, by every request of every State.
	maskedHeld atomic.Int64
	// echoWarned holds the routes whose credential echo has been logged (route name →
	// struct{}): the warning is logged once per route, the metric counts every response.
	echoWarned sync.Map
}

var _ http.Handler = (*Gateway)(nil)

// New returns a Gateway that serves nothing but 503 until the first Swap.
// log receives one line per request; m receives the request metrics; rec, when not nil,
// records every exchange (a nil rec records nothing: for tests and benchmarks only); ap
// holds requests on routes with approval (with a nil ap they are refused with 503).
func New(log *slog.Logger, m *metrics.Metrics, rec Recorder, ap Approvals) *Gateway {
	g := &Gateway{
		log:      log,
		errorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		metrics:  m,
		rec:      rec,
		ap:       ap,
	}
	stages := []func(http.Handler) http.Handler{
		g.begin,        // request id, panic recovery, metrics, the access-log line, the record
		g.normalise,    // method, canonical path, header hygiene, body limit
		g.discover,     // OAuth protected resource metadata of mcp routes, served without a token
		g.authenticate, // bearer token -> Principal
		g.decide,       // guards and route rules -> allow, or refuse
		g.record,       // the request part of the record, durable first in strict mode
		g.approve,      // routes with approval: hold for a human, forward only on an approval
	}
	var h http.Handler = http.HandlerFunc(g.forward)
	for i := len(stages) - 1; i >= 0; i-- {
		h = stages[i](h)
	}
	g.handler = h
	for _, reason := range identity.Reasons {
		m.AuthFailures.WithLabelValues(string(reason))
	}
	return g
}

// SetTracer makes the Gateway trace every request with t (nil: none). It must be called
// before the first request is served.
func (g *Gateway) SetTracer(t *telemetry.Tracer) { g.tel = t }

// NewState builds the data-plane state for cfg with its compiled route table and the token
// verifier. prev, when not nil, is the State being replaced: upstream transports whose
// settings did not change are reused, keeping their warm connections.
func (g *Gateway) NewState(cfg *config.Config, table *rules.Table, v Verifier, prev *State) (*State, error) {
	s := &State{table: table, verifier: v, upstreams: map[string]*upstream{}, masks: map[string]*routeMask{},
		maxBody: int64(cfg.Limits.MaxRequestBody), bodyIdle: time.Duration(cfg.Limits.RequestBodyIdleTimeout),
		bodyTotal: time.Duration(cfg.Limits.RequestBodyTimeout), writeIdle: time.Duration(cfg.Limits.ResponseWriteIdleTimeout),
		maxMaskedHeld: int64(cfg.Limits.MaxMaskedBytesHeld)}
	if cfg.Approvals != nil {
		s.maxPending = cfg.Approvals.MaxPendingPerSubject
		s.approvalsURL = strings.TrimRight(cfg.Approvals.PublicURL, "/")
	}
	var hashKey []byte
	if cfg.Masking != nil {
		hashKey = []byte(cfg.Masking.HashKey.Reveal())
	}
	var creds []string
	for _, c := range cfg.Upstreams {
		if c.Credential != nil {
			creds = append(creds, c.Credential.Value.Reveal())
		}
	}
	s.scrub = scrub.New(creds, scrub.SameLength)
	s.maskHeaders = map[string][]string{}
	s.mcp, s.maxMCPList = map[string]*mcpRoute{}, int64(cfg.Limits.MaxResponseBodyMasked)
	var err error
	if s.mcpAuth, err = newMCPAuth(cfg, verifierIssuers(v, cfg)); err != nil {
		return nil, err
	}
	for i, r := range cfg.Routes {
		if r.MCP != nil {
			mr, err := newMCPRoute(cfg, i)
			if err != nil {
				return nil, err
			}
			s.mcp[r.Name] = mr
			g.initMCPMetrics(&cfg.Routes[i])
		}
		g.metrics.CredentialEcho.WithLabelValues(r.Name)
		for _, k := range r.MaskHeaders {
			s.maskHeaders[r.Name] = append(s.maskHeaders[r.Name], http.CanonicalHeaderKey(k))
		}
		if len(r.Mask) == 0 && len(r.Detect) == 0 {
			continue
		}
		m, err := masking.New(r.Mask, r.Detect, masking.Options{HashKey: hashKey})
		if err != nil {
			return nil, fmt.Errorf("route %q: mask: %w", r.Name, err)
		}
		s.masks[r.Name] = &routeMask{masker: m, passNonJSON: r.PassNonJSON, limit: int64(cfg.Limits.MaxResponseBodyMasked)}
	}
	for name, c := range cfg.Upstreams {
		var old *upstream
		if prev != nil {
			old = prev.upstreams[name]
		}
		u, err := newUpstream(g, name, c, old)
		if err != nil {
			return nil, err
		}
		s.upstreams[name] = u
	}
	return s, nil
}

// Swap makes s the state for every request that starts from now on and returns the one
// it replaced (nil the first time). Idle connections of transports s no longer uses are closed.
func (g *Gateway) Swap(s *State) *State {
	old := g.state.Swap(s)
	if old != nil {
		inUse := map[*http.Transport]bool{}
		for _, u := range s.upstreams {
			inUse[u.transport] = true
		}
		for _, u := range old.upstreams {
			if t := u.transport; !inUse[t] {
				t.CloseIdleConnections()
				// Requests in flight on t return their connections to it later; close
				// those too once they have had time to finish.
				time.AfterFunc(retiredTransportGrace, t.CloseIdleConnections)
			}
		}
	}
	return old
}

// retiredTransportGrace is how long a transport a reload no longer uses keeps the
// connections of its requests in flight before they are closed.
const retiredTransportGrace = 2 * time.Minute

// Loaded reports whether a State has been installed.
func (g *Gateway) Loaded() bool { return g.state.Load() != nil }

// ServeHTTP runs the request through the stages.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.handler.ServeHTTP(w, r) }

// reqInfo is the per-request record the stages fill in. One is allocated per request and
// shared through the context, so later stages and the access log see what earlier ones found.
type reqInfo struct {
	id          string
	start       time.Time
	state       *State
	path        string // canonical, decoded
	principal   *identity.Principal
	route       *rules.Route
	upstream    *upstream
	forwardPath string // decoded path after rewrite, appended to the upstream's base path
	mask        *routeMask
	respHeader  http.Header    // the client response's header map
	body        *deadline.Body // the request body under its read deadlines; nil without a body
	// bodyLength is the request's Content-Length (-1 unknown). waitsContinue: the client
	// sends the body only after 100 Continue, so a refusal must not ask for it.
	bodyLength    int64
	waitsContinue bool
	forwarded     time.Time
	upstreamDur   time.Duration
	decision      string
	reason        string // why the rules decided as they did
	refusal       *refusal
	rec           recording
	status        int    // set when the status is not what was written (client gone: 499)
	approvalID    string // the approval this request waited on or was forwarded on
	// upstreamCut is set when the upstream's response body ended early or stalled;
	// cutShort when the client got only part of the response because of it.
	upstreamCut *upstreamBodyError
	cutShort    bool
	// cancelUpstream cancels the request to the upstream (a stalled body).
	cancelUpstream context.CancelFunc
	// clientReason is the client's X-Keyhole-Reason, read before client X-Keyhole-
	// headers are removed, for approvers.
	clientReason string
	mcp          *mcpState // set on mcp routes
	// span is the request's server span, upstreamSpan the client span of its upstream
	// call; upstreamStatus the status the upstream answered (0: none).
	span           telemetry.Span
	upstreamSpan   telemetry.Span
	upstreamStatus int
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(infoKey{}).(*reqInfo)
	return info
}

// refuse answers the request with rf and remembers it for the log line.
func (g *Gateway) refuse(w http.ResponseWriter, info *reqInfo, rf *refusal) {
	info.refusal = rf
	info.decision = rf.decision
	if g.rec != nil && info.rec.x == nil && info.principal != nil {
		// Only an authenticated caller's body is kept: before authentication (a 401, or
		// a 400, 405 or 413 of normalisation) anyone could fill the store with bytes.
		b := info.body
		if info.waitsContinue {
			b = nil
		}
		info.rec.keepRefused(b, info.bodyLength, min(g.rec.BodyLimit(), info.state.maxBody))
	}
	writeRefusal(w, rf, info.id)
}

// begin assigns the request id, recovers panics, and after the request counts it and
// writes its one access-log line.
func (g *Gateway) begin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &reqInfo{id: ulid.Make().String(), start: time.Now(), state: g.state.Load()}
		ctx, span := g.tel.Start(r.Context(), r, info.id)
		info.span = span
		sw := &statusWriter{ResponseWriter: w, ctl: http.NewResponseController(w)}
		bodyIdle, bodyTotal := config.DefaultRequestBodyIdleTimeout, config.DefaultRequestBodyTimeout
		if st := info.state; st != nil {
			bodyIdle, bodyTotal, sw.writeIdle = st.bodyIdle, st.bodyTotal, st.writeIdle
			sw.scrub = st.scrub
		}
		if r.Body != nil && r.Body != http.NoBody {
			// Every read of the body, whoever reads it (the rules, the record, the
			// upstream transport, the server's drain), is under these deadlines, and any
			// answer written before the body has ended closes the connection instead of
			// waiting for the rest (issue 11: a stalled body held a connection for ever).
			info.body = deadline.NewBody(w, r, bodyIdle, bodyTotal)
			r.Body, sw.body = info.body, info.body
			info.bodyLength = r.ContentLength
			info.waitsContinue = strings.EqualFold(r.Header.Get("Expect"), "100-continue")
		}
		if g.rec != nil {
			info.rec.header = r.Header.Clone()
			sw.capture = g.rec.BodyLimit()
		}
		info.respHeader = sw.Header()
		info.respHeader.Set("X-Request-Id", info.id)
		g.metrics.InFlight.Inc()
		defer func() {
			p := recover()
			if p != nil && p != http.ErrAbortHandler {
				g.log.Error("panic serving request", "request_id", info.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !sw.wrote {
					g.refuse(sw, info, &refusal{status: http.StatusInternalServerError, code: "internal_error",
						msg: "the gateway failed to serve this request", decision: labelError})
				}
			}
			if ue := info.upstreamCut; ue != nil && info.refusal == nil {
				g.upstreamBodyFailed(sw, info, ue)
			}
			if p == http.ErrAbortHandler {
				info.decision = labelError
				if info.refusal == nil {
					// The client went away mid-response: recorded with the code the
					// ErrorHandler gives one that leaves before the response begins.
					info.status = 499
					info.refusal = clientClosed(nil)
				}
				mcpClientClosed(r, info)
			}
			g.finish(r, sw, info)
			g.metrics.InFlight.Dec()
			if p != http.ErrAbortHandler {
				sw.armFinalFlush()
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
		}()
		if info.state == nil {
			g.refuse(sw, info, &refusal{status: http.StatusServiceUnavailable, code: "not_ready",
				msg: "the gateway has no configuration loaded", decision: labelError})
			return
		}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(ctx, infoKey{}, info)))
	})
}

// finish counts the request and writes its access-log line. It never logs a token, a
// credential, a query string or a body.
func (g *Gateway) finish(r *http.Request, sw *statusWriter, info *reqInfo) {
	status := sw.status
	if info.status != 0 {
		status = info.status
	}
	if status == 0 {
		status = http.StatusOK
	}
	route := ""
	if info.route != nil {
		route = info.route.Name
	}
	method := r.Method
	if !allowedMethods[method] {
		method = "OTHER"
	}
	elapsed := time.Since(info.start)
	if g.rec != nil {
		g.finishRecord(r, sw, info, status, elapsed)
	}
	endSpan(r, info, status)
	g.metrics.Requests.WithLabelValues(route, method, strconv.Itoa(status), info.decision).Inc()
	g.countMCP(r, route, info)
	g.metrics.RequestDuration.WithLabelValues(route).Observe(elapsed.Seconds())
	if info.upstream != nil && !info.forwarded.IsZero() {
		g.metrics.UpstreamDuration.WithLabelValues(info.upstream.name).Observe(info.upstreamDur.Seconds())
	}

	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", info.id),
		slog.String("method", method),
		slog.String("path", info.path),
		slog.Int("status", status),
		slog.String("decision", info.decision),
		slog.String("route", route),
	)
	if info.path == "" {
		// Refused before canonicalisation: keep what was asked for, without the query,
		// which may carry credentials.
		target, _, _ := strings.Cut(r.RequestURI, "?")
		if len(target) > 256 {
			target = target[:256]
		}
		attrs = append(attrs, slog.String("target", target))
	}
	if info.upstream != nil {
		attrs = append(attrs, slog.String("upstream", info.upstream.name),
			slog.Float64("upstream_ms", float64(info.upstreamDur.Microseconds())/1000))
	}
	if p := info.principal; p != nil {
		attrs = append(attrs, slog.String("subject", p.Subject), slog.String("client_id", p.ClientID))
	}
	if rf := info.refusal; rf != nil {
		attrs = append(attrs, slog.String("error", rf.code), slog.String("reason", rf.msg))
		if rf.cause != nil {
			attrs = append(attrs, slog.String("cause", rf.cause.Error()))
		}
	}
	attrs = append(attrs,
		slog.Int64("bytes", sw.bytes),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.String("remote_addr", r.RemoteAddr),
	)
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

// PrepareHeaders removes from a client request's headers everything the gateway does not
// let a client say: the headers of config.StrippedRequestHeader, and every header the
// client names in Connection (hop-by-hop, which the upstream would never see), so that
// what is judged is what is forwarded. Authorization stays for authentication, which
// removes it; Upgrade stays for the upgrade check.
func PrepareHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name != "" && name != "Authorization" && name != "Upgrade" {
				delete(h, name)
			}
		}
	}
	for k := range h {
		if config.StrippedRequestHeader(k) {
			delete(h, k)
		}
	}
}

// MethodAllowed reports whether the gateway forwards method at all.
func MethodAllowed(method string) bool { return allowedMethods[method] }

// normalise refuses what the gateway cannot judge unambiguously and removes headers a
// client must not set.
func (g *Gateway) normalise(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		if !allowedMethods[r.Method] {
			g.refuse(w, info, &refusal{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
				msg: "method is not accepted by the gateway", decision: labelError,
				header: http.Header{"Allow": {allowHeader}}})
			return
		}
		p, err := CanonicalPath(r.RequestURI)
		if err != nil {
			g.refuse(w, info, badRequest("ambiguous request target: "+err.Error()))
			return
		}
		info.path = p
		if v := r.Header.Get("X-Keyhole-Reason"); v != "" {
			info.clientReason = truncate(v, 2048)
		}
		PrepareHeaders(r.Header)
		max := info.state.maxBody
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate turns the one bearer token into a Principal, and removes the client's
// Authorization header so it can never reach an upstream.
func (g *Gateway) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		_, hasAuthorization := r.Header["Authorization"]
		raw, ierr := identity.BearerToken(r.Header)
		r.Header.Del("Authorization")
		info.rec.secrets = append(info.rec.secrets, raw)
		var err error
		if ierr == nil {
			ctx := r.Context()
			if aud := info.state.mcpAuth.audience(info.path); aud != "" {
				ctx = identity.WithAudience(ctx, aud) // RFC 8707: a token for this MCP server
			}
			vctx, vs := info.span.Stage(ctx, "keyhole.verify_token")
			info.principal, err = info.state.verifier.Verify(vctx, raw)
			vs.End("", verifyCode(err))
		} else {
			err = ierr
		}
		if err != nil {
			rf := statusFor(err)
			if ierr != nil && ierr.Reason == identity.ReasonMissing && len(raw) == 0 && hasAuthorization {
				// Sent, but not one usable Bearer token (two headers, another scheme).
				rf.header = http.Header{"Www-Authenticate": {`Bearer realm="keyhole", error="invalid_request", error_description=` + quote(ierr.Msg)}}
			}
			info.state.mcpAuth.challenge(info.path, rf)
			var ie *identity.Error
			if errors.As(err, &ie) {
				g.metrics.AuthFailures.WithLabelValues(string(ie.Reason)).Inc()
			}
			g.refuse(w, info, rf)
			return
		}
		// The connection no longer counts against limits.max_unauthenticated_conns_per_peer.
		connlimit.Authenticated(r.Context())
		if max := info.state.maxBody; r.ContentLength > max {
			// Refused after authentication, so that the record may keep the body's start.
			g.refuse(w, info, statusFor(&http.MaxBytesError{Limit: max}))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decide runs the guards and route rules and refuses everything that is not allowed.
func (g *Gateway) decide(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		st := info.state
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			g.refuse(w, info, badRequest("malformed query string"))
			return
		}
		if tokens := AccessTokens(query); len(tokens) > 0 {
			for _, t := range tokens {
				// The decoded value and its encoded forms, as they may appear elsewhere.
				info.rec.secrets = append(info.rec.secrets, t, url.QueryEscape(t), url.PathEscape(t))
			}
			// RFC 6750 query tokens are not accepted, and a token must never be forwarded.
			g.refuse(w, info, badRequest("access tokens are accepted only in the Authorization header, not in the query string"))
			return
		}
		req := rules.Request{Method: r.Method, Path: info.path, Query: query, Header: r.Header}
		mcp := r.Header.Get("Mcp-Method") != "" || r.Header.Get("Mcp-Name") != ""
		if mcp || st.table.NeedsBody(r.Method, info.path) {
			if rf := readBody(r, &req); rf != nil {
				info.rec.body = req.Body
				g.refuse(w, info, rf)
				return
			}
		}
		d := st.table.Decide(&req, info.principal)
		mr := st.mcpRoute(d)
		if mcp && mr == nil {
			if rf := checkMCPHeaders(r.Header, req.Body); rf != nil {
				g.refuse(w, info, rf)
				return
			}
		}
		info.route, info.reason = d.Route, d.Reason
		if rf := st.mcpAuth.refusal(d, info.principal, info.path, refusalFor(d)); rf != nil {
			info.rec.body = req.Body
			g.refuse(w, info, rf)
			return
		}
		if d.Route.Approval != nil {
			// Recorded as held until it is forwarded on an approval.
			info.decision = labelApprovalPending
			if req.Body == nil {
				// An approval covers the exact body bytes, and approvers must read them.
				if rf := readBody(r, &req); rf != nil {
					info.rec.body = req.Body
					g.refuse(w, info, rf)
					return
				}
			}
		}
		info.rec.body = req.Body
		if up := r.Header.Get("Upgrade"); up != "" && !(d.Route.Websocket && strings.EqualFold(up, "websocket")) {
			g.refuse(w, info, badRequest(fmt.Sprintf("protocol upgrade to %q is not allowed on route %s", up, d.Route.Name)))
			return
		}
		info.upstream = st.upstreams[d.Route.Upstream]
		if info.upstream == nil {
			// Config validation guarantees every allowing route names an upstream; fail closed anyway.
			g.refuse(w, info, &refusal{status: http.StatusBadGateway, code: "upstream_error",
				msg: "route has no upstream", decision: labelError})
			return
		}
		info.forwardPath = d.Route.ForwardPath(info.path)
		if info.mask = st.masks[d.Route.Name]; info.mask != nil {
			for _, k := range maskRequestHeaders {
				r.Header.Del(k)
			}
			w.(*statusWriter).drop1xx = true
		}
		if d.Route.Approval == nil {
			info.decision = labelAllowed
		}
		if mr != nil {
			var lf *listFilter
			var ok bool
			if w, lf, ok = g.judgeMCP(w, r, info, mr, &req); !ok {
				return
			}
			if lf != nil {
				defer g.finishList(lf, info)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// refusalFor returns the refusal for a decision that does not allow the request, or nil.
func refusalFor(d rules.Decision) *refusal {
	switch d.Effect {
	case rules.Allow:
		return nil
	case rules.NoRoute:
		return &refusal{status: http.StatusNotFound, code: "no_route", msg: d.Reason, decision: labelNoRoute}
	case rules.Forbid:
		return &refusal{status: http.StatusForbidden, code: "forbidden", msg: d.Reason, decision: labelForbidden}
	case rules.Deny:
		return &refusal{status: http.StatusForbidden, code: "denied", msg: d.Reason, decision: labelDenied}
	}
	return badRequest(d.Reason)
}

// Outcome returns the HTTP status and error code the data plane answers for d, or 200 and
// "" when d allows the request. `keyhole check` and `keyhole test` use it to explain decisions.
func Outcome(d rules.Decision) (status int, code string) {
	if rf := refusalFor(d); rf != nil {
		return rf.status, rf.code
	}
	return http.StatusOK, ""
}

// bodyError is the refusal for a request body that could not be read: 413 beyond the
// limit, 408 when the client was too slow (limits.request_body_*), 400 otherwise.
func bodyError(err error) *refusal {
	if rf := statusFor(err); rf.status == http.StatusRequestEntityTooLarge {
		return rf
	}
	if os.IsTimeout(err) {
		return &refusal{status: http.StatusRequestTimeout, code: "request_timeout",
			msg: "the request body did not arrive in time", decision: labelError, cause: err}
	}
	return badRequest("request body could not be read")
}

// readBody buffers the (already size-limited) request body for body conditions and
// approvals, and puts it back for forwarding. A compressed body is refused: conditions
// judge (and approvers read) the bytes the upstream will decode, and a gzip body would be
// noise to both. Every Content-Encoding field counts: "identity" then "gzip" is gzip.
func readBody(r *http.Request, req *rules.Request) *refusal {
	for _, v := range r.Header.Values("Content-Encoding") {
		for _, ce := range strings.Split(v, ",") {
			if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
				return badRequest("compressed request bodies are not accepted on routes with body conditions or approval")
			}
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		req.Body = body // what was read, for the record of the refusal
		return bodyError(err)
	}
	req.Body = body
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	return nil
}

// checkMCPHeaders refuses an MCP request whose Mcp-Method or Mcp-Name header (MCP
// 2026-07-28) differs from its JSON-RPC body: a server that dispatches on the header
// would otherwise run a call the rules never judged.
func checkMCPHeaders(h http.Header, body []byte) *refusal {
	for _, c := range []struct{ header, path string }{{"Mcp-Method", "method"}, {"Mcp-Name", "params.name"}} {
		vs := h.Values(c.header)
		if len(vs) == 0 {
			continue
		}
		got := gjson.GetBytes(body, c.path)
		if len(vs) != 1 || !gjson.ValidBytes(body) || got.Type != gjson.String || got.Str != vs[0] {
			return badRequest(c.header + " header does not match the JSON-RPC body")
		}
	}
	return nil
}

// forward sends the request to the route's upstream.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request) {
	info := infoFrom(r.Context())
	// Its own context, so that a stalled response body can be cut off (upstreamBody).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	info.cancelUpstream = cancel
	u := info.upstream
	ctx, info.upstreamSpan = info.span.Upstream(ctx, telemetry.Call{Upstream: u.name, Method: r.Method,
		Scheme: u.target.Scheme, Host: u.target.Host, BasePath: u.basePath, Path: info.forwardPath})
	u.proxy.ServeHTTP(w, r.WithContext(ctx))
	code := ""
	if info.upstreamStatus == 0 && info.refusal != nil {
		code = info.refusal.code
	}
	info.upstreamSpan.EndUpstream(info.upstreamStatus, code)
}

// upstreamError is the ReverseProxy ErrorHandler: it counts the failure and answers 502,
// 504 or 413 with the spec's body, never the upstream's address.
func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	info := infoFrom(r.Context())
	if !info.forwarded.IsZero() && info.upstreamDur == 0 {
		info.upstreamDur = time.Since(info.forwarded)
	}
	var me *maskError
	if errors.As(err, &me) {
		g.metrics.MaskFailures.WithLabelValues(info.route.Name).Inc()
		g.refuse(w, info, statusFor(err))
		return
	}
	var rf *refusal
	if errors.As(err, &rf) {
		g.refuse(w, info, rf) // the gateway's own answer (overloaded), not the upstream's failure
		return
	}
	if berr := info.body.Err(); berr != nil {
		// The client's body failed (too slow, cut, too large) while it streamed upstream:
		// the client's fault, not the upstream's. (A failed body read also cancels the
		// request's context, so this comes before the check for a client gone.)
		g.refuse(w, info, bodyError(berr))
		return
	}
	kind := upstreamErrorKind(err)
	g.metrics.UpstreamErrors.WithLabelValues(info.upstream.name, kind).Inc()
	if kind == "canceled" && r.Context().Err() != nil {
		// The client went away; nobody is left to answer.
		info.decision, info.status = labelError, 499
		info.refusal = clientClosed(err)
		mcpClientClosed(r, info)
		return
	}
	rf = statusFor(err)
	if rf.cause == nil {
		rf.cause = err
	}
	g.refuse(w, info, rf)
}

// statusWriter records the status and size of the response. Unwrap lets
// http.ResponseController reach the connection for flushing and protocol upgrades.
type statusWriter struct {
	http.ResponseWriter
	status  int
	bytes   int64
	wrote   bool
	drop1xx bool // masked routes: 1xx responses (103 Early Hints) carry unmasked upstream headers
	// body is the request body, abandoned when the answer starts before it has ended.
	body *deadline.Body
	// writeIdle is the write deadline of each chunk of the body, through ctl.
	ctl       *http.ResponseController
	writeIdle time.Duration
	// scrub removes credentials from 1xx headers, which ReverseProxy writes without
	// ModifyResponse.
	scrub *scrub.Scrubber
	// capture is how many bytes of the body to keep in captured, for the record.
	capture  int64
	captured []byte
	pooled   *[]byte // from captures, when captured grew in it
}

// captures holds the buffers response bodies are captured into for their records: a
// large answer, read in pieces of a few KiB, grew its buffer five times (issue 17).
var captures = sync.Pool{New: func() any { return new([]byte) }}

// maxCapture is the largest capture buffer kept in captures.
const maxCapture = 1 << 20

// releaseCapture gives the capture buffer back to captures; captured must not be used
// after.
func (w *statusWriter) releaseCapture() {
	if w.pooled != nil && cap(w.captured) <= maxCapture {
		*w.pooled = w.captured[:0]
		captures.Put(w.pooled)
	}
	w.pooled, w.captured = nil, nil
}

func (w *statusWriter) WriteHeader(code int) {
	if w.drop1xx && code < 200 && code != http.StatusSwitchingProtocols || code == http.StatusContinue {
		// The client's Expect: 100-continue is answered by the server when the gateway
		// first reads the body; another 100 would reach it after it sent the body.
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		scrubHeader(w.scrub, w.Header())
	}
	if !w.wrote && code >= 200 {
		w.status, w.wrote = code, true
		w.body.Abandon(w.Header())
	} else if code < 200 && w.status == 0 {
		w.status = code // 101 Switching Protocols: the response is the upgraded stream
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	n, err := deadline.Write(w.ctl, w.writeIdle, w.ResponseWriter, b)
	if room := w.capture - int64(len(w.captured)); room > 0 && n > 0 {
		if w.captured == nil {
			w.pooled = captures.Get().(*[]byte)
			w.captured = (*w.pooled)[:0]
		}
		w.captured = append(w.captured, b[:min(int64(n), room)]...)
	}
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// armFinalFlush gives the server's flush of what the handler left buffered, after it
// returns, a write deadline of its own: the one set before the last Write may have run
// out while the request was being logged and recorded.
func (w *statusWriter) armFinalFlush() {
	if w.writeIdle > 0 {
		_ = w.ctl.SetWriteDeadline(time.Now().Add(w.writeIdle))
	}
}

// AccessTokens returns the values of the query's access_token parameters (RFC 6750
// §2.3), the name in any letter case. The gateway refuses a request that has any.
func AccessTokens(q url.Values) []string {
	var out []string
	for k, vs := range q {
		if strings.EqualFold(k, "access_token") {
			out = append(out, vs...)
		}
	}
	return out
}
