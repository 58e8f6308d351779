package config

import (
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A validator applies defaults to a decoded Config and checks what the types cannot:
// addresses, URLs, names, references between sections, and the files the config names.
// It adds its errors to the walker's, and stays quiet about a path that already has one.
type validator struct {
	cfg *Config
	w   *walker
	dir string
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.w.underBad(path) {
		return
	}
	v.w.errs = append(v.w.errs, v.cfg.Errorf(path, format, args...))
}

// has reports whether the key at path is written in the file, even with a null value.
func (v *validator) has(path string) bool {
	_, ok := v.w.lines[path]
	return ok
}

// set reports whether the key at path is written with a value other than null.
func (v *validator) set(path string) bool {
	return v.has(path) && !v.w.null[path]
}

// show quotes s, the value at path, as it is written in the file.
func (v *validator) show(path, s string) string { return v.cfg.Quote(path, s) }

func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// defaults fills in what the file leaves out. A key written with a zero value is not
// defaulted: validate reports it, since "timeout: 0s" is a mistake, not a wish.
func (v *validator) defaults() {
	c := v.cfg
	if !v.set("listen") {
		c.Listen = DefaultListen
	}
	if !v.set("admin.listen") {
		c.Admin.Listen = DefaultAdminListen
	}
	for i := range c.Identity.Issuers {
		is, p := &c.Identity.Issuers[i], idx("identity.issuers", i)
		if !v.set(p + ".groups_claim") {
			is.GroupsClaim = DefaultGroupsClaim
		}
		if !v.set(p + ".scopes_claim") {
			is.ScopesClaim = DefaultScopesClaim
		}
		if !v.set(p + ".max_token_age") {
			is.MaxTokenAge = Duration(DefaultMaxTokenAge)
		}
		if !v.set(p + ".algorithms") {
			is.Algorithms = slices.Clone(DefaultAlgorithms)
		}
	}
	for name, u := range c.Upstreams {
		if u != nil && !v.set(KeyPath("upstreams", name)+".timeout") {
			u.Timeout = Duration(DefaultUpstreamTimeout)
		}
	}
	if !v.set("limits.max_request_body") {
		c.Limits.MaxRequestBody = DefaultMaxRequestBody
	}
	if !v.set("limits.max_response_body_masked") {
		c.Limits.MaxResponseBodyMasked = DefaultMaxResponseBodyMasked
	}
	if !v.set("limits.request_body_idle_timeout") {
		c.Limits.RequestBodyIdleTimeout = Duration(DefaultRequestBodyIdleTimeout)
	}
	if !v.set("limits.request_body_timeout") {
		c.Limits.RequestBodyTimeout = Duration(DefaultRequestBodyTimeout)
	}
	if !v.set("limits.response_write_idle_timeout") {
		c.Limits.ResponseWriteIdleTimeout = Duration(DefaultResponseWriteIdleTimeout)
	}
	if !v.set("limits.max_masked_bytes_held") {
		c.Limits.MaxMaskedBytesHeld = ByteSize(max(DefaultMaxMaskedBytesHeld, 2*int64(c.Limits.MaxResponseBodyMasked)))
	}
	if !v.set("limits.max_unauthenticated_conns_per_peer") {
		c.Limits.MaxUnauthenticatedConnsPerPeer = DefaultMaxUnauthenticatedConnsPerPeer
	}
	if c.Recorder == nil {
		c.Recorder = &Recorder{}
	}
	if !v.set("recorder.store") {
		c.Recorder.Store = DefaultRecorderStore
	}
	if !v.set("recorder.mode") {
		c.Recorder.Mode = "strict"
	}
	if !v.set("recorder.body_limit") {
		c.Recorder.BodyLimit = DefaultRecorderBodyLimit
	}
	if isPostgres(c.Recorder.Store) {
		if c.Recorder.Postgres == nil {
			c.Recorder.Postgres = &Postgres{}
		}
		pg := c.Recorder.Postgres
		if !v.set("recorder.postgres.max_conns") {
			pg.MaxConns = DefaultPostgresMaxConns
		}
		if !v.set("recorder.postgres.connect_timeout") {
			pg.ConnectTimeout = DefaultPostgresConnectTimeout
		}
		if !v.set("recorder.postgres.statement_timeout") {
			pg.StatementTimeout = DefaultPostgresStatementTimeout
		}
	}
	for i := range c.Routes {
		v.approvalDefaults(idx("routes", i)+".approval", c.Routes[i].Approval, DefaultApprovalHold)
		if m := c.Routes[i].MCP; m != nil {
			for j := range m.Tools {
				v.approvalDefaults(idx(idx("routes", i)+".mcp.tools", j)+".approval", m.Tools[j].Approval, DefaultMCPApprovalHold)
			}
		}
	}
	if cs := c.Admin.Console; cs != nil {
		if !v.set("admin.console.idle_timeout") {
			cs.IdleTimeout = DefaultConsoleIdleTimeout
		}
		if !v.set("admin.console.max_age") {
			cs.MaxAge = DefaultConsoleMaxAge
		}
		if !v.set("admin.console.issuer") && len(c.Identity.Issuers) > 0 {
			cs.Issuer = c.Identity.Issuers[0].Issuer
		}
	}
	if e := c.Recorder.Export; e != nil {
		if !v.set("recorder.export.format") {
			e.Format = DefaultExportFormat
		}
		if !v.set("recorder.export.batch") {
			e.Batch = DefaultExportBatch
		}
		if !v.set("recorder.export.interval") {
			e.Interval = DefaultExportInterval
		}
		if !v.set("recorder.export.timeout") {
			e.Timeout = DefaultExportTimeout
		}
	}
	if c.Approvals == nil {
		c.Approvals = &Approvals{}
	}
	if !v.set("approvals.max_pending_per_subject") {
		c.Approvals.MaxPendingPerSubject = DefaultMaxPendingPerSubject
	}
	if o := c.Telemetry.OTLP; o != nil {
		if !v.set("telemetry.otlp.sample_ratio") {
			o.SampleRatio = DefaultOTLPSampleRatio
		}
		if !v.set("telemetry.otlp.timeout") {
			o.Timeout = DefaultOTLPTimeout
		}
	}
}

// approvalDefaults fills the unset keys of approval block a at ap; hold is the default hold.
func (v *validator) approvalDefaults(ap string, a *Approval, hold Duration) {
	if a == nil {
		return
	}
	if !v.set(ap + ".min_approvals") {
		a.MinApprovals = 1
	}
	if !v.set(ap + ".hold") {
		a.Hold = hold
	}
	if !v.set(ap + ".ttl") {
		a.TTL = max(DefaultApprovalTTL, a.Hold)
	}
}

func (v *validator) validate() {
	c := v.cfg
	v.listeners()
	if c.TLS != nil {
		v.serverTLS("tls", c.TLS)
	}
	v.identity()
	v.upstreams()
	v.routes()
	v.admin()
	if v.set("limits.max_request_body") && c.Limits.MaxRequestBody <= 0 {
		v.errorf("limits.max_request_body", "max_request_body must be greater than 0")
	}
	if v.set("limits.max_response_body_masked") && c.Limits.MaxResponseBodyMasked <= 0 {
		v.errorf("limits.max_response_body_masked", "max_response_body_masked must be greater than 0")
	}
	v.limits(&c.Limits)
	if c.Masking != nil && v.set("masking.hash_key") && len(c.Masking.HashKey) < 16 {
		v.errorf("masking.hash_key", "hash_key must be at least 16 bytes")
	}
	if c.Recorder != nil {
		v.recorder(c.Recorder)
	}
	if c.Approvals != nil {
		v.approvals(c.Approvals)
	}
	if o := c.Telemetry.OTLP; o != nil {
		v.otlp(o)
	}
}

// listenAddr is one listener's address to check, at path in the file.
type listenAddr struct {
	path, addr, example string
	// serves names what the listener serves, for the message of a missing host; "":
	// the host may be left out.
	serves string
}

// listeners checks listen, admin.listen and ops.listen, and that identity.dev keeps the
// first two on loopback.
func (v *validator) listeners() {
	c := v.cfg
	addrs := []listenAddr{
		{"listen", c.Listen, "127.0.0.1:8080", ""},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:9090", "the admin plane"},
	}
	if c.Ops != nil {
		if c.Ops.Listen == "" {
			v.errorf("ops.listen", "listen is required (an address such as \"0.0.0.0:9091\"); remove ops for no operations listener")
		} else {
			addrs = append(addrs, listenAddr{"ops.listen", c.Ops.Listen, "127.0.0.1:9091", "/healthz, /readyz and /metrics"})
		}
	}
	for _, l := range addrs {
		what := v.show(l.path, l.addr)
		if !v.set(l.path) {
			what += " (the default)"
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			v.errorf(l.path, "%s is not host:port (want an address such as %q)", what, l.example)
			continue
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			v.errorf(l.path, "port of %s must be a number from 0 to 65535", what)
			continue
		}
		if l.serves != "" && host == "" {
			v.errorf(l.path, "%s has no host: write 127.0.0.1:%s, or 0.0.0.0:%s to serve %s on every interface", what, port, port, l.serves)
			continue
		}
		// The ops listener serves no token and no admin API: identity.dev does not bind it.
		if c.Identity.Dev && l.path != "ops.listen" && !isLoopback(host) {
			v.errorf(l.path, "%s is not a loopback address, and identity.dev serves a built-in issuer whose tokens anyone can mint: listen on 127.0.0.1 or localhost", what)
		}
	}
}

// isLoopback reports whether host is localhost or a loopback IP (127.0.0.0/8, ::1).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) serverTLS(path string, t *TLS) {
	if t.CertFile == "" {
		v.errorf(path+".cert_file", "cert_file is required")
	}
	if t.KeyFile == "" {
		v.errorf(path+".key_file", "key_file is required")
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return
	}
	certShown, keyShown := v.show(path+".cert_file", t.CertFile), v.show(path+".key_file", t.KeyFile)
	t.CertFile, t.KeyFile = resolve(v.dir, t.CertFile), resolve(v.dir, t.KeyFile)
	cert, err := readFile(t.CertFile, maxPEMFile)
	if err != nil {
		v.errorf(path+".cert_file", "cannot read cert_file %s: %v", certShown, err)
	}
	key, kerr := readFile(t.KeyFile, maxPEMFile)
	if kerr != nil {
		v.errorf(path+".key_file", "cannot read key_file %s: %v", keyShown, kerr)
	}
	if err != nil || kerr != nil {
		return
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		v.errorf(path, "cert_file %s and key_file %s are not a certificate and its key: %v", certShown, keyShown, err)
	}
}

