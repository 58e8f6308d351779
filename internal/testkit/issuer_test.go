package testkit_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
)

func fetchJWKS(t *testing.T, is *testkit.Issuer) (jose.JSONWebKeySet, int) {
	t.Helper()
	resp, err := http.Get(is.URL + "/keys")
	if err != nil {
		t.Fatalf("GET /keys: %v", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatalf("decode JWKS: %v", err)
		}
	}
	return set, resp.StatusCode
}

func claimsOf(t *testing.T, raw string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	return header, claims
}

func TestIssuerKeys(t *testing.T) {
	is := testkit.NewIssuer(t)
	first := is.SigningKey()
	set, code := fetchJWKS(t, is)
	if code != 200 || len(set.Keys) != 1 || set.Keys[0].KeyID != first.ID || set.Keys[0].KeyID != is.Dev().KeyID() {
		t.Fatalf("JWKS = %d %+v, want the dev issuer's key %s", code, set, first.ID)
	}

	es := is.Rotate(t, "ES256")
	set, _ = fetchJWKS(t, is)
	if len(set.Keys) != 2 || is.SigningKey() != es {
		t.Fatalf("after Rotate: %d keys, signing %s; want 2 keys, signing %s", len(set.Keys), is.SigningKey().ID, es.ID)
	}
	raw := is.Token(t, nil)
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse ES256 token: %v", err)
	}
	if _, err := jws.Verify(es.Public()); err != nil {
		t.Errorf("ES256 token does not verify with its key: %v", err)
	}
	is.RemoveKey(first.ID)
	set, _ = fetchJWKS(t, is)
	if len(set.Keys) != 1 || set.Keys[0].KeyID != es.ID {
		t.Errorf("after RemoveKey: %+v, want only %s", set.Keys, es.ID)
	}
	if got := is.JWKSRequests(); got != 3 {
		t.Errorf("JWKSRequests = %d, want 3", got)
	}
}

func TestIssuerTokens(t *testing.T) {
	is := testkit.NewIssuer(t)
	h, c := claimsOf(t, is.Token(t, map[string]any{"sub": "bob", "iat": testkit.Delete, "groups": []string{"g"}}))
	if h["alg"] != "RS256" || h["kid"] != is.SigningKey().ID {
		t.Errorf("header = %v", h)
	}
	if c["sub"] != "bob" || c["iss"] != is.URL || c["aud"] != identity.DevAudience || c["iat"] != nil || c["groups"] == nil {
		t.Errorf("claims = %v", c)
	}
	if exp := int64(c["exp"].(float64)); exp < time.Now().Add(59*time.Minute).Unix() {
		t.Errorf("exp = %d, want about an hour from now", exp)
	}

	raw := is.NoneToken(t, nil)
	if h, _ := claimsOf(t, raw); h["alg"] != "none" || !strings.HasSuffix(raw, ".") {
		t.Errorf("NoneToken = %q", raw)
	}
	if h, _ := claimsOf(t, is.HS256PublicKeyToken(t, nil)); h["alg"] != "HS256" {
		t.Errorf("HS256PublicKeyToken header = %v", h)
	}
	k := is.NewKey(t, "RS256").WithID("chosen")
	if h, _ := claimsOf(t, is.Sign(t, k, map[string]any{"typ": "JWT"}, nil)); h["kid"] != "chosen" || h["typ"] != "JWT" {
		t.Errorf("Sign header = %v", h)
	}
	if h, _ := claimsOf(t, is.Sign(t, k, map[string]any{"kid": testkit.Delete}, nil)); h["kid"] != nil {
		t.Errorf("Sign without kid: header = %v", h)
	}
	if _, c := claimsOf(t, is.Mint(t, identity.TokenRequest{ClientID: "svc"})); c["cid"] != "svc" || c["sub"] != "svc" {
		t.Errorf("Mint claims = %v", c)
	}
}

func TestIssuerFailModes(t *testing.T) {
	is := testkit.NewIssuer(t)
	is.FailJWKS(testkit.Fail500)
	if _, code := fetchJWKS(t, is); code != 500 {
		t.Errorf("JWKS with Fail500 = %d, want 500", code)
	}
	is.FailJWKS(testkit.Hang)
	client := &http.Client{Timeout: 50 * time.Millisecond}
	if _, err := client.Get(is.URL + "/keys"); err == nil {
		t.Error("JWKS with Hang answered")
	}
	is.FailJWKS(testkit.Serve)
	if _, code := fetchJWKS(t, is); code != 200 {
		t.Errorf("JWKS with Serve = %d, want 200", code)
	}
	is.FailDiscovery(testkit.Fail500)
	resp, err := http.Get(is.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 || is.DiscoveryRequests() != 1 {
		t.Errorf("discovery with Fail500 = %d (%d requests), want 500 (1)", resp.StatusCode, is.DiscoveryRequests())
	}
	// Leave a request hanging: the test's cleanup must release it.
	is.FailJWKS(testkit.Hang)
	go func() {
		if resp, err := http.Get(is.URL + "/keys"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(20 * time.Millisecond)
}
