package identity_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
)

// clock is an injectable Options.Now that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// refreshes records OnRefresh calls and lets a test wait for them.
type refreshes struct {
	mu     sync.Mutex
	ok     int
	failed int
	issuer []string
	ch     chan error
}

func newRefreshes() *refreshes { return &refreshes{ch: make(chan error, 1024)} }

func (r *refreshes) record(issuer string, err error) {
	r.mu.Lock()
	if err == nil {
		r.ok++
	} else {
		r.failed++
	}
	r.issuer = append(r.issuer, issuer)
	r.mu.Unlock()
	r.ch <- err
}

// wait returns after n more calls that satisfy match.
func (r *refreshes) wait(t *testing.T, n int, match func(error) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for n > 0 {
		select {
		case err := <-r.ch:
			if match(err) {
				n--
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %d more refreshes", n)
		}
	}
}

func (r *refreshes) drain() {
	for {
		select {
		case <-r.ch:
		default:
			return
		}
	}
}

func succeeded(err error) bool { return err == nil }
func failed(err error) bool    { return err != nil }

// newVerifier returns a ready Verifier for cfg, closed when the test ends.
func newVerifier(t testing.TB, cfg config.Issuer, opts identity.Options) *identity.Verifier {
	t.Helper()
	v, err := identity.New(context.Background(), []config.Issuer{cfg}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return v
}

// checkRefusal fails unless err is an *identity.Error with reason whose message
// reveals nothing of raw.
func checkRefusal(t *testing.T, raw string, err error, reason identity.Reason) {
	t.Helper()
	var e *identity.Error
	if !errors.As(err, &e) {
		t.Fatalf("Verify error = %v (%T), want *identity.Error with reason %s", err, err, reason)
	}
	if e.Reason != reason {
		t.Errorf("Verify reason = %s (%q), want %s", e.Reason, e.Msg, reason)
	}
	leaks := []string{raw}
	leaks = append(leaks, strings.Split(raw, ".")...)
	for _, s := range leaks {
		if len(s) >= 8 && strings.Contains(e.Error(), s) {
			t.Errorf("error message %q contains token content %q", e.Error(), s)
		}
	}
}

func TestVerify(t *testing.T) {
	iss := testkit.NewIssuer(t)
	other := testkit.NewIssuer(t)
	esKey := iss.NewKey(t, "ES256")
	iss.AddKey(esKey)
	signing := iss.SigningKey()
	stranger := iss.NewKey(t, "RS256")
	now := time.Now()

	type tc struct {
		name   string
		cfg    func(*config.Issuer) // nil: iss.Config()
		token  func() string
		reason identity.Reason // "" means the token is accepted
		check  func(*testing.T, *identity.Principal)
	}
	tests := []tc{
		{
			name: "okta user token",
			token: func() string {
				return iss.Mint(t, identity.TokenRequest{Subject: "alice@example.com", Groups: []string{"crm-readers", "staff"}, Scopes: []string{"crm.read", "openid"}})
			},
			check: func(t *testing.T, p *identity.Principal) {
				if p.Subject != "alice@example.com" || p.ClientID != identity.DevClientID || p.Issuer != iss.URL {
					t.Errorf("principal = %+v, want sub alice@example.com, cid %s, iss %s", p, identity.DevClientID, iss.URL)
				}
				if want := []string{"crm-readers", "staff"}; !slices.Equal(p.Groups, want) {
					t.Errorf("Groups = %q, want %q", p.Groups, want)
				}
				if want := []string{"crm.read", "openid"}; !slices.Equal(p.Scopes, want) {
					t.Errorf("Scopes = %q, want %q", p.Scopes, want)
				}
				if _, ok := p.Claims["uid"].(string); !ok {
					t.Errorf("Claims[uid] = %v, want a user id", p.Claims["uid"])
				}
				if d := time.Until(p.Expiry); d < 59*time.Minute || d > time.Hour {
					t.Errorf("Expiry in %s, want about 1h", d)
				}
			},
		},
		{
			name: "okta client-credentials token",
			token: func() string {
				return iss.Mint(t, identity.TokenRequest{ClientID: "0oasvc1", Scopes: []string{"crm.read"}})
			},
			check: func(t *testing.T, p *identity.Principal) {
				if p.Subject != "0oasvc1" || p.ClientID != "0oasvc1" || p.Groups != nil {
					t.Errorf("principal = %+v, want sub = cid = 0oasvc1 and no groups", p)
				}
				if !slices.Equal(p.Scopes, []string{"crm.read"}) {
					t.Errorf("Scopes = %q, want [crm.read]", p.Scopes)
				}
				if _, ok := p.Claims["uid"]; ok {
					t.Errorf("client-credentials token has uid")
				}
			},
		},
		{
			name:  "scope as space-separated string",
			token: func() string { return iss.Token(t, map[string]any{"scope": "crm.read  crm.write"}) },
			check: func(t *testing.T, p *identity.Principal) {
				if want := []string{"crm.read", "crm.write"}; !slices.Equal(p.Scopes, want) {
					t.Errorf("Scopes = %q, want %q", p.Scopes, want)
				}
			},
		},
		{
			name:  "scope as array",
			token: func() string { return iss.Token(t, map[string]any{"scope": []string{"a", "b"}}) },
			check: func(t *testing.T, p *identity.Principal) {
				if want := []string{"a", "b"}; !slices.Equal(p.Scopes, want) {
					t.Errorf("Scopes = %q, want %q", p.Scopes, want)
				}
			},
		},
		{
			name:  "scp wins over scope",
			token: func() string { return iss.Token(t, map[string]any{"scp": []string{"x"}, "scope": "y"}) },
			check: func(t *testing.T, p *identity.Principal) {
				if want := []string{"x"}; !slices.Equal(p.Scopes, want) {
					t.Errorf("Scopes = %q, want %q", p.Scopes, want)
				}
			},
		},
		{
			name:  "groups as a single string",
			token: func() string { return iss.Token(t, map[string]any{"groups": "admins"}) },
			check: func(t *testing.T, p *identity.Principal) {
				if want := []string{"admins"}; !slices.Equal(p.Groups, want) {
					t.Errorf("Groups = %q, want %q", p.Groups, want)
				}
			},
		},
		{
			name: "custom groups and scopes claims",
			cfg:  func(c *config.Issuer) { c.GroupsClaim, c.ScopesClaim = "roles", "perms" },
			token: func() string {
				return iss.Token(t, map[string]any{"roles": []string{"r"}, "perms": "p q", "groups": []string{"g"}})
			},
			check: func(t *testing.T, p *identity.Principal) {
				if !slices.Equal(p.Groups, []string{"r"}) || !slices.Equal(p.Scopes, []string{"p", "q"}) {
					t.Errorf("Groups, Scopes = %q, %q, want [r], [p q]", p.Groups, p.Scopes)
				}
			},
		},
		{name: "audience in an array", token: func() string { return iss.Token(t, map[string]any{"aud": []string{"x", identity.DevAudience}}) }},
		{name: "second configured audience", cfg: func(c *config.Issuer) { c.Audiences = []string{"api://a", "api://b"} },
			token: func() string { return iss.Token(t, map[string]any{"aud": "api://b"}) }},
		{name: "ES256 key", token: func() string { return iss.Sign(t, esKey, nil, nil) }},
		{name: "no kid, published key", token: func() string { return iss.Sign(t, signing, map[string]any{"kid": testkit.Delete}, nil) }},
		{name: "typ header is ignored", token: func() string { return iss.Sign(t, signing, map[string]any{"typ": "at+jwt"}, nil) }},
		{name: "nbf within leeway", token: func() string { return iss.Token(t, map[string]any{"nbf": now.Add(time.Minute).Unix()}) }},

		{name: "alg none", reason: identity.ReasonBadSignature, token: func() string { return iss.NoneToken(t, nil) }},
		{name: "HS256 with the public key", reason: identity.ReasonBadSignature, token: func() string { return iss.HS256PublicKeyToken(t, nil) }},
		{name: "RS256 when only ES256 is allowed", reason: identity.ReasonBadSignature,
			cfg: func(c *config.Issuer) { c.Algorithms = []string{"ES256"} }, token: func() string { return iss.Token(t, nil) }},
		{name: "ES256 when only RS256 is allowed", reason: identity.ReasonBadSignature,
			cfg: func(c *config.Issuer) { c.Algorithms = []string{"RS256"} }, token: func() string { return iss.Sign(t, esKey, nil, nil) }},
		{name: "unknown key under a known kid", reason: identity.ReasonBadSignature,
			token: func() string { return iss.Sign(t, stranger.WithID(signing.ID), nil, nil) }},
		{name: "no kid, unknown key", reason: identity.ReasonBadSignature,
			token: func() string { return iss.Sign(t, stranger, map[string]any{"kid": testkit.Delete}, nil) }},
		{name: "ES256 header on an RSA kid", reason: identity.ReasonBadSignature,
			token: func() string { return iss.Sign(t, esKey.WithID(signing.ID), nil, nil) }},
		{name: "tampered payload", reason: identity.ReasonBadSignature, token: func() string {
			good := strings.Split(iss.Token(t, nil), ".")
			evil := strings.Split(iss.Token(t, map[string]any{"groups": []string{"admins"}}), ".")
			return good[0] + "." + evil[1] + "." + good[2]
		}},
		{name: "unknown kid", reason: identity.ReasonUnknownKey, token: func() string { return iss.Sign(t, stranger, nil, nil) }},
		{name: "expired", reason: identity.ReasonExpired, token: func() string { return iss.Token(t, map[string]any{"exp": now.Add(-time.Minute).Unix()}) }},
		{name: "missing exp", reason: identity.ReasonExpired, token: func() string { return iss.Token(t, map[string]any{"exp": testkit.Delete}) }},
		{name: "nbf in the future", reason: identity.ReasonExpired, token: func() string { return iss.Token(t, map[string]any{"nbf": now.Add(10 * time.Minute).Unix()}) }},
		{name: "unknown issuer", reason: identity.ReasonBadIssuer, token: func() string { return iss.Token(t, map[string]any{"iss": "https://evil.example/oauth2/default"}) }},
		{name: "issuer with trailing slash", reason: identity.ReasonBadIssuer, token: func() string { return iss.Token(t, map[string]any{"iss": iss.URL + "/"}) }},
		{name: "token of another issuer", reason: identity.ReasonBadIssuer, token: func() string { return other.Token(t, nil) }},
		{name: "other issuer's key, our iss", reason: identity.ReasonUnknownKey, token: func() string { return other.Sign(t, other.SigningKey(), nil, map[string]any{"iss": iss.URL}) }},
		{name: "no iss", reason: identity.ReasonBadIssuer, token: func() string { return iss.Token(t, map[string]any{"iss": testkit.Delete}) }},
		{name: "wrong audience", reason: identity.ReasonBadAudience, token: func() string { return iss.Token(t, map[string]any{"aud": "api://other"}) }},
		{name: "no audience", reason: identity.ReasonBadAudience, token: func() string { return iss.Token(t, map[string]any{"aud": testkit.Delete}) }},
		{name: "ID token for another client", reason: identity.ReasonBadAudience, token: func() string {
			return iss.Token(t, map[string]any{
				"aud": "0oa1clientapp", "nonce": "n-0S6_WzA2Mj", "at_hash": "77QmUPtjPfzWtF2AnpK9RQ",
				"auth_time": now.Unix(), "amr": []string{"pwd"}, "idp": "00oidp", "name": "Alice",
			})
		}},
		{name: "no sub", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, map[string]any{"sub": testkit.Delete}) }},
		{name: "exp not a number", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, map[string]any{"exp": "tomorrow"}) }},
		{name: "iat not a number", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, map[string]any{"iat": "today"}) }},
		{name: "not a JWT", reason: identity.ReasonMalformed, token: func() string { return "not-a-jwt" }},
		{name: "two segments", reason: identity.ReasonMalformed, token: func() string {
			p := strings.Split(iss.Token(t, nil), ".")
			return p[0] + "." + p[1]
		}},
		{name: "four segments", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, nil) + ".x" }},
		{name: "padded signature", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, nil) + "==" }},
		{name: "non-base64url character", reason: identity.ReasonMalformed, token: func() string { return strings.Replace(iss.Token(t, nil), ".", ",.", 1) }},
		{name: "whitespace inside", reason: identity.ReasonMalformed, token: func() string { return strings.Replace(iss.Token(t, nil), ".", " .", 1) }},
		{name: "payload not JSON", reason: identity.ReasonMalformed, token: func() string {
			p := strings.Split(iss.Token(t, nil), ".")
			return p[0] + ".bm90IGpzb24." + p[2]
		}},
		{name: "payload a JSON array", reason: identity.ReasonMalformed, token: func() string {
			p := strings.Split(iss.Token(t, nil), ".")
			return p[0] + ".WzFd." + p[2]
		}},
		{name: "JWS JSON serialization", reason: identity.ReasonMalformed, token: func() string { return `{"payload":"e30","signatures":[]}` }},
		{name: "too long", reason: identity.ReasonMalformed, token: func() string { return iss.Token(t, map[string]any{"pad": strings.Repeat("x", 70000)}) }},
		{name: "empty", reason: identity.ReasonMissing, token: func() string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := iss.Config()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v := newVerifier(t, cfg, identity.Options{})
			raw := tt.token()
			p, err := v.Verify(t.Context(), raw)
			if tt.reason != "" {
				if p != nil {
					t.Errorf("Verify returned a principal %+v with error %v", p, err)
				}
				checkRefusal(t, raw, err, tt.reason)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
			// The second call is a cache hit and returns the same Principal.
			p2, err := v.Verify(t.Context(), raw)
			if err != nil || p2 != p {
				t.Errorf("second Verify = %p, %v; want the cached %p", p2, err, p)
			}
		})
	}
}

