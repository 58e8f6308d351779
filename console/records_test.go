package console

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// The upstream's credential and a customer's SSN: neither may ever show on a page.
const (
	upstreamKey = "crm-key-5ecr3t-0f-the-upstream"
	ssn         = "123-45-6789"
)

const recordsConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
admin:
  roles:
    auditors: { groups: [auditors] }
upstreams:
  crm:
    url: ${CRM_URL}
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
routes:
  - name: crm-read
    match: { methods: [GET], path: "/crm/customers/{id}" }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask: [{ field: ssn, action: redact }]
  - name: crm-write
    match: { methods: [POST], path: "/crm/customers" }
    upstream: crm
    allow: { scopes: [crm.write] }
`

// recordsHarness is a recording gateway in front of an httptest upstream, on a SQLite
// file, and the console over the same store and the gateway's Replay, as `keyhole
// serve` wires them. Sessions are sealed by the console's own sealer.
type recordsHarness struct {
	c       *Handler
	data    *httptest.Server
	iss     *testkit.Issuer
	up      *testkit.Upstream
	store   *sqlite.Store
	rec     *recorder.Recorder
	file    string
	served  atomic.Int64 // requests the upstream answered
	roles   atomic.Pointer[rules.Table]
	auditor *http.Cookie
	other   *http.Cookie
}

func newRecordsHarness(t *testing.T) *recordsHarness {
	t.Helper()
	h := &recordsHarness{iss: testkit.NewIssuer(t), up: testkit.NewUpstream(t)}
	h.up.Respond = func(w http.ResponseWriter, r *http.Request) {
		n := h.served.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/big") {
			fmt.Fprintf(w, `{"blob":%q}`, strings.Repeat("x", 2000))
			return
		}
		fmt.Fprintf(w, `{"id":"c1","name":"Ann","ssn":%q,"served":%d}`, ssn, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	env := map[string]string{"ISSUER": h.iss.Config().Issuer, "CRM_URL": h.up.URL, "CRM_KEY": upstreamKey}
	cfg, err := config.Parse([]byte(recordsConfig), t.TempDir(), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.roles.Store(table)
	v, err := identity.New(ctx, cfg.Identity.Issuers, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	h.file = filepath.Join(t.TempDir(), "k.db")
	if h.store, err = sqlite.Open(ctx, "sqlite://"+h.file); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.store.Close() })
	h.rec = recorder.New(h.store, recorder.Policy{Mode: recorder.Strict, BodyLimit: 512,
		Redactor: recorder.NewRedactor([]string{"X-Api-Key"}, []string{upstreamKey})}, recorder.Options{})
	t.Cleanup(func() { h.rec.Close(context.Background()) })
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	gw := proxy.New(log, m, h.rec, nil)
	st, err := gw.NewState(cfg, table, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	gw.Swap(st)
	h.data = httptest.NewServer(gw)
	t.Cleanup(h.data.Close)
	h.c, err = New(Options{Config: &config.Console{ClientID: "console", RedirectURL: "http://127.0.0.1/ui/callback",
		SessionKey: "0123456789abcdef0123456789abcdef", IdleTimeout: config.Duration(time.Hour), MaxAge: config.Duration(time.Hour)},
		IssuerURL: h.iss.Config().Issuer, Context: ctx, Verifier: func() admin.Verifier { return v },
		Roles: func() admin.Roles { return h.roles.Load() }, Store: h.store, Replayer: gw, Version: "test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	h.auditor = h.session(t, "auditor@example.com", "auditors")
	h.other = h.session(t, "carol@example.com", "sales")
	return h
}

// session returns the session cookie of a person who logged in as sub with groups; its
// CSRF token is "csrf-"+sub.
func (h *recordsHarness) session(t *testing.T, sub string, groups ...string) *http.Cookie {
	t.Helper()
	return h.sessionVia(t, "", sub, groups...)
}

// sessionVia is session for a person who logged in through the client clientID.
func (h *recordsHarness) sessionVia(t *testing.T, clientID, sub string, groups ...string) *http.Cookie {
	t.Helper()
	now := time.Now().Unix()
	v, err := h.c.seal.seal(sessionCookie, session{Issuer: h.iss.Config().Issuer, Subject: sub, ClientID: clientID,
		Groups: groups, Issued: now, Seen: now, CSRF: "csrf-" + sub})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: sessionCookie, Value: v}
}

// send makes a request through the gateway and returns its exchange id once its
// record is complete.
func (h *recordsHarness) send(t *testing.T, method, path, body string, hdr map[string]string, scopes ...string) string {
	t.Helper()
	tok := h.iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "agent-" + method, "scp": scopes})
	req, _ := http.NewRequest(method, h.data.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	h.wait(t, id)
	return id
}

// wait waits until the record of exchange id is complete.
func (h *recordsHarness) wait(t *testing.T, id string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if rec, err := h.store.Get(context.Background(), id); err == nil && rec.Response != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("exchange %s was not recorded", id)
		}
	}
}

