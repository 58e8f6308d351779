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

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/masking"
	"github.com/keyholehq/keyhole/recorder"
)

// replayHopHeaders are recorded request headers a replay does not send: hop-by-hop and
// transport-owned headers.
var replayHopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding",
	"Upgrade", "Host", "Content-Length", "Authorization"}

// Replay sends the recorded request x again, as the gateway would forward it now: to its
// upstream (or to target, which must be the upstream's origin or one of its
// replay_targets), with the upstream's current credential, and with the response masked
// as x's route masks now. The replay is recorded as an exchange of its own, made by the
// auditor by, and returned as recorded (redacted). A replay refused for a reason the
// auditor can act on is a *recorder.ReplayError.
func (g *Gateway) Replay(ctx context.Context, x *recorder.Exchange, target string, by *identity.Principal) (*recorder.Exchange, error) {
	if g.rec == nil {
		return nil, &recorder.ReplayError{Status: http.StatusServiceUnavailable, Code: "recorder_unavailable", Msg: "recording is off"}
	}
	st := g.state.Load()
	up := st.upstreams[x.Upstream]
	if up == nil {
		return nil, &recorder.ReplayError{Status: http.StatusConflict, Code: "not_replayable", Msg: fmt.Sprintf("upstream %s is no longer configured", x.Upstream)}
	}
	base, err := up.replayBase(target)
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path, u.RawPath, u.RawQuery = strings.TrimSuffix(base.Path, "/")+x.Request.ForwardPath, "", x.Request.Query
	body := x.Request.Body.Bytes()
	mask := st.masks[x.Route]

	id := ulid.Make().String()
	rctx, cancel := context.WithTimeout(ctx, up.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, x.Request.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, &recorder.ReplayError{Status: http.StatusConflict, Code: "not_replayable", Msg: "the recorded request cannot be rebuilt"}
	}
	for k, vs := range x.Request.Header {
		k = http.CanonicalHeaderKey(k)
		if config.StrippedRequestHeader(k) || contains(replayHopHeaders, k) || mask != nil && contains(maskRequestHeaders, k) {
			continue
		}
		for _, v := range vs {
			if v != recorder.Redacted {
				req.Header.Add(k, v)
			}
		}
	}
	req.Header.Set("X-Request-Id", id)
	nx := &recorder.Exchange{ID: id, ReceivedAt: time.Now(), Route: x.Route, Decision: "replay",
		Reason: "replay of " + x.ID, ReplayOf: x.ID, Upstream: x.Upstream, Target: target,
		Request: recorder.Request{Method: x.Request.Method, Path: x.Request.Path, ForwardPath: x.Request.ForwardPath,
			Query: x.Request.Query, Header: req.Header.Clone(), Body: recorder.NewBody(body, int64(len(body)))}}
	if by != nil {
		nx.Identity = &recorder.Identity{Issuer: by.Issuer, Subject: by.Subject, ClientID: by.ClientID, Groups: by.Groups, Scopes: by.Scopes}
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
	var rbody []byte
	if rerr == nil {
		rbody, rerr = readReplayBody(resp, mask, g.rec.BodyLimit())
	}
	done := time.Now()
	nx.RespondedAt = &done
	nx.Durations = recorder.Durations{TotalMS: ms(done.Sub(nx.ReceivedAt)), UpstreamMS: ms(done.Sub(fwd))}
	var me *maskError
	if errors.As(rerr, &me) {
		nx.Error = "mask_failed"
		g.metrics.MaskFailures.WithLabelValues(x.Route).Inc()
		g.rec.End(nx)
		return nil, &recorder.ReplayError{Status: http.StatusBadGateway, Code: "mask_failed", Msg: "the replayed response could not be masked: " + me.msg}
	}
	if rerr != nil {
		nx.Error = "upstream_error"
		if upstreamTimedOut(rerr) || errors.Is(rerr, context.DeadlineExceeded) {
			nx.Error = "upstream_timeout"
		}
		g.rec.End(nx)
		return nil, &recorder.ReplayError{Status: http.StatusBadGateway, Code: nx.Error, Msg: "the upstream could not be reached or answered badly"}
	}
	h := resp.Header.Clone()
	size := int64(len(rbody))
	if mask != nil {
		out, n, err := mask.masker.Apply(nil, rbody)
		switch {
		case err == nil:
			rbody = out
			g.countMasked(x.Route, n)
		case errors.Is(err, masking.ErrNotJSON) && mask.passNonJSON:
		default:
			// Never show or record what could not be masked.
			nx.Error = "mask_failed"
			nx.Response = &recorder.Response{Status: resp.StatusCode}
			g.metrics.MaskFailures.WithLabelValues(x.Route).Inc()
			g.rec.End(nx)
			return nil, &recorder.ReplayError{Status: http.StatusBadGateway, Code: "mask_failed", Msg: "the replayed response could not be masked"}
		}
		for _, k := range maskResponseHeaders {
			h.Del(k)
		}
		h.Del("Content-Encoding")
		size = int64(len(rbody))
	}
	h.Del("Content-Length")
	limit := g.rec.BodyLimit()
	kept := rbody
	if int64(len(kept)) > limit {
		kept = kept[:limit]
	}
	if mask == nil && resp.ContentLength > size {
		size = resp.ContentLength
	}
	nx.Response = &recorder.Response{Status: resp.StatusCode, Header: h, Body: recorder.NewBody(kept, size)}
	g.rec.End(nx)
	return g.rec.Redacted(nx)
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

// readReplayBody reads a replayed response: on a masked route all of it, decoded, up to
// the masking limit (a longer one is refused); otherwise up to limit bytes.
func readReplayBody(resp *http.Response, mask *routeMask, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	if mask == nil {
		return io.ReadAll(io.LimitReader(resp.Body, limit))
	}
	r, err := decodedBody(resp)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r, mask.limit+1))
	if err == nil && int64(len(b)) > mask.limit {
		err = &maskError{msg: "replayed response is larger than the masking limit"}
	}
	return b, err
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