// TestUnknownKidFlood checks that random-kid tokens cannot turn into a flood of JWKS
// requests: at most one refetch per MinRefetchInterval, however many arrive at once.
func TestUnknownKidFlood(t *testing.T) {
	iss := testkit.NewIssuer(t)
	clk := newClock()
	v := newVerifier(t, iss.Config(), identity.Options{Now: clk.Now, MinRefetchInterval: 10 * time.Second})
	if got := iss.JWKSRequests(); got != 1 {
		t.Fatalf("JWKS requests after start = %d, want 1", got)
	}
	stranger := iss.NewKey(t, "RS256")
	tokens := make([]string, 200)
	for i := range tokens {
		tokens[i] = iss.Sign(t, stranger.WithID(fmt.Sprintf("random-%d", i)), nil, nil)
	}
	flood := func() {
		var wg sync.WaitGroup
		for _, raw := range tokens {
			wg.Go(func() {
				_, err := v.Verify(context.Background(), raw)
				var e *identity.Error
				if !errors.As(err, &e) || e.Reason != identity.ReasonUnknownKey {
					t.Errorf("Verify(random kid) = %v, want unknown_key", err)
				}
			})
		}
		wg.Wait()
	}

	flood() // right after the start-up fetch: no refetch at all
	if got := iss.JWKSRequests(); got != 1 {
		t.Errorf("JWKS requests after a flood within MinRefetchInterval of start = %d, want 1", got)
	}
	clk.Advance(11 * time.Second)
	flood()
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKS requests after 200 concurrent random kids = %d, want 2", got)
	}
	flood()
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKS requests after a second flood in the same interval = %d, want 2", got)
	}
	clk.Advance(11 * time.Second)
	for _, raw := range tokens { // sequential this time
		if _, err := v.Verify(context.Background(), raw); err == nil {
			t.Fatal("Verify(random kid) succeeded")
		}
	}
	if got := iss.JWKSRequests(); got != 3 {
		t.Errorf("JWKS requests after the next interval = %d, want 3", got)
	}
}

