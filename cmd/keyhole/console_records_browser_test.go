package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// recordsSSN is a customer's SSN the upstream answers and the route masks: no page may show it.
const recordsSSN = "123-45-6789"

// startRecordsGateway is a running keyhole serve with the dev issuer and the console,
// recording on a SQLite file every request to a masked route of an httptest upstream
// that counts the requests it serves (so that a replay's answer differs).
func startRecordsGateway(t *testing.T) *consoleGateway {
	t.Helper()
	g := &consoleGateway{data: freeAddr(t), admin: freeAddr(t), upstream: testkit.NewUpstream(t)}
	var served atomic.Int64
	g.upstream.Respond = func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","name":"Ann Example","ssn":%q,"served":%d}`, recordsSSN, served.Add(1))
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
listen: %q
admin:
  listen: %q
  roles:
    auditors: { groups: [keyhole-auditors] }
  console:
    client_id: keyhole-console
    redirect_url: "http://%s/ui/callback"
    session_key: "0123456789abcdef0123456789abcdef"
identity: { dev: true }
recorder: { store: "sqlite://%s", mode: strict }
upstreams:
  crm: { url: %q, credential: { header: X-Api-Key, value: "crm-upstream-key-never-shown" } }
routes:
  - name: crm
    match: { methods: [GET, POST], path: "/crm/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask: [{ field: ssn, action: redact }]
`, g.data, g.admin, g.admin, filepath.Join(dir, "k.db"), g.upstream.URL)
	path := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runBackground(t, func(string) string { return "" }, io.Discard, io.Discard, "serve", "--config", path)
	waitFor(t, "gateway ready", func() bool { s, _ := get("http://"+g.admin+"/readyz", ""); return s == 200 })
	return g
}

// send makes one request through the gateway and fails the test unless it is answered 200.
func (g *consoleGateway) send(t *testing.T, token, method, path, body string, header map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+g.data+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s = %d, want 200", method, path, resp.StatusCode)
	}
}

// TestConsoleRecordsBrowser drives the records browser in headless Chromium as the dev
// issuer's auditor persona: filter the list, open an exchange and see its masked
// response, replay it dry and live and see the diff, verify the chain (the copy button
// is the console's static script at work under its CSP), and find XSS attempts in a
// recorded path, header and body shown as text, inert.
func TestConsoleRecordsBrowser(t *testing.T) {
	ctx, dialogs := newTab(t, 120*time.Second)
	g := startRecordsGateway(t)
	const xss = `<img src=x onerror=alert(1)><script>alert(2)</script>`
	g.send(t, g.token(t, "reader-agent", "crm.read"), "GET", "/crm/customers/c1", "", nil)
	mallory := g.token(t, "mallory-agent", "crm.read")
	g.send(t, mallory, "GET", "/crm/customers/%3Cimg%20src=x%20onerror=alert(3)%3E", "", map[string]string{"X-Tenant": `"><svg onload=alert(4)>`})
	g.send(t, mallory, "POST", "/crm/customers/c2", `{"note": "</pre>`+xss+`"}`, map[string]string{"Content-Type": "application/json"})

	if err := browserLogin(ctx, g, "1"); err != nil { // bob, keyhole-auditors
		t.Fatalf("login: %v", err)
	}
	rows := 0
	for range 50 { // the last record is written just after its answer
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.admin+"/ui/records"), chromedp.WaitVisible(`main`)); err != nil {
			t.Fatalf("records: %v", err)
		}
		if rows = countNodes(ctx, t, "#records tbody tr"); rows == 3 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rows != 3 {
		t.Fatalf("the records list shows %d exchanges, want 3", rows)
	}
	shot(ctx, t, "console-records.png")

	// Filter by subject: one row, which opens its exchange.
	if err := chromedp.Do(ctx, chromedp.SetValue(`input[name="subject"]`, "reader-agent"), chromedp.Submit(`input[name="subject"]`),
		chromedp.WaitVisible(`#records`)); err != nil {
		t.Fatalf("filter: %v", err)
	}
	if rows = countNodes(ctx, t, "#records tbody tr"); rows != 1 {
		t.Fatalf("filtered by subject: %d rows, want 1", rows)
	}
	if har := attr(ctx, t, "#har", "href"); !strings.Contains(har, "subject=reader-agent") {
		t.Errorf("the HAR link %q does not carry the filter", har)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`#records tbody tr a`), chromedp.WaitVisible(`#response`)); err != nil {
		t.Fatalf("open exchange: %v", err)
	}
	page := text(ctx, t, "main")
	if !strings.Contains(page, `"ssn": "[REDACTED]"`) || !strings.Contains(page, "reader-agent") || strings.Contains(page, recordsSSN) ||
		strings.Contains(page, "crm-upstream-key-never-shown") {
		t.Errorf("the exchange page should show the masked response and its requester, and never the SSN or the upstream key:\n%s", page)
	}

	if err := chromedp.Do(ctx, chromedp.Click(`#dry-run`), chromedp.WaitVisible(`#result`)); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if page := text(ctx, t, "#result"); !strings.Contains(page, "Dry run: nothing was sent") || !strings.Contains(page, "The recorded answer") {
		t.Errorf("dry run result:\n%s", page)
	}
	if err := chromedp.Do(ctx, chromedp.Click(`#live`), chromedp.WaitVisible(`#diff`)); err != nil {
		t.Fatalf("live replay: %v", err)
	}
	if diff := text(ctx, t, "#diff"); !strings.Contains(diff, "served") || !strings.Contains(diff, "changed") {
		t.Errorf("the live replay's diff should show the served counter changed:\n%s", diff)
	}
	shot(ctx, t, "console-exchange.png")

	// Verify the chain: the page reloads itself until the background run is done.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.admin+"/ui/chain"), chromedp.Click(`#verify`),
		chromedp.WaitVisible(`#result`)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res := text(ctx, t, "#result"); res != "the chain is intact" {
		t.Errorf("verification result %q, want intact", res)
	}
	if shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.querySelector('button[data-copy="head"]').hidden`)); err != nil || !shown {
		t.Errorf("the copy button is not shown (%v): the console's script did not run", err)
	}

	// Mallory's exchanges: every attempt is text on the page, and nothing of it runs.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.admin+"/ui/records?subject=mallory-agent"), chromedp.WaitVisible(`#records`)); err != nil {
		t.Fatal(err)
	}
	list := text(ctx, t, "#records")
	if !strings.Contains(list, "/crm/customers/<img src=x onerror=alert(3)>") {
		t.Errorf("the XSS path is not shown as text:\n%s", list)
	}
	for _, sel := range []string{`#records tbody tr:nth-child(1) a`, `#records tbody tr:nth-child(2) a`} {
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.admin+"/ui/records?subject=mallory-agent"), chromedp.WaitVisible(`#records`),
			chromedp.Click(sel), chromedp.WaitVisible(`#request`)); err != nil {
			t.Fatal(err)
		}
		if live := countNodes(ctx, t, "main img, main svg, main script"); live != 0 {
			t.Errorf("%d elements of the payloads are live markup on the exchange page", live)
		}
		req := text(ctx, t, "#request")
		if !strings.Contains(req, `"><svg onload=alert(4)>`) && !strings.Contains(req, `"note": "</pre>`+xss+`"`) {
			t.Errorf("the exchange page shows neither the XSS header nor the XSS body as text:\n%s", req)
		}
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: an XSS payload ran", n)
	}
}

// attr returns attribute name of the first node sel matches.
func attr(ctx context.Context, t *testing.T, sel, name string) string {
	t.Helper()
	a, err := chromedp.Run(ctx, chromedp.AttributeValue(sel, name))
	if err != nil || !a.Exists {
		t.Fatalf("attribute %s of %s: %v", name, sel, err)
	}
	return a.Value
}

// countNodes returns how many nodes the CSS selector sel matches now.
func countNodes(ctx context.Context, t *testing.T, sel string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll(`+strconv.Quote(sel)+`).length`))
	if err != nil {
		t.Fatalf("count %s: %v", sel, err)
	}
	return n
}
