// Package console serves Keyhole's web console under /ui/ on the admin plane: OpenID
// Connect login (authorization code flow with PKCE) into a sealed cookie session, the
// approvals inbox where approvers read held requests and decide them, and the records
// browser where auditors filter, read, replay and export exchanges and verify the
// chain. Pages are rendered on the server and work without JavaScript. Who may read or
// decide what is the admin API's own policy (admin.ReadsApprovals, admin.MayDecide,
// admin.ReadsRecords), applied to the claims of the person's access token, verified by
// the API's verifier; the records pages call the API's own functions in-process.
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/recorder"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Options configure the console. Every field is required but Now and Log.
type Options struct {
	// Config is admin.console as loaded; IssuerURL is the issuer it names, resolved
	// (the dev issuer's URL when the config leaves it to identity.dev).
	Config    *config.Console
	IssuerURL string
	// Context is the process context: the issuer's discovery and keys are fetched
	// under it, never under a request's.
	Context context.Context
	// Verifier and Roles return the admin plane's current ones (they change on reload).
	Verifier  func() admin.Verifier
	Roles     func() admin.Roles
	Approvals admin.ApprovalService
	// Store and Replayer serve the records pages, as they serve the admin API; Version
	// names Keyhole in HAR files.
	Store    recorder.Store
	Replayer admin.Replayer
	Version  string
	Log      *slog.Logger
	Now      func() time.Time
}

// Handler is the console. It is safe for concurrent use.
type Handler struct {
	o      Options
	seal   *sealer
	pages  map[string]*template.Template
	mux    *http.ServeMux
	secure bool // redirect_url is https: cookies are Secure whatever the request

	mu       sync.Mutex
	provider *oidc.Provider       // discovered on the first login
	used     map[string]time.Time // states of callbacks taken, until their login expires
	limiter  *peerLimiter
	verify   verifier // the chain's verification, run on demand
}

var _ http.Handler = (*Handler)(nil)

// Bounds of the login.
const (
	loginTTL        = 10 * time.Minute // from the redirect to the issuer to the callback
	issuerTimeout   = 10 * time.Second // one request to the issuer
	callbacksPerMin = 20               // per peer address
	maxUsedStates   = 10000
	seenEvery       = time.Minute // how often a session's last-seen time is rewritten
)

// New returns the console for o.
func New(o Options) (*Handler, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s, err := newSealer([]byte(o.Config.SessionKey.Reveal()))
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(o.Config.RedirectURL)
	if err != nil {
		return nil, fmt.Errorf("console: redirect_url: %w", err)
	}
	h := &Handler{o: o, seal: s, pages: pages, secure: u.Scheme == "https", used: map[string]time.Time{},
		limiter: newPeerLimiter(callbacksPerMin, time.Minute)}
	static, _ := fs.Sub(staticFiles, "static")
	m := http.NewServeMux()
	m.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/approvals", http.StatusSeeOther)
	})
	m.HandleFunc("GET /ui/login", h.login)
	m.HandleFunc("GET /ui/callback", h.callback)
	m.HandleFunc("POST /ui/logout", h.post(h.logout))
	m.HandleFunc("GET /ui/approvals", h.page(h.inbox))
	m.HandleFunc("GET /ui/approvals/{id}", h.page(h.detail))
	m.HandleFunc("POST /ui/approvals/{id}/decide", h.post(h.decide))
	m.HandleFunc("GET /ui/records", h.page(h.records))
	m.HandleFunc("GET /ui/records.har", h.page(h.exportHAR))
	m.HandleFunc("GET /ui/records/{id}", h.page(h.showExchange))
	m.HandleFunc("POST /ui/records/{id}/replay", h.post(h.replay))
	m.HandleFunc("GET /ui/chain", h.page(h.chain))
	m.HandleFunc("POST /ui/chain/verify", h.post(h.startVerify))
	h.mux = m
	return h, nil
}

// ServeHTTP sets the console's security headers on every answer, then serves r.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// No inline script or style anywhere, and no framing: an approve button must not
	// be clickjackable.
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

// secureFor reports whether cookies set in answer to r are Secure.
func (h *Handler) secureFor(r *http.Request) bool { return h.secure || r.TLS != nil }

// current returns the live session of r — within its timeouts, of a client admin.clients
// accepts now — or nil. A live session last seen more than seenEvery ago is resealed
// with now as its last-seen time.
func (h *Handler) current(w http.ResponseWriter, r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	var s session
	if h.seal.open(sessionCookie, c.Value, &s) != nil {
		return nil
	}
	now := h.o.Now()
	// admin.clients is judged on every request, not only at login: a reload that narrows
	// it ends the sessions of clients it no longer lists.
	if !s.live(now, time.Duration(h.o.Config.IdleTimeout), time.Duration(h.o.Config.MaxAge)) ||
		!h.o.Roles().AdminClient(s.principal()) {
		http.SetCookie(w, cookie(sessionCookie, "", 0, h.secureFor(r)))
		return nil
	}
	if now.Sub(time.Unix(s.Seen, 0)) >= seenEvery {
		s.Seen = now.Unix()
		h.setSession(w, r, &s)
	}
	return &s
}