// algorithms lists the token signing algorithms an issuer may allow.
var algorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

func (v *validator) identity() {
	c := v.cfg
	if len(c.Identity.Issuers) == 0 && !c.Identity.Dev {
		v.errorf("identity.issuers", "at least one issuer is required (or identity.dev: true, for local use only)")
	}
	first := make(map[string]string) // issuer -> path of its first listing
	for i := range c.Identity.Issuers {
		is, p := &c.Identity.Issuers[i], idx("identity.issuers", i)
		if v.issuerURL(p+".issuer", is.Issuer) {
			if f, dup := first[is.Issuer]; dup {
				v.errorf(p+".issuer", "issuer %s is already listed at line %d", v.show(p+".issuer", is.Issuer), c.Line(f))
			} else {
				first[is.Issuer] = p + ".issuer"
			}
		}
		if len(is.Audiences) == 0 {
			v.errorf(p+".audiences", "audiences is required: tokens are accepted only for one of them")
		}
		for j, a := range is.Audiences {
			if a == "" {
				v.errorf(idx(p+".audiences", j), "empty audience")
			}
		}
		if is.GroupsClaim == "" {
			v.errorf(p+".groups_claim", "groups_claim must not be empty")
		}
		if is.ScopesClaim == "" {
			v.errorf(p+".scopes_claim", "scopes_claim must not be empty")
		}
		if is.MaxTokenAge <= 0 {
			v.errorf(p+".max_token_age", "max_token_age must be greater than 0")
		}
		if v.set(p+".client_id_claim") && is.ClientIDClaim == "" {
			v.errorf(p+".client_id_claim", "client_id_claim must not be empty; leave it out for cid, then azp, then client_id, then appid")
		}
		if len(is.Algorithms) == 0 {
			v.errorf(p+".algorithms", "algorithms is empty; leave it out for the default [%s]", strings.Join(DefaultAlgorithms, ", "))
		}
		seen := make(map[string]bool)
		for j, a := range is.Algorithms {
			ap := idx(p+".algorithms", j)
			switch {
			case strings.EqualFold(a, "none"):
				v.errorf(ap, "algorithm %s is refused: an unsigned token proves nothing", v.show(ap, a))
			case strings.HasPrefix(strings.ToUpper(a), "HS"):
				v.errorf(ap, "algorithm %s is refused: HMAC needs a secret shared with the issuer, and a token signed with the issuer's public key as that secret would verify", v.show(ap, a))
			case !slices.Contains(algorithms, a):
				v.errorf(ap, "unknown algorithm %s: want one of %s", v.show(ap, a), strings.Join(algorithms, ", "))
			case seen[a]:
				v.errorf(ap, "algorithm %s is listed twice", v.show(ap, a))
			}
			seen[a] = true
		}
		if is.JWKSURL != "" {
			v.jwksURL(p+".jwks_url", is.JWKSURL)
		}
	}
}

