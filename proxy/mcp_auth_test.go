package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

const mcpAuthConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm-mcp:
    url: ${MCP_URL}
    timeout: 2s
  crm:
    url: ${CRM_URL}
routes:
  - name: crm-mcp
    match: { methods: [POST, GET, DELETE], path: /crm/mcp }
    upstream: crm-mcp
    allow: { groups: [agents], scopes: [mcp.use] }
    mcp:
      resource: ${RESOURCE}
      tools:
        - name: lookup_customer
          allow: { scopes: [crm.read] }
        - name: delete_customer
          allow: { groups: [crm-writers], scopes: [crm.write] }
  - name: crm-read
    match: { methods: [GET], path: "/crm/customers/{id}" }
    upstream: crm
    allow: { groups: [agents] }
  - name: not-mcp-same-path
    match: { methods: [PUT], path: /crm/mcp }
    upstream: crm
    allow: { groups: [agents] }
`

// authHarness is a gateway with an mcp route whose resource is the gateway's own URL,
// in front of an MCP server on the Go SDK that keeps the Authorization headers it saw.
type authHarness struct {
	*harness
	resource string
	mu       sync.Mutex
	authSeen []string
}

func newAuthHarness(t *testing.T, cfg string) *authHarness {
	h := &authHarness{harness: newHarness(t)}
	server := &mcpServer{}
	inner := server.handler(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.authSeen = append(h.authSeen, r.Header.Values("Authorization")...)
		h.mu.Unlock()
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	h.resource = h.srv.URL + "/crm/mcp"
	h.cfgEnv["MCP_URL"], h.cfgEnv["RESOURCE"] = up.URL, h.resource
	h.load(t, cfg)
	return h
}

// challenge returns the params of the one Bearer challenge of resp, parsed by the SDK.
func challenge(t *testing.T, resp *http.Response) map[string]string {
	t.Helper()
	cs, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("Www-Authenticate"))
	if err != nil || len(cs) != 1 || cs[0].Scheme != "bearer" {
		t.Fatalf("WWW-Authenticate %q: got %+v, %v, want one Bearer challenge", resp.Header.Values("Www-Authenticate"), cs, err)
	}
	return cs[0].Params
}

func TestMCPDiscoveryFromA401ToTheIssuer(t *testing.T) {
	h := newAuthHarness(t, mcpAuthConfig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`
	hdr := http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"}}

	// 1. No token: 401 naming the metadata and the scopes to ask for.
	resp, _ := h.do(t, http.MethodPost, "/crm/mcp", "", initialize, hdr)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: got %d, want 401", resp.StatusCode)
	}
	params := challenge(t, resp)
	metaURL := params["resource_metadata"]
	if want := h.srv.URL + "/.well-known/oauth-protected-resource/crm/mcp"; metaURL != want {
		t.Errorf("resource_metadata: got %q, want %q", metaURL, want)
	}
	if got, want := params["scope"], "crm.read crm.write mcp.use"; got != want {
		t.Errorf("scope: got %q, want %q (every scope the route's policy names)", got, want)
	}
	if _, ok := params["error"]; ok {
		t.Errorf("no token: got error=%q, want no error parameter (RFC 6750 §3.1)", params["error"])
	}

	// 2. The metadata, fetched without a token and checked by the SDK (resource matches).
	prm, err := oauthex.GetProtectedResourceMetadata(ctx, metaURL, h.resource, http.DefaultClient)
	if err != nil {
		t.Fatalf("protected resource metadata: %v", err)
	}
	if !slices.Equal(prm.AuthorizationServers, []string{h.iss.URL}) || !slices.Equal(prm.ScopesSupported, []string{"crm.read", "crm.write", "mcp.use"}) ||
		!slices.Equal(prm.BearerMethodsSupported, []string{"header"}) {
		t.Errorf("metadata: got %+v, want the issuer, the policy's scopes and header bearer method", prm)
	}
	// With one mcp route with a resource, the root document is the same.
	root, err := oauthex.GetProtectedResourceMetadata(ctx, h.srv.URL+"/.well-known/oauth-protected-resource", h.resource, http.DefaultClient)
	if err != nil || root.Resource != h.resource {
		t.Errorf("root metadata: got %+v, %v, want the one resource's", root, err)
	}

	// 3. The authorization server's discovery document, at the issuer the metadata names.
	dresp, err := http.Get(prm.AuthorizationServers[0] + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		JWKSURI       string `json:"jwks_uri"`
	}
	err = json.NewDecoder(dresp.Body).Decode(&disc)
	dresp.Body.Close()
	if err != nil || disc.Issuer != h.iss.URL || disc.TokenEndpoint == "" || disc.JWKSURI == "" {
		t.Fatalf("issuer discovery: got %+v, %v, want the issuer's endpoints", disc, err)
	}

	// 4. A token issued for the resource (RFC 8707 audience): the SDK client connects,
	// lists and calls; the token never reaches the MCP server.
	tok := h.iss.Token(t, map[string]any{"aud": h.resource, "sub": "agent-1", "groups": []string{"agents"}, "scp": []string{"mcp.use", "crm.read"}})
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.resource,
		HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("initialize with a token for the resource: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"id": 1}})
	if err != nil || res.IsError {
		t.Fatalf("allowed call: got %+v, %v", res, err)
	}
	h.mu.Lock()
	seen := slices.Clone(h.authSeen)
	h.mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("the MCP server saw Authorization %q, want none: the client's token never goes upstream", seen)
	}
}