// setSession writes s as the session cookie, to expire with the session's max age.
func (h *Handler) setSession(w http.ResponseWriter, r *http.Request, s *session) error {
	v, err := h.seal.seal(sessionCookie, s)
	if err != nil {
		return err
	}
	if len(v) > maxCookie {
		return errors.New("the session is too large for a cookie: the access token carries too many groups or claims")
	}
	left := time.Unix(s.Issued, 0).Add(time.Duration(h.o.Config.MaxAge)).Sub(h.o.Now())
	http.SetCookie(w, cookie(sessionCookie, v, left, h.secureFor(r)))
	return nil
}

// page wraps a page handler: without a live session, the browser is sent to log in
// and brought back to the page after.
func (h *Handler) page(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := h.current(w, r)
		if s == nil {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		fn(w, r, s)
	}
}

// post wraps a form handler: it needs a live session and the session's CSRF token in
// the form's csrf field; anything else is refused with a page that says why.
func (h *Handler) post(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		s := h.current(w, r)
		if s == nil {
			h.problem(w, r, nil, http.StatusForbidden, "Your session has ended", "Log in again, then repeat what you were doing.")
			return
		}
		if err := r.ParseForm(); err != nil {
			h.problem(w, r, s, http.StatusBadRequest, "The form could not be read", "Go back, reload the page and try again.")
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.CSRF)) != 1 {
			h.problem(w, r, s, http.StatusForbidden, "Refused: this form did not come from your console session",
				"The request had no valid CSRF token, so it may have been sent by another site. Nothing was done. Reload the page and try again.")
			return
		}
		fn(w, r, s)
	}
}

// oidcProvider returns the issuer's OIDC provider, discovering it on first use (the issuer
// may be the dev issuer on this very listener, not serving yet at start-up).
func (h *Handler) oidcProvider() (*oidc.Provider, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.provider != nil {
		return h.provider, nil
	}
	// The provider keeps this context for its key set: the process's, with a client
	// that times out, so a hung issuer cannot block later key refreshes.
	p, err := oidc.NewProvider(oidc.ClientContext(h.o.Context, &http.Client{Timeout: issuerTimeout}), h.o.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("console: discover issuer %s: %w", h.o.IssuerURL, err)
	}
	h.provider = p
	return p, nil
}

func (h *Handler) oauth(p *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{ClientID: h.o.Config.ClientID, ClientSecret: h.o.Config.ClientSecret.Reveal(),
		Endpoint: p.Endpoint(), RedirectURL: h.o.Config.RedirectURL, Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}
}

// login sends the browser to the issuer, with a fresh state, nonce and PKCE verifier
// kept in the sealed login cookie.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	p, err := h.oidcProvider()
	if err != nil {
		h.o.Log.Error("console: login", "error", err.Error())
		h.problem(w, r, nil, http.StatusBadGateway, "The identity provider cannot be reached", "Try again in a moment.")
		return
	}
	next := r.URL.Query().Get("next")
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "/ui//") || strings.ContainsAny(next, "\\\r\n") {
		next = "/ui/approvals"
	}
	l := login{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(), Next: next,
		Expires: h.o.Now().Add(loginTTL).Unix()}
	v, err := h.seal.seal(loginCookie, l)
	if err != nil {
		h.problem(w, r, nil, http.StatusInternalServerError, "The login could not start", "Try again.")
		return
	}
	http.SetCookie(w, cookie(loginCookie, v, loginTTL, h.secureFor(r)))
	http.Redirect(w, r, h.oauth(p).AuthCodeURL(l.State, oauth2.S256ChallengeOption(l.Verifier), oidc.Nonce(l.Nonce)), http.StatusSeeOther)
}