// issuerURL checks an issuer identifier and reports whether it is valid.
func (v *validator) issuerURL(path, raw string) bool {
	if raw == "" {
		v.errorf(path, "issuer is required")
		return false
	}
	shown := v.show(path, raw)
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		v.errorf(path, "issuer %s must be an absolute URL such as https://acme.okta.com/oauth2/default", shown)
		return false
	}
	ok := true
	if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
		v.errorf(path, "issuer %s must use https (http only for a loopback host)", shown)
		ok = false
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		v.errorf(path, "issuer %s must not have a user name, query or fragment", shown)
		ok = false
	}
	return ok
}

func (v *validator) jwksURL(path, raw string) {
	shown := v.show(path, raw)
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || u.Scheme != "http" && u.Scheme != "https" {
		v.errorf(path, "jwks_url %s must be an absolute https URL", shown)
		return
	}
	if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		v.errorf(path, "jwks_url %s must use https (http only for a loopback host)", shown)
	}
}

// hopByHop are the headers a proxy must not forward (RFC 9110 section 7.6.1), and the
// headers the transport owns: a credential in any of them would never arrive or would
// break the request.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te", "Trailer"}

func (v *validator) upstreams() {
	for _, name := range slices.Sorted(maps.Keys(v.cfg.Upstreams)) {
		u, p := v.cfg.Upstreams[name], KeyPath("upstreams", name)
		if name == "" {
			v.errorf(p, "upstream name must not be empty")
		}
		if u == nil {
			v.errorf(p+".url", "url is required")
			continue
		}
		https := v.upstreamURL(p+".url", u.URL)
		if u.Timeout <= 0 {
			v.errorf(p+".timeout", "timeout must be greater than 0")
		}
		if u.Credential != nil {
			v.credential(p+".credential", u.Credential)
		}
		for j, t := range u.ReplayTargets {
			tp := idx(p+".replay_targets", j)
			if pu, err := url.Parse(t); err != nil || pu.Host == "" || pu.Scheme != "http" && pu.Scheme != "https" || pu.User != nil || pu.RawQuery != "" || pu.Fragment != "" {
				// Not quoted: it may hold a password by mistake.
				v.errorf(tp, "replay target must be an absolute http or https URL without credentials, query or fragment")
			}
		}
		if t := u.TLS; t != nil {
			if !https && u.URL != "" {
				v.errorf(p+".tls", "tls is set, but url is not https")
			}
			if t.CAFile != "" {
				shown := v.show(p+".tls.ca_file", t.CAFile)
				t.CAFile = resolve(v.dir, t.CAFile)
				pem, err := readFile(t.CAFile, maxPEMFile)
				if err != nil {
					v.errorf(p+".tls.ca_file", "cannot read ca_file %s: %v", shown, err)
				} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
					v.errorf(p+".tls.ca_file", "ca_file %s holds no PEM certificate", shown)
				}
			}
		}
	}
}

// upstreamURL checks an upstream's url and reports whether it is https. Its messages do
// not quote the URL, which may hold a password by mistake.
func (v *validator) upstreamURL(path, raw string) (https bool) {
	if raw == "" {
		v.errorf(path, "url is required")
		return false
	}
	u, err := url.Parse(raw)
	if err != nil {
		v.errorf(path, "url is not a valid URL")
		return false
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
		v.errorf(path, "url must be an absolute http or https URL with a host, such as http://crm.internal:8080")
		return false
	}
	if u.User != nil {
		v.errorf(path, "url must not hold a user name or password; put credentials in credential")
	}
	if u.RawQuery != "" || u.ForceQuery {
		v.errorf(path, "url must not have a query")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		v.errorf(path, "url must not have a fragment")
	}
	return u.Scheme == "https"
}

