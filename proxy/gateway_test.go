package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/rules"
)

// The planted credential values: no log line, error body or metric may ever contain them.
const (
	crmKey     = "crm-key-7f3a9c-PLANTED-SECRET"
	billingKey = "billing-token-51e2-PLANTED-SECRET"
)

const testConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm:
    url: ${CRM_URL}/api
    timeout: 2s
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
  billing:
    url: ${BILLING_URL}
    timeout: 300ms
    credential: { header: Authorization, value: "Bearer ${BILLING_KEY}" }
  nowhere:
    url: ${NOWHERE_URL}
    timeout: 2s
guards:
  - name: no-sql-drop
    match: { methods: ["*"], path: "/*", when: { body_regex: "(?i)\\bdrop\\s+table\\b" } }
    deny: "destructive SQL is never forwarded"
routes:
  - name: crm-read-customer
    match: { methods: [GET], path: "/crm/customers/{id}" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { groups: [crm-readers], scopes: [crm.read] }
  - name: crm-create-customer
    match: { methods: [POST], path: /crm/customers }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { scopes: [crm.write] }
  - name: crm-delete-customer
    match: { methods: [DELETE], path: "/crm/customers/{id}" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { groups: [crm-writers] }
  - name: never-bulk-delete
    match: { methods: [DELETE, POST], path: "/crm/customers/bulk/*" }
    deny: "bulk deletion is not allowed through the gateway"
  - name: mcp-lookup
    match: { methods: [POST], path: /mcp, when: { body: { method: tools/call, "params.name": lookup_customer } } }
    upstream: crm
    allow: { scopes: [crm.read] }
  - name: mcp-other
    match: { methods: [POST], path: /mcp }
    deny: "tool not allowed"
  - name: tenant-read
    match: { methods: [GET], path: "/tenant/{id}", when: { headers: { X-Tenant: acme } } }
    upstream: crm
    allow: { scopes: [crm.read] }
  - name: billing-slow
    match: { methods: [GET], path: "/billing/*" }
    upstream: billing
    allow: { scopes: [billing.read] }
  - name: ws
    match: { methods: [GET], path: /ws }
    upstream: crm
    websocket: true
    allow: { scopes: [crm.read] }
  - name: down
    match: { methods: [GET], path: /down }
    upstream: nowhere
    allow: { scopes: [crm.read] }
limits:
  max_request_body: 1KiB
`

// harness is a gateway on a real listener with a real issuer and real upstreams.
type harness struct {
	iss     *testkit.Issuer
	crm     *testkit.Upstream
	billing *testkit.Upstream
	gw      *proxy.Gateway
	srv     *httptest.Server
	reg     *prometheus.Registry
	logs    *testkit.Buffer
	cfgEnv  map[string]string
	v       *identity.Verifier
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith is newHarness with a recorder for the gateway.
func newHarnessWith(t testing.TB, rec proxy.Recorder) *harness {
	t.Helper()
	return newHarnessFull(t, rec, nil)
}

// newHarnessFull is newHarness with a recorder and approvals for the gateway.
func newHarnessFull(t testing.TB, rec proxy.Recorder, ap proxy.Approvals) *harness {
	t.Helper()
	h := &harness{iss: testkit.NewIssuer(t), crm: testkit.NewUpstream(t), billing: testkit.NewUpstream(t), logs: &testkit.Buffer{}}
	h.billing.Respond = func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/billing/slow" {
			time.Sleep(time.Second)
		}
		fmt.Fprint(w, `{"ok":true}`)
	}
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	h.cfgEnv = map[string]string{
		"ISSUER": h.iss.Config().Issuer, "CRM_URL": h.crm.URL, "BILLING_URL": h.billing.URL,
		"NOWHERE_URL": deadURL, "CRM_KEY": crmKey, "BILLING_KEY": billingKey,
	}
	h.reg = prometheus.NewRegistry()
	m, err := metrics.New(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(h.logs, nil))
	h.gw = proxy.New(log, m, rec, ap)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.v, err = identity.New(ctx, []config.Issuer{withAudience(h.iss.Config(), "api://keyhole")}, identity.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.v.Close)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := h.v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	h.load(t, testConfig)
	h.srv = httptest.NewServer(h.gw)
	t.Cleanup(h.srv.Close)
	return h
}

func withAudience(c config.Issuer, aud string) config.Issuer {
	c.Audiences = []string{aud}
	return c
}

// load parses and installs a config, as a reload does, and returns its rule table.
func (h *harness) load(t testing.TB, yaml string) *rules.Table {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), t.TempDir(), func(k string) string { return h.cfgEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.gw.NewState(cfg, table, h.v, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.gw.Swap(st)
	return table
}

func (h *harness) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	c := map[string]any{"aud": "api://keyhole"}
	for k, v := range claims {
		c[k] = v
	}
	return h.iss.Token(t, c)
}

// do sends a request through the gateway with Go's client.
func (h *harness) do(t testing.TB, method, path, token, body string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// raw sends bytes exactly as given on a fresh TCP connection and returns the status code.
func (h *harness) raw(t testing.TB, request string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", request, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type errBody struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func decodeErr(t testing.TB, resp *http.Response, b []byte) errBody {
	t.Helper()
	var e errBody
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", b, err)
	}
	if e.RequestID == "" || e.RequestID != resp.Header.Get("X-Request-Id") {
		t.Errorf("request_id %q, X-Request-Id %q: want equal and non-empty", e.RequestID, resp.Header.Get("X-Request-Id"))
	}
	return e
}

func TestDecisionsEndToEnd(t *testing.T) {
	h := newHarness(t)
	reader := map[string]any{"sub": "ada@acme.example", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}}
	writer := map[string]any{"sub": "0oawriter", "cid": "0oawriter", "scp": []string{"crm.write"}}
	tests := []struct {
		name       string
		method     string
		path       string
		claims     map[string]any
		body       string
		wantStatus int
		wantCode   string
		wantMsg    string
		wantURI    string // what the upstream must receive; "" = nothing
	}{
		{"allowed read", "GET", "/crm/customers/42?expand=profile", reader, "", 200, "", "", "/api/customers/42?expand=profile"},
		{"HEAD judged as GET", "HEAD", "/crm/customers/42", reader, "", 200, "", "", "/api/customers/42"},
		{"encoded unreserved is canonicalised", "GET", "/crm/customers/%34%32", reader, "", 200, "", "", "/api/customers/42"},
		{"non-ASCII path forwarded as matched", "GET", "/crm/customers/J%C3%B6rg", reader, "", 200, "", "", "/api/customers/J%C3%B6rg"},
		{"forbidden: reader deletes", "DELETE", "/crm/customers/42", reader, "", 403, "forbidden", "route crm-delete-customer requires group crm-writers", ""},
		{"forbidden: client-credentials token has no groups", "GET", "/crm/customers/42", writer, "", 403, "forbidden", "crm-readers", ""},
		{"allowed: client-credentials create", "POST", "/crm/customers", writer, `{"name":"x"}`, 200, "", "", "/api/customers"},
		{"denied route", "POST", "/crm/customers/bulk/delete", writer, "", 403, "denied", "bulk deletion is not allowed through the gateway", ""},
		{"guard denies before the route", "POST", "/crm/customers", writer, `{"note":"drop  TABLE customers"}`, 403, "denied", "destructive SQL is never forwarded", ""},
		{"no route", "GET", "/crm/admin", reader, "", 404, "no_route", "", ""},
		{"no fall-through on method", "PUT", "/crm/customers/42", reader, "", 404, "no_route", "", ""},
		{"MCP allowed tool", "POST", "/mcp", reader, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer"}}`, 200, "", "", "/api/mcp"},
		{"MCP other tool denied", "POST", "/mcp", reader, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_customer"}}`, 403, "denied", "tool not allowed", ""},
		{"MCP batch refused", "POST", "/mcp", reader, `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_customer"}}]`, 400, "bad_request", "", ""},
		{"MCP duplicate keys refused", "POST", "/mcp", reader, `{"method":"tools/call","params":{"name":"lookup_customer","name":"delete_customer"}}`, 400, "bad_request", "", ""},
		{"MCP invalid JSON refused", "POST", "/mcp", reader, `{"method":"tools/call",`, 400, "bad_request", "", ""},
		{"body over the limit", "POST", "/crm/customers", writer, `{"name":"` + strings.Repeat("x", 2048) + `"}`, 413, "body_too_large", "", ""},
		{"malformed query", "GET", "/crm/customers/42?a=%zz", reader, "", 400, "bad_request", "", ""},
		{"TRACE refused", "TRACE", "/crm/customers/42", reader, "", 405, "method_not_allowed", "", ""},
		{"unknown method refused", "PURGE", "/crm/customers/42", reader, "", 405, "method_not_allowed", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			resp, b := h.do(t, tt.method, tt.path, h.token(t, tt.claims), tt.body, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, resp.StatusCode, b, tt.wantStatus)
			}
			if tt.wantCode != "" {
				e := decodeErr(t, resp, b)
				if e.Error != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) {
					t.Errorf("error = %q %q, want %q containing %q", e.Error, e.Message, tt.wantCode, tt.wantMsg)
				}
			}
			got := h.crm.Requests()
			switch {
			case tt.wantURI == "" && len(got) != 0:
				t.Errorf("upstream received %d requests (%s), want none", len(got), got[0].RequestURI)
			case tt.wantURI != "" && len(got) != 1:
				t.Errorf("upstream received %d requests, want 1", len(got))
			case tt.wantURI != "":
				if got[0].RequestURI != tt.wantURI || got[0].Method != tt.method {
					t.Errorf("upstream received %s %s, want %s %s", got[0].Method, got[0].RequestURI, tt.method, tt.wantURI)
				}
				if got[0].Body != tt.body {
					t.Errorf("upstream body = %q, want %q", got[0].Body, tt.body)
				}
			}
		})
	}
}