func TestKeyRotation(t *testing.T) {
	iss := testkit.NewIssuer(t)
	clk := newClock()
	v := newVerifier(t, iss.Config(), identity.Options{Now: clk.Now})
	old := iss.SigningKey()
	oldTok := iss.Token(t, nil)
	if _, err := v.Verify(t.Context(), oldTok); err != nil {
		t.Fatalf("Verify(old key): %v", err)
	}

	clk.Advance(time.Minute)
	iss.Rotate(t, "RS256")
	for i := range 3 {
		if _, err := v.Verify(t.Context(), iss.Token(t, map[string]any{"n": i})); err != nil {
			t.Fatalf("Verify(new kid) #%d: %v", i, err)
		}
	}
	if got := iss.JWKSRequests(); got != 2 {
		t.Errorf("JWKS requests after rotation = %d, want 2 (start + one refetch)", got)
	}

	// The old key is retired. Its kid is still in the verifier's snapshot until a
	// fetch: here, the refetch caused by the next rotation's new kid.
	iss.RemoveKey(old.ID)
	clk.Advance(time.Minute)
	iss.Rotate(t, "RS256")
	if _, err := v.Verify(t.Context(), iss.Token(t, nil)); err != nil {
		t.Fatalf("Verify(second new kid): %v", err)
	}
	if got := iss.JWKSRequests(); got != 3 {
		t.Errorf("JWKS requests after second rotation = %d, want 3", got)
	}
	raw := iss.Sign(t, old, nil, map[string]any{"n": "after removal"})
	_, err := v.Verify(t.Context(), raw)
	checkRefusal(t, raw, err, identity.ReasonUnknownKey)
	// The refetch saw the old key gone: the cached token it verified is no longer served.
	_, err = v.Verify(t.Context(), oldTok)
	checkRefusal(t, oldTok, err, identity.ReasonUnknownKey)

	// An ES256 rotation works the same way.
	clk.Advance(time.Minute)
	iss.Rotate(t, "ES256")
	if _, err := v.Verify(t.Context(), iss.Token(t, nil)); err != nil {
		t.Fatalf("Verify(new ES256 kid): %v", err)
	}
}