// page requests the console as the person of cookie c (nil: nobody) and returns the
// status, the Location and the body.
func (h *recordsHarness) page(t *testing.T, c *http.Cookie, method, target string, form url.Values) (int, string, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c != nil {
		req.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.c.ServeHTTP(w, req)
	return w.Code, w.Header().Get("Location"), w.Body.String()
}

// text is a page's text: tags dropped, entities decoded, as a person reads it.
func text(page string) string {
	return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, ""))
}

// TestRecordsRoles: only auditors read records, as the admin API decides; anyone else is
// told why, and no record content reaches them.
func TestRecordsRoles(t *testing.T) {
	h := newRecordsHarness(t)
	id := h.send(t, "GET", "/crm/customers/c1", "", nil, "crm.read")
	for _, tt := range []struct{ method, target string }{
		{"GET", "/ui/records"}, {"GET", "/ui/records/" + id}, {"GET", "/ui/records.har"}, {"GET", "/ui/chain"},
		{"POST", "/ui/records/" + id + "/replay"}, {"POST", "/ui/chain/verify"},
	} {
		var form url.Values
		if tt.method == "POST" {
			form = url.Values{"csrf": {"csrf-carol@example.com"}}
		}
		status, _, page := h.page(t, h.other, tt.method, tt.target, form)
		if status != http.StatusForbidden || !strings.Contains(page, "auditors role") || strings.Contains(page, "Ann") {
			t.Errorf("%s %s as a non-auditor = %d, want 403 naming the auditors role and no record:\n%s", tt.method, tt.target, status, page)
		}
		if status, loc, _ := h.page(t, nil, "GET", tt.target, nil); tt.method == "GET" && (status != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/login")) {
			t.Errorf("GET %s logged out = %d %s, want a redirect to log in", tt.target, status, loc)
		}
	}
	if h.served.Load() != 1 {
		t.Errorf("the upstream served %d requests, want 1: a refused replay was sent", h.served.Load())
	}
}

// TestSessionsFollowAdminClients: admin.clients is judged on every request, so a
// reload that narrows it ends the sessions of people who logged in through a client it
// no longer lists (they are sent to log in again), and keeps the others.
func TestSessionsFollowAdminClients(t *testing.T) {
	h := newRecordsHarness(t)
	viaConsole := h.sessionVia(t, "0oa-console", "auditor@example.com", "auditors")
	viaAgentApp := h.sessionVia(t, "0oa-agent-app", "auditor@example.com", "auditors")
	narrow := strings.Replace(recordsConfig, "admin:\n", "admin:\n  clients: [0oa-console]\n", 1)
	env := map[string]string{"ISSUER": h.iss.Config().Issuer, "CRM_URL": h.up.URL, "CRM_KEY": upstreamKey}
	cfg, err := config.Parse([]byte(narrow), t.TempDir(), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*http.Cookie{viaConsole, viaAgentApp} {
		if status, _, _ := h.page(t, c, "GET", "/ui/records", nil); status != http.StatusOK {
			t.Fatalf("records before admin.clients = %d, want 200", status)
		}
	}
	h.roles.Store(table)
	if status, _, _ := h.page(t, viaConsole, "GET", "/ui/records", nil); status != http.StatusOK {
		t.Errorf("records through a listed client = %d, want 200", status)
	}
	status, loc, page := h.page(t, viaAgentApp, "GET", "/ui/records", nil)
	if status != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/login") || strings.Contains(page, "Ann") {
		t.Errorf("records through a client admin.clients no longer lists = %d %s, want a redirect to log in", status, loc)
	}
	form := url.Values{"csrf": {"csrf-auditor@example.com"}}
	if status, _, _ := h.page(t, viaAgentApp, "POST", "/ui/chain/verify", form); status != http.StatusForbidden {
		t.Errorf("a form through a client admin.clients no longer lists = %d, want 403", status)
	}
}