func TestMCPAudience(t *testing.T) {
	h := newAuthHarness(t, mcpAuthConfig)
	hdr := http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"}}
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	claims := func(aud string) map[string]any {
		return map[string]any{"aud": aud, "sub": "agent-1", "groups": []string{"agents"}, "scp": []string{"mcp.use"}}
	}
	tests := []struct {
		name, aud, path string
		status          int
	}{
		{"resource token on its route", h.resource, "/crm/mcp", http.StatusOK},
		{"configured audience on the mcp route", "api://keyhole", "/crm/mcp", http.StatusOK},
		{"another resource's token", h.srv.URL + "/other/mcp", "/crm/mcp", http.StatusUnauthorized},
		{"resource token on another route", h.resource, "/crm/customers/1", http.StatusUnauthorized},
		{"resource token on another route at the same path", h.resource, "PUT /crm/mcp", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, body, path := http.MethodPost, ping, tt.path
			if m, p, ok := strings.Cut(tt.path, " "); ok {
				method, path = m, p
			} else if tt.path != "/crm/mcp" {
				method, body = http.MethodGet, ""
			}
			// Twice: a token accepted for the resource must not be cached for other routes.
			for range 2 {
				resp, b := h.do(t, method, path, h.iss.Token(t, claims(tt.aud)), body, hdr)
				if resp.StatusCode != tt.status {
					t.Fatalf("got %d %s, want %d", resp.StatusCode, b, tt.status)
				}
				if tt.status == http.StatusUnauthorized && path == "/crm/mcp" {
					p := challenge(t, resp)
					if p["error"] != "invalid_token" || p["resource_metadata"] == "" {
						t.Errorf("bad token's challenge: got %v, want error=invalid_token and resource_metadata", p)
					}
				}
			}
		})
	}
	// The resource token used on the other route first, then on its own: still accepted.
	tok := h.iss.Token(t, claims(h.resource))
	if resp, _ := h.do(t, http.MethodGet, "/crm/customers/1", tok, "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("resource token on another route: got %d, want 401", resp.StatusCode)
	}
	if resp, b := h.do(t, http.MethodPost, "/crm/mcp", tok, ping, hdr); resp.StatusCode != http.StatusOK {
		t.Errorf("then on its route: got %d %s, want 200", resp.StatusCode, b)
	}
}

func TestMCPInsufficientScope(t *testing.T) {
	h := newAuthHarness(t, mcpAuthConfig)
	hdr := http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"}}
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	call := func(tool string) string {
		return `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"id":1}}}`
	}
	tok := func(groups []string, scopes ...string) string {
		return h.token(t, map[string]any{"sub": "agent-1", "groups": groups, "scp": scopes})
	}
	agents := []string{"agents"}
	tests := []struct {
		name, token, body string
		status            int
		scope             string // the insufficient_scope challenge's scope, "" for none
	}{
		{"route allow lacks a scope: HTTP 403 to step up on", tok(agents), ping, http.StatusForbidden, "mcp.use"},
		{"route allow lacks a group: no step-up", tok(nil, "mcp.use"), ping, http.StatusForbidden, ""},
		{"tool allow lacks a scope: MCP result, with the challenge", tok(agents, "mcp.use"), call("lookup_customer"), http.StatusOK, "crm.read"},
		{"tool allow lacks a group: MCP result only", tok(agents, "mcp.use", "crm.write"), call("delete_customer"), http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := h.do(t, http.MethodPost, "/crm/mcp", tt.token, tt.body, hdr)
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, b, tt.status)
			}
			if tt.status == http.StatusOK && !strings.Contains(string(b), `"isError":true`) {
				t.Errorf("got %s, want an isError tool result", b)
			}
			if tt.scope == "" {
				if v := resp.Header.Get("Www-Authenticate"); strings.Contains(v, "insufficient_scope") {
					t.Errorf("got WWW-Authenticate %q, want no insufficient_scope: a new scope would not help", v)
				}
				return
			}
			p := challenge(t, resp)
			if p["error"] != "insufficient_scope" || p["scope"] != tt.scope {
				t.Errorf("got challenge %v, want error=insufficient_scope scope=%q", p, tt.scope)
			}
		})
	}
}

func TestMCPDiscoveryRoot(t *testing.T) {
	two := mcpAuthConfig + `
  - name: billing-mcp
    match: { methods: [POST, GET, DELETE], path: /billing/mcp }
    upstream: crm-mcp
    allow: { groups: [agents] }
    mcp:
      resource: ${BILLING_RESOURCE}
`
	h := newHarness(t)
	h.cfgEnv["MCP_URL"], h.cfgEnv["RESOURCE"], h.cfgEnv["BILLING_RESOURCE"] = h.crm.URL, h.srv.URL+"/crm/mcp", h.srv.URL+"/billing/mcp"
	h.load(t, two)
	tests := []struct {
		path     string
		status   int
		resource string
	}{
		{"/.well-known/oauth-protected-resource/crm/mcp", http.StatusOK, h.srv.URL + "/crm/mcp"},
		{"/.well-known/oauth-protected-resource/billing/mcp", http.StatusOK, h.srv.URL + "/billing/mcp"},
		// Two resources: the root names neither, and is not served.
		{"/.well-known/oauth-protected-resource", http.StatusUnauthorized, ""},
		{"/.well-known/oauth-protected-resource/nothing", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		resp, b := h.do(t, http.MethodGet, tt.path, "", "", nil)
		var doc struct{ Resource string }
		_ = json.Unmarshal(b, &doc)
		if resp.StatusCode != tt.status || doc.Resource != tt.resource {
			t.Errorf("GET %s: got %d %s, want %d with resource %q", tt.path, resp.StatusCode, b, tt.status, tt.resource)
		}
	}
}
