package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromium returns the headless browser's path, skipping the test without one, or
// failing it when KEYHOLE_REQUIRE_CHROMIUM=1 (CI) says a browser must be there.
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("KEYHOLE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("KEYHOLE_REQUIRE_CHROMIUM=1 but no Chromium found: apt-get install -y chromium")
	}
	t.Skip("no Chromium (apt-get install -y chromium); set KEYHOLE_REQUIRE_CHROMIUM=1 to fail instead")
	return ""
}

// newTab starts a headless Chromium for one test, bounded by timeout, and counts
// every JavaScript dialog that opens (an XSS payload's alert).
func newTab(t *testing.T, timeout time.Duration) (context.Context, *atomic.Int32) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	var dialogs atomic.Int32
	events := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range events {
			if err != nil {
				return
			}
			dialogs.Add(1)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
		}
	}()
	return ctx, &dialogs
}

// browserLogin logs in through the console's login and the dev issuer's persona page.
func browserLogin(ctx context.Context, g *consoleGateway, persona string) error {
	return chromedp.Do(ctx,
		chromedp.Navigate("http://"+g.admin+"/ui/"),
		chromedp.WaitVisible(`button[name="persona"][value="`+persona+`"]`),
		chromedp.Click(`button[name="persona"][value="`+persona+`"]`),
		chromedp.WaitVisible(`nav`),
	)
}

// hold sends a request that waits for approval, in the background; the answer's status
// arrives on the channel.
func hold(t *testing.T, g *consoleGateway, token, method, path, reason, body string, header map[string]string) <-chan int {
	done := make(chan int, 1)
	req, _ := http.NewRequest(method, "http://"+g.data+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Keyhole-Reason", reason)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done
}

// TestConsoleBrowser drives the console in headless Chromium: an approver logs in with
// one click, opens the inbox, approves a held request and the held client gets its
// answer; denies another with a comment; XSS attempts in the reason, path, headers and
// body render inert; a person who is no approver sees the page read-only.
func TestConsoleBrowser(t *testing.T) {
	ctx, dialogs := newTab(t, 90*time.Second)
	g := startConsoleGateway(t)
	writer := g.token(t, "writer-agent", "crm.write")
	const xss = `<img src=x onerror=alert(1)><script>alert(2)</script>`
	first := hold(t, g, writer, "DELETE", "/crm/customers/1", "cleanup "+xss, "", nil)
	if err := browserLogin(ctx, g, "0"); err != nil {
		t.Fatalf("login: %v", err)
	}
	waitPending(ctx, t, g, "/crm/customers/1")
	inbox := text(ctx, t, "main")
	if !strings.Contains(inbox, "/crm/customers/1") || !strings.Contains(inbox, "writer-agent") || !strings.Contains(inbox, "<script>alert(2)</script>") {
		t.Errorf("inbox lacks the request, its requester or its reason as text:\n%s", inbox)
	}
	shot(ctx, t, "console-inbox.png")
	if err := chromedp.Do(ctx, chromedp.Click(`#pending tbody tr a`), chromedp.WaitVisible(`button.approve`),
		chromedp.SetValue(`#comment`, "ok, ticket 42"), chromedp.Click(`button.approve`),
		chromedp.WaitVisible(`.notice.ok`)); err != nil {
		t.Fatalf("approve: %v", err)
	}
	status := text(ctx, t, ".notice.ok")
	if status != "You approved this request." {
		t.Errorf("result = %q", status)
	}
	select {
	case code := <-first:
		if code != 200 {
			t.Errorf("held DELETE answered %d after approval, want 200", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("held DELETE got no answer after approval")
	}

	// Deny, with a comment, a request whose path, headers and body try XSS.
	second := hold(t, g, writer, "POST", "/crm/customers/%3Cimg%20src=x%20onerror=alert(3)%3E", "again",
		`{"note": "</pre><script>alert(4)</script>"}`, map[string]string{"X-Tenant": `"><svg onload=alert(5)>`})
	waitPending(ctx, t, g, "onerror=alert(3)")
	if err := chromedp.Do(ctx, chromedp.Click(`#pending tbody tr a`), chromedp.WaitVisible(`button.deny`)); err != nil {
		t.Fatalf("detail: %v", err)
	}
	detail := text(ctx, t, "main")
	shot(ctx, t, "console-approval.png")
	if !strings.Contains(detail, `"note": "</pre><script>alert(4)</script>"`) || !strings.Contains(detail, `"><svg onload=alert(5)>`) {
		t.Errorf("detail does not show the body pretty-printed and the header as text:\n%s", detail)
	}
	if err := chromedp.Do(ctx, chromedp.SetValue(`#comment`, "not today <b>bold</b>"), chromedp.Click(`button.deny`),
		chromedp.WaitVisible(`.notice.ok`)); err != nil {
		t.Fatalf("deny: %v", err)
	}
	detail = text(ctx, t, "main")
	if !strings.Contains(detail, "You denied this request.") || !strings.Contains(detail, "not today <b>bold</b>") || !strings.Contains(detail, "via console") {
		t.Errorf("after deny:\n%s", detail)
	}
	select {
	case code := <-second:
		if code != 403 {
			t.Errorf("held POST answered %d after denial, want 403", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("held POST got no answer after denial")
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d JavaScript dialogs opened: an XSS payload ran", n)
	}

	// A person who is no approver: the auditor reads, and is told why it cannot decide.
	ctx2, _ := newTab(t, 60*time.Second)
	hold(t, g, writer, "DELETE", "/crm/customers/3", "third", "", nil)
	if err := browserLogin(ctx2, g, "1"); err != nil {
		t.Fatalf("auditor login: %v", err)
	}
	if err := chromedp.Do(ctx2, chromedp.Navigate("http://"+g.admin+"/ui/approvals"), chromedp.WaitVisible(`main`)); err != nil {
		t.Fatalf("auditor inbox: %v", err)
	}
	ro := text(ctx2, t, "main")
	if !strings.Contains(ro, "approvers role") {
		t.Errorf("the auditor (no approvers role) should be told it may not read approvals:\n%s", ro)
	}
}

// shot saves a full-page screenshot to docs/name when KEYHOLE_SCREENSHOTS=1:
// KEYHOLE_SCREENSHOTS=1 go test ./cmd/keyhole -run TestConsoleBrowser regenerates them.
func shot(ctx context.Context, t *testing.T, name string) {
	if os.Getenv("KEYHOLE_SCREENSHOTS") != "1" {
		return
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100) /* 100: PNG */)
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", name), buf, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
	}
}

// text returns the text of the first node sel matches.
func text(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// waitPending reloads the inbox until a pending request shows want (the held request
// is announced asynchronously).
func waitPending(ctx context.Context, t *testing.T, g *consoleGateway, want string) {
	t.Helper()
	for range 50 {
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.admin+"/ui/approvals"), chromedp.WaitVisible(`main`)); err != nil {
			t.Fatalf("inbox: %v", err)
		}
		if strings.Contains(text(ctx, t, "main h2"), "Pending 1") && strings.Contains(text(ctx, t, "main"), want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no pending request %q in the inbox", want)
}