// TestRecordsList: the list filters as the API does, pages with the API's cursor, links
// each row to its exchange, and offers the HAR of the filtered set.
func TestRecordsList(t *testing.T) {
	h := newRecordsHarness(t)
	var reads []string
	for i := range 3 {
		reads = append(reads, h.send(t, "GET", fmt.Sprintf("/crm/customers/c%d", i), "", nil, "crm.read"))
	}
	refused := h.send(t, "POST", "/crm/customers", `{"name":"Bo"}`, nil, "crm.read") // no crm.write: forbidden
	tool := &recorder.Exchange{ID: "01JD0000000000000000000TL1", ReceivedAt: time.Now(), Route: "mcp", Decision: "denied",
		Identity: &recorder.Identity{Subject: "mcp-agent"}, MCP: &recorder.MCP{Method: "tools/call", Name: "delete_customer"},
		Request: recorder.Request{Method: "POST", Path: "/mcp"}, Response: &recorder.Response{Status: 403}}
	h.rec.Refused(tool)
	h.wait(t, tool.ID)

	for _, tt := range []struct {
		name, query string
		want        []string
	}{
		{"all", "", append([]string{tool.ID, refused}, reads...)},
		{"subject", "subject=agent-GET", reads},
		{"decision and status", "decision=forbidden&status=403", []string{refused}},
		{"route", "route=crm-write", []string{refused}},
		{"tool", "tool=delete_customer", []string{tool.ID}},
		{"time range", "since=1h&until=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), append([]string{tool.ID, refused}, reads...)},
		{"nothing", "since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, _, page := h.page(t, h.auditor, "GET", "/ui/records?"+tt.query, nil)
			if status != 200 {
				t.Fatalf("GET /ui/records?%s = %d:\n%s", tt.query, status, page)
			}
			got := regexp.MustCompile(`href="/ui/records/([0-9A-Z]+)"`).FindAllStringSubmatch(page, -1)
			if len(got) != len(tt.want) {
				t.Fatalf("GET /ui/records?%s lists %d exchanges, want %d:\n%s", tt.query, len(got), len(tt.want), page)
			}
			for i, m := range got {
				if want := tt.want[len(tt.want)-1-i]; tt.name != "all" && tt.name != "time range" && m[1] != want {
					t.Errorf("row %d links to %s, want %s", i, m[1], want)
				}
			}
			// The HAR link carries the same filters, and downloads the same set.
			har := html.UnescapeString(regexp.MustCompile(`id="har" href="([^"]*)"`).FindStringSubmatch(page)[1])
			status, _, body := h.page(t, h.auditor, "GET", har, nil)
			var doc struct {
				Log struct{ Entries []json.RawMessage }
			}
			if status != 200 || json.Unmarshal([]byte(body), &doc) != nil || len(doc.Log.Entries) != len(tt.want) {
				t.Errorf("GET %s = %d with %d entries, want 200 and %d", har, status, len(doc.Log.Entries), len(tt.want))
			}
		})
	}

	t.Run("paging", func(t *testing.T) {
		var seen []string
		next := "/ui/records?subject=agent-GET&limit=2"
		for next != "" && len(seen) < 10 {
			status, _, page := h.page(t, h.auditor, "GET", next, nil)
			if status != 200 {
				t.Fatalf("GET %s = %d", next, status)
			}
			for _, m := range regexp.MustCompile(`href="/ui/records/([0-9A-Z]+)"`).FindAllStringSubmatch(page, -1) {
				seen = append(seen, m[1])
			}
			next = ""
			if m := regexp.MustCompile(`id="next" href="([^"]*)"`).FindStringSubmatch(page); m != nil {
				next = html.UnescapeString(m[1])
				if !strings.Contains(next, "subject=agent-GET") || !strings.Contains(next, "limit=2") {
					t.Errorf("next page %s lost the filters", next)
				}
			}
		}
		if want := []string{reads[2], reads[1], reads[0]}; strings.Join(seen, ",") != strings.Join(want, ",") {
			t.Errorf("paged %v, want %v (newest first)", seen, want)
		}
	})

	t.Run("bad filters", func(t *testing.T) {
		for _, q := range []string{"since=yesterday", "status=abc", "cursor=zzz"} {
			status, _, page := h.page(t, h.auditor, "GET", "/ui/records?"+q, nil)
			if status != http.StatusBadRequest || !strings.Contains(page, "were not understood") {
				t.Errorf("GET /ui/records?%s = %d, want 400 saying why:\n%s", q, status, page)
			}
		}
	})
}