// callback takes the issuer's answer: the state must be the login cookie's, unused;
// the code is exchanged with the PKCE verifier; the ID token must verify for the
// console's client with the login's nonce; the access token must verify as the admin
// API verifies it and come from a client admin.clients accepts. Its claims make the
// session: the admin roles are written over access-token claims (groups, scopes), and
// ID tokens often carry no groups.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	if !h.limiter.allow(peer(r.RemoteAddr), h.o.Now()) {
		h.problem(w, r, nil, http.StatusTooManyRequests, "Too many logins from your address", "Wait a minute, then log in again.")
		return
	}
	const restart = "Nothing was done. Log in again to start a new login."
	var l login
	c, err := r.Cookie(loginCookie)
	if err == nil {
		err = h.seal.open(loginCookie, c.Value, &l)
	}
	now := h.o.Now()
	// The login cookie is spent by this callback, whatever happens next.
	http.SetCookie(w, cookie(loginCookie, "", 0, h.secureFor(r)))
	q := r.URL.Query()
	switch {
	case err != nil || now.Unix() > l.Expires:
		h.problem(w, r, nil, http.StatusBadRequest, "This login has expired or was already used", restart)
		return
	case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(l.State)) != 1:
		h.problem(w, r, nil, http.StatusBadRequest, "Login refused: the state does not match this browser's login", restart)
		return
	case !h.spend(l.State, time.Unix(l.Expires, 0), now):
		h.problem(w, r, nil, http.StatusBadRequest, "Login refused: this login answer was already used", restart)
		return
	case q.Get("error") != "":
		h.problem(w, r, nil, http.StatusForbidden, "The identity provider refused the login: "+q.Get("error"), restart)
		return
	}
	s, msg := h.exchange(r.Context(), q.Get("code"), l)
	if s == nil {
		h.problem(w, r, nil, http.StatusForbidden, "Login refused: "+msg, restart)
		return
	}
	s.Issued, s.Seen, s.CSRF = now.Unix(), now.Unix(), randomToken()
	if err := h.setSession(w, r, s); err != nil {
		h.problem(w, r, nil, http.StatusForbidden, "Login refused: "+err.Error(), restart)
		return
	}
	h.o.Log.Info("console: login", "subject", s.Subject, "issuer", s.Issuer, "client_id", s.ClientID)
	http.Redirect(w, r, l.Next, http.StatusSeeOther)
}

// exchange redeems code and verifies both tokens. On refusal it returns a message
// that is safe to show and names no token content.
func (h *Handler) exchange(ctx context.Context, code string, l login) (*session, string) {
	p, err := h.oidcProvider()
	if err != nil {
		return nil, "the identity provider cannot be reached"
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, &http.Client{Timeout: issuerTimeout}), issuerTimeout)
	defer cancel()
	tok, err := h.oauth(p).Exchange(ctx, code, oauth2.VerifierOption(l.Verifier))
	if err != nil {
		h.o.Log.Warn("console: code exchange", "error", err.Error())
		return nil, "the identity provider did not exchange the code"
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: h.o.Config.ClientID}).Verify(ctx, raw)
	if err != nil {
		h.o.Log.Warn("console: id token", "error", err.Error())
		return nil, "the ID token did not verify"
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(l.Nonce)) != 1 {
		return nil, "the ID token's nonce is not this login's"
	}
	pr, err := h.o.Verifier().Verify(ctx, tok.AccessToken)
	if err != nil {
		return nil, "the access token did not verify as the admin API verifies tokens: " + err.Error()
	}
	if pr.Issuer != idt.Issuer {
		return nil, "the access token is from another issuer than the ID token"
	}
	if !h.o.Roles().AdminClient(pr) {
		return nil, "the admin plane does not accept tokens of this client (admin.clients)"
	}
	return &session{Issuer: pr.Issuer, Subject: pr.Subject, ClientID: pr.ClientID, Groups: pr.Groups, Scopes: pr.Scopes,
		Claims: pr.Claims}, ""
}

// spend records state as used until its login expires and reports whether it was
// unused: a callback replayed to this replica is refused even with its login cookie.
func (h *Handler) spend(state string, until, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.used[state]; ok {
		return false
	}
	if len(h.used) >= maxUsedStates {
		for k, t := range h.used {
			if now.After(t) {
				delete(h.used, k)
			}
		}
	}
	if len(h.used) >= maxUsedStates {
		return false
	}
	h.used[state] = until
	return true
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, cookie(sessionCookie, "", 0, h.secureFor(r)))
	h.o.Log.Info("console: logout", "subject", s.Subject)
	h.render(w, r, nil, http.StatusOK, "message", message{Title: "Logged out", Text: "You are logged out of the Keyhole console."})
}

// peer is the address a request came from: the connection's, never a forwarded header.
func peer(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// peerLimiter allows each peer n events per window (a fixed window per peer).
type peerLimiter struct {
	mu     sync.Mutex
	n      int
	window time.Duration
	peers  map[string]*peerWindow
}

type peerWindow struct {
	start time.Time
	count int
}

func newPeerLimiter(n int, window time.Duration) *peerLimiter {
	return &peerLimiter{n: n, window: window, peers: map[string]*peerWindow{}}
}

// allow counts an event of peer p at now and reports whether it is within the limit.
func (l *peerLimiter) allow(p string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.peers) > 10000 {
		for k, w := range l.peers {
			if now.Sub(w.start) >= l.window {
				delete(l.peers, k)
			}
		}
	}
	w := l.peers[p]
	if w == nil || now.Sub(w.start) >= l.window {
		w = &peerWindow{start: now}
		l.peers[p] = w
	}
	w.count++
	return w.count <= l.n
}
