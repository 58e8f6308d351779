package identity

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DevAuthorizePath is where the dev issuer's Handler serves its login page (the OpenID
// Connect authorization endpoint).
const DevAuthorizePath = "/authorize"

// DevPersona is one identity the dev issuer's login page offers, for local use only.
type DevPersona struct {
	Label string // what the page says the persona is for
	TokenRequest
}

// DevPersonas returns the people `keyhole demo` offers at login: an approver of deletes
// (group crm-admins), an auditor (keyhole-auditors), and a person with no admin role.
func DevPersonas() []DevPersona {
	return []DevPersona{
		{Label: "approver (crm-admins): decides held deletes", TokenRequest: TokenRequest{Subject: "alice@example.com", Groups: []string{"crm-admins"}}},
		{Label: "auditor (keyhole-auditors): reads records and approvals", TokenRequest: TokenRequest{Subject: "bob@example.com", Groups: []string{"keyhole-auditors"}}},
		{Label: "no admin role", TokenRequest: TokenRequest{Subject: "carol@example.com", Groups: []string{"sales"}}},
	}
}

// SetPersonas replaces the personas the login page offers.
func (d *DevIssuer) SetPersonas(ps []DevPersona) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.personas = append([]DevPersona(nil), ps...)
}

// devCode is an authorization code the login page handed out, redeemable once.
type devCode struct {
	persona     DevPersona
	clientID    string
	redirectURI string
	challenge   string // PKCE S256 code challenge
	nonce       string
	expires     time.Time
}

// Bounds of the dev issuer's codes: a code lives devCodeTTL, and at most maxDevCodes
// are outstanding (the oldest login must then start again).
const (
	devCodeTTL  = time.Minute
	maxDevCodes = 1000
)

// authorizeRequest is the part of an authorization request the dev issuer reads.
type authorizeRequest struct {
	ClientID, RedirectURI, State, Nonce, Challenge, Scope string
}

// readAuthorize reads and checks an authorization request: response_type code, a
// client_id, a redirect_uri on a loopback host (the dev issuer sends its codes nowhere
// else) and a PKCE S256 challenge.
func readAuthorize(q url.Values) (authorizeRequest, string) {
	ar := authorizeRequest{ClientID: q.Get("client_id"), RedirectURI: q.Get("redirect_uri"), State: q.Get("state"),
		Nonce: q.Get("nonce"), Challenge: q.Get("code_challenge"), Scope: q.Get("scope")}
	u, err := url.Parse(ar.RedirectURI)
	switch {
	case q.Get("response_type") != "code":
		return ar, "response_type must be code"
	case ar.ClientID == "":
		return ar, "client_id is required"
	case err != nil || u.Scheme != "http" && u.Scheme != "https" || !isLoopbackHost(u.Hostname()):
		return ar, "redirect_uri must be an http(s) URL on a loopback host"
	case q.Get("code_challenge_method") != "S256" || ar.Challenge == "":
		return ar, "PKCE is required: code_challenge with code_challenge_method S256"
	}
	return ar, ""
}

var devLoginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keyhole dev issuer: log in</title>
<style>body{font:16px system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}button{display:block;width:100%;text-align:left;padding:.8rem;margin:.5rem 0;font:inherit;cursor:pointer}small{color:#555}</style>
</head><body>
<h1>Keyhole dev issuer</h1>
<p><strong>For local development only.</strong> Pick who to be; no password is asked.
Client <code>{{.Req.ClientID}}</code>.</p>
<form method="post" action="authorize">
{{range $k, $v := .Fields}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}{{range $i, $p := .Personas}}<button type="submit" name="persona" value="{{$i}}">{{$p.Subject}}<br><small>{{$p.Label}}</small></button>
{{end}}</form>
</body></html>
`))

// serveAuthorize shows the personas (GET) and, when one is picked (POST), redirects to
// the client's redirect_uri with a code and the state.
func (d *DevIssuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://127.0.0.1:* http://localhost:* http://[::1]:*; frame-ancestors 'none'")
	if !isLoopbackPeer(r.RemoteAddr) || !loopbackRequestHost(r.Host) {
		http.Error(w, "the dev issuer answers loopback clients only", http.StatusForbidden)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ar, msg := readAuthorize(r.Form)
	if msg != "" {
		http.Error(w, "authorization request refused: "+msg, http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	personas := d.personas
	d.mu.Unlock()
	if r.Method == http.MethodGet {
		fields := map[string]string{"response_type": "code", "client_id": ar.ClientID, "redirect_uri": ar.RedirectURI,
			"state": ar.State, "nonce": ar.Nonce, "code_challenge": ar.Challenge, "code_challenge_method": "S256", "scope": ar.Scope}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = devLoginPage.Execute(w, map[string]any{"Req": ar, "Fields": fields, "Personas": personas})
		return
	}
	i, err := strconv.Atoi(r.PostForm.Get("persona"))
	if err != nil || i < 0 || i >= len(personas) {
		http.Error(w, "pick one of the personas", http.StatusBadRequest)
		return
	}
	code := randomID(24)
	d.mu.Lock()
	now := time.Now()
	maps.DeleteFunc(d.codes, func(_ string, c devCode) bool { return now.After(c.expires) })
	if len(d.codes) >= maxDevCodes {
		d.mu.Unlock()
		http.Error(w, "too many logins in progress; try again in a minute", http.StatusServiceUnavailable)
		return
	}
	d.codes[code] = devCode{persona: personas[i], clientID: ar.ClientID, redirectURI: ar.RedirectURI,
		challenge: ar.Challenge, nonce: ar.Nonce, expires: now.Add(devCodeTTL)}
	d.mu.Unlock()
	u, _ := url.Parse(ar.RedirectURI)
	q := u.Query()
	q.Set("code", code)
	q.Set("state", ar.State)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// redeem exchanges an authorization code (grant_type authorization_code, form-encoded)
// for an access token and an ID token. The code is spent whether or not the rest holds.
func (d *DevIssuer) redeem(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "authorization_code" {
		writeError(w, http.StatusBadRequest, "unsupported_grant_type", "form posts take grant_type authorization_code")
		return
	}
	f := r.PostForm
	d.mu.Lock()
	c, ok := d.codes[f.Get("code")]
	delete(d.codes, f.Get("code"))
	d.mu.Unlock()
	clientID := f.Get("client_id")
	if id, _, basic := r.BasicAuth(); basic {
		clientID = id
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	if !ok || time.Now().After(c.expires) || clientID != c.clientID || f.Get("redirect_uri") != c.redirectURI ||
		subtle.ConstantTimeCompare([]byte(challenge), []byte(c.challenge)) != 1 {
		writeError(w, http.StatusBadRequest, "invalid_grant", "the code is unknown, spent, expired, or was issued for another client, redirect_uri or code_verifier")
		return
	}
	tr := c.persona.TokenRequest
	tr.ClientID, tr.TTL = c.clientID, DevTTL
	access, err := d.Mint(tr)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_grant", err.Error())
		return
	}
	now := time.Now()
	idClaims := map[string]any{"iss": d.url, "sub": tr.Subject, "aud": c.clientID, "iat": now.Unix(),
		"exp": now.Add(DevTTL).Unix(), "auth_time": now.Unix(), "email": tr.Subject}
	if c.nonce != "" {
		idClaims["nonce"] = c.nonce
	}
	payload, _ := json.Marshal(idClaims)
	jws, err := d.signer.Sign(payload)
	var idToken string
	if err == nil {
		idToken, err = jws.CompactSerialize()
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "error", "sign id token")
		return
	}
	body, _ := json.Marshal(map[string]any{"access_token": access, "id_token": idToken, "token_type": "Bearer",
		"expires_in": int64(DevTTL / time.Second)})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

// loopbackRequestHost reports whether a Host header names loopback: a page elsewhere
// that reaches loopback through DNS rebinding sends its own host name.
func loopbackRequestHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopbackHost(strings.Trim(host, "[]"))
}