// TestRecordsExchange: an exchange's page shows who asked, the decision, the request as
// recorded and the masked response, pretty-printed, with truncation marks; no secret and
// no live markup from the requester.
func TestRecordsExchange(t *testing.T) {
	h := newRecordsHarness(t)
	const xss = `<script>alert(1)</script>`
	id := h.send(t, "GET", "/crm/customers/%3Cimg%20src=x%20onerror=alert(2)%3E", "", map[string]string{"X-Tenant": `"><svg onload=alert(3)>` + xss}, "crm.read")
	big := h.send(t, "GET", "/crm/customers/big", "", nil, "crm.read")
	post := h.send(t, "POST", "/crm/customers", `{"note":"`+xss+`"}`, map[string]string{"Content-Type": "application/json"}, "crm.write")
	approved := &recorder.Exchange{ID: "01JD0000000000000000000AP1", ReceivedAt: time.Now(), Route: "crm-write", Decision: "approved",
		ApprovalID: "01JD0000000000000000000APR", Request: recorder.Request{Method: "DELETE", Path: "/crm/customers/c1"},
		Response: &recorder.Response{Status: 204}}
	h.rec.Refused(approved)
	h.wait(t, approved.ID)

	status, _, page := h.page(t, h.auditor, "GET", "/ui/records/"+id, nil)
	if status != 200 {
		t.Fatalf("GET /ui/records/%s = %d:\n%s", id, status, page)
	}
	read := text(page)
	for _, want := range []string{"agent-GET", "crm.read", "allowed", "route crm-read", `"name": "Ann"`, `"ssn": "[REDACTED]"`,
		"Response masked", "X-Tenant", `"><svg onload=alert(3)>` + xss, "/crm/customers/<img src=x onerror=alert(2)>", "Total"} {
		if !strings.Contains(read, want) {
			t.Errorf("the exchange page does not show %q:\n%s", want, read)
		}
	}
	for _, secret := range []string{ssn, upstreamKey, "<script>alert", "<svg onload", "<img src=x"} {
		if strings.Contains(page, secret) {
			t.Errorf("the exchange page holds %q as it is: a secret leaked or markup is live", secret)
		}
	}
	if _, _, page := h.page(t, h.auditor, "GET", "/ui/records/"+big, nil); !strings.Contains(text(page), "Truncated: 512 of") {
		t.Errorf("a body cut at the body limit has no truncation mark:\n%s", text(page))
	}
	if _, _, page := h.page(t, h.auditor, "GET", "/ui/records/"+post, nil); !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") || strings.Contains(page, xss) {
		t.Errorf("the request body is not shown escaped:\n%s", page)
	}
	if _, _, page := h.page(t, h.auditor, "GET", "/ui/records/"+approved.ID, nil); !strings.Contains(page, `href="/ui/approvals/01JD0000000000000000000APR"`) {
		t.Errorf("an approved exchange does not link to its approval:\n%s", page)
	}
	if status, _, _ := h.page(t, h.auditor, "GET", "/ui/records/01JD0000000000000000009999", nil); status != 404 {
		t.Errorf("an unknown exchange = %d, want 404", status)
	}
}

