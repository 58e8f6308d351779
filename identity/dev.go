package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyholehq/keyhole/config"
)

// Dev issuer constants.
const (
	DevAudience = "keyhole-dev"        // aud of every dev token, and the audience of Config
	DevClientID = "keyhole-dev-client" // cid of user tokens minted without a ClientID
	DevTTL      = time.Hour            // TTL of a TokenRequest that names none
	DevMaxTTL   = 24 * time.Hour       // longest TTL Mint accepts
)

// Paths the dev issuer's Handler serves, relative to the issuer URL.
const (
	DevDiscoveryPath = "/.well-known/openid-configuration"
	DevKeysPath      = "/keys"
	DevTokenPath     = "/token"
)

// maxTokenRequestBytes bounds the body of POST /token.
const maxTokenRequestBytes = 64 << 10

// DevIssuer is a local OIDC issuer for `keyhole demo` and `keyhole token`: one RSA-2048
// key (in memory only from NewDevIssuer, kept in a file by OpenDevIssuer), Okta-shaped
// RS256 access tokens, discovery, JWKS and a token endpoint that answers loopback peers
// only. It is safe for concurrent use.
type DevIssuer struct {
	url       string
	kid       string
	signer    jose.Signer
	discovery []byte // the discovery document
	jwks      []byte // the public JWK Set

	mu       sync.Mutex
	personas []DevPersona       // offered by the login page
	codes    map[string]devCode // authorization codes not yet redeemed
}

// NewDevIssuer returns a dev issuer for issuerURL with a fresh RSA-2048 key and a
// random kid.
func NewDevIssuer(issuerURL string) (*DevIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: generate key: %w", err)
	}
	return NewDevIssuerWithKey(issuerURL, key, randomID(12))
}

// NewDevIssuerWithKey returns a dev issuer for issuerURL that signs with key under kid.
// Tests that need to sign with the same key in other ways use it; the key is not
// exposed by the DevIssuer.
func NewDevIssuerWithKey(issuerURL string, key *rsa.PrivateKey, kid string) (*DevIssuer, error) {
	u, err := url.Parse(issuerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("dev issuer: issuer URL %q is not an absolute http(s) URL", issuerURL)
	}
	if key == nil || kid == "" {
		return nil, errors.New("dev issuer: key and kid are required")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), kid)) // Okta sends no typ
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	d := &DevIssuer{url: issuerURL, kid: kid, signer: signer, personas: DevPersonas(), codes: map[string]devCode{}}
	base := strings.TrimSuffix(issuerURL, "/")
	d.discovery, err = json.Marshal(map[string]any{
		"issuer":                                issuerURL,
		"jwks_uri":                              base + DevKeysPath,
		"token_endpoint":                        base + DevTokenPath,
		"authorization_endpoint":                base + DevAuthorizePath,
		"response_types_supported":              []string{"code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"scopes_supported":                      []string{"openid", "profile", "email"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"grant_types_supported":                 []string{"client_credentials", "authorization_code"},
	})
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	d.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig",
	}}})
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	return d, nil
}

// Config returns the issuer configuration that trusts this dev issuer: audience
// DevAudience, RS256 only, and the JWKS URL set so that no discovery is needed.
func (d *DevIssuer) Config() config.Issuer {
	return config.Issuer{
		Issuer:      d.url,
		Audiences:   []string{DevAudience},
		GroupsClaim: config.DefaultGroupsClaim,
		ScopesClaim: config.DefaultScopesClaim,
		Algorithms:  []string{string(jose.RS256)},
		JWKSURL:     strings.TrimSuffix(d.url, "/") + DevKeysPath,
	}
}

// KeyID returns the kid of the issuer's signing key.
func (d *DevIssuer) KeyID() string { return d.kid }

// TokenRequest asks the dev issuer for a token. Its JSON form is
// {"sub", "client_id", "groups", "scopes", "ttl": "1h", "claims"}.
//
// A request with ClientID set and Subject empty or equal to ClientID yields an Okta
// client-credentials token (sub == cid, no uid); any other yields a user token
// (cid DevClientID unless ClientID is set, uid derived from Subject).
type TokenRequest struct {
	Subject  string         `json:"sub,omitempty"`
	ClientID string         `json:"client_id,omitempty"`
	Groups   []string       `json:"groups,omitempty"`
	Scopes   []string       `json:"scopes,omitempty"`
	TTL      time.Duration  `json:"ttl,omitempty"` // JSON: a duration string such as "1h"; 0 means DevTTL
	Claims   map[string]any `json:"claims,omitempty"`
}

type tokenRequestJSON struct {
	Subject  string         `json:"sub,omitempty"`
	ClientID string         `json:"client_id,omitempty"`
	Groups   []string       `json:"groups,omitempty"`
	Scopes   []string       `json:"scopes,omitempty"`
	TTL      string         `json:"ttl,omitempty"`
	Claims   map[string]any `json:"claims,omitempty"`
}

