// Package testkit holds test helpers shared by Keyhole's packages: an in-process OIDC
// issuer with adversarial knobs, and an upstream that echoes what it received.
package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// IssuerPath is the path of every test issuer's URL on its server, shaped like an
// Okta custom authorization server's.
const IssuerPath = "/oauth2/default"

// DefaultSubject is the sub of Token's default claims.
const DefaultSubject = "user-1"

// Delete, as a value in the claims or header given to Token or Sign, removes that
// entry from the defaults.
const Delete = deleteMarker(0)

type deleteMarker int

// FailMode is how an endpoint of the issuer misbehaves.
type FailMode int32

// Failure modes.
const (
	Serve   FailMode = iota // answer normally
	Fail500                 // answer 500
	Hang                    // never answer (until the client gives up or the test ends)
)

func (m FailMode) String() string {
	switch m {
	case Serve:
		return "serve"
	case Fail500:
		return "fail500"
	case Hang:
		return "hang"
	}
	return "FailMode(" + strconv.Itoa(int(m)) + ")"
}

// Key is a signing key of a test issuer. Keys are immutable.
type Key struct {
	ID     string // kid
	Alg    string // "RS256" or "ES256"
	signer crypto.Signer
}

// WithID returns a copy of k that signs with the same private key under kid.
func (k *Key) WithID(kid string) *Key {
	c := *k
	c.ID = kid
	return &c
}

// Public returns k's public key.
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// Issuer is an in-process OIDC issuer on an httptest server, built on
// identity.DevIssuer: its discovery document and token endpoint are the dev issuer's,
// and its first signing key is the dev issuer's key. On top it can publish, rotate and
// remove RSA and ES256 keys, count and break its endpoints, and sign anything.
// Its methods are safe for concurrent use. The server stops when the test ends.
type Issuer struct {
	// URL is the issuer identifier (iss), the server's URL plus IssuerPath.
	URL string

	dev  *identity.DevIssuer
	srv  *httptest.Server
	done chan struct{} // closed when the test ends, releasing hung handlers

	jwksMode, discoveryMode atomic.Int32
	jwksHits, discoveryHits atomic.Int64

	mu        sync.Mutex
	signing   *Key
	published []*Key
}

// NewIssuer starts an issuer whose signing key (RS256) is published in its JWKS.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	is := &Issuer{URL: "http://" + srv.Listener.Addr().String() + IssuerPath, srv: srv, done: make(chan struct{})}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("testkit: generate key: %v", err)
	}
	first := &Key{ID: randomKID(), Alg: "RS256", signer: rsaKey}
	is.dev, err = identity.NewDevIssuerWithKey(is.URL, rsaKey, first.ID)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	is.signing, is.published = first, []*Key{first}

	dev := is.dev.Handler()
	mux := http.NewServeMux()
	mux.HandleFunc(identity.DevDiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		is.discoveryHits.Add(1)
		if is.misbehave(w, r, FailMode(is.discoveryMode.Load())) {
			return
		}
		dev.ServeHTTP(w, r)
	})
	mux.HandleFunc(identity.DevKeysPath, is.serveJWKS)
	mux.Handle(identity.DevTokenPath, dev)
	srv.Config.Handler = http.StripPrefix(IssuerPath, mux)
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(is.done) }) // runs first: hung handlers return, so Close does not wait on them
	return is
}

// Config returns the issuer's configuration as Keyhole would load it: the dev
// issuer's (audience identity.DevAudience, claims groups and scp) with algorithms
// RS256 and ES256 and no JWKS URL, so that verifiers go through discovery.
func (is *Issuer) Config() config.Issuer {
	c := is.dev.Config()
	c.Algorithms = []string{"RS256", "ES256"}
	c.JWKSURL = ""
	return c
}

// Dev returns the dev issuer behind is.
func (is *Issuer) Dev() *identity.DevIssuer { return is.dev }

// Claims returns a fresh map of the default claims: iss, aud (identity.DevAudience),
// sub (DefaultSubject), iat now and exp in an hour.
func (is *Issuer) Claims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": is.URL,
		"aud": identity.DevAudience,
		"sub": DefaultSubject,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// Token returns the default claims overridden by claims (Delete removes one), signed
// with the current signing key.
func (is *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return is.Sign(t, is.SigningKey(), nil, claims)
}

// Mint returns a token of the dev issuer (Okta-shaped, signed with the first key).
func (is *Issuer) Mint(t testing.TB, req identity.TokenRequest) string {
	t.Helper()
	tok, err := is.dev.Mint(req)
	if err != nil {
		t.Fatalf("testkit: mint: %v", err)
	}
	return tok
}