// TestRecordsReplay: a dry run sends nothing and shows what would be sent and the
// recorded answer; a live replay shows the API's diff; a live replay of a POST needs the
// confirmation; every replay form needs the CSRF token.
func TestRecordsReplay(t *testing.T) {
	h := newRecordsHarness(t)
	get := h.send(t, "GET", "/crm/customers/c1", "", nil, "crm.read")
	post := h.send(t, "POST", "/crm/customers", `{"name":"Bo"}`, map[string]string{"Content-Type": "application/json"}, "crm.write")
	csrf := "csrf-auditor@example.com"
	replay := func(id string, form url.Values) (int, string) {
		status, _, page := h.page(t, h.auditor, "POST", "/ui/records/"+id+"/replay", form)
		return status, page
	}

	status, page := replay(get, url.Values{"csrf": {csrf}, "mode": {"dry"}})
	read := text(page)
	if status != 200 || !strings.Contains(read, "Dry run: nothing was sent") || !strings.Contains(read, "GET /crm/customers/c1") ||
		!strings.Contains(read, "The recorded answer") || !strings.Contains(read, `"served": 1`) || h.served.Load() != 2 {
		t.Errorf("dry run = %d, upstream served %d (want 2):\n%s", status, h.served.Load(), read)
	}
	if strings.Contains(page, upstreamKey) {
		t.Error("the dry run shows the upstream's credential")
	}

	status, page = replay(get, url.Values{"csrf": {csrf}, "mode": {"live"}})
	read = text(page)
	if status != 200 || h.served.Load() != 3 || !strings.Contains(read, "Difference from the recorded response") ||
		!regexp.MustCompile(`served\s*changed\s*1\s*3`).MatchString(read) || strings.Contains(page, ssn) {
		t.Errorf("live replay = %d, upstream served %d (want 3), want the diff of served 1 → 3:\n%s", status, h.served.Load(), read)
	}
	if m := regexp.MustCompile(`Replayed as <a href="/ui/records/([0-9A-Z]+)"`).FindStringSubmatch(page); m == nil {
		t.Error("the live replay does not link to its own record")
	} else if h.wait(t, m[1]); true {
		if _, _, p := h.page(t, h.auditor, "GET", "/ui/records/"+m[1], nil); !strings.Contains(text(p), "auditor@example.com") || !strings.Contains(p, "Replay of") {
			t.Errorf("the replay's record does not name the auditor and the original:\n%s", text(p))
		}
	}

	before := h.served.Load()
	if status, page := replay(post, url.Values{"csrf": {csrf}, "mode": {"live"}}); status != http.StatusBadRequest || !strings.Contains(page, "Tick the box") {
		t.Errorf("live POST replay without confirmation = %d, want 400 asking for it:\n%s", status, text(page))
	}
	if status, page := replay(post, url.Values{"csrf": {csrf}, "mode": {"dry"}}); status != 200 || !strings.Contains(page, "Dry run") {
		t.Errorf("dry run of a POST = %d, want 200 (it sends nothing, so needs no confirmation):\n%s", status, text(page))
	}
	if status, page := replay(post, url.Values{"mode": {"live"}, "confirm": {"yes"}}); status != http.StatusForbidden || !strings.Contains(page, "CSRF") {
		t.Errorf("replay without the CSRF token = %d, want 403:\n%s", status, text(page))
	}
	if h.served.Load() != before {
		t.Fatalf("the upstream served %d more requests before a confirmed replay, want none", h.served.Load()-before)
	}
	if status, page := replay(post, url.Values{"csrf": {csrf}, "mode": {"live"}, "confirm": {"yes"}}); status != 200 || !strings.Contains(page, "Replayed as") || h.served.Load() != before+1 {
		t.Errorf("confirmed live POST replay = %d, upstream served %d more (want 1):\n%s", status, h.served.Load()-before, text(page))
	}

	// What cannot be replayed says why, and offers no form.
	refused := h.send(t, "GET", "/crm/customers/c1", "", nil, "sales.read")
	if _, _, page := h.page(t, h.auditor, "GET", "/ui/records/"+refused, nil); !strings.Contains(page, "cannot be replayed") || strings.Contains(page, `id="dry-run"`) {
		t.Errorf("a refused exchange's page offers a replay:\n%s", text(page))
	}
}

