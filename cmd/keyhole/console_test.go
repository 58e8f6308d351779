package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// consoleGateway is a running keyhole serve with the dev issuer, a route whose deletes
// wait for a crm-admins approval, an httptest upstream, a SQLite store and the console.
type consoleGateway struct {
	data, admin string
	upstream    *testkit.Upstream
}

func startConsoleGateway(t *testing.T) *consoleGateway {
	t.Helper()
	g := &consoleGateway{data: freeAddr(t), admin: freeAddr(t), upstream: testkit.NewUpstream(t)}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
listen: %q
admin:
  listen: %q
  roles:
    approvers: { groups: [crm-admins] }
    auditors: { groups: [keyhole-auditors] }
  console:
    client_id: keyhole-console
    redirect_url: "http://%s/ui/callback"
    session_key: "0123456789abcdef0123456789abcdef"
    idle_timeout: 5m
identity: { dev: true }
recorder: { store: "sqlite://%s" }
approvals: { public_url: "http://%s" }
upstreams:
  crm: { url: %q }
routes:
  - name: crm-delete-customer
    match: { methods: [DELETE, POST], path: "/crm/customers/{id}" }
    upstream: crm
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, hold: 30s }
`, g.data, g.admin, g.admin, filepath.Join(dir, "k.db"), g.admin, g.upstream.URL)
	path := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runBackground(t, func(string) string { return "" }, io.Discard, io.Discard, "serve", "--config", path)
	waitFor(t, "gateway ready", func() bool { s, _ := get("http://"+g.admin+"/readyz", ""); return s == 200 })
	return g
}

// token mints a dev token for sub with scopes, as `keyhole token` does.
func (g *consoleGateway) token(t *testing.T, sub string, scopes ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"sub": sub, "client_id": sub, "scopes": scopes})
	resp, err := http.Post("http://"+g.admin+"/dev/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("dev token: %v", err)
	}
	return out.AccessToken
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
type browser struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, jar: jar, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, u string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return resp, string(page)
}

// login goes through /ui/login and the dev issuer's page as persona (its index) and
// returns the callback URL it was sent to; follow is whether to take it.
func (b *browser) login(g *consoleGateway, persona string, follow bool) (callback string) {
	b.t.Helper()
	resp, _ := b.do("GET", "http://"+g.admin+"/ui/login?next=/ui/approvals", nil)
	authURL := resp.Header.Get("Location")
	resp, page := b.do("GET", authURL, nil)
	if resp.StatusCode != 200 {
		b.t.Fatalf("GET %s = %d: %s", authURL, resp.StatusCode, page)
	}
	form := url.Values{}
	for _, m := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		form.Set(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
	}
	form.Set("persona", persona)
	resp, _ = b.do("POST", "http://"+g.admin+"/dev/authorize", form)
	callback = resp.Header.Get("Location")
	if follow {
		if resp, page = b.do("GET", callback, nil); resp.StatusCode != http.StatusSeeOther {
			b.t.Fatalf("callback = %d: %s", resp.StatusCode, page)
		}
	}
	return callback
}

func (b *browser) cookie(g *consoleGateway, name string) *http.Cookie {
	for _, c := range b.jar.Cookies(&url.URL{Scheme: "http", Host: g.admin, Path: "/ui/"}) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestConsoleSession logs in and checks the session cookie's flags, that a tampered
// or foreign cookie is no session, that a login answer cannot be replayed, and that a
// POST without the session's CSRF token is refused.
func TestConsoleSession(t *testing.T) {
	g := startConsoleGateway(t)
	b := newBrowser(t)
	callback := b.login(g, "0", false)
	resp, _ := b.do("GET", callback, nil)
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "keyhole_session" {
			sc = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || sc == nil {
		t.Fatalf("callback = %d, cookies %v; want 303 with a session", resp.StatusCode, resp.Cookies())
	}
	if !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/ui/" || sc.Secure || sc.MaxAge <= 0 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path /ui/, not Secure on loopback http, a Max-Age", sc)
	}
	if strings.Contains(sc.Value, "alice") {
		t.Error("the session cookie shows its content: it must be sealed")
	}
	if resp, page := b.do("GET", "http://"+g.admin+"/ui/approvals", nil); resp.StatusCode != 200 || !strings.Contains(page, "alice@example.com") {
		t.Fatalf("inbox = %d, want 200 for alice:\n%s", resp.StatusCode, page)
	}

	t.Run("login answer replayed", func(t *testing.T) {
		replay := newBrowser(t)
		cb := replay.login(g, "0", false)
		login := replay.cookie(g, "keyhole_login")
		if resp, _ := replay.do("GET", cb, nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("first callback = %d, want 303", resp.StatusCode)
		}
		// The same answer with the same login cookie, as an attacker who copied both would send it.
		again := newBrowser(t)
		again.jar.SetCookies(&url.URL{Scheme: "http", Host: g.admin, Path: "/ui/"}, []*http.Cookie{login})
		if resp, page := again.do("GET", cb, nil); resp.StatusCode != http.StatusBadRequest || again.cookie(g, "keyhole_session") != nil {
			t.Errorf("replayed callback = %d, want 400 and no session:\n%s", resp.StatusCode, page)
		}
		// Without the login cookie (another browser), the answer is nobody's.
		if resp, _ := newBrowser(t).do("GET", cb, nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("callback without its login cookie = %d, want 400", resp.StatusCode)
		}
		// A state that is not the login's.
		other := newBrowser(t)
		cb2 := other.login(g, "0", false)
		if resp, _ := other.do("GET", regexp.MustCompile(`state=[^&]+`).ReplaceAllString(cb2, "state=forged"), nil); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("callback with a forged state = %d, want 400", resp.StatusCode)
		}
	})

	t.Run("tampered cookie", func(t *testing.T) {
		v := []byte(sc.Value)
		v[len(v)/2] ^= 1
		for name, value := range map[string]string{"flipped bit": string(v), "not base64": "!!", "login cookie as session": b.loginCookieValue(g)} {
			f := newBrowser(t)
			f.jar.SetCookies(&url.URL{Scheme: "http", Host: g.admin, Path: "/ui/"}, []*http.Cookie{{Name: "keyhole_session", Value: value}})
			if resp, _ := f.do("GET", "http://"+g.admin+"/ui/approvals", nil); resp.StatusCode != http.StatusSeeOther ||
				!strings.HasPrefix(resp.Header.Get("Location"), "/ui/login") {
				t.Errorf("%s: GET /ui/approvals = %d %s, want a redirect to log in", name, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})

	t.Run("CSRF", func(t *testing.T) {
		for name, form := range map[string]url.Values{"no token": {}, "wrong token": {"csrf": {"x"}}} {
			resp, page := b.do("POST", "http://"+g.admin+"/ui/logout", form)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "CSRF") {
				t.Errorf("%s: POST /ui/logout = %d, want 403 naming CSRF:\n%s", name, resp.StatusCode, page)
			}
		}
		if b.cookie(g, "keyhole_session") == nil {
			t.Fatal("a refused POST ended the session")
		}
		_, page := b.do("GET", "http://"+g.admin+"/ui/approvals", nil)
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatal("no CSRF token in the page")
		}
		if resp, _ := b.do("POST", "http://"+g.admin+"/ui/logout", url.Values{"csrf": {m[1]}}); resp.StatusCode != 200 || b.cookie(g, "keyhole_session") != nil {
			t.Errorf("logout = %d, session cookie %v; want 200 and the cookie gone", resp.StatusCode, b.cookie(g, "keyhole_session"))
		}
	})
}

// loginCookieValue starts a login and returns its sealed login cookie.
func (b *browser) loginCookieValue(g *consoleGateway) string {
	f := newBrowser(b.t)
	f.do("GET", "http://"+g.admin+"/ui/login", nil)
	if c := f.cookie(g, "keyhole_login"); c != nil {
		return c.Value
	}
	b.t.Fatal("no login cookie")
	return ""
}