func TestCredentialInjectionAndHeaderHygiene(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	spoofed := http.Header{
		"X-Forwarded-For":        {"6.6.6.6"},
		"X-Forwarded-Host":       {"evil.example"},
		"X-Forwarded-Proto":      {"https"},
		"Forwarded":              {"for=6.6.6.6;host=evil.example"},
		"X-Real-Ip":              {"6.6.6.6"},
		"True-Client-Ip":         {"6.6.6.6"},
		"X-Http-Method-Override": {"DELETE"},
		"X-Method-Override":      {"DELETE"},
		"X-Http-Method":          {"DELETE"},
		"X-Original-Url":         {"/admin"},
		"X-Rewrite-Url":          {"/admin"},
		"Cookie":                 {"session=victim"},
		"Proxy-Authorization":    {"Basic Zm9vOmJhcg=="},
		"X-Keyhole-Approval":     {"forged"},
		"X-Api-Key":              {"client-chosen-key"},
		"X-Request-Id":           {"client-chosen-id"},
		"X_api_key":              {"client-chosen-key"},
	}
	for _, conn := range []string{"", "X-Api-Key", "Authorization", "X-Api-Key, Authorization, X-Request-Id"} {
		t.Run("Connection="+conn, func(t *testing.T) {
			h.crm.Reset()
			hdr := spoofed.Clone()
			if conn != "" {
				hdr.Set("Connection", conn)
			}
			resp, b := h.do(t, "GET", "/crm/customers/1", tok, "", hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s, want 200", resp.StatusCode, b)
			}
			reqs := h.crm.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0].Header
			if v := got.Values("X-Api-Key"); len(v) != 1 || v[0] != crmKey {
				t.Errorf("upstream X-Api-Key = %q, want the injected key only", v)
			}
			if v := got.Get("Authorization"); v != "" {
				t.Errorf("upstream Authorization = %q, want none (the client's token must not reach it)", v)
			}
			for k := range spoofed {
				if k == "X-Api-Key" || k == "X-Request-Id" || strings.HasPrefix(k, "X-Forwarded-") {
					continue
				}
				if v := got.Values(k); len(v) != 0 {
					t.Errorf("upstream %s = %q, want it stripped", k, v)
				}
			}
			if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
				t.Errorf("upstream X-Forwarded-For = %q, want [127.0.0.1] (the real peer)", v)
			}
			if v := got.Values("X-Forwarded-Host"); len(v) != 0 {
				t.Errorf("upstream X-Forwarded-Host = %q, want none (it would repeat the client's Host)", v)
			}
			if v := got.Values("X-Forwarded-Proto"); len(v) != 1 || v[0] != "http" {
				t.Errorf("upstream X-Forwarded-Proto = %q, want [http]", v)
			}
			if v := got.Get("X-Request-Id"); v != resp.Header.Get("X-Request-Id") || v == "client-chosen-id" {
				t.Errorf("upstream X-Request-Id = %q, want the gateway's %q", v, resp.Header.Get("X-Request-Id"))
			}
			if strings.Contains(string(b), tok) {
				t.Error("the client's token reached the upstream")
			}
		})
	}
	t.Run("Authorization credential", func(t *testing.T) {
		h.billing.Reset()
		h.billing.Respond = nil
		btok := h.token(t, map[string]any{"sub": "0oab", "cid": "0oab", "scp": []string{"billing.read"}})
		hdr := http.Header{"Connection": {"Authorization"}}
		resp, b := h.do(t, "GET", "/billing/invoices", btok, "", hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		reqs := h.billing.Requests()
		if len(reqs) != 1 {
			t.Fatalf("billing got %d requests, want 1", len(reqs))
		}
		if v := reqs[0].Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer "+billingKey {
			t.Errorf("upstream Authorization = %q, want the injected credential only", v)
		}
	})
}