// MarshalJSON writes TTL as a duration string.
func (r TokenRequest) MarshalJSON() ([]byte, error) {
	j := tokenRequestJSON{Subject: r.Subject, ClientID: r.ClientID, Groups: r.Groups, Scopes: r.Scopes, Claims: r.Claims}
	if r.TTL != 0 {
		j.TTL = r.TTL.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads TTL as a duration string ("90m", "1h"). Unknown fields are errors.
func (r *TokenRequest) UnmarshalJSON(b []byte) error {
	var j tokenRequestJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*r = TokenRequest{Subject: j.Subject, ClientID: j.ClientID, Groups: j.Groups, Scopes: j.Scopes, Claims: j.Claims}
	if j.TTL != "" {
		d, err := time.ParseDuration(j.TTL)
		if err != nil {
			return fmt.Errorf("ttl: %w", err)
		}
		r.TTL = d
	}
	return nil
}

// reservedClaims are set by Mint and cannot be overridden through TokenRequest.Claims.
var reservedClaims = []string{"ver", "jti", "iss", "aud", "iat", "exp", "nbf", "cid", "uid", "scp", "sub", "groups"}

// Mint returns a signed Okta-shaped access token for req: header alg RS256 and kid;
// claims ver, jti, iss, aud, iat, exp, cid, uid (user tokens only), scp (array), sub,
// groups (only when non-empty), then req.Claims. It returns an error if req names
// neither Subject nor ClientID, if TTL is negative or above DevMaxTTL, or if Claims
// sets one of the claims above.
func (d *DevIssuer) Mint(req TokenRequest) (string, error) {
	if req.Subject == "" && req.ClientID == "" {
		return "", errors.New("dev issuer: sub or client_id is required")
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DevTTL
	}
	if ttl < 0 || ttl > DevMaxTTL {
		return "", fmt.Errorf("dev issuer: ttl %s is outside (0, %s]", ttl, DevMaxTTL)
	}
	for _, c := range reservedClaims {
		if _, ok := req.Claims[c]; ok {
			return "", fmt.Errorf("dev issuer: claim %q is set by the issuer", c)
		}
	}
	now := time.Now()
	claims := make(map[string]any, len(req.Claims)+12)
	maps.Copy(claims, req.Claims)
	claims["ver"] = 1
	claims["jti"] = "AT." + randomID(24)
	claims["iss"] = d.url
	claims["aud"] = DevAudience
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(ttl).Unix()
	scopes := req.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	claims["scp"] = scopes
	if req.ClientID != "" && (req.Subject == "" || req.Subject == req.ClientID) {
		claims["sub"] = req.ClientID // client credentials: sub == cid, no uid
		claims["cid"] = req.ClientID
	} else {
		claims["sub"] = req.Subject
		claims["cid"] = req.ClientID
		if req.ClientID == "" {
			claims["cid"] = DevClientID
		}
		sum := sha256.Sum256([]byte(req.Subject))
		claims["uid"] = "00u" + hex.EncodeToString(sum[:])[:17] // Okta user ids are 20 characters
	}
	if len(req.Groups) > 0 {
		claims["groups"] = req.Groups
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("dev issuer: claims: %w", err)
	}
	jws, err := d.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("dev issuer: sign: %w", err)
	}
	return jws.CompactSerialize()
}

// Handler serves, relative to the issuer URL (mount it with http.StripPrefix of the
// issuer URL's path): GET DevDiscoveryPath, GET DevKeysPath, DevAuthorizePath (a login
// page offering the personas, which redirects with a code), and POST DevTokenPath,
// which takes a JSON TokenRequest and answers {"access_token", "token_type": "Bearer",
// "expires_in"}, or a form-encoded authorization_code grant (PKCE S256 checked) and
// answers an access token and an ID token, to loopback peers only (403 otherwise, judged by RemoteAddr: the dev
// issuer mints any identity for whoever asks).
func (d *DevIssuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DevDiscoveryPath, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.discovery)
	})
	mux.HandleFunc("GET "+DevKeysPath, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.jwks)
	})
	mux.HandleFunc("POST "+DevTokenPath, d.serveToken)
	mux.HandleFunc("GET "+DevAuthorizePath, d.serveAuthorize)
	mux.HandleFunc("POST "+DevAuthorizePath, d.serveAuthorize)
	return mux
}

func (d *DevIssuer) serveToken(w http.ResponseWriter, r *http.Request) {
	if !isLoopbackPeer(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "forbidden", "the dev token endpoint answers loopback clients only")
		return
	}
	// A page in a local browser can reach loopback through DNS rebinding; its requests
	// carry the attacker's host name, and a form post cannot send application/json
	// without a CORS preflight this endpoint never answers.
	if !loopbackRequestHost(r.Host) {
		writeError(w, http.StatusForbidden, "forbidden", "the dev token endpoint answers requests for a loopback host only")
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/x-www-form-urlencoded" {
		// The login page's codes: spent only with the PKCE verifier of the client that
		// asked, so a form a rebinding page posts here gets nothing.
		d.redeem(w, r)
		return
	}
	if ct != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "bad_request", "send the token request as application/json")
		return
	}
	var req TokenRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxTokenRequestBytes))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "body is not a valid token request: "+err.Error())
		return
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DevTTL
	}
	tok, err := d.Mint(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), "dev issuer: "))
		return
	}
	body, err := json.Marshal(map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int64(ttl / time.Second),
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "error", "encode response")
		return
	}
	w.Header().Set("Cache-Control", "no-store") // RFC 6749 §5.1
	writeJSON(w, http.StatusOK, body)
}

// isLoopbackPeer reports whether remoteAddr ("host:port") is a loopback address.
func isLoopbackPeer(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, code int, kind, msg string) {
	body, _ := json.Marshal(map[string]string{"error": kind, "message": msg})
	writeJSON(w, code, body)
}

// randomID returns n random bytes, base64url-encoded.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// isLoopbackHost reports whether host (from a Host header) names the loopback interface.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