func TestPeriodicRefreshDropsRemovedKey(t *testing.T) {
	iss := testkit.NewIssuer(t)
	ev := newRefreshes()
	v := newVerifier(t, iss.Config(), identity.Options{RefreshInterval: 20 * time.Millisecond, OnRefresh: ev.record})
	old := iss.SigningKey()
	tok := iss.Token(t, nil)
	for range 2 { // the second is served from the cache
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}

	iss.Rotate(t, "RS256")
	iss.RemoveKey(old.ID)
	ev.drain()
	// Two refreshes: the first may have been in flight before the removal.
	ev.wait(t, 2, succeeded)

	_, err := v.Verify(t.Context(), tok)
	checkRefusal(t, tok, err, identity.ReasonUnknownKey)
	if _, err := v.Verify(t.Context(), iss.Token(t, nil)); err != nil {
		t.Errorf("Verify(current key): %v", err)
	}
}

func TestCachedTokenExpires(t *testing.T) {
	iss := testkit.NewIssuer(t)
	clk := newClock()
	v := newVerifier(t, iss.Config(), identity.Options{Now: clk.Now})
	tok := iss.Token(t, map[string]any{"exp": clk.Now().Add(time.Minute).Unix()})
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	clk.Advance(2 * time.Minute)
	_, err := v.Verify(t.Context(), tok)
	checkRefusal(t, tok, err, identity.ReasonExpired)
}

// TestSetClaims checks that principals keep only the claims the rules read once told
// which, that the subject, groups and scopes are unaffected, and that a change of the set
// re-verifies cached tokens rather than serve principals missing a claim.
func TestSetClaims(t *testing.T) {
	iss := testkit.NewIssuer(t)
	v := newVerifier(t, iss.Config(), identity.Options{})
	tok := iss.Token(t, map[string]any{"sub": "ada", "groups": []string{"g"}, "scp": []string{"s"}, "tenant": "acme", "dept": "ops"})
	p, err := v.Verify(t.Context(), tok)
	if err != nil || p.Claims["tenant"] != "acme" || p.Claims["jti"] == nil && p.Claims["iss"] == nil {
		t.Fatalf("before SetClaims: %v %v, want every claim", p, err)
	}
	v.SetClaims([]string{"tenant"})
	p, _ = v.Verify(t.Context(), tok)
	if len(p.Claims) != 1 || p.Claims["tenant"] != "acme" || p.Subject != "ada" || len(p.Groups) != 1 || len(p.Scopes) != 1 {
		t.Errorf("with claims [tenant]: %+v, want only tenant among the claims, identity whole", p)
	}
	v.SetClaims([]string{"dept", "tenant", "tenant"})
	if p, _ = v.Verify(t.Context(), tok); p.Claims["dept"] != "ops" || p.Claims["tenant"] != "acme" {
		t.Errorf("after adding dept: claims %v, want the cached principal verified again with dept", p.Claims)
	}
	v.SetClaims(nil)
	if p, _ = v.Verify(t.Context(), tok); p.Claims != nil {
		t.Errorf("with no claims read by any rule: claims %v, want none kept", p.Claims)
	}
}