// credential checks a credential and reads its value_file. Its messages never hold the value.
func (v *validator) credential(path string, cr *Credential) {
	hp := path + ".header"
	switch h := cr.Header; {
	case h == "":
		v.errorf(hp, "header is required")
	case !isToken(h):
		v.errorf(hp, "header %s is not a valid header name", v.show(hp, h))
	case slices.ContainsFunc(hopByHop, func(s string) bool { return strings.EqualFold(s, h) }):
		v.errorf(hp, "header %s is hop-by-hop: proxies drop it, so it would never reach the upstream", v.show(hp, h))
	case strings.EqualFold(h, "Host") || strings.EqualFold(h, "Content-Length"):
		v.errorf(hp, "header %s cannot carry a credential", v.show(hp, h))
	}
	hasValue, hasFile := v.set(path+".value"), v.set(path+".value_file")
	switch {
	case hasValue && hasFile:
		v.errorf(path, "set value or value_file, not both")
		return
	case !hasValue && !hasFile:
		v.errorf(path, "value or value_file is required")
		return
	}
	vp := path + ".value"
	if hasFile {
		vp = path + ".value_file"
		shown := v.show(vp, cr.ValueFile)
		cr.ValueFile = resolve(v.dir, cr.ValueFile)
		data, err := readFile(cr.ValueFile, maxSecretFile)
		if err != nil {
			v.errorf(vp, "cannot read value_file %s: %v", shown, err)
			return
		}
		s := string(data)
		if t, ok := strings.CutSuffix(s, "\n"); ok {
			s = strings.TrimSuffix(t, "\r")
		}
		if s == "" {
			v.errorf(vp, "value_file %s is empty", shown)
			return
		}
		cr.Value = Secret(s)
	}
	if cr.Value == "" {
		v.errorf(vp, "value is empty")
		return
	}
	// A CR or LF in a header value splits it into two headers (header injection);
	// Go's transport refuses control characters, so say so at load, not per request.
	if strings.ContainsFunc(string(cr.Value), func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		v.errorf(vp, "the credential holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers")
	}
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2), as a header name must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// methods lists the HTTP methods a match may name, besides "*".
var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// The mask actions and detectors a route may name.
var (
	maskActions = []string{"redact", "remove", "hash", "last4"}
	detectors   = []string{"credit_card", "us_ssn", "email", "phone", "iban", "bearer_token", "aws_access_key", "private_key"}
)

// routes checks guards and routes, whose names share one namespace.
func (v *validator) routes() {
	names := make(map[string]string) // name -> path of its first use
	name := func(p, n string) {
		np := p + ".name"
		if n == "" {
			v.errorf(np, "name is required")
			return
		}
		if f, dup := names[n]; dup {
			v.errorf(np, "name %s is already used by %s at line %d; route and guard names must be unique", v.show(np, n), strings.TrimSuffix(f, ".name"), v.cfg.Line(f))
			return
		}
		names[n] = np
	}
	for i := range v.cfg.Guards {
		g, p := &v.cfg.Guards[i], idx("guards", i)
		for _, k := range []string{"upstream", "rewrite", "allow", "websocket", "mask", "detect", "pass_non_json", "mask_headers", "approval", "mcp"} {
			if v.has(p + "." + k) {
				v.errorf(p+"."+k, "guards take only name, match and deny")
			}
		}
		name(p, g.Name)
		v.match(p+".match", &g.Match)
		if g.Deny == "" {
			v.errorf(p+".deny", "deny is required: the message a matching request is refused with")
		}
	}
	for i := range v.cfg.Routes {
		r, p := &v.cfg.Routes[i], idx("routes", i)
		name(p, r.Name)
		v.match(p+".match", &r.Match)
		v.route(p, r)
		if r.MCP != nil {
			v.mcp(p, r)
		}
	}
}

func (v *validator) match(path string, m *Match) {
	pp := path + ".path"
	switch {
	case m.Path == "":
		v.errorf(pp, "path is required")
	case !strings.HasPrefix(m.Path, "/"):
		v.errorf(pp, "path %s must start with \"/\"", v.show(pp, m.Path))
	}
	if len(m.Methods) == 0 {
		v.errorf(path+".methods", `methods is required (use ["*"] for any method)`)
	}
	seen := make(map[string]bool)
	for j, meth := range m.Methods {
		mp := idx(path+".methods", j)
		shown := v.show(mp, meth)
		switch {
		case seen[meth]:
			v.errorf(mp, "method %s is listed twice", shown)
		case meth == "*" && len(m.Methods) > 1:
			v.errorf(mp, `"*" matches every method: list it alone`)
		case meth == "*" || slices.Contains(methods, meth):
		case slices.Contains(methods, strings.ToUpper(meth)):
			if _, fromEnv := v.w.written[mp]; fromEnv {
				v.errorf(mp, "method %s must be upper case: methods are case-sensitive", shown)
			} else {
				v.errorf(mp, "method %s must be upper case, %q: methods are case-sensitive", shown, strings.ToUpper(meth))
			}
		default:
			v.errorf(mp, "unknown method %s: want %s or \"*\"", shown, strings.Join(methods, ", "))
		}
		seen[meth] = true
	}
	if m.When != nil {
		v.when(path+".when", m.When)
	}
}