// Sign returns a compact JWS of the default claims overridden by claims, with header
// {"alg": key.Alg, "kid": key.ID} overridden by header (Delete removes one; "typ" may
// be added), signed with key according to key.Alg. key need not be published.
func (is *Issuer) Sign(t testing.TB, key *Key, header, claims map[string]any) string {
	t.Helper()
	h := merge(map[string]any{"alg": key.Alg, "kid": key.ID}, header)
	signingInput := segment(t, h) + "." + segment(t, merge(is.Claims(), claims))
	digest := sha256.Sum256([]byte(signingInput))
	var sig []byte
	switch k := key.signer.(type) {
	case *rsa.PrivateKey:
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:]); err != nil {
			t.Fatalf("testkit: sign: %v", err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatalf("testkit: sign: %v", err)
		}
		sig = make([]byte, 64) // JWS ES256 is r || s, 32 bytes each (RFC 7518 §3.4)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// NoneToken returns an unsigned token (alg "none", the signing key's kid, empty
// signature) of the default claims overridden by claims.
func (is *Issuer) NoneToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": "none", "kid": is.SigningKey().ID}
	return segment(t, h) + "." + segment(t, merge(is.Claims(), claims)) + "."
}

// HS256PublicKeyToken returns the algorithm-confusion forgery: alg HS256 with the
// signing key's kid, MACed with the signing key's public key in PEM form, as a
// verifier that feeds "the key" to HMAC would check it.
func (is *Issuer) HS256PublicKeyToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	key := is.SigningKey()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	input := segment(t, map[string]any{"alg": "HS256", "kid": key.ID}) + "." + segment(t, merge(is.Claims(), claims))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// NewKey returns a new unpublished key with a random kid; alg is "RS256" or "ES256".
func (is *Issuer) NewKey(t testing.TB, alg string) *Key {
	t.Helper()
	var signer crypto.Signer
	var err error
	switch alg {
	case "RS256":
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("testkit: unsupported key algorithm %q", alg)
	}
	if err != nil {
		t.Fatalf("testkit: generate key: %v", err)
	}
	return &Key{ID: randomKID(), Alg: alg, signer: signer}
}

// AddKey publishes k in the JWKS.
func (is *Issuer) AddKey(k *Key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published = append(is.published, k)
}

// RemoveKey stops publishing the keys with kid. The signing key is unchanged.
func (is *Issuer) RemoveKey(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	var keep []*Key
	for _, k := range is.published {
		if k.ID != kid {
			keep = append(keep, k)
		}
	}
	is.published = keep
}

// SetSigningKey makes k the key Token signs with. It does not publish k.
func (is *Issuer) SetSigningKey(k *Key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.signing = k
}

// Rotate publishes a new key of alg and makes it the signing key; the old keys stay
// published. It returns the new key.
func (is *Issuer) Rotate(t testing.TB, alg string) *Key {
	t.Helper()
	k := is.NewKey(t, alg)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.published = append(is.published, k)
	is.signing = k
	return k
}

// SigningKey returns the key Token signs with.
func (is *Issuer) SigningKey() *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.signing
}

// JWKSRequests returns how many requests the JWKS endpoint has received.
func (is *Issuer) JWKSRequests() int { return int(is.jwksHits.Load()) }

// DiscoveryRequests returns how many requests the discovery endpoint has received.
func (is *Issuer) DiscoveryRequests() int { return int(is.discoveryHits.Load()) }

// FailJWKS sets how the JWKS endpoint answers from now on.
func (is *Issuer) FailJWKS(m FailMode) { is.jwksMode.Store(int32(m)) }

// FailDiscovery sets how the discovery endpoint answers from now on.
func (is *Issuer) FailDiscovery(m FailMode) { is.discoveryMode.Store(int32(m)) }

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksHits.Add(1)
	if is.misbehave(w, r, FailMode(is.jwksMode.Load())) {
		return
	}
	is.mu.Lock()
	set := jose.JSONWebKeySet{}
	for _, k := range is.published {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: k.ID, Algorithm: k.Alg, Use: "sig"})
	}
	is.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(set); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// misbehave applies m and reports whether the request has been answered.
func (is *Issuer) misbehave(w http.ResponseWriter, r *http.Request, m FailMode) bool {
	switch m {
	case Fail500:
		http.Error(w, "testkit: failing on purpose", http.StatusInternalServerError)
		return true
	case Hang:
		select {
		case <-r.Context().Done():
		case <-is.done:
		}
		return true
	}
	return false
}

// merge returns base with over applied; a Delete value removes the key.
func merge(base, over map[string]any) map[string]any {
	out := maps.Clone(base)
	for k, v := range over {
		if v == Delete {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

func segment(t testing.TB, v map[string]any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("testkit: encode %v: %v", v, err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomKID() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
