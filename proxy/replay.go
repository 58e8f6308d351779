package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
)

// replayDropped are recorded request headers a replay does not send: hop-by-hop and
// transport-owned headers, the client's Authorization (the upstream's credential is
// injected instead), and Accept-Encoding, so that the upstream answers a body the diff
// can read.
var replayDropped = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding",
	"Upgrade", "Host", "Content-Length", "Authorization", "Accept-Encoding"}

// Replay sends the recorded request x again, as the gateway would forward it now. The
// current rules judge it first, for the identity that made it: a request they would no
// longer forward, or one whose route now needs an approval, is refused. It goes to the
// route's upstream (or to target, which must be the upstream's origin or one of its
// replay_targets), with the upstream's current credential, and its response is masked
// exactly as the data plane masks that route's responses. The replay is recorded as an
// exchange of its own, made by the auditor by, and returned as recorded (redacted).
// With dryRun nothing is sent or recorded: the exchange returned holds the request that
// would be sent. A replay refused for a reason the auditor can act on is a
// *recorder.ReplayError.
func (g *Gateway) Replay(ctx context.Context, x *recorder.Exchange, target string, by *identity.Principal, dryRun bool) (*recorder.Exchange, error) {
	if g.rec == nil {
		return nil, &recorder.ReplayError{Status: http.StatusServiceUnavailable, Code: "recorder_unavailable", Msg: "recording is off"}
	}
	if err := recorder.Replayable(x); err != nil {
		return nil, err
	}
	st := g.state.Load()
	body := x.Request.Body.Bytes()
	// The headers the data plane judged and forwarded, without those recorded as
	// redacted (by name: credentials the gateway replaces or the client's cookies).
	judged := make(http.Header, len(x.Request.Header))
	for k, vs := range x.Request.Header {
		if len(vs) > 0 && vs[0] == recorder.Redacted {
			continue // recorder.Replayable made sure every value is
		}
		judged[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	PrepareHeaders(judged)
	rt, err := st.replayRoute(x, judged, body)
	if err != nil {
		return nil, err
	}
	up := st.upstreams[rt.Upstream]
	if up == nil {
		return nil, notReplayable(fmt.Sprintf("upstream %s is no longer configured", rt.Upstream))
	}
	mask := st.masks[rt.Name]
	if x.Masked && mask == nil {
		return nil, notReplayable(fmt.Sprintf("the response was masked when it was recorded and route %s no longer masks it: a replay would show unmasked data", rt.Name))
	}
	base, err := up.replayBase(target)
	if err != nil {
		return nil, err
	}
	forwardPath := rt.ForwardPath(x.Request.Path)
	u := *base
	u.Path, u.RawPath, u.RawQuery = strings.TrimSuffix(base.Path, "/")+forwardPath, "", x.Request.Query

	id := ulid.Make().String()
	rctx, cancel := context.WithTimeout(ctx, up.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, x.Request.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, notReplayable("the recorded request cannot be rebuilt")
	}
	req.Header = replayHeader(judged, x.Request.Body.Coding != "", mask != nil)
	req.Header.Set("X-Request-Id", id)
	nx := &recorder.Exchange{ID: id, ReceivedAt: time.Now(), Route: rt.Name, Decision: "replay",
		Reason: "replay of " + x.ID, ReplayOf: x.ID, Upstream: up.name, Target: target, Masked: mask != nil,
		Request: recorder.Request{Method: x.Request.Method, Path: x.Request.Path, ForwardPath: forwardPath,
			Query: x.Request.Query, Header: req.Header.Clone(), Body: recorder.NewBody(body, int64(len(body))),
			Scheme: x.Request.Scheme, Host: x.Request.Host, Protocol: x.Request.Protocol}}
	if by != nil {
		nx.Identity = &recorder.Identity{Issuer: by.Issuer, Subject: by.Subject, ClientID: by.ClientID, Groups: by.Groups, Scopes: by.Scopes}
	}
	if dryRun {
		return g.rec.Redacted(nx)
	}
	if up.credHeader != "" {
		req.Header[up.credHeader] = []string{up.credValue}
	}
	if err := g.rec.Begin(ctx, nx); err != nil {
		return nil, &recorder.ReplayError{Status: http.StatusServiceUnavailable, Code: "recorder_unavailable", Msg: "the replay could not be recorded, so it was not sent"}
	}
	fwd := time.Now()
	nx.ForwardedAt = &fwd
	resp, rerr := up.transport.RoundTrip(req)
	if rerr == nil {
		nx.Response, rerr = g.replayResponse(resp, &reqInfo{state: st, route: rt, mask: mask})
	}
	done := time.Now()
	nx.RespondedAt = &done
	nx.Durations = recorder.Durations{TotalMS: ms(done.Sub(nx.ReceivedAt)), UpstreamMS: ms(done.Sub(fwd))}
	var me *maskError
	switch {
	case errors.As(rerr, &me):
		// Never show or record what could not be masked.
		nx.Error, nx.Response = "mask_failed", nil
		g.metrics.MaskFailures.WithLabelValues(rt.Name).Inc()
		g.rec.End(nx)
		return nil, &recorder.ReplayError{Status: http.StatusBadGateway, Code: "mask_failed", Msg: "the replayed response could not be masked: " + me.msg}
	case rerr != nil:
		nx.Error = "upstream_error"
		if upstreamTimedOut(rerr) || errors.Is(rerr, context.DeadlineExceeded) {
			nx.Error = "upstream_timeout"
		}
		nx.Response = nil
		g.rec.End(nx)
		return nil, &recorder.ReplayError{Status: http.StatusBadGateway, Code: nx.Error, Msg: "the upstream could not be reached or answered badly"}
	}
	g.rec.End(nx)
	return g.rec.Redacted(nx)
}

func notReplayable(msg string) *recorder.ReplayError {
	return &recorder.ReplayError{Status: http.StatusConflict, Code: "not_replayable", Msg: msg}
}

// replayRoute judges the recorded request, with header h, by the current rules for the
// identity that made it, and returns the route that would forward it now.
func (st *State) replayRoute(x *recorder.Exchange, h http.Header, body []byte) (*rules.Route, error) {
	query, err := url.ParseQuery(x.Request.Query)
	if err != nil {
		return nil, notReplayable("the recorded query cannot be parsed")
	}
	req := rules.Request{Method: x.Request.Method, Path: x.Request.Path, Query: query, Header: h}
	if st.table.NeedsBody(req.Method, req.Path) {
		req.Body = body
	}
	var p *identity.Principal
	if id := x.Identity; id != nil {
		p = &identity.Principal{Issuer: id.Issuer, Subject: id.Subject, ClientID: id.ClientID, Groups: id.Groups, Scopes: id.Scopes, Claims: id.Claims}
	}
	d := st.table.Decide(&req, p)
	if d.Effect != rules.Allow {
		return nil, notReplayable("the current rules would not forward this request: " + d.Reason)
	}
	if d.Route.Approval != nil {
		return nil, notReplayable(fmt.Sprintf("route %s needs an approval for each request; a replay cannot bypass it", d.Route.Name))
	}
	return d.Route, nil
}

// replayHeader returns the headers a replay sends, from judged (the recorded headers the
// data plane would forward): without hop-by-hop ones, the content coding of a body the
// record holds decoded, and on a masked route the headers masking drops.
func replayHeader(judged http.Header, decoded, masked bool) http.Header {
	h := judged.Clone()
	drop := replayDropped
	if masked {
		drop = append(drop[:len(drop):len(drop)], maskRequestHeaders...)
	}
	if decoded {
		drop = append(drop[:len(drop):len(drop)], "Content-Encoding")
	}
	for _, k := range drop {
		delete(h, k)
	}
	return h
}

// replayResponse reads a replayed response as a client of the route would receive it:
// masked by the data plane's masking when the route masks, at most the body limit kept.
func (g *Gateway) replayResponse(resp *http.Response, info *reqInfo) (*recorder.Response, error) {
	// The body masking puts in holds masked-body budget until it is closed: close the
	// body resp has at the end, not the one it has now.
	defer func() { resp.Body.Close() }()
	g.maskHeaders(resp.Header, info)
	if info.mask != nil {
		if err := g.maskResponse(resp, info); err != nil {
			return nil, err
		}
	}
	limit := g.rec.BodyLimit()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		var me *maskError
		if errors.As(err, &me) {
			return nil, err
		}
		return nil, fmt.Errorf("read replayed response: %w", err)
	}
	size := int64(len(b))
	if resp.ContentLength > size {
		size = resp.ContentLength
	}
	if int64(len(b)) > limit {
		b = b[:limit]
	}
	h := resp.Header.Clone()
	h.Del("Content-Length")
	// As the data plane does: an upstream that echoes its credential must not show it
	// to the auditor either (the record's redaction would too, but by name only here).
	if s := info.state.scrub; !s.Empty() {
		scrubHeader(s, h)
		b = s.Bytes(b)
	}
	return &recorder.Response{Status: resp.StatusCode, Header: h, Body: recorder.NewCodedBody(b, size, h.Values("Content-Encoding"), limit)}, nil
}

// replayBase returns the URL a replay goes to: the upstream's, or target when target is
// the upstream's origin or one of its replay_targets. Anything else is refused: the
// upstream's credential goes with the replay and must not reach an origin nobody configured.
func (u *upstream) replayBase(target string) (*url.URL, error) {
	if target == "" {
		return u.target, nil
	}
	t, err := url.Parse(target)
	if err == nil && t.Host != "" && t.User == nil {
		for _, c := range append([]*url.URL{u.target}, u.replayTo...) {
			if strings.EqualFold(c.Scheme, t.Scheme) && strings.EqualFold(c.Host, t.Host) &&
				strings.TrimSuffix(c.Path, "/") == strings.TrimSuffix(t.Path, "/") {
				return c, nil
			}
		}
	}
	return nil, &recorder.ReplayError{Status: http.StatusBadRequest, Code: "bad_target",
		Msg: fmt.Sprintf("target must be upstream %s's URL or one of its replay_targets", u.name)}
}