func (v *validator) when(path string, w *When) {
	if w.Query == nil && w.Headers == nil && w.Body == nil && !v.set(path+".body_regex") {
		v.errorf(path, "when is empty: remove it or add a condition")
		return
	}
	for _, c := range []struct {
		key  string
		m    map[string]Scalars
		what string
	}{{"query", w.Query, "query parameter name"}, {"headers", w.Headers, "header name"}, {"body", w.Body, "gjson path"}} {
		kp := path + "." + c.key
		if c.m != nil && len(c.m) == 0 {
			v.errorf(kp, "%s is empty: remove it or add a condition", c.key)
		}
		canon := make(map[string]string)
		for _, k := range slices.Sorted(maps.Keys(c.m)) {
			switch {
			case k == "":
				v.errorf(KeyPath(kp, k), "empty %s", c.what)
			case c.key == "headers" && !isToken(k):
				v.errorf(KeyPath(kp, k), "%q is not a valid header name", k)
			case c.key == "headers" && unjudgeableHeader(k) != "":
				v.errorf(KeyPath(kp, k), "header %q cannot be a condition: %s", k, unjudgeableHeader(k))
			case c.key == "headers" && canon[strings.ToLower(k)] != "":
				v.errorf(KeyPath(kp, k), "header %q is also listed as %q: header names are case-insensitive", k, canon[strings.ToLower(k)])
			}
			canon[strings.ToLower(k)] = k
		}
	}
	if v.set(path+".body_regex") && w.BodyRegex == "" {
		v.errorf(path+".body_regex", "body_regex is empty")
	}
}

func (v *validator) route(p string, r *Route) {
	hasAllow, hasDeny, hasApproval := r.Allow != nil, v.set(p+".deny"), r.Approval != nil
	masks := v.set(p+".mask") || v.set(p+".detect")
	switch {
	case !hasAllow && !hasDeny && !hasApproval:
		v.errorf(p, "a route needs allow, deny or approval: the default is deny, so a route without them would refuse every request")
	case hasDeny:
		if r.Deny == "" {
			v.errorf(p+".deny", "deny needs a message: the reason a matching request is refused with")
		}
		for _, k := range []string{"allow", "approval", "upstream", "rewrite", "websocket", "mask", "detect", "mcp", "record"} {
			if v.set(p + "." + k) {
				v.errorf(p+"."+k, "a route with deny never forwards a request, so it must not set %s", k)
			}
		}
	default:
		up := p + ".upstream"
		switch _, ok := v.cfg.Upstreams[r.Upstream]; {
		case r.Upstream == "":
			v.errorf(up, "upstream is required: the upstream that allowed requests are forwarded to")
		case !ok && len(v.cfg.Upstreams) == 0:
			v.errorf(up, "unknown upstream %s: no upstreams are configured", v.show(up, r.Upstream))
		case !ok:
			v.errorf(up, "unknown upstream %s: want one of %s", v.show(up, r.Upstream), strings.Join(slices.Sorted(maps.Keys(v.cfg.Upstreams)), ", "))
		}
	}
	if hasAllow {
		v.allow(p+".allow", r.Allow, "allow")
	}
	if rw := r.Rewrite; rw != nil {
		if rw.StripPrefix == "" && rw.AddPrefix == "" {
			v.errorf(p+".rewrite", "rewrite needs strip_prefix or add_prefix")
		}
		for _, f := range []struct{ key, val string }{{"strip_prefix", rw.StripPrefix}, {"add_prefix", rw.AddPrefix}} {
			fp := p + ".rewrite." + f.key
			if v.set(fp) && (!strings.HasPrefix(f.val, "/") || strings.HasSuffix(f.val, "/")) {
				v.errorf(fp, "%s %s must start with \"/\" and not end with \"/\"", f.key, v.show(fp, f.val))
			}
		}
	}
	if r.Websocket && masks {
		v.errorf(p+".websocket", "a websocket route cannot be masked: its messages are not JSON responses")
	}
	switch rp := p + ".record"; {
	case !v.set(rp):
	case r.Record != RecordFull && r.Record != RecordMetadata && r.Record != RecordNone:
		v.errorf(rp, "unknown record mode %s: want full, metadata or none", v.show(rp, r.Record))
	case r.Record == RecordNone && hasApproval:
		v.errorf(rp, "a route that needs approval is always recorded: its records are the evidence of who approved what")
	case r.Record == RecordNone && r.MCP != nil && mcpApprovals(r.MCP):
		v.errorf(rp, "an mcp route with tool approvals is always recorded: its records are the evidence of who approved what")
	}
	if r.Retention < 0 {
		v.errorf(p+".retention", "retention must not be negative")
	}
	if r.Websocket && hasApproval {
		v.errorf(p+".websocket", "a websocket route cannot need approval: an approval would cover the handshake, not the messages after it")
	}
	v.maskRules(p+".mask", r.Mask)
	seen := make(map[string]bool)
	for j, d := range r.Detect {
		dp := idx(p+".detect", j)
		switch {
		case !slices.Contains(detectors, d):
			v.errorf(dp, "unknown detector %s: want %s", v.show(dp, d), strings.Join(detectors, ", "))
		case seen[d]:
			v.errorf(dp, "detector %s is listed twice", v.show(dp, d))
		}
		seen[d] = true
	}
	if v.set(p+".pass_non_json") && !masks {
		v.errorf(p+".pass_non_json", "pass_non_json applies only to a route with mask or detect")
	}
	v.maskHeaders(p+".mask_headers", r.MaskHeaders)
	if a := r.Approval; a != nil {
		v.approval(p+".approval", a)
	}
}

