package identity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// devServer mounts a dev issuer the way the admin plane does: under the issuer
// URL's path, with http.StripPrefix.
func devServer(t *testing.T) (*identity.DevIssuer, *httptest.Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + srv.Listener.Addr().String() + "/dev"
	d, err := identity.NewDevIssuer(issuerURL)
	if err != nil {
		t.Fatalf("NewDevIssuer: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dev/", http.StripPrefix("/dev", d.Handler()))
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return d, srv
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s = %d %s, want 200 application/json", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
}

func TestDevIssuerDiscovery(t *testing.T) {
	d, _ := devServer(t)
	cfg := d.Config()
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Token   string   `json:"token_endpoint"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	getJSON(t, cfg.Issuer+"/.well-known/openid-configuration", &doc)
	if doc.Issuer != cfg.Issuer || doc.JWKSURI != cfg.Issuer+"/keys" || doc.Token != cfg.Issuer+"/token" || !slices.Equal(doc.Algs, []string{"RS256"}) {
		t.Errorf("discovery = %+v, want issuer %s with /keys, /token, RS256", doc, cfg.Issuer)
	}
	// go-oidc accepts the document (it checks the issuer matches exactly).
	if _, err := oidc.NewProvider(t.Context(), cfg.Issuer); err != nil {
		t.Errorf("oidc.NewProvider: %v", err)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	getJSON(t, doc.JWKSURI, &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0]["kid"] != d.KeyID() || jwks.Keys[0]["alg"] != "RS256" || jwks.Keys[0]["kty"] != "RSA" || jwks.Keys[0]["d"] != nil {
		t.Errorf("jwks = %v, want one public RSA key with kid %s", jwks, d.KeyID())
	}
	want := config.Issuer{Issuer: cfg.Issuer, Audiences: []string{"keyhole-dev"}, GroupsClaim: "groups", ScopesClaim: "scp",
		Algorithms: []string{"RS256"}, JWKSURL: cfg.Issuer + "/keys"}
	if got := d.Config(); !equalIssuer(got, want) {
		t.Errorf("Config() = %+v, want %+v", got, want)
	}
}

func equalIssuer(a, b config.Issuer) bool {
	return a.Issuer == b.Issuer && slices.Equal(a.Audiences, b.Audiences) && a.GroupsClaim == b.GroupsClaim &&
		a.ScopesClaim == b.ScopesClaim && slices.Equal(a.Algorithms, b.Algorithms) && a.JWKSURL == b.JWKSURL
}

func TestDevIssuerTokensVerify(t *testing.T) {
	d, _ := devServer(t)
	v := newVerifier(t, d.Config(), identity.Options{})
	user, err := d.Mint(identity.TokenRequest{Subject: "alice", Groups: []string{"crm-readers"}, Scopes: []string{"crm.read"},
		TTL: 30 * time.Minute, Claims: map[string]any{"tenant": "acme"}})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	p, err := v.Verify(t.Context(), user)
	if err != nil {
		t.Fatalf("Verify(user token): %v", err)
	}
	if p.Subject != "alice" || p.ClientID != identity.DevClientID || !slices.Equal(p.Groups, []string{"crm-readers"}) ||
		!slices.Equal(p.Scopes, []string{"crm.read"}) || p.Claims["tenant"] != "acme" {
		t.Errorf("principal = %+v", p)
	}
	if d := time.Until(p.Expiry); d < 29*time.Minute || d > 30*time.Minute {
		t.Errorf("Expiry in %s, want 30m", d)
	}
	svc, err := d.Mint(identity.TokenRequest{ClientID: "0oasvc", Subject: "0oasvc", Scopes: []string{"crm.read"}})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	p, err = v.Verify(t.Context(), svc)
	if err != nil {
		t.Fatalf("Verify(client-credentials token): %v", err)
	}
	if p.Subject != "0oasvc" || p.ClientID != "0oasvc" || p.Groups != nil {
		t.Errorf("principal = %+v, want sub = cid = 0oasvc, no groups", p)
	}
}

// decodeSegment returns the JSON object of segment i of a compact JWS.
func decodeSegment(t *testing.T, raw string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[i])
	if err != nil {
		t.Fatalf("decode segment %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode segment %d: %v", i, err)
	}
	return m
}

func TestDevIssuerMintShape(t *testing.T) {
	d, err := identity.NewDevIssuer("https://keyhole.local/dev")
	if err != nil {
		t.Fatalf("NewDevIssuer: %v", err)
	}
	user, err := d.Mint(identity.TokenRequest{Subject: "alice", Groups: []string{"g"}, Scopes: []string{"s"}})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	h := decodeSegment(t, user, 0)
	if len(h) != 2 || h["alg"] != "RS256" || h["kid"] != d.KeyID() {
		t.Errorf("header = %v, want exactly alg RS256 and kid %s", h, d.KeyID())
	}
	c := decodeSegment(t, user, 1)
	for _, k := range []string{"ver", "jti", "iss", "aud", "iat", "exp", "cid", "uid", "scp", "sub", "groups"} {
		if _, ok := c[k]; !ok {
			t.Errorf("user token lacks %s: %v", k, c)
		}
	}
	if c["iss"] != "https://keyhole.local/dev" || c["aud"] != identity.DevAudience || c["exp"].(float64)-c["iat"].(float64) != 3600 {
		t.Errorf("claims = %v, want iss, aud keyhole-dev and a 1h TTL", c)
	}
	if scp, ok := c["scp"].([]any); !ok || len(scp) != 1 || scp[0] != "s" {
		t.Errorf("scp = %#v, want [s]", c["scp"])
	}

	svc, err := d.Mint(identity.TokenRequest{ClientID: "0oasvc"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	c = decodeSegment(t, svc, 1)
	if c["sub"] != "0oasvc" || c["cid"] != "0oasvc" || c["uid"] != nil || c["groups"] != nil {
		t.Errorf("client-credentials claims = %v, want sub = cid, no uid, no groups", c)
	}
	if _, ok := c["scp"].([]any); !ok {
		t.Errorf("scp = %#v, want an array", c["scp"])
	}

	for _, bad := range []identity.TokenRequest{
		{},
		{Subject: "a", TTL: 25 * time.Hour},
		{Subject: "a", TTL: -time.Minute},
		{Subject: "a", Claims: map[string]any{"iss": "https://evil"}},
		{Subject: "a", Claims: map[string]any{"exp": 1}},
	} {
		if _, err := d.Mint(bad); err == nil {
			t.Errorf("Mint(%+v) succeeded, want an error", bad)
		}
	}
	if _, err := identity.NewDevIssuer("keyhole.local/dev"); err == nil {
		t.Error("NewDevIssuer(relative URL) succeeded")
	}
}

func TestDevIssuerTokenEndpoint(t *testing.T) {
	d, _ := devServer(t)
	v := newVerifier(t, d.Config(), identity.Options{})
	h := d.Handler()
	tests := []struct {
		name   string
		remote string
		body   string
		code   int
		ttl    int64
	}{
		{"ipv4 loopback", "127.0.0.1:50000", `{"sub":"alice","groups":["crm-readers"],"ttl":"90m"}`, 200, 5400},
		{"ipv6 loopback", "[::1]:50000", `{"client_id":"0oasvc","scopes":["crm.read"]}`, 200, 3600},
		{"other loopback", "127.8.9.10:1", `{"sub":"alice"}`, 200, 3600},
		{"remote peer", "203.0.113.7:50000", `{"sub":"alice"}`, 403, 0},
		{"private network peer", "10.0.0.5:50000", `{"sub":"alice"}`, 403, 0},
		{"no port", "127.0.0.1", `{"sub":"alice"}`, 403, 0},
		{"bad json", "127.0.0.1:1", `{"sub":`, 400, 0},
		{"unknown field", "127.0.0.1:1", `{"sub":"a","admin":true}`, 400, 0},
		{"bad ttl", "127.0.0.1:1", `{"sub":"a","ttl":"forever"}`, 400, 0},
		{"ttl too long", "127.0.0.1:1", `{"sub":"a","ttl":"48h"}`, 400, 0},
		{"no subject", "127.0.0.1:1", `{}`, 400, 0},
		{"DNS rebinding: a foreign Host", "127.0.0.1:1", `{"sub":"a"}`, 403, 0},
		{"not JSON", "127.0.0.1:1", `sub=a`, 415, 0},
		{"a form post", "127.0.0.1:1", `{"sub":"a"}`, 400, 0}, // only an authorization_code grant is read from a form
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(tt.body))
			r.RemoteAddr = tt.remote
			r.Host = "127.0.0.1:9090"
			r.Header.Set("Content-Type", "application/json")
			switch tt.name {
			case "DNS rebinding: a foreign Host":
				r.Host = "rebind.attacker.example:9090"
			case "not JSON":
				r.Header.Set("Content-Type", "text/plain")
			case "a form post":
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			r.Header.Set("X-Forwarded-For", "127.0.0.1") // never trusted
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code {
				t.Fatalf("POST /token from %s = %d %s, want %d", tt.remote, w.Code, w.Body, tt.code)
			}
			var resp struct {
				AccessToken string `json:"access_token"`
				TokenType   string `json:"token_type"`
				ExpiresIn   int64  `json:"expires_in"`
				Error       string `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response %q: %v", w.Body, err)
			}
			if tt.code != 200 {
				if resp.Error == "" || resp.AccessToken != "" {
					t.Errorf("refusal body = %s, want an error and no token", w.Body)
				}
				return
			}
			if resp.TokenType != "Bearer" || resp.ExpiresIn != tt.ttl || w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("response = %+v (Cache-Control %q), want Bearer, expires_in %d, no-store", resp, w.Header().Get("Cache-Control"), tt.ttl)
			}
			if _, err := v.Verify(context.Background(), resp.AccessToken); err != nil {
				t.Errorf("Verify(minted token): %v", err)
			}
		})
	}
	// Other methods and paths are not served.
	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/token", nil),
		httptest.NewRequest(http.MethodPost, "/keys", nil),
		httptest.NewRequest(http.MethodGet, "/other", nil),
	} {
		req.RemoteAddr = "127.0.0.1:1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code < 400 {
			body, _ := io.ReadAll(w.Body)
			t.Errorf("%s %s = %d %s, want an error", req.Method, req.URL.Path, w.Code, body)
		}
	}
}

func TestTokenRequestJSON(t *testing.T) {
	in := identity.TokenRequest{Subject: "a", ClientID: "c", Groups: []string{"g"}, Scopes: []string{"s"}, TTL: 90 * time.Minute,
		Claims: map[string]any{"tenant": "acme"}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !strings.Contains(string(b), `"ttl":"1h30m0s"`) {
		t.Errorf("Marshal = %s, want ttl as a duration string", b)
	}
	var out identity.TokenRequest
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if out.Subject != in.Subject || out.ClientID != in.ClientID || out.TTL != in.TTL || !slices.Equal(out.Groups, in.Groups) ||
		!slices.Equal(out.Scopes, in.Scopes) || out.Claims["tenant"] != "acme" {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
}