func TestTwoAuthorizationHeadersAndQueryTokens(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	tests := []struct {
		name string
		req  string
	}{
		{"no token", "GET /crm/customers/1 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"token in the query only", "GET /crm/customers/1?access_token=" + tok + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"two Authorization headers", "GET /crm/customers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nAuthorization: Bearer " + tok + "\r\n\r\n"},
		{"Basic scheme", "GET /crm/customers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + tok + "\r\n\r\n"},
		{"garbage token", "GET /crm/customers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not.a.jwt\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			status, body := h.raw(t, tt.req)
			if status != 401 || !strings.Contains(body, `"unauthenticated"`) {
				t.Errorf("status %d %s, want 401 unauthenticated", status, body)
			}
			if strings.Contains(body, tok) {
				t.Error("error body echoes the token")
			}
			if n := len(h.crm.Requests()); n != 0 {
				t.Errorf("upstream received %d requests, want none", n)
			}
		})
	}
	resp, _ := h.do(t, "GET", "/crm/customers/1", "", "", nil)
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
	}
	expired := h.token(t, map[string]any{"sub": "ada", "exp": time.Now().Add(-time.Minute).Unix()})
	resp, _ = h.do(t, "GET", "/crm/customers/1", expired, "", nil)
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate = %q, want error=\"invalid_token\"", got)
	}
	if got := counterValue(t, h.reg, "keyhole_auth_failures_total", "reason", "expired"); got != 1 {
		t.Errorf("keyhole_auth_failures_total{reason=expired} = %v, want 1", got)
	}
}