// TestRecordsVerify: verification runs in the background on demand, the page reloads
// itself until it is done, and the result with the head hash stays; an edited record
// shows as a break.
func TestRecordsVerify(t *testing.T) {
	h := newRecordsHarness(t)
	for i := range 3 {
		h.send(t, "GET", fmt.Sprintf("/crm/customers/c%d", i), "", nil, "crm.read")
	}
	if _, _, page := h.page(t, h.auditor, "GET", "/ui/chain", nil); !strings.Contains(text(page), "not verified since this replica started") {
		t.Errorf("before any verification:\n%s", text(page))
	}
	if status, _, _ := h.page(t, h.auditor, "POST", "/ui/chain/verify", url.Values{}); status != http.StatusForbidden {
		t.Errorf("verify without the CSRF token = %d, want 403", status)
	}
	verify := func() string {
		t.Helper()
		status, loc, _ := h.page(t, h.auditor, "POST", "/ui/chain/verify", url.Values{"csrf": {"csrf-auditor@example.com"}})
		if status != http.StatusSeeOther || loc != "/ui/chain" {
			t.Fatalf("POST /ui/chain/verify = %d %s, want 303 to /ui/chain", status, loc)
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			_, _, page := h.page(t, h.auditor, "GET", "/ui/chain", nil)
			refresh := strings.Contains(page, `http-equiv="refresh"`)
			if running := strings.Contains(page, "verifying"); running != refresh {
				t.Fatalf("running %v but meta refresh %v:\n%s", running, refresh, page)
			}
			if !refresh {
				return page
			}
		}
		t.Fatal("the verification did not finish")
		return ""
	}
	page := verify()
	rep, err := recorder.Verify(context.Background(), h.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text(page), "the chain is intact") || !strings.Contains(page, `<code class="hash" id="head">`+rep.Head+`</code>`) ||
		!strings.Contains(page, `data-copy="head"`) || !strings.Contains(page, `<code class="hash" id="current">`+rep.Head+`</code>`) {
		t.Errorf("after verifying, want intact with head %s to copy:\n%s", rep.Head, page)
	}
	if _, _, list := h.page(t, h.auditor, "GET", "/ui/records", nil); !strings.Contains(text(list), "intact") {
		t.Errorf("the records list does not show the last verification:\n%s", text(list))
	}

	db, err := sql.Open("sqlite", h.file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE entries SET data = replace(data, 'Ann', 'Eve') WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	if page := text(verify()); !strings.Contains(page, "the chain is broken at entry 2") {
		t.Errorf("after an edit, want a break at entry 2:\n%s", page)
	}

	// A store that cannot be read: the page says the verification could not finish.
	h.store.Close()
	if page := text(verify()); !strings.Contains(page, "could not finish") || strings.Contains(page, "intact") {
		t.Errorf("with the store gone, want a verification that could not finish:\n%s", page)
	}
}

// TestCurrentHead: the head the chain page shows without verifying is the newest
// entry's hash, whatever the length of the chain.
func TestCurrentHead(t *testing.T) {
	h := newRecordsHarness(t)
	ctx := context.Background()
	if got := currentHead(ctx, h.store); got != "" {
		t.Errorf("head of an empty chain = %q, want none", got)
	}
	for i := range 40 {
		x := &recorder.Exchange{ID: fmt.Sprintf("01JD000000000000000000%04d", i), ReceivedAt: time.Now(), Decision: "no_route",
			Request: recorder.Request{Method: "GET", Path: "/x"}, Response: &recorder.Response{Status: 404}}
		h.rec.Refused(x)
		h.wait(t, x.ID)
		rep, err := recorder.Verify(ctx, h.store, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := currentHead(ctx, h.store); got != rep.Head {
			t.Fatalf("with %d entries, head = %q, want %q", rep.Entries, got, rep.Head)
		}
	}
}