// approval checks an approval block at ap (a route's, or an mcp tool's).
func (v *validator) approval(ap string, a *Approval) {
	v.allow(ap+".approvers", &a.Approvers, "approvers")
	if a.MinApprovals < 1 {
		v.errorf(ap+".min_approvals", "min_approvals must be at least 1")
	}
	if a.Hold <= 0 {
		v.errorf(ap+".hold", "hold must be greater than 0")
	}
	if a.TTL <= 0 {
		v.errorf(ap+".ttl", "ttl must be greater than 0")
	} else if a.TTL < a.Hold {
		v.errorf(ap+".ttl", "ttl must not be shorter than hold")
	}
	if v.set(ap+".pending_status") && a.PendingStatus != http.StatusForbidden && a.PendingStatus != http.StatusAccepted {
		v.errorf(ap+".pending_status", "pending_status must be 403 or 202")
	}
}

// allow checks that a is not empty and holds no empty value. what names a in messages.
func (v *validator) allow(path string, a *Allow, what string) {
	empty := true
	for _, l := range []struct {
		key, item string
		vals      []string
	}{{"groups", "group", a.Groups}, {"scopes", "scope", a.Scopes}, {"subjects", "subject", a.Subjects}} {
		lp := path + "." + l.key
		if v.set(lp) && len(l.vals) == 0 {
			v.errorf(lp, "%s is empty", l.key)
			empty = false
		}
		for j, s := range l.vals {
			empty = false
			if s == "" {
				v.errorf(idx(lp, j), "empty %s", l.item)
			}
		}
	}
	if v.set(path+".claims") && len(a.Claims) == 0 {
		v.errorf(path+".claims", "claims is empty")
		empty = false
	}
	for k := range a.Claims {
		empty = false
		if k == "" {
			v.errorf(KeyPath(path+".claims", k), "empty claim name")
		}
	}
	if empty {
		v.errorf(path, "%s must set at least one of groups, scopes, subjects or claims", what)
	}
}

// roles are the admin roles admin.roles may name.
var roles = []string{"admins", "auditors", "approvers"}

func (v *validator) admin() {
	a := v.cfg.Admin
	if a.Allow != nil {
		v.allow("admin.allow", a.Allow, "allow")
	}
	seen := make(map[string]bool)
	for i, c := range a.Clients {
		switch cp := idx("admin.clients", i); {
		case c == "":
			v.errorf(cp, "empty client id")
		case seen[c]:
			v.errorf(cp, "client id %s is listed twice", v.show(cp, c))
		}
		seen[c] = true
	}
	if v.set("admin.clients") && len(a.Clients) == 0 {
		v.errorf("admin.clients", "clients is empty, which would refuse every token; leave it out to accept any client")
	}
	for _, r := range slices.Sorted(maps.Keys(a.Roles)) {
		rp := KeyPath("admin.roles", r)
		if !slices.Contains(roles, r) {
			v.errorf(rp, "unknown role %q: want %s", r, strings.Join(roles, ", "))
			continue
		}
		if a.Roles[r] == nil {
			v.errorf(rp, "role %s must set at least one of groups, scopes, subjects or claims", r)
			continue
		}
		v.allow(rp, a.Roles[r], "role "+r)
	}
	if a.Console != nil {
		v.console(a.Console)
	} else if v.has("admin.console") {
		v.errorf("admin.console", "console is empty: set client_id, redirect_url and session_key, or leave it out")
	}
}

// console checks admin.console and reads its secret files. Its messages never hold a secret.
func (v *validator) console(cs *Console) {
	const p = "admin.console"
	iss := v.cfg.Identity.Issuers
	switch {
	case cs.Issuer == "" && !v.cfg.Identity.Dev:
		v.errorf(p+".issuer", "issuer is required: one of identity.issuers")
	case cs.Issuer != "" && !slices.ContainsFunc(iss, func(is Issuer) bool { return is.Issuer == cs.Issuer }):
		v.errorf(p+".issuer", "issuer %s is not one of identity.issuers", v.show(p+".issuer", cs.Issuer))
	}
	if cs.ClientID == "" {
		v.errorf(p+".client_id", "client_id is required: the console's OIDC client at the issuer")
	}
	if v.set(p+".client_secret") || v.set(p+".client_secret_file") {
		cs.ClientSecret = v.secret(p, "client_secret", cs.ClientSecret, &cs.ClientSecretFile)
	}
	switch u, err := url.Parse(cs.RedirectURL); {
	case cs.RedirectURL == "":
		v.errorf(p+".redirect_url", "redirect_url is required: the console's callback, such as https://keyhole.internal:9090/ui/callback")
	case err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" || u.RawQuery != "" || u.Fragment != "":
		v.errorf(p+".redirect_url", "redirect_url %s must be an absolute http(s) URL without query or fragment", v.show(p+".redirect_url", cs.RedirectURL))
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		v.errorf(p+".redirect_url", "redirect_url %s must use https (http only for a loopback host): the session cookie would travel in clear", v.show(p+".redirect_url", cs.RedirectURL))
	case !strings.HasSuffix(u.Path, "/ui/callback"):
		v.errorf(p+".redirect_url", "redirect_url %s must end in /ui/callback, where the console takes the login's answer", v.show(p+".redirect_url", cs.RedirectURL))
	}
	if !v.set(p+".session_key") && !v.set(p+".session_key_file") {
		v.errorf(p, "session_key or session_key_file is required: a secret of at least %d bytes shared by every replica", MinSessionKey)
	} else if cs.SessionKey = v.secret(p, "session_key", cs.SessionKey, &cs.SessionKeyFile); cs.SessionKey != "" && len(cs.SessionKey) < MinSessionKey {
		v.errorf(p+".session_key", "session_key is %d bytes: it must be at least %d (openssl rand -hex 32)", len(cs.SessionKey), MinSessionKey)
	}
	if cs.IdleTimeout <= 0 {
		v.errorf(p+".idle_timeout", "idle_timeout must be greater than 0")
	}
	if cs.MaxAge <= 0 {
		v.errorf(p+".max_age", "max_age must be greater than 0")
	} else if cs.IdleTimeout > cs.MaxAge {
		v.errorf(p+".idle_timeout", "idle_timeout %s is longer than max_age %s", time.Duration(cs.IdleTimeout), time.Duration(cs.MaxAge))
	}
}

