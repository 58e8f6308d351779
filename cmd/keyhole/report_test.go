package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// reportGateway is a running keyhole serve with a read route, a guard, a denied route,
// a route whose deletes wait for approval, the dev issuer and a SQLite store, filled
// with one exchange of each kind a report counts.
type reportGateway struct {
	data, admin, config, store string
	// auditor holds the auditors and approvers roles; from and to bound the traffic.
	auditor  string
	from, to time.Time
}

// reportHostile is what a requester and an approver write that a report must show as text.
const reportHostile = `<img src=x onerror=alert(1)><script>alert(2)</script>|`

func startReportGateway(t *testing.T) *reportGateway {
	t.Helper()
	dir := t.TempDir()
	g := &reportGateway{data: freeAddr(t), admin: freeAddr(t), config: filepath.Join(dir, "keyhole.yaml"), store: filepath.Join(dir, "k.db")}
	up := testkit.NewUpstream(t)
	cfg := fmt.Sprintf(`
listen: %q
admin:
  listen: %q
  roles:
    approvers: { groups: [crm-admins, keyhole-auditors] }
    auditors: { groups: [keyhole-auditors, auditors-only] }
identity: { dev: true }
recorder: { store: "sqlite://%s", retention: 90d }
upstreams:
  crm: { url: %q }
guards:
  - name: no-sql-drop
    match: { methods: ["*"], path: "/*", when: { body_regex: "(?i)\\bdrop\\s+table\\b" } }
    deny: "destructive SQL is never forwarded"
routes:
  - name: crm-read
    match: { methods: [GET], path: "/crm/customers/{id}" }
    upstream: crm
    allow: { scopes: [crm.read] }
  - name: crm-query
    match: { methods: [POST], path: "/crm/query" }
    upstream: crm
    allow: { scopes: [crm.read] }
  - name: crm-delete
    match: { methods: [DELETE], path: "/crm/customers/{id}" }
    upstream: crm
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, hold: 30s }
  - name: never-bulk
    match: { methods: [DELETE, POST], path: "/crm/customers/bulk/*" }
    deny: "bulk deletion is not allowed through the gateway"
`, g.data, g.admin, g.store, up.URL)
	if err := os.WriteFile(g.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runBackground(t, func(string) string { return "" }, io.Discard, io.Discard, "serve", "--config", g.config)
	waitFor(t, "gateway ready", func() bool { s, _ := get("http://"+g.admin+"/readyz", ""); return s == 200 })

	cg := &consoleGateway{data: g.data, admin: g.admin}
	token := func(sub string, groups []string, scopes ...string) string { return g.token(t, sub, groups, scopes...) }
	reader := token("reader-agent", nil, "crm.read")
	writer := token("writer-agent", nil, "crm.read", "crm.write")
	approver := token("carol", []string{"crm-admins"})
	g.auditor = token("audrey", []string{"keyhole-auditors"})

	send := func(method, path, tok, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+g.data+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d, want %d", method, path, resp.StatusCode, want)
		}
	}
	admin := func(method, path, tok string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "http://"+g.admin+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s = %d: %s", method, path, resp.StatusCode, raw)
		}
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	// decide holds DELETE path, and approves or denies it with comment once it is pending.
	decide := func(path, verdict, comment string, want int) {
		t.Helper()
		done := hold(t, cg, writer, "DELETE", path, reportHostile, "", nil)
		var id string
		waitFor(t, "a pending approval of "+path, func() bool {
			var list struct{ Approvals []struct{ ID, Path string } }
			admin("GET", "/api/v1/approvals?state=pending", approver, nil, &list)
			for _, a := range list.Approvals {
				if a.Path == path {
					id = a.ID
				}
			}
			return id != ""
		})
		admin("POST", "/api/v1/approvals/"+id+"/"+verdict, approver, map[string]string{"comment": comment}, nil)
		select {
		case s := <-done:
			if s != want {
				t.Fatalf("held DELETE %s after %s = %d, want %d", path, verdict, s, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("held DELETE %s: no answer after %s", path, verdict)
		}
	}

	g.from = time.Now().Add(-time.Second)
	send("GET", "/crm/customers/1", reader, "", 200)
	send("GET", "/crm/customers/2", reader, "", 200)
	send("GET", "/crm/customers/3", "", "", 401)
	send("DELETE", "/crm/customers/1", reader, "", 403)
	send("POST", "/crm/query", reader, `{"q": "DROP TABLE customers"}`, 403)
	send("POST", "/crm/customers/bulk/all", reader, "", 403)
	send("GET", "/nowhere", reader, "", 404)
	decide("/crm/customers/7", "approve", "checked with the account owner", 200)
	decide("/crm/customers/8", "deny", reportHostile, 403)

	var list struct {
		Exchanges []struct {
			ID      string
			Request struct{ Path string }
		}
	}
	admin("GET", "/api/v1/exchanges?route=crm-read", g.auditor, nil, &list)
	for _, x := range list.Exchanges {
		if x.Request.Path == "/crm/customers/1" {
			admin("POST", "/api/v1/exchanges/"+x.ID+"/replay", g.auditor, map[string]any{}, nil)
		}
	}
	// Ten exchanges, two chain entries each, once every response is recorded.
	waitFor(t, "every exchange recorded", func() bool {
		_, body := get("http://"+g.admin+"/api/v1/audit/verify", g.auditor)
		return strings.Contains(body, `"last_seq":20,`)
	})
	g.to = time.Now().Add(time.Second)
	return g
}

// token mints a dev token for sub with groups and scopes.
func (g *reportGateway) token(t *testing.T, sub string, groups []string, scopes ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"sub": sub, "client_id": sub, "groups": groups, "scopes": scopes})
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

// report runs `keyhole records report` with args and the gateway's period.
func (g *reportGateway) report(t *testing.T, token string, args ...string) (string, string, error) {
	t.Helper()
	env := func(k string) string {
		if k == "KEYHOLE_TOKEN" {
			return token
		}
		return ""
	}
	args = append([]string{"records", "report", "--since", g.from.UTC().Format(time.RFC3339Nano), "--until", g.to.UTC().Format(time.RFC3339Nano)}, args...)
	return runCmd(t, env, args...)
}

// TestRecordsReport fills a store through a real gateway with allowed, unauthenticated,
// forbidden, guard-denied, route-denied and unrouted requests, an approved and a denied
// approval with comments, and a replay, then checks the report's numbers, that --store
// and --server give the same report, that hostile text stays text, and that the HTML
// prints to a PDF of several pages in Chromium without running a script.
func TestRecordsReport(t *testing.T) {
	g := startReportGateway(t)
	dsn := "sqlite://" + g.store

	md, errOut, err := g.report(t, "", "--store", dsn, "--format", "md", "--config", g.config)
	if err != nil {
		t.Fatalf("records report --store: %v\n%s", err, errOut)
	}
	for _, want := range []string{
		"| Exchanges | 10 received, 6 refused or failed |",
		"| Approvals | 2 |",
		"| Replays | 1 |",
		"| Record chain | verified: 20 entries (sequence 1 to 20), head ",
		"| Retention | 90d (recorder.retention), from " + g.config + " |",
		// Per route and decision.
		"| crm-read | allowed | 2 |", "| crm-read | replay | 1 |", "| crm-delete | forbidden | 1 |",
		"| crm-delete | approved | 1 |", "| crm-delete | approval\\_denied | 1 |", "| never-bulk | denied | 1 |",
		"| no-sql-drop | denied | 1 |",
		// Refusal classes: decision and error code.
		"| unauthenticated | unauthenticated | 1 |", "| forbidden | forbidden | 1 |", "| denied | denied | 2 |",
		"| no\\_route | no\\_route | 1 |", "| approval\\_denied | approval\\_denied | 1 |",
		"Refused exchanges: all 6.",
		"destructive SQL is never forwarded",
		// Approvals, their decisions, and the replay.
		"| approved | 1 |", "| denied | 1 |",
		"| approve | checked with the account owner |",
		"| deny | &lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;\\| |",
		"Recorded requests sent again by auditors: all 1.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown report lacks %q", want)
		}
	}
	// Each approval names its requester and, approved, the exchange it released.
	approved := regexp.MustCompile(`\| DELETE /crm/customers/7 \| writer-agent @ [^|]+ \|.*\| used \| 1 \|.*\| ([0-9A-Z]{26}) \| ([0-9A-Z]{26}) \|`).FindStringSubmatch(md)
	if approved == nil || approved[1] != approved[2] {
		t.Errorf("the approved approval's row does not name its requester and the exchange it released:\n%s", md)
	}
	if strings.Contains(md, "<script") {
		t.Error("the Markdown report holds the hostile comment unescaped")
	}

	// The admin API gives the same report; without the approvers role it says what is missing.
	srv, errOut, err := g.report(t, g.auditor, "--server", "http://"+g.admin, "--format", "md", "--config", g.config)
	if err != nil {
		t.Fatalf("records report --server: %v\n%s", err, errOut)
	}
	same := func(s string) string {
		return regexp.MustCompile(`(?m)^\| (Generated|Source) \|.*\n`).ReplaceAllString(s, "")
	}
	if same(srv) != same(md) {
		t.Errorf("--server and --store reports differ:\n--server:\n%s\n--store:\n%s", srv, md)
	}
	onlyAuditor := g.token(t, "aude", []string{"auditors-only"})
	if _, _, err := g.report(t, onlyAuditor, "--server", "http://"+g.admin); err == nil || !strings.Contains(err.Error(), "approvers role") {
		t.Errorf("records report --server with the auditors role alone = %v, want an error naming the approvers role", err)
	}

	html := filepath.Join(t.TempDir(), "report.html")
	if _, errOut, err := g.report(t, "", "--store", dsn, "-o", html); err != nil {
		t.Fatalf("records report -o: %v\n%s", err, errOut)
	}
	page, _ := os.ReadFile(html)
	if fi, _ := os.Stat(html); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("report file mode = %v, want 0600", fi.Mode())
	}
	if !bytes.HasPrefix(page, []byte("<!DOCTYPE html>")) || bytes.Contains(page, []byte("<script")) || bytes.Contains(page, []byte("<img")) {
		t.Errorf("the HTML report is not a page with the hostile text escaped")
	}
	if !bytes.Contains(page, []byte("Retention</h3>\n<p>not known: the source does not say")) {
		t.Errorf("the HTML report read without --config does not say the retention is not known")
	}
	printPDF(t, html)
}

// printPDF opens the HTML report in headless Chromium, checks that no script ran, and
// prints it to PDF: the summary and each of the five sections start a page.
func printPDF(t *testing.T, file string) {
	ctx, dialogs := newTab(t, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file), chromedp.WaitVisible("section#chain")); err != nil {
		t.Fatalf("open the report: %v", err)
	}
	pdf, err := chromedp.Run(ctx, chromedp.PrintToPDF(chromedp.PDFPreferCSSPageSize()))
	if err != nil {
		t.Fatalf("print the report to PDF: %v", err)
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: a hostile value ran", n)
	}
	pages := len(regexp.MustCompile(`/Type\s*/Page[^s]`).FindAll(pdf, -1))
	// The summary, then each of the five sections from the top of a page of its own.
	if !bytes.HasPrefix(pdf, []byte("%PDF-")) || pages < 6 {
		t.Errorf("the PDF has %d pages (%d bytes), want at least 6: the summary and each section on pages of its own", pages, len(pdf))
	}
	t.Logf("the report printed to a PDF of %d pages", pages)
}
