package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keyholehq/keyhole/config"
)

// upstream is one configured backend with its own transport and reverse proxy.
type upstream struct {
	g          *Gateway
	name       string
	target     *url.URL
	basePath   string // target path without a trailing slash
	credHeader string // canonical header name, "" for none
	credValue  string
	replayTo   []*url.URL // replay_targets: other origins an auditor may replay to
	timeout    time.Duration
	transport  *http.Transport
	transKey   string // what the transport was built from; equal keys share a transport across reloads
	proxy      *httputil.ReverseProxy
}

// idleConnsPerUpstream bounds idle keep-alive connections to one upstream. The default of
// two makes most connections of a busy gateway close after each request, which halves
// throughput under load.
const idleConnsPerUpstream = 512

func newUpstream(g *Gateway, name string, c *config.Upstream, prev *upstream) (*upstream, error) {
	target, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: url: %w", name, err)
	}
	u := &upstream{
		g:        g,
		name:     name,
		target:   target,
		basePath: strings.TrimSuffix(target.Path, "/"),
		transKey: transportKey(c),
		timeout:  time.Duration(c.Timeout),
	}
	for _, t := range c.ReplayTargets {
		tu, err := url.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: replay target: %w", name, err)
		}
		u.replayTo = append(u.replayTo, tu)
	}
	if c.Credential != nil {
		u.credHeader = http.CanonicalHeaderKey(c.Credential.Header)
		u.credValue = c.Credential.Value.Reveal()
	}
	if prev != nil && prev.transKey == u.transKey {
		u.transport = prev.transport
	} else if u.transport, err = newTransport(c); err != nil {
		return nil, fmt.Errorf("upstream %q: %w", name, err)
	}
	u.proxy = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      u.transport,
		ModifyResponse: u.modifyResponse,
		ErrorHandler:   g.upstreamError,
		BufferPool:     &g.buffers,
		ErrorLog:       g.errorLog,
	}
	return u, nil
}

// transportKey describes everything a transport is built from, the CA file's content
// included, so a reload after a CA rotation builds a new transport.
func transportKey(c *config.Upstream) string {
	k := fmt.Sprintf("%s|%d", c.URL, c.Timeout)
	if c.TLS != nil {
		ca, _ := os.ReadFile(c.TLS.CAFile)
		k += fmt.Sprintf("|%t|%x", c.TLS.InsecureSkipVerify, sha256.Sum256(ca))
	}
	return k
}

func newTransport(c *config.Upstream) (*http.Transport, error) {
	t := &http.Transport{
		// No Proxy: the gateway talks to its upstreams directly, whatever HTTP_PROXY says.
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConnsPerHost:    idleConnsPerUpstream,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  time.Duration(c.Timeout),
		MaxResponseHeaderBytes: 1 << 20,
		// The gateway passes bodies through as the upstream encoded them and never asks
		// for a compression the client did not.
		DisableCompression: true,
	}
	if c.TLS != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLS.InsecureSkipVerify}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate", c.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		t.TLSClientConfig = tc
	}
	return t, nil
}

// rewrite builds the outgoing request. It runs after ReverseProxy has removed hop-by-hop
// headers, including any the client named in Connection, so the credential set here
// cannot be stripped by a client's "Connection: X-Api-Key" (golang/go#50580).
func (u *upstream) rewrite(pr *httputil.ProxyRequest) {
	info := infoFrom(pr.In.Context())
	out := pr.Out
	out.URL.Scheme = u.target.Scheme
	out.URL.Host = u.target.Host
	out.URL.Path = u.basePath + info.forwardPath
	out.URL.RawPath = ""
	out.Host = ""
	// X-Forwarded-For and -Proto from the real connection. No X-Forwarded-Host: it would
	// only repeat the client's Host header, which a backend must not build links from.
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		out.Header["X-Forwarded-For"] = []string{ip}
	}
	if pr.In.TLS != nil {
		out.Header["X-Forwarded-Proto"] = []string{"https"}
	} else {
		out.Header["X-Forwarded-Proto"] = []string{"http"}
	}
	out.Header.Set("X-Request-Id", info.id)
	// A client's request trailers arrive after the body, when every check has run: a
	// chunked request could carry Authorization, X-Forwarded-For or a tenant header the
	// rules never saw (issue 11). None is forwarded, nor the Trailer header naming them.
	out.Trailer = nil
	delete(out.Header, "Trailer")
	// The gateway answers a client's Expect: 100-continue itself (the server sends 100
	// when the body is first read, after the decision); forwarded, it made the upstream
	// send a second 100, which reached the client after its body, in place of the answer.
	delete(out.Header, "Expect")
	if !info.state.scrub.Empty() {
		// The response must come back readable, so that it can be checked for an
		// echoed credential.
		delete(out.Header, "Accept-Encoding")
	}
	if u.credHeader != "" {
		out.Header[u.credHeader] = []string{u.credValue}
	}
	// The upstream's spans join the trace as children of the call's span (W3C Trace
	// Context); without traces a client's traceparent passes as any header does.
	info.upstreamSpan.Inject(out.Header)
	info.forwarded = time.Now()
}

func (u *upstream) modifyResponse(resp *http.Response) error {
	info := infoFrom(resp.Request.Context())
	info.upstreamDur = time.Since(info.forwarded)
	info.upstreamStatus = resp.StatusCode
	// The client gets the gateway's request id, which is also in the log and the record.
	// Set again: forwarding a 1xx response clears the headers already set.
	resp.Header.Del("X-Request-Id")
	info.respHeader.Set("X-Request-Id", info.id)
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
		// (A 101's body is the upgraded connection, which ReverseProxy must write to.)
		resp.Body = watchBody(resp, info, u.timeout, info.cancelUpstream)
	}
	u.g.maskHeaders(resp.Header, info)
	if info.mask != nil {
		if err := u.g.maskResponse(resp, info); err != nil {
			return err
		}
		// Masking may have read the whole body, and with it the trailers: ReverseProxy
		// announces those it finds now, and sends those it finds at the end.
		resp.Trailer = nil
		resp.Body = &trailerless{ReadCloser: resp.Body, resp: resp}
	}
	if !info.state.scrub.Empty() {
		return u.g.scrubResponse(resp, info)
	}
	return nil
}

// bufferPool shares 32 KiB copy buffers between responses. Its zero value is ready to use.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