// secret returns the secret of key name at p, written inline (value) or as name+"_file"
// (the file is read, and *file resolved). It reports "" after an error.
func (v *validator) secret(p, name string, value Secret, file *string) Secret {
	vp, fp := p+"."+name, p+"."+name+"_file"
	switch {
	case v.set(vp) && v.set(fp):
		v.errorf(p, "set %s or %s_file, not both", name, name)
		return ""
	case v.set(fp):
		shown := v.show(fp, *file)
		*file = resolve(v.dir, *file)
		data, err := readFile(*file, maxSecretFile)
		if err != nil {
			v.errorf(fp, "cannot read %s_file %s: %v", name, shown, err)
			return ""
		}
		s := strings.TrimRight(string(data), "\r\n")
		if s == "" {
			v.errorf(fp, "%s_file %s is empty", name, shown)
		}
		return Secret(s)
	case value == "":
		v.errorf(vp, "%s is empty", name)
	}
	return value
}

func (v *validator) recorder(r *Recorder) {
	if v.set("recorder.store") && !strings.HasPrefix(r.Store, "sqlite://") && !strings.HasPrefix(r.Store, "postgres://") && !strings.HasPrefix(r.Store, "postgresql://") {
		// The DSN may hold a password: it is not quoted.
		v.errorf("recorder.store", "store must start with sqlite://, postgres:// or postgresql://")
	}
	if v.set("recorder.mode") && r.Mode != "strict" && r.Mode != "best_effort" {
		v.errorf("recorder.mode", "unknown mode %s: want strict or best_effort", v.show("recorder.mode", r.Mode))
	}
	if v.set("recorder.body_limit") && r.BodyLimit <= 0 {
		v.errorf("recorder.body_limit", "body_limit must be greater than 0")
	}
	for j, h := range r.RedactHeaders {
		hp := idx("recorder.redact_headers", j)
		if !isToken(h) {
			v.errorf(hp, "%s is not a valid header name", v.show(hp, h))
		}
	}
	if r.Retention < 0 {
		v.errorf("recorder.retention", "retention must not be negative")
	}
	v.postgres(r)
	if r.Export != nil {
		v.export(r.Export)
	}
	if path, ok := strings.CutPrefix(r.Store, "sqlite://"); ok {
		if path == "" {
			v.errorf("recorder.store", "sqlite:// needs a file path, such as sqlite://data/keyhole.db")
		} else {
			r.Store = "sqlite://" + resolve(v.dir, path)
		}
	}
}

// isPostgres reports whether dsn names a PostgreSQL store.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// postgres checks recorder.postgres, which only a postgres:// store takes.
func (v *validator) postgres(r *Recorder) {
	pg := r.Postgres
	if pg == nil {
		return
	}
	if !isPostgres(r.Store) {
		v.errorf("recorder.postgres", "postgres settings apply only to a postgres:// store")
		return
	}
	if u, err := url.Parse(r.Store); err != nil || u.Host == "" && u.Query().Get("host") == "" {
		// The DSN may hold a password: it is not quoted.
		v.errorf("recorder.store", "postgres store must be a URL such as postgres://keyhole@db.internal:5432/keyhole?sslmode=verify-full")
	} else if _, has := u.User.Password(); has && pg.PasswordFile != "" {
		v.errorf("recorder.postgres.password_file", "the store's DSN already carries a password: set one or the other")
	}
	if pg.MaxConns < 1 {
		v.errorf("recorder.postgres.max_conns", "max_conns must be at least 1")
	}
	if pg.ConnectTimeout <= 0 {
		v.errorf("recorder.postgres.connect_timeout", "connect_timeout must be greater than 0")
	}
	if pg.StatementTimeout <= 0 {
		v.errorf("recorder.postgres.statement_timeout", "statement_timeout must be greater than 0")
	}
	if pg.PasswordFile != "" {
		pg.PasswordFile = resolve(v.dir, pg.PasswordFile)
	}
}

// export checks recorder.export. The webhook and the header values are secrets: none
// is quoted.
func (v *validator) export(e *Export) {
	switch {
	case !v.set("recorder.export.webhook"):
		v.errorf("recorder.export.webhook", "webhook is required: the URL the SIEM takes newline-delimited JSON at")
	case v.w.secretsOptional && strings.Contains(e.Webhook.Reveal(), placeholderSecret("")):
		// check and test push nothing: an unset ${VAR} in the URL is no error there.
	case !webhookURL(e.Webhook.Reveal()):
		v.errorf("recorder.export.webhook", "webhook must be an absolute http or https URL without a fragment")
	}
	if e.Format != "ocsf" && e.Format != "jsonl" {
		v.errorf("recorder.export.format", "unknown format %s: want ocsf or jsonl", v.show("recorder.export.format", e.Format))
	}
	if e.Batch < 1 || e.Batch > MaxExportBatch {
		v.errorf("recorder.export.batch", "batch must be between 1 and %d", MaxExportBatch)
	}
	if e.Interval <= 0 {
		v.errorf("recorder.export.interval", "interval must be greater than 0")
	}
	if e.Timeout <= 0 {
		v.errorf("recorder.export.timeout", "timeout must be greater than 0")
	}
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) {
		hp := KeyPath("recorder.export.headers", k)
		switch {
		case !isToken(k):
			v.errorf(hp, "%s is not a valid header name", strconv.Quote(k))
		case slices.ContainsFunc(append([]string{"Host", "Content-Length", "Content-Type", "Content-Encoding"}, hopByHop...),
			func(s string) bool { return strings.EqualFold(s, k) }):
			v.errorf(hp, "header %s is set by the gateway", strconv.Quote(k))
		}
		if strings.ContainsFunc(e.Headers[k].Reveal(), func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			v.errorf(hp, "the value holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers")
		}
	}
}