// TestPathTricksOverRawTCP sends request targets the way an attacker would, bypassing the
// cleaning Go's client and curl do, and checks each is refused or forwarded exactly as matched.
func TestPathTricksOverRawTCP(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers", "crm-writers"}, "scp": []string{"crm.read"}})
	tests := []struct {
		target  string
		want    int
		wantURI string
	}{
		{"/crm/customers/1", 200, "/api/customers/1"},
		{"/crm/customers/../admin", 400, ""},
		{"/crm/customers/./1", 400, ""},
		{"/crm/customers/%2e%2e/admin", 400, ""},
		{"/crm/customers/%2E%2E%2Fadmin", 400, ""},
		{"/crm/customers/..%2fadmin", 400, ""},
		{"/crm/customers/1%2f..%2f..%2fadmin", 400, ""},
		{"/crm/customers/%252e%252e", 400, ""},
		{"/crm//customers/1", 400, ""},
		{"/crm/customers/1;jsessionid=x", 400, ""},
		{"/crm/customers/1%3bx=y", 400, ""},
		{"/crm/customers/1%00", 400, ""},
		{"/crm/customers/1%5c..%5cadmin", 400, ""},
		{"/crm/customers/%c0%ae%c0%ae", 400, ""},
		{"/crm/customers/1#frag", 400, ""},
		{"http://evil.example/crm/customers/1", 400, ""},
		{"/crm/customers/%31", 200, "/api/customers/1"},
		{"/crm/customers/a%20b", 200, "/api/customers/a%20b"},
		{"/crm/customers/a%3Fb", 200, "/api/customers/a%3Fb"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			h.crm.Reset()
			status, body := h.raw(t, "GET "+tt.target+" HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
			if status != tt.want {
				t.Fatalf("GET %s = %d %s, want %d", tt.target, status, body, tt.want)
			}
			reqs := h.crm.Requests()
			if tt.wantURI == "" {
				if len(reqs) != 0 {
					t.Errorf("upstream received %s, want nothing", reqs[0].RequestURI)
				}
				if !strings.Contains(body, `"bad_request"`) {
					t.Errorf("body %s, want bad_request JSON", body)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].RequestURI != tt.wantURI {
				t.Errorf("upstream received %v, want exactly %s", reqs, tt.wantURI)
			}
		})
	}
	t.Run("NUL byte", func(t *testing.T) {
		status, _ := h.raw(t, "GET /crm/customers/1\x00 HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
		if status != 400 {
			t.Errorf("status %d, want 400", status)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		status, _ := h.raw(t, "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
		if status != 405 && status != 400 {
			t.Errorf("status %d, want 405 or 400", status)
		}
	})
}

func TestUpgrades(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}
	for _, tt := range []struct{ name, path, upgrade string }{
		{"h2c on a plain route", "/crm/customers/1", "h2c"},
		{"websocket on a plain route", "/crm/customers/1", "websocket"},
		{"h2c on a websocket route", "/ws", "h2c"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			status, body := h.raw(t, "GET "+tt.path+" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+tt.upgrade+"\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
			if status != 400 || !strings.Contains(body, "upgrade") {
				t.Errorf("status %d %s, want 400 naming the upgrade", status, body)
			}
			if n := len(h.crm.Requests()); n != 0 {
				t.Errorf("upstream received %d requests, want none", n)
			}
		})
	}
	t.Run("websocket on a websocket route", func(t *testing.T) {
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer %s\r\n\r\n", tok)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade = %v %v, want 101", resp, err)
		}
		fmt.Fprint(conn, "hello\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "echo hello\n" {
			t.Errorf("tunnel echo = %q %v", line, err)
		}
	})
}

func TestUpstreamFailures(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "0oab", "cid": "0oab", "scp": []string{"billing.read", "crm.read"}})
	tests := []struct {
		path, code string
		status     int
	}{
		{"/billing/slow", "upstream_timeout", 504},
		{"/down", "upstream_error", 502},
	}
	for _, tt := range tests {
		resp, b := h.do(t, "GET", tt.path, tok, "", nil)
		if resp.StatusCode != tt.status {
			t.Fatalf("GET %s = %d %s, want %d", tt.path, resp.StatusCode, b, tt.status)
		}
		e := decodeErr(t, resp, b)
		if e.Error != tt.code {
			t.Errorf("GET %s error = %q, want %q", tt.path, e.Error, tt.code)
		}
		for _, leak := range []string{h.billing.URL, h.cfgEnv["NOWHERE_URL"], "127.0.0.1", "dial", "goroutine"} {
			if strings.Contains(string(b), leak) {
				t.Errorf("GET %s body %s leaks %q", tt.path, b, leak)
			}
		}
	}
	if got := counterValue(t, h.reg, "keyhole_upstream_errors_total", "upstream", "billing", "kind", "timeout"); got != 1 {
		t.Errorf("upstream timeout errors = %v, want 1", got)
	}
	if got := counterValue(t, h.reg, "keyhole_upstream_errors_total", "upstream", "nowhere", "kind", "connect"); got != 1 {
		t.Errorf("upstream connect errors = %v, want 1", got)
	}
}