func TestJWKSFailureKeepsLastGoodKeys(t *testing.T) {
	for _, mode := range []testkit.FailMode{testkit.Fail500, testkit.Hang} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			iss := testkit.NewIssuer(t)
			ev := newRefreshes()
			v := newVerifier(t, iss.Config(), identity.Options{
				HTTPClient:      &http.Client{Timeout: 100 * time.Millisecond},
				RefreshInterval: 20 * time.Millisecond,
				OnRefresh:       ev.record,
			})
			iss.FailJWKS(mode)
			ev.drain()
			ev.wait(t, 2, failed)
			for i := range 3 { // fresh tokens: not from the cache
				if _, err := v.Verify(t.Context(), iss.Token(t, map[string]any{"n": i})); err != nil {
					t.Fatalf("Verify during JWKS outage: %v", err)
				}
			}
			if !v.Ready() {
				t.Error("Ready() = false during a refresh outage, want true")
			}
			iss.FailJWKS(testkit.Serve)
			ev.wait(t, 1, succeeded)
		})
	}
}

func TestOnRefresh(t *testing.T) {
	iss := testkit.NewIssuer(t)
	ev := newRefreshes()
	newVerifier(t, iss.Config(), identity.Options{RefreshInterval: 20 * time.Millisecond, OnRefresh: ev.record})
	iss.FailJWKS(testkit.Fail500)
	ev.wait(t, 1, failed)
	iss.FailJWKS(testkit.Serve)
	ev.wait(t, 1, succeeded)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if ev.ok < 2 || ev.failed < 1 {
		t.Errorf("OnRefresh: %d successes, %d failures; want >= 2 and >= 1", ev.ok, ev.failed)
	}
	for _, name := range ev.issuer {
		if name != iss.URL {
			t.Fatalf("OnRefresh issuer = %q, want %q", name, iss.URL)
		}
	}
}

// TestIssuerDownAtStart checks that New does not need the IdP, that tokens are
// refused (fail closed) until its keys are fetched, and that it becomes ready when
// the IdP comes up.
func TestIssuerDownAtStart(t *testing.T) {
	iss := testkit.NewIssuer(t)
	iss.FailDiscovery(testkit.Fail500)
	iss.FailJWKS(testkit.Fail500)
	ev := newRefreshes()
	v, err := identity.New(t.Context(), []config.Issuer{iss.Config()}, identity.Options{
		RefreshInterval: 50 * time.Millisecond, OnRefresh: ev.record,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer v.Close()

	tok := iss.Token(t, nil)
	ev.wait(t, 2, failed)
	if v.Ready() {
		t.Fatal("Ready() = true while discovery fails")
	}
	_, err = v.Verify(t.Context(), tok)
	checkRefusal(t, tok, err, identity.ReasonUnknownKey)

	iss.FailDiscovery(testkit.Serve) // discovery up, JWKS still down
	ev.wait(t, 2, failed)
	if v.Ready() {
		t.Fatal("Ready() = true while the JWKS fails")
	}
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := v.WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady while down = %v, want DeadlineExceeded", err)
	}

	iss.FailJWKS(testkit.Serve)
	ctx, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if !v.Ready() {
		t.Error("Ready() = false after WaitReady")
	}
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Errorf("Verify after the issuer came up: %v", err)
	}
}

