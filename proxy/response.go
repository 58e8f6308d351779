package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/keyholehq/keyhole/masking"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/scrub"
)

// trailerless is the body of a masked response. The transport fills resp.Trailer when
// its body reaches the end, after ModifyResponse ran and before ReverseProxy copies the
// trailers to the client; trailerless empties it again at that moment. A masked route
// sends no trailers: they are headers the masker never sees (issue 11).
type trailerless struct {
	io.ReadCloser
	resp *http.Response
}

func (t *trailerless) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		t.resp.Trailer = nil
	}
	return n, err
}

// scrubHeader replaces every upstream credential in h's values and reports whether it
// found one.
func scrubHeader(s *scrub.Scrubber, h http.Header) bool {
	if s.Empty() {
		return false
	}
	found := false
	for _, vs := range h {
		for i, v := range vs {
			if sv := s.String(v); sv != v {
				vs[i], found = sv, true
			}
		}
	}
	return found
}

// scrubResponse removes every upstream credential from resp's headers and body, as they
// go to the client: the README promises that the backend's key never reaches the agent,
// and a backend that echoes its request (a debug endpoint, an error page quoting the
// request) would hand it over (issue 11). The body is scrubbed as it streams; a body in
// a content coding the gateway cannot decode is refused, since it cannot be checked. The
// trailers, filled at the body's end, are scrubbed then.
func (g *Gateway) scrubResponse(resp *http.Response, info *reqInfo) error {
	s := info.state.scrub
	body := resp.Body
	noBody := resp.Request.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	if resp.Header.Get("Content-Encoding") != "" && info.mask == nil && !noBody {
		// Masking has decoded the body already; here only a coding the upstream sent
		// unasked (the gateway does not forward Accept-Encoding) is left to decode.
		dec, err := decodedBody(resp)
		if err != nil {
			return &refusal{status: http.StatusBadGateway, code: "upstream_error", decision: labelError, cause: err,
				msg: "the upstream's response is in a content coding the gateway cannot check for credentials"}
		}
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		body = readCloser{Reader: dec, Closer: resp.Body}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The upgraded stream must stay writable; its headers are scrubbed, its frames are not.
		if scrubHeader(s, resp.Header) {
			g.credentialEcho(info)
		}
		return nil
	}
	sb := &scrubbedBody{r: scrub.NewReader(body, s), c: body, resp: resp, s: s, g: g, info: info}
	sb.found = scrubHeader(s, resp.Header)
	resp.Body = sb
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// scrubbedBody is a response body with every upstream credential replaced. It counts and
// logs a response that held one once, at its end.
type scrubbedBody struct {
	r     *scrub.Reader
	c     io.Closer
	resp  *http.Response
	s     *scrub.Scrubber
	g     *Gateway
	info  *reqInfo
	found bool
	done  bool
}

func (b *scrubbedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *scrubbedBody) Close() error {
	b.end()
	b.r.Close()
	return b.c.Close()
}

func (b *scrubbedBody) end() {
	if b.done {
		return
	}
	b.done = true
	if scrubHeader(b.s, b.resp.Trailer) || b.r.Found() {
		b.found = true
	}
	if b.found {
		b.g.credentialEcho(b.info)
	}
}

// credentialEcho counts a response from which a credential was removed and logs the
// first of each route.
func (g *Gateway) credentialEcho(info *reqInfo) {
	route := ""
	if info.route != nil {
		route = info.route.Name
	}
	g.metrics.CredentialEcho.WithLabelValues(route).Inc()
	if _, seen := g.echoWarned.LoadOrStore(route, struct{}{}); !seen {
		g.log.Warn("an upstream sent back its credential; it was removed from the response (logged once per route)",
			"route", route, "request_id", info.id)
	}
}

// urlHeaders are response headers that carry URLs, and with them query strings a backend
// may put personal data in (a redirect to /next?email=...).
var urlHeaders = []string{"Location", "Content-Location", "Link", "Refresh"}

// maskHeaders redacts the route's mask_headers in h and, on a route with detectors, runs
// them over the URL-bearing headers: the masker sees only the body, and a Set-Cookie or a
// Location with a query is as readable to the agent.
func (g *Gateway) maskHeaders(h http.Header, info *reqInfo) {
	for _, k := range info.state.maskHeaders[info.route.Name] {
		if vs := h[k]; len(vs) > 0 {
			h[k] = []string{recorder.Redacted}
		}
	}
	if info.mask == nil {
		return
	}
	for _, k := range urlHeaders {
		for i, v := range h[k] {
			h[k][i] = g.maskURLText(info, v)
		}
	}
}

// maskURLText returns v with the detectors' findings replaced. A value whose findings
// show only once percent-decoded (ada%40example.com) is redacted whole: replacing inside
// the escapes would need a URL rewriter for every header's syntax.
func (g *Gateway) maskURLText(info *reqInfo, v string) string {
	m := info.mask.masker
	out, n := m.Text(nil, []byte(v))
	if dec, err := url.PathUnescape(strings.ReplaceAll(v, "+", " ")); err == nil && dec != v {
		if _, nd := m.Text(nil, []byte(dec)); nd > n {
			g.countMasked(info.route.Name, masking.Counts{Detected: nd})
			return recorder.Redacted
		}
	}
	g.countMasked(info.route.Name, masking.Counts{Detected: n})
	return string(out)
}