func TestStreamedBodyOverLimit(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "0oaw", "cid": "0oaw", "scp": []string{"crm.write"}})
	// Chunked, so the size is unknown until read.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 8; i++ {
			pw.Write(bytes.Repeat([]byte("a"), 512))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", h.srv.URL+"/crm/customers", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 413 {
		b, _ := io.ReadAll(resp.Body)
		t.Errorf("chunked 4 KiB body = %d %s, want 413", resp.StatusCode, b)
	}
}

// TestSecretsNeverLeak plants credential values and greps every output for them.
func TestSecretsNeverLeak(t *testing.T) {
	h := newHarness(t)
	reader := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "billing.read"}})
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"id":1}`) }
	var bodies bytes.Buffer
	for _, r := range []struct{ method, path, token string }{
		{"GET", "/crm/customers/1", reader},
		{"DELETE", "/crm/customers/1", reader},
		{"GET", "/nowhere", reader},
		{"GET", "/crm/customers/1", ""},
		{"GET", "/crm/customers/1", "bad"},
		{"GET", "/down", reader},
		{"GET", "/billing/slow", reader},
		{"GET", "/billing/x", reader},
	} {
		resp, b := h.do(t, r.method, r.path, r.token, "", nil)
		bodies.Write(b)
		for k, v := range resp.Header {
			fmt.Fprintf(&bodies, "%s: %s\n", k, v)
		}
	}
	var metricsOut bytes.Buffer
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		fmt.Fprintln(&metricsOut, mf.String())
	}
	for name, out := range map[string]string{"logs": h.logs.String(), "responses": bodies.String(), "metrics": metricsOut.String()} {
		for _, secret := range []string{crmKey, billingKey, reader} {
			if strings.Contains(out, secret) {
				t.Errorf("%s contain a planted secret %.12s...", name, secret)
			}
		}
	}
	if !strings.Contains(h.logs.String(), `"route":"crm-read-customer"`) {
		t.Errorf("logs lack the access line of an allowed request:\n%s", h.logs.String())
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "cid": "0oaconsole", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	resp, _ := h.do(t, "GET", "/crm/customers/7", tok, "", nil)
	h.do(t, "DELETE", "/crm/customers/7", tok, "", nil)
	h.do(t, "GET", "/crm/customers/7/secret-"+strings.Repeat("x", 5), tok, "", nil)
	id := resp.Header.Get("X-Request-Id")
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["request_id"] == id {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no log line with request_id %s in\n%s", id, h.logs.String())
	}
	for k, want := range map[string]any{"route": "crm-read-customer", "decision": "allowed", "status": float64(200),
		"subject": "ada", "client_id": "0oaconsole", "upstream": "crm", "path": "/crm/customers/7", "method": "GET"} {
		if line[k] != want {
			t.Errorf("log %s = %v, want %v", k, line[k], want)
		}
	}
	for _, k := range []string{"duration_ms", "upstream_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line lacks %s", k)
		}
	}
	want := `