func TestJWKSURLSkipsDiscovery(t *testing.T) {
	iss := testkit.NewIssuer(t)
	cfg := iss.Config()
	cfg.JWKSURL = iss.URL + "/keys"
	v := newVerifier(t, cfg, identity.Options{})
	if _, err := v.Verify(t.Context(), iss.Token(t, nil)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := iss.DiscoveryRequests(); got != 0 {
		t.Errorf("discovery requests = %d, want 0", got)
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	iss := testkit.NewIssuer(t)
	cfg := iss.Config()
	cfg.Issuer += "/" // discovery answers without the slash: go-oidc refuses the document
	ev := newRefreshes()
	v, err := identity.New(t.Context(), []config.Issuer{cfg}, identity.Options{RefreshInterval: 20 * time.Millisecond, OnRefresh: ev.record})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer v.Close()
	ev.wait(t, 2, failed)
	if v.Ready() {
		t.Error("Ready() = true for an issuer whose discovery names another issuer")
	}
}

func TestMultipleIssuers(t *testing.T) {
	a, b := testkit.NewIssuer(t), testkit.NewIssuer(t)
	cfgB := b.Config()
	cfgB.Audiences = []string{"api://b"}
	v, err := identity.New(t.Context(), []config.Issuer{a.Config(), cfgB}, identity.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer v.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if p, err := v.Verify(t.Context(), a.Token(t, nil)); err != nil || p.Issuer != a.URL {
		t.Errorf("Verify(a) = %v, %v; want issuer %s", p, err, a.URL)
	}
	if p, err := v.Verify(t.Context(), b.Token(t, map[string]any{"aud": "api://b"})); err != nil || p.Issuer != b.URL {
		t.Errorf("Verify(b) = %v, %v; want issuer %s", p, err, b.URL)
	}
	// a's audience is not b's.
	raw := b.Token(t, nil)
	_, err = v.Verify(t.Context(), raw)
	checkRefusal(t, raw, err, identity.ReasonBadAudience)
	// b's key does not sign for a.
	raw = b.Sign(t, b.SigningKey(), nil, map[string]any{"iss": a.URL})
	_, err = v.Verify(t.Context(), raw)
	checkRefusal(t, raw, err, identity.ReasonUnknownKey)
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := config.Issuer{Issuer: "https://idp.example/oauth2/default", Audiences: []string{"api://default"}}
	tests := []struct {
		name    string
		issuers []config.Issuer
	}{
		{"no issuers", nil},
		{"no URL", []config.Issuer{{Audiences: []string{"a"}}}},
		{"no audience", []config.Issuer{{Issuer: good.Issuer}}},
		{"empty audience", []config.Issuer{{Issuer: good.Issuer, Audiences: []string{""}}}},
		{"HS256", []config.Issuer{{Issuer: good.Issuer, Audiences: good.Audiences, Algorithms: []string{"HS256"}}}},
		{"none", []config.Issuer{{Issuer: good.Issuer, Audiences: good.Audiences, Algorithms: []string{"none"}}}},
		{"duplicate", []config.Issuer{good, good}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := identity.New(t.Context(), tt.issuers, identity.Options{})
			if err == nil {
				v.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestConcurrentVerify(t *testing.T) {
	iss := testkit.NewIssuer(t)
	v := newVerifier(t, iss.Config(), identity.Options{CacheSize: 16})
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = iss.Token(t, map[string]any{"n": i})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				raw := tokens[(g*31+i)%len(tokens)]
				if p, err := v.Verify(context.Background(), raw); err != nil || p.Subject != testkit.DefaultSubject {
					t.Errorf("Verify = %v, %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCloseStopsRefreshing(t *testing.T) {
	iss := testkit.NewIssuer(t)
	v := newVerifier(t, iss.Config(), identity.Options{RefreshInterval: 10 * time.Millisecond})
	time.Sleep(50 * time.Millisecond)
	v.Close()
	v.Close() // idempotent
	// A request sent just before Close may still reach the server: allow that one,
	// not the twenty a running 10ms ticker would send.
	n := iss.JWKSRequests()
	time.Sleep(200 * time.Millisecond)
	if got := iss.JWKSRequests(); got > n+1 {
		t.Errorf("JWKS requests after Close went from %d to %d", n, got)
	}
	// Keys fetched before Close keep verifying.
	if _, err := v.Verify(t.Context(), iss.Token(t, nil)); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}

func TestPrincipalContext(t *testing.T) {
	p := &identity.Principal{Subject: "s"}
	ctx := identity.NewContext(context.Background(), p)
	if got := identity.FromContext(ctx); got != p {
		t.Errorf("FromContext = %p, want %p", got, p)
	}
	if got := identity.FromContext(context.Background()); got != nil {
		t.Errorf("FromContext(empty) = %v, want nil", got)
	}
}

// TestExpiryFromGoOIDC makes the clock jump between Verify's own exp check and
// go-oidc's, so that the refusal comes from go-oidc's *TokenExpiredError.
func TestExpiryFromGoOIDC(t *testing.T) {
	iss := testkit.NewIssuer(t)
	var (
		mu    sync.Mutex
		calls int
		armed bool
	)
	start := time.Now()
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if !armed {
			return start
		}
		calls++
		if calls == 1 {
			return start
		}
		return start.Add(2 * time.Hour)
	}
	v := newVerifier(t, iss.Config(), identity.Options{Now: now})
	raw := iss.Token(t, nil)
	mu.Lock()
	armed = true
	mu.Unlock()
	_, err := v.Verify(t.Context(), raw)
	checkRefusal(t, raw, err, identity.ReasonExpired)
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("clock read %d times, want 2 (Verify, then go-oidc)", calls)
	}
}

// TestClientID reads the client id where each provider puts it: Okta's cid (people who
// log in through one app share it; a service app's token has sub == cid), Entra's and
// OIDC's azp, RFC 9068's client_id; client_id_claim picks one claim and only that one.
func TestClientID(t *testing.T) {
	iss := testkit.NewIssuer(t)
	byDefault := newVerifier(t, iss.Config(), identity.Options{})
	cfg := iss.Config()
	cfg.ClientIDClaim = "appid"
	byAppID := newVerifier(t, cfg, identity.Options{})
	for _, c := range []struct {
		name    string
		claims  map[string]any
		v       *identity.Verifier
		want    string
		wantSub string
	}{
		{"Okta person via the CLI app", map[string]any{"sub": "ada@example.com", "uid": "00u1", "cid": "0oaCli"}, byDefault, "0oaCli", "ada@example.com"},
		{"Okta service app", map[string]any{"sub": "0oaSvc", "cid": "0oaSvc", "scp": []string{"crm.read"}}, byDefault, "0oaSvc", "0oaSvc"},
		{"Entra azp", map[string]any{"sub": "AAAb", "azp": "c0ffee-app"}, byDefault, "c0ffee-app", "AAAb"},
		{"RFC 9068 client_id", map[string]any{"sub": "ada", "client_id": "s6BhdRkqt3"}, byDefault, "s6BhdRkqt3", "ada"},
		{"Entra v1 appid", map[string]any{"sub": "AAAb", "oid": "690222be", "appid": "c0ffee-app", "ver": "1.0"}, byDefault, "c0ffee-app", "AAAb"},
		{"azp before appid", map[string]any{"sub": "AAAb", "azp": "v2-app", "appid": "v1-app"}, byDefault, "v2-app", "AAAb"},
		{"cid before azp", map[string]any{"sub": "ada", "cid": "okta-app", "azp": "other"}, byDefault, "okta-app", "ada"},
		{"no client id", map[string]any{"sub": "ada"}, byDefault, "", "ada"},
		{"non-string cid falls through", map[string]any{"sub": "ada", "cid": 7, "azp": "app"}, byDefault, "app", "ada"},
		{"client_id_claim: appid", map[string]any{"sub": "ada", "cid": "okta-app", "appid": "entra-v1-app"}, byAppID, "entra-v1-app", "ada"},
		{"client_id_claim set, claim absent", map[string]any{"sub": "ada", "cid": "okta-app"}, byAppID, "", "ada"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.claims["aud"] = cfg.Audiences[0]
			p, err := c.v.Verify(t.Context(), iss.Token(t, c.claims))
			if err != nil {
				t.Fatal(err)
			}
			if p.ClientID != c.want || p.Subject != c.wantSub {
				t.Errorf("sub, client id = %q, %q, want %q, %q", p.Subject, p.ClientID, c.wantSub, c.want)
			}
		})
	}
}

// TestAppToken tells an app's own (client-credentials) token from one it holds for a
// person, in the shapes each provider issues: approvals.IsRequester refuses an app's
// token deciding what was asked through that app, so an app token read as a person's
// would let an agent's app approve itself, and a person's read as an app's would keep
// people who share an app from approving each other. It holds when SetClaims keeps no
// claim at all.
func TestAppToken(t *testing.T) {
	iss := testkit.NewIssuer(t)
	all := newVerifier(t, iss.Config(), identity.Options{})
	trimmed := newVerifier(t, iss.Config(), identity.Options{})
	trimmed.SetClaims(nil)
	const spOID = "7d1e0b4a-5c2f-4e8b-9a1d-3f6c2b8e0a11"
	for _, c := range []struct {
		name     string
		claims   map[string]any
		wantApp  bool
		wantCID  string
		wantSubj string
	}{
		{"Okta person via the CLI app", map[string]any{"sub": "ada@example.com", "uid": "00u1", "cid": "0oaCli", "scp": []string{"crm.read"}}, false, "0oaCli", "ada@example.com"},
		{"Okta service app", map[string]any{"sub": "0oaSvc", "cid": "0oaSvc", "scp": []string{"crm.read"}}, true, "0oaSvc", "0oaSvc"},
		{"Entra v2 person", map[string]any{"sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
			"azp": "c0ffee", "azpacr": "0", "scp": "access_as_user", "idtyp": "user", "ver": "2.0"}, false, "c0ffee", "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ"},
		{"Entra v2 app with idtyp", map[string]any{"sub": spOID, "oid": spOID, "azp": "c0ffee", "azpacr": "1", "roles": []string{"Crm.Write"},
			"idtyp": "app", "ver": "2.0"}, true, "c0ffee", spOID},
		{"Entra v2 app without idtyp", map[string]any{"sub": spOID, "oid": spOID, "azp": "c0ffee", "azpacr": "1", "roles": []string{"Crm.Write"}, "ver": "2.0"}, true, "c0ffee", spOID},
		{"Entra v1 person", map[string]any{"sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", "oid": "02223b6b-aa1d-42d4-9ec0-1b2bb9194438",
			"appid": "75dbe77f", "appidacr": "0", "scp": "user_impersonation", "ver": "1.0"}, false, "75dbe77f", "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA"},
		{"Entra v1 app", map[string]any{"sub": spOID, "oid": spOID, "appid": "75dbe77f", "appidacr": "1", "roles": []string{"Crm.Write"}, "ver": "1.0"}, true, "75dbe77f", spOID},
		{"Auth0 person", map[string]any{"sub": "auth0|64ada", "azp": "Xa9agent", "scope": "openid crm.read"}, false, "Xa9agent", "auth0|64ada"},
		{"Auth0 machine-to-machine app", map[string]any{"sub": "Xa9agent@clients", "azp": "Xa9agent", "gty": "client-credentials", "scope": "crm.write"}, true, "Xa9agent", "Xa9agent@clients"},
		{"Auth0 app, sub alone", map[string]any{"sub": "Xa9agent@clients", "azp": "Xa9agent"}, true, "Xa9agent", "Xa9agent@clients"},
		{"Auth0 person whose id ends in @clients", map[string]any{"sub": "auth0|ada@clients", "azp": "Xa9agent"}, false, "Xa9agent", "auth0|ada@clients"},
		{"Keycloak person", map[string]any{"sub": "9f3c2d1e-ada", "azp": "agent", "preferred_username": "ada", "typ": "Bearer"}, false, "agent", "9f3c2d1e-ada"},
		{"Keycloak service account", map[string]any{"sub": "5b0e2c1a-sa", "azp": "agent", "client_id": "agent", "preferred_username": "service-account-agent",
			"typ": "Bearer"}, true, "agent", "5b0e2c1a-sa"},
		{"Keycloak service account, client id in capitals", map[string]any{"sub": "5b0e2c1a-sa", "azp": "Agent-Bot", "preferred_username": "service-account-agent-bot"}, true, "Agent-Bot", "5b0e2c1a-sa"},
		{"Keycloak service account, legacy clientId", map[string]any{"sub": "5b0e2c1a-sa", "azp": "agent", "clientId": "agent"}, true, "agent", "5b0e2c1a-sa"},
		{"Keycloak service account of another client", map[string]any{"sub": "5b0e2c1a-sa", "azp": "agent", "preferred_username": "service-account-other"}, false, "agent", "5b0e2c1a-sa"},
		{"RFC 9068 person", map[string]any{"sub": "ada", "client_id": "s6BhdRkqt3", "scope": "crm.read"}, false, "s6BhdRkqt3", "ada"},
		{"RFC 9068 client credentials", map[string]any{"sub": "s6BhdRkqt3", "client_id": "s6BhdRkqt3", "scope": "crm.read"}, true, "s6BhdRkqt3", "s6BhdRkqt3"},
		{"no client id", map[string]any{"sub": "ada"}, false, "", "ada"},
	} {
		for _, v := range []struct {
			name string
			v    *identity.Verifier
		}{{"all claims", all}, {"no claims kept", trimmed}} {
			t.Run(c.name+"/"+v.name, func(t *testing.T) {
				claims := maps.Clone(c.claims)
				claims["aud"] = identity.DevAudience
				p, err := v.v.Verify(t.Context(), iss.Token(t, claims))
				if err != nil {
					t.Fatal(err)
				}
				if p.App != c.wantApp || p.ClientID != c.wantCID || p.Subject != c.wantSubj {
					t.Errorf("app, client id, sub = %v, %q, %q, want %v, %q, %q", p.App, p.ClientID, p.Subject, c.wantApp, c.wantCID, c.wantSubj)
				}
			})
		}
	}
}

// TestTokenAge refuses a token issued in the future (beyond the 5 minutes of leeway nbf
// also has) and one that lives longer than max_token_age (exp - iat, or exp - now when
// the token has no iat); the default is 24 h, Okta's longest access-token lifetime.
func TestTokenAge(t *testing.T) {
	iss := testkit.NewIssuer(t)
	byDefault := newVerifier(t, iss.Config(), identity.Options{})
	cfg := iss.Config()
	cfg.MaxTokenAge = config.Duration(time.Hour)
	hourly := newVerifier(t, cfg, identity.Options{})
	now := time.Now()
	for _, c := range []struct {
		name     string
		v        *identity.Verifier
		iat, exp any
		refused  bool
	}{
		{"an hour, issued now", byDefault, now.Unix(), now.Add(time.Hour).Unix(), false},
		{"issued a minute ahead (skew)", byDefault, now.Add(time.Minute).Unix(), now.Add(time.Hour).Unix(), false},
		{"issued ten minutes ahead", byDefault, now.Add(10 * time.Minute).Unix(), now.Add(time.Hour).Unix(), true},
		{"24 h", byDefault, now.Unix(), now.Add(24 * time.Hour).Unix(), false},
		{"a year", byDefault, now.Unix(), now.Add(365 * 24 * time.Hour).Unix(), true},
		{"a year, no iat", byDefault, testkit.Delete, now.Add(365 * 24 * time.Hour).Unix(), true},
		{"issued long ago, expiring soon, within the age", byDefault, now.Add(-23 * time.Hour).Unix(), now.Add(time.Minute).Unix(), false},
		{"two hours under max_token_age 1h", hourly, now.Unix(), now.Add(2 * time.Hour).Unix(), true},
		{"an hour under max_token_age 1h", hourly, now.Unix(), now.Add(time.Hour).Unix(), false},
		{"iat not a number", byDefault, "yesterday", now.Add(time.Hour).Unix(), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := iss.Token(t, map[string]any{"aud": cfg.Audiences[0], "iat": c.iat, "exp": c.exp})
			_, err := c.v.Verify(t.Context(), raw)
			switch {
			case !c.refused && err != nil:
				t.Errorf("Verify = %v, want accepted", err)
			case c.refused && err == nil:
				t.Errorf("Verify accepted the token, want it refused")
			}
		})
	}
}
