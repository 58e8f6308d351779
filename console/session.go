package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keyholehq/keyhole/identity"
)

// Cookie names. Each is sealed with its name as associated data, so one cannot be
// passed off as the other.
const (
	sessionCookie = "keyhole_session"
	loginCookie   = "keyhole_login"
)

// maxCookie is the longest sealed cookie the console sets: browsers keep about 4096
// bytes of a cookie, name and attributes included.
const maxCookie = 3800

// errCookie is every reason a cookie is not accepted: missing, forged, tampered with,
// sealed with another key, or for another purpose.
var errCookie = errors.New("console: cookie missing or not sealed by this console")

// sealer seals and opens cookie values with AES-256-GCM under a key derived from the
// configured session key. Every replica with the same session key opens the cookies
// of the others. It is safe for concurrent use.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	// Derived, so the configured secret is used for nothing but this purpose.
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("keyhole console cookie v1"))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("console: session key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("console: session key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal returns v as JSON, encrypted and authenticated for cookie name.
func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := s.aead.Seal(nonce, nonce, plain, []byte(name))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open reads into v the value seal made for cookie name, or returns errCookie.
func (s *sealer) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return errCookie
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(name))
	if err != nil || json.Unmarshal(plain, v) != nil {
		return errCookie
	}
	return nil
}

// session is what the session cookie holds: who logged in, the claims the admin roles
// read (from the verified access token), when the login was and when the session was
// last used, and the secret CSRF tokens are made of. No token is kept.
type session struct {
	Issuer   string         `json:"iss"`
	Subject  string         `json:"sub"`
	ClientID string         `json:"cid,omitempty"`
	Groups   []string       `json:"groups,omitempty"`
	Scopes   []string       `json:"scp,omitempty"`
	Claims   map[string]any `json:"claims,omitempty"`
	Issued   int64          `json:"iat"`  // unix seconds of the login
	Seen     int64          `json:"seen"` // unix seconds of the last request
	CSRF     string         `json:"csrf"`
}

// principal is the session's person as the admin roles judge it.
func (s *session) principal() *identity.Principal {
	return &identity.Principal{Issuer: s.Issuer, Subject: s.Subject, ClientID: s.ClientID, Groups: s.Groups,
		Scopes: s.Scopes, Claims: s.Claims}
}

// live reports whether the session is within its idle and absolute timeouts at now.
func (s *session) live(now time.Time, idle, maxAge time.Duration) bool {
	return now.Sub(time.Unix(s.Issued, 0)) < maxAge && now.Sub(time.Unix(s.Seen, 0)) < idle
}

// login is what the login cookie holds between the redirect to the issuer and the
// callback: the state and nonce sent, the PKCE verifier, where to go after, and until
// when the callback is accepted.
type login struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Next     string `json:"next"`
	Expires  int64  `json:"exp"`
}

// cookie returns a console cookie: HttpOnly, SameSite=Lax (the issuer's redirect back
// is a top-level GET, which Lax lets through), on /ui/, Secure when secure.
func cookie(name, value string, maxAge time.Duration, secure bool) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/ui/", HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteLaxMode, MaxAge: int(maxAge / time.Second)}
	if maxAge <= 0 {
		c.MaxAge = -1
	}
	return c
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