# HELP keyhole_requests_total Data-plane requests by route, method, status code and decision.
# TYPE keyhole_requests_total counter
keyhole_requests_total{code="200",decision="allowed",method="GET",route="crm-read-customer"} 1
keyhole_requests_total{code="403",decision="forbidden",method="DELETE",route="crm-delete-customer"} 1
keyhole_requests_total{code="404",decision="no_route",method="GET",route=""} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "keyhole_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h.reg, "keyhole_upstream_duration_seconds"); n != 1 {
		t.Errorf("keyhole_upstream_duration_seconds has %d series, want 1 (upstream crm)", n)
	}
}

func TestSwapAppliesNewRules(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	if resp, _ := h.do(t, "GET", "/crm/customers/1", tok, "", nil); resp.StatusCode != 200 {
		t.Fatalf("before swap: %d, want 200", resp.StatusCode)
	}
	h.load(t, strings.Replace(testConfig, "allow: { groups: [crm-readers], scopes: [crm.read] }", "allow: { groups: [crm-auditors] }", 1))
	if resp, _ := h.do(t, "GET", "/crm/customers/1", tok, "", nil); resp.StatusCode != 403 {
		t.Fatalf("after swap: %d, want 403", resp.StatusCode)
	}
}

// counterValue returns the value of the counter name with the given label pairs, 0 if absent.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestUnauthorizedSaysWhy checks that a 401 names what is wrong with the token, in the
// spec's JSON error and in the challenge's error_description: an expired token, and one
// signed by a key the issuer does not publish (a demo restarted with a new key, a forgery).
func TestUnauthorizedSaysWhy(t *testing.T) {
	h := newHarness(t)
	claims := map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}}
	expired := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "exp": time.Now().Add(-time.Minute).Unix()})
	unpublished := h.iss.Sign(t, h.iss.NewKey(t, "RS256"), nil, claims)
	for _, c := range []struct{ name, token, want string }{
		{"expired", expired, "token expired"},
		{"unpublished key", unpublished, "token is signed by a key this issuer does not publish"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := h.do(t, "GET", "/crm/customers/1", c.token, "", nil)
			var body struct {
				Error, Message string
				RequestID      string `json:"request_id"`
			}
			json.Unmarshal(b, &body)
			if resp.StatusCode != 401 || body.Error != "unauthenticated" || body.Message != c.want || body.RequestID == "" ||
				body.RequestID != resp.Header.Get("X-Request-Id") {
				t.Errorf("GET with an %s token = %d %s, want 401 unauthenticated %q with the request id", c.name, resp.StatusCode, b, c.want)
			}
			want := `Bearer realm="keyhole", error="invalid_token", error_description="` + c.want + `"`
			if got := resp.Header.Get("WWW-Authenticate"); got != want {
				t.Errorf("WWW-Authenticate = %q, want %q", got, want)
			}
		})
	}
}