// webhookURL reports whether s is an absolute http or https URL without a fragment.
func webhookURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") && u.Fragment == ""
}

func (v *validator) otlp(o *OTLP) {
	// The endpoint may carry a token: it is not quoted.
	if !v.set("telemetry.otlp.endpoint") {
		v.errorf("telemetry.otlp.endpoint", "endpoint is required: the collector's base URL, such as http://collector:4318")
	} else if u, err := url.Parse(o.Endpoint); err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		v.errorf("telemetry.otlp.endpoint", "endpoint must be an absolute http or https URL without credentials, query or fragment, such as http://collector:4318")
	}
	if o.SampleRatio < 0 || o.SampleRatio > 1 {
		v.errorf("telemetry.otlp.sample_ratio", "sample_ratio must be between 0 and 1")
	}
	for _, k := range slices.Sorted(maps.Keys(o.Headers)) {
		hp := KeyPath("telemetry.otlp.headers", k)
		if !isToken(k) {
			v.errorf(hp, "%s is not a valid header name", strconv.Quote(k))
		}
	}
	if o.Timeout <= 0 {
		v.errorf("telemetry.otlp.timeout", "timeout must be greater than 0")
	}
}

func (v *validator) approvals(a *Approvals) {
	if v.set("approvals.notify.webhook") {
		// A Slack webhook URL is a secret: it is not quoted.
		if u, err := url.Parse(a.Notify.Webhook); err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			v.errorf("approvals.notify.webhook", "webhook must be an absolute http or https URL")
		}
	}
	if v.set("approvals.public_url") {
		if u, err := url.Parse(a.PublicURL); err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" {
			v.errorf("approvals.public_url", "public_url %s must be an absolute http or https URL", v.show("approvals.public_url", a.PublicURL))
		}
	}
	if a.MaxPendingPerSubject < 1 {
		v.errorf("approvals.max_pending_per_subject", "max_pending_per_subject must be at least 1")
	}
}

// limits checks the timeouts and bounds of limits.
func (v *validator) limits(l *Limits) {
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"request_body_idle_timeout", l.RequestBodyIdleTimeout},
		{"request_body_timeout", l.RequestBodyTimeout},
		{"response_write_idle_timeout", l.ResponseWriteIdleTimeout},
	} {
		if v.set("limits."+d.key) && d.d <= 0 {
			v.errorf("limits."+d.key, "%s must be greater than 0", d.key)
		}
	}
	if v.set("limits.max_masked_bytes_held") && l.MaxMaskedBytesHeld < 2*l.MaxResponseBodyMasked && l.MaxResponseBodyMasked > 0 {
		// A body is held twice while it is masked: as received and as masked.
		v.errorf("limits.max_masked_bytes_held", "max_masked_bytes_held must be at least twice max_response_body_masked (%d bytes), or the largest masked response could never be served", int64(l.MaxResponseBodyMasked))
	}
	if v.set("limits.max_unauthenticated_conns_per_peer") && l.MaxUnauthenticatedConnsPerPeer < 1 {
		v.errorf("limits.max_unauthenticated_conns_per_peer", "max_unauthenticated_conns_per_peer must be at least 1")
	}
}

// maskRules checks the mask rules at p (a route's mask, a tool's mask): field and action
// set, with only on redact, hash only with masking.hash_key.
func (v *validator) maskRules(p string, rules []MaskRule) {
	for j, m := range rules {
		mp := idx(p, j)
		if m.Field == "" {
			v.errorf(mp+".field", "field is required")
		}
		switch {
		case m.Action == "":
			v.errorf(mp+".action", "action is required: %s", strings.Join(maskActions, ", "))
		case !slices.Contains(maskActions, m.Action):
			v.errorf(mp+".action", "unknown action %s: want %s", v.show(mp+".action", m.Action), strings.Join(maskActions, ", "))
		}
		if v.set(mp+".with") && m.Action != "redact" {
			v.errorf(mp+".with", "with applies only to action redact")
		}
		if m.Action == "hash" && (v.cfg.Masking == nil || v.cfg.Masking.HashKey == "") {
			v.errorf(mp+".action", "action hash needs masking.hash_key, a per-deployment secret of at least 16 bytes")
		}
	}
}

// maskHeaders checks a route's mask_headers: header names, each once, none that frames
// the response (redacting it would break the response, not hide data).
func (v *validator) maskHeaders(p string, names []string) {
	if v.set(p) && len(names) == 0 {
		v.errorf(p, "mask_headers is empty; leave it out to mask no header")
	}
	seen := map[string]bool{}
	for j, n := range names {
		np := idx(p, j)
		k := http.CanonicalHeaderKey(n)
		switch {
		case !validHeaderName(n):
			v.errorf(np, "%s is not a header name", v.show(np, n))
		case slices.Contains([]string{"Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "Trailer", "Connection", "X-Request-Id"}, k):
			v.errorf(np, "%s cannot be masked: the gateway or the client needs it to read the response", v.show(np, n))
		case seen[k]:
			v.errorf(np, "header %s is listed twice", v.show(np, n))
		}
		seen[k] = true
	}
}

// validHeaderName reports whether s is an RFC 9110 field name (a token).
func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}
