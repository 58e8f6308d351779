package identity_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// devLogin walks the dev issuer's login page as a browser would, picking persona, and
// returns the code and state it redirected to redirect with.
func devLogin(t *testing.T, authURL, persona string) (code, state string) {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("GET authorize = %d (X-Frame-Options %q): %s", resp.StatusCode, resp.Header.Get("X-Frame-Options"), page)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
	}
	form.Set("persona", persona)
	u, _ := url.Parse(authURL)
	resp, err = noFollow.PostForm(u.Scheme+"://"+u.Host+u.Path, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil {
		t.Fatalf("POST authorize = %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

// TestDevIssuerLogin logs a persona in with the authorization code flow and PKCE, as
// the console does, and checks what the issuer refuses: a wrong verifier, a spent code,
// a redirect off loopback, no PKCE.
func TestDevIssuerLogin(t *testing.T) {
	d, srv := devServer(t)
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, srv.URL+"/dev")
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	oc := &oauth2.Config{ClientID: "console", Endpoint: provider.Endpoint(), RedirectURL: "http://127.0.0.1:1/ui/callback",
		Scopes: []string{oidc.ScopeOpenID}}
	verifier := oauth2.GenerateVerifier()
	authURL := oc.AuthCodeURL("st8", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce"))
	code, state := devLogin(t, authURL, "0")
	if state != "st8" || code == "" {
		t.Fatalf("redirected with code %q state %q, want a code and state st8", code, state)
	}
	if _, err := oc.Exchange(ctx, code, oauth2.VerifierOption("wrong-verifier-wrong-verifier-wrong-verifier")); err == nil {
		t.Error("exchange with a wrong PKCE verifier succeeded")
	}
	code, _ = devLogin(t, authURL, "0")
	tok, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if _, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
		t.Error("a spent code was exchanged again")
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "console"}).Verify(ctx, raw)
	if err != nil || idt.Nonce != "n0nce" || idt.Subject != "alice@example.com" {
		t.Fatalf("id token: %v (nonce %q, sub %q), want alice with nonce n0nce", err, idt.Nonce, idt.Subject)
	}
	v, err := identity.New(ctx, []config.Issuer{d.Config()}, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(ctx, tok.AccessToken)
	if err != nil || p.Subject != "alice@example.com" || p.ClientID != "console" || len(p.Groups) != 1 || p.Groups[0] != "crm-admins" {
		t.Fatalf("access token: %+v, %v; want alice of crm-admins via client console", p, err)
	}

	for _, bad := range []string{
		strings.Replace(authURL, url.QueryEscape("http://127.0.0.1:1/ui/callback"), url.QueryEscape("https://evil.example/cb"), 1),
		strings.Replace(authURL, "code_challenge_method=S256", "code_challenge_method=plain", 1),
		strings.Replace(authURL, "response_type=code", "response_type=token", 1),
	} {
		resp, err := http.Get(bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", bad, resp.StatusCode)
		}
	}
}
