package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// approvalRoutes are testConfig's routes plus three that need approval: purge (held
// briefly), purge-wait (held long enough to approve during the hold) and erase (two
// approvers).
var approvalConfig = strings.Replace(testConfig, "limits:\n", `  - name: purge
    match: { methods: [POST], path: "/crm/customers/{id}/purge" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, hold: 150ms, ttl: 15m }
  - name: purge-wait
    match: { methods: [POST], path: "/crm/customers/{id}/purge-wait" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, hold: 10s, ttl: 15m }
  - name: purge-async
    match: { methods: [POST], path: "/crm/customers/{id}/purge-async" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, hold: 150ms, ttl: 15m, pending_status: 202 }
  - name: erase
    match: { methods: [DELETE], path: "/crm/accounts/{id}" }
    upstream: crm
    rewrite: { strip_prefix: /crm }
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [crm-admins] }, min_approvals: 2, hold: 150ms, ttl: 15m }
  - name: refund
    match: { methods: [POST], path: "/billing/refunds" }
    upstream: billing
    allow: { scopes: [crm.write] }
    approval: { approvers: { groups: [billing-admins] }, hold: 150ms, ttl: 15m }
admin:
  roles:
    approvers: { groups: [approval-viewers] }
approvals:
  notify: { webhook: "${WEBHOOK}" }
  public_url: https://keyhole.example:9090
  max_pending_per_subject: 3
limits:
`, 1)

// testClock is an approvals clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// approvalHarness is a gateway with recording and approvals on one SQLite file, the
// admin API for approvers, a webhook receiver, and tokens for approvers and an outsider.
type approvalHarness struct {
	*harness
	path      string
	clock     *testClock
	webhook   *testkit.Upstream
	store     *sqlite.Store
	svc       *approvals.Service
	m         *metrics.Metrics
	api       *httptest.Server
	stop      func() // stops what start started
	approver  string
	approver2 string
	outsider  string
	cfg       string // the configuration start loads; approvalConfig when ""
}

func newApprovalHarness(t *testing.T, clock *testClock, webhook *testkit.Upstream) *approvalHarness {
	t.Helper()
	return newApprovalHarnessFor(t, clock, webhook, "", nil)
}

// newApprovalHarnessFor is newApprovalHarness loading cfg, with env added to the
// configuration's environment.
func newApprovalHarnessFor(t *testing.T, clock *testClock, webhook *testkit.Upstream, cfg string, env map[string]string) *approvalHarness {
	t.Helper()
	h := &approvalHarness{harness: newHarness(t), path: filepath.Join(t.TempDir(), "keyhole.db"), clock: clock, webhook: webhook, cfg: cfg}
	for k, v := range env {
		h.cfgEnv[k] = v
	}
	h.cfgEnv["WEBHOOK"] = webhook.URL + "/hook"
	h.start(t)
	t.Cleanup(func() { h.stop() })
	h.approver = h.token(t, map[string]any{"sub": "alice@example.com", "cid": "console", "groups": []string{"crm-admins"}})
	h.approver2 = h.token(t, map[string]any{"sub": "carol@example.com", "cid": "console", "groups": []string{"crm-admins"}})
	h.outsider = h.token(t, map[string]any{"sub": "mallory@example.com", "cid": "console", "groups": []string{"crm-readers"}})
	return h
}

// start runs a gateway process's worth of parts on the harness's store file: the
// store, recorder, approvals, notifier, gateway, its listener and the admin API.
func (h *approvalHarness) start(t *testing.T) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), "sqlite://"+h.path)
	if err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(st, recorder.Policy{Mode: recorder.Strict,
		Redactor: recorder.NewRedactor([]string{"X-Api-Key"}, []string{crmKey, "Bearer " + billingKey})}, recorder.Options{})
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	notifier := approvals.NewNotifier(approvals.NotifyConfig{Webhook: h.webhook.URL + "/hook", PublicURL: "https://keyhole.example:9090"},
		approvals.NotifierOptions{Timeout: 5 * time.Second, Attempts: 2, Backoff: 10 * time.Millisecond})
	go notifier.Run(ctx)
	svc := approvals.New(st, approvals.Options{Now: h.clock.Now, Poll: 20 * time.Millisecond, Notify: notifier.Notify,
		Metrics: approvals.Metrics{Pending: m.ApprovalsPending, Total: m.ApprovalsTotal, Wait: m.ApprovalWaitSeconds}})
	h.gw = proxy.New(slog.New(slog.NewJSONHandler(h.logs, nil)), m, rec, svc)
	cfg := approvalConfig
	if h.cfg != "" {
		cfg = h.cfg
	}
	table := h.load(t, cfg)
	h.srv = httptest.NewServer(h.gw)
	h.api = httptest.NewServer(admin.New(admin.Options{Gatherer: reg, Ready: func() error { return nil },
		API: &admin.API{Verifier: func() admin.Verifier { return h.v }, Roles: func() admin.Roles { return table },
			Store: st, Replayer: h.gw, Approvals: svc, Version: "test", Log: slog.New(slog.DiscardHandler)}}))
	h.store, h.svc, h.m = st, svc, m
	h.stop = func() {
		svc.Close()
		h.srv.Close()
		h.api.Close()
		cancel()
		rec.Close(context.Background())
		st.Close()
	}
}

// restart stops the gateway and starts a new one on the same store, as a process
// restart does: held connections are gone, approvals are not.
func (h *approvalHarness) restart(t *testing.T) {
	h.stop()
	h.start(t)
}

// agent returns the token of a requester agent of its own: pending approvals are capped
// per subject, so each test asks as someone new.
func (h *approvalHarness) agent(t *testing.T, sub string) string {
	return h.token(t, map[string]any{"sub": sub, "cid": sub + "-client", "scp": []string{"crm.write"}})
}

// decide posts an approver's verdict through the admin API.
func (h *approvalHarness) decide(t *testing.T, token, id, verdict, comment string) (int, map[string]any) {
	t.Helper()
	body := fmt.Sprintf(`{"comment":%q}`, comment)
	req, _ := http.NewRequest("POST", h.api.URL+"/api/v1/approvals/"+id+"/"+verdict, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	return apiCall(t, req)
}

func (h *approvalHarness) apiGet(t *testing.T, token, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", h.api.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return apiCall(t, req)
}

func apiCall(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s answered %s", req.Method, req.URL.Path, raw)
	}
	return resp.StatusCode, out
}

// send sends a request through the gateway and returns status, error code and approval id.
func (h *approvalHarness) send(t *testing.T, method, path, token, body string, hdr http.Header) (int, string, string) {
	t.Helper()
	resp, b := h.do(t, method, path, token, body, hdr)
	var e struct{ Error, Message string }
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error, resp.Header.Get("X-Keyhole-Approval")
}

// TestApprovals drives the approval flow end to end through real listeners: a requester
// agent, approvers and an outsider, the admin API, the store, the records and the webhook.
func TestApprovals(t *testing.T) {
	clock := &testClock{t: time.Now()}
	webhook := testkit.NewUpstream(t)
	var hookFails atomic.Bool
	release := make(chan struct{})
	webhook.Respond = func(w http.ResponseWriter, r *http.Request) {
		if hookFails.Load() {
			select { // a webhook that hangs, then fails
			case <-release:
			case <-time.After(2 * time.Second):
			}
			w.WriteHeader(http.StatusBadGateway)
		}
	}
	h := newApprovalHarness(t, clock, webhook)

	t.Run("approve after the hold, then retry once", func(t *testing.T) {
		agent := h.agent(t, "agent-retry")
		h.crm.Reset()
		resp, body := h.do(t, "POST", "/crm/customers/1/purge", agent, `{"why":"gdpr"}`, http.Header{"X-Keyhole-Reason": {"GDPR erasure request #4411"}})
		id := resp.Header.Get("X-Keyhole-Approval")
		if resp.StatusCode != 403 || !strings.Contains(string(body), `"error":"approval_pending"`) || id == "" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("held request = %d %s approval %q Retry-After %q, want 403 approval_pending with an approval id",
				resp.StatusCode, body, id, resp.Header.Get("Retry-After"))
		}
		if n := len(h.crm.Requests()); n != 0 {
			t.Fatalf("upstream received %d requests before approval", n)
		}
		_, shown := h.apiGet(t, h.approver, "/api/v1/approvals/"+id)
		if shown["reason"] != "GDPR erasure request #4411" || shown["body"] != `{"why":"gdpr"}` || shown["path"] != "/crm/customers/1/purge" {
			t.Errorf("approver sees %v", shown)
		}
		if status, out := h.decide(t, h.approver, id, "approve", "ok"); status != 200 || out["state"] != "approved" {
			t.Fatalf("approve = %d %v", status, out)
		}
		status, _, got := h.send(t, "POST", "/crm/customers/1/purge", agent, `{"why":"gdpr"}`, nil)
		if status != 200 || got != id {
			t.Fatalf("retry after approval = %d approval %q, want 200 with %q", status, got, id)
		}
		reqs := h.crm.Requests()
		if len(reqs) != 1 || reqs[0].Body != `{"why":"gdpr"}` || reqs[0].RequestURI != "/api/customers/1/purge" {
			t.Fatalf("upstream received %+v, want the approved request once", reqs)
		}
		if status, code, again := h.send(t, "POST", "/crm/customers/1/purge", agent, `{"why":"gdpr"}`, nil); status != 403 || code != "approval_pending" || again == id {
			t.Errorf("second retry = %d %s approval %q, want a new approval", status, code, again)
		}
		if n := len(h.crm.Requests()); n != 1 {
			t.Errorf("upstream received %d requests, want the approved one only", n)
		}
	})

	t.Run("approve during the hold", func(t *testing.T) {
		agent := h.agent(t, "agent-hold")
		h.crm.Reset()
		type result struct {
			status int
			id     string
		}
		done := make(chan result, 1)
		go func() {
			resp, _ := h.do(t, "POST", "/crm/customers/2/purge-wait", agent, "", nil)
			done <- result{resp.StatusCode, resp.Header.Get("X-Keyhole-Approval")}
		}()
		id := waitPending(t, h, "agent-hold")
		if status, _ := h.decide(t, h.approver, id, "approve", ""); status != 200 {
			t.Fatalf("approve = %d", status)
		}
		select {
		case r := <-done:
			if r.status != 200 || r.id != id {
				t.Errorf("held request = %d approval %q, want 200 with %q", r.status, r.id, id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("held request was not released by the approval")
		}
		if n := len(h.crm.Requests()); n != 1 {
			t.Errorf("upstream received %d requests, want 1", n)
		}
	})

	t.Run("deny", func(t *testing.T) {
		agent := h.agent(t, "agent-deny")
		_, _, id := h.send(t, "POST", "/crm/customers/3/purge", agent, "", nil)
		if status, out := h.decide(t, h.approver, id, "deny", "not during the freeze"); status != 200 || out["state"] != "denied" {
			t.Fatalf("deny = %d %v", status, out)
		}
		resp, body := h.do(t, "POST", "/crm/customers/3/purge", agent, "", nil)
		if resp.StatusCode != 403 || !strings.Contains(string(body), `"error":"approval_denied"`) || !strings.Contains(string(body), "not during the freeze") {
			t.Errorf("retry after deny = %d %s", resp.StatusCode, body)
		}
		if status, out := h.decide(t, h.approver2, id, "approve", ""); status != 409 || out["error"] != "not_pending" {
			t.Errorf("approve after deny = %d %v, want 409 not_pending", status, out)
		}
	})

	t.Run("a denial stands for its ttl, then the request may ask again", func(t *testing.T) {
		agent := h.agent(t, "agent-deny-ttl")
		_, _, id := h.send(t, "POST", "/crm/customers/30/purge", agent, "", nil)
		h.decide(t, h.approver, id, "deny", "no")
		clock.Advance(10 * time.Minute)
		if status, code, _ := h.send(t, "POST", "/crm/customers/30/purge", agent, "", nil); status != 403 || code != "approval_denied" {
			t.Errorf("retry within ttl = %d %s, want approval_denied", status, code)
		}
		clock.Advance(6 * time.Minute)
		if status, code, got := h.send(t, "POST", "/crm/customers/30/purge", agent, "", nil); status != 403 || code != "approval_pending" || got == id {
			t.Errorf("retry after ttl = %d %s %q, want a new pending approval", status, code, got)
		}
	})

	t.Run("expiry, on the injected clock", func(t *testing.T) {
		agent := h.agent(t, "agent-expiry")
		_, _, id := h.send(t, "POST", "/crm/customers/4/purge", agent, "", nil)
		clock.Advance(16 * time.Minute)
		if status, out := h.decide(t, h.approver, id, "approve", ""); status != 409 || out["error"] != "not_pending" {
			t.Errorf("approve after ttl = %d %v, want 409 not_pending", status, out)
		}
		if status, code, got := h.send(t, "POST", "/crm/customers/4/purge", agent, "", nil); status != 403 || code != "approval_timeout" || got != id {
			t.Errorf("retry after ttl = %d %s %q, want 403 approval_timeout for %q", status, code, got, id)
		}
		if status, code, got := h.send(t, "POST", "/crm/customers/4/purge", agent, "", nil); status != 403 || code != "approval_pending" || got == id {
			t.Errorf("next retry = %d %s %q, want a new pending approval", status, code, got)
		}
	})

	t.Run("approved, but used after ttl", func(t *testing.T) {
		agent := h.agent(t, "agent-late")
		h.crm.Reset()
		_, _, id := h.send(t, "POST", "/crm/customers/5/purge", agent, "", nil)
		h.decide(t, h.approver, id, "approve", "")
		clock.Advance(16 * time.Minute)
		if status, code, _ := h.send(t, "POST", "/crm/customers/5/purge", agent, "", nil); status != 403 || code != "approval_timeout" {
			t.Errorf("retry of an approval past its ttl = %d %s, want approval_timeout", status, code)
		}
		if n := len(h.crm.Requests()); n != 0 {
			t.Errorf("upstream received %d requests", n)
		}
	})

	t.Run("who may decide", func(t *testing.T) {
		agent := h.agent(t, "agent-who")
		_, _, id := h.send(t, "POST", "/crm/customers/6/purge", agent, "", nil)
		if status, out := h.decide(t, h.outsider, id, "approve", ""); status != 403 || out["error"] != "forbidden" {
			t.Errorf("outsider's approval = %d %v, want 403 forbidden", status, out)
		}
		if status, _ := h.apiGet(t, h.outsider, "/api/v1/approvals/"+id); status != 404 {
			t.Errorf("outsider reads the approval: %d, want 404, as for an unknown id", status)
		}
		// A requester who is also an approver of the route may not approve itself, by
		// subject or through its own app's client-credentials token; another person
		// who logged in through the same app (Okta: the same cid) may.
		self := h.token(t, map[string]any{"sub": "agent-admin", "cid": "ops-bot", "groups": []string{"crm-admins"}, "scp": []string{"crm.write"}})
		_, _, selfID := h.send(t, "POST", "/crm/customers/7/purge", self, "", nil)
		if status, out := h.decide(t, self, selfID, "approve", ""); status != 403 || out["error"] != "self_approval" {
			t.Errorf("self-approval = %d %v, want 403 self_approval", status, out)
		}
		ownApp := h.token(t, map[string]any{"sub": "ops-bot", "cid": "ops-bot", "groups": []string{"crm-admins"}})
		if status, out := h.decide(t, ownApp, selfID, "approve", ""); status != 403 || out["error"] != "self_approval" {
			t.Errorf("approval by the requester's own app = %d %v, want 403 self_approval", status, out)
		}
		if status, _, _ := h.send(t, "POST", "/crm/customers/7/purge", self, "", nil); status != 403 {
			t.Errorf("self-approved request forwarded: %d", status)
		}
		colleague := h.token(t, map[string]any{"sub": "someone-else", "cid": "ops-bot", "groups": []string{"crm-admins"}})
		if status, out := h.decide(t, colleague, selfID, "approve", ""); status != 200 || out["state"] != "approved" {
			t.Errorf("approval by another person of the same app = %d %v, want 200 approved", status, out)
		}
		// The approvers role reads every approval but decides none; a route's approvers
		// see and decide only their routes' approvals.
		viewer := h.token(t, map[string]any{"sub": "victor@example.com", "groups": []string{"approval-viewers"}})
		if status, _ := h.apiGet(t, viewer, "/api/v1/approvals/"+id); status != 200 {
			t.Errorf("approvers role reads an approval: %d, want 200", status)
		}
		if status, out := h.decide(t, viewer, id, "approve", ""); status != 403 || out["error"] != "forbidden" {
			t.Errorf("approvers role decides = %d %v, want 403 forbidden", status, out)
		}
		billing := h.token(t, map[string]any{"sub": "bill@example.com", "groups": []string{"billing-admins"}})
		if status, out := h.apiGet(t, billing, "/api/v1/approvals?subject=agent-who"); status != 200 || len(out["approvals"].([]any)) != 0 {
			t.Errorf("another route's approver lists purge approvals: %d %v", status, out)
		}
		// Whoever may not see an approval cannot tell it from an unknown id: same status,
		// same message but for the id, no route named.
		unknown := "01JD0000000000000000000000"
		for _, c := range []struct {
			name, token string
		}{{"outsider", h.outsider}, {"another route's approver", billing}} {
			for _, op := range []string{"read", "approve"} {
				call := func(apID string) (int, map[string]any) {
					if op == "read" {
						return h.apiGet(t, c.token, "/api/v1/approvals/"+apID)
					}
					return h.decide(t, c.token, apID, "approve", "")
				}
				s1, o1 := call(id)
				s2, o2 := call(unknown)
				m1 := strings.ReplaceAll(fmt.Sprint(o1["message"]), id, "ID")
				m2 := strings.ReplaceAll(fmt.Sprint(o2["message"]), unknown, "ID")
				if s1 != s2 || o1["error"] != o2["error"] || m1 != m2 || strings.Contains(m1, "purge") {
					t.Errorf("%s, %s: existing approval = %d %v, unknown = %d %v; want the same answer, no route named", c.name, op, s1, o1, s2, o2)
				}
			}
		}
	})

	t.Run("requester polls its approval", func(t *testing.T) {
		agent := h.agent(t, "agent-poll")
		_, _, id := h.send(t, "POST", "/crm/customers/11/purge", agent, "", nil)
		// The agent's own token (its app is no admin client) reads where it stands.
		status, out := h.apiGet(t, agent, "/api/v1/approvals/"+id)
		if status != 200 || out["state"] != "pending" || out["retry_after_seconds"] != float64(10) ||
			!strings.HasPrefix(fmt.Sprint(out["next"]), "Nothing was done yet") {
			t.Fatalf("requester reads its pending approval: %d %v", status, out)
		}
		for _, hidden := range []string{"requester", "headers", "body", "body_sha256", "reason"} {
			if _, ok := out[hidden]; ok {
				t.Errorf("requester's view shows %q: %v", hidden, out)
			}
		}
		if status, out := h.decide(t, h.approver, id, "deny", "not this customer"); status != 200 {
			t.Fatalf("deny = %d %v", status, out)
		}
		status, out = h.apiGet(t, agent, "/api/v1/approvals/"+id)
		ds, _ := out["decisions"].([]any)
		if status != 200 || out["state"] != "denied" || len(ds) != 1 || ds[0].(map[string]any)["comment"] != "not this customer" {
			t.Errorf("requester reads its denied approval: %d %v, want the comment", status, out)
		}
		if d, _ := ds[0].(map[string]any); d != nil && d["approver"] != nil {
			t.Errorf("requester's view names the approver: %v", d)
		}
		// Another agent reads it as an unknown id.
		other := h.agent(t, "agent-nosy")
		s1, o1 := h.apiGet(t, other, "/api/v1/approvals/"+id)
		s2, o2 := h.apiGet(t, other, "/api/v1/approvals/01JD0000000000000000000000")
		if s1 != 404 || s2 != 404 || o1["error"] != o2["error"] {
			t.Errorf("another agent reads it: %d %v, unknown id: %d %v; want the same 404", s1, o1, s2, o2)
		}
		// The requester's token reads nothing else of the admin plane.
		if status, _ := h.apiGet(t, agent, "/api/v1/approvals"); status != 403 {
			t.Errorf("requester lists approvals: %d, want 403", status)
		}
	})

	t.Run("Prefer respond-async", func(t *testing.T) {
		agent := h.agent(t, "agent-async")
		// A bridge that hides every 4xx body from the model (an OpenAPI MCP server does):
		// only a 2xx body reaches the model.
		modelReads := func(resp *http.Response, body []byte) string {
			if resp.StatusCode >= 400 {
				return "details redacted"
			}
			return string(body)
		}
		resp, body := h.do(t, "POST", "/crm/customers/12/purge", agent, "", nil)
		if got := modelReads(resp, body); got != "details redacted" {
			t.Fatalf("without Prefer: the model reads %q, want the bridge to hide the 403", got)
		}
		resp, body = h.do(t, "POST", "/crm/customers/12/purge", agent, "", http.Header{"Prefer": {"wait=5, respond-async"}})
		id := resp.Header.Get("X-Keyhole-Approval")
		var pb map[string]any
		_ = json.Unmarshal(body, &pb)
		text := modelReads(resp, body)
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Preference-Applied") != "respond-async" ||
			resp.Header.Get("Retry-After") != "10" || resp.Header.Get("Location") != "https://keyhole.example:9090/api/v1/approvals/"+id {
			t.Fatalf("with Prefer: respond-async: %d %v %s", resp.StatusCode, resp.Header, body)
		}
		if !strings.HasPrefix(text, `{"message":"Nothing was done yet: this request waits for approval `+id+` by group crm-admins`) ||
			pb["error"] != "approval_pending" || pb["approval_id"] != id || pb["status_url"] != resp.Header.Get("Location") {
			t.Errorf("202 body: %s", body)
		}
		if n := len(h.crm.Requests()); n != 0 {
			t.Errorf("a 202 answer forwarded %d requests", n)
		}
		// The Location is the requester's status.
		if status, out := h.apiGet(t, agent, "/api/v1/approvals/"+id); status != 200 || out["state"] != "pending" {
			t.Errorf("the status the 202 names: %d %v", status, out)
		}
		// Once approved, the same request (its Prefer is bound like every other header
		// that may change what an upstream does) runs once.
		if status, out := h.decide(t, h.approver, id, "approve", ""); status != 200 {
			t.Fatalf("approve = %d %v", status, out)
		}
		if status, _, _ := h.send(t, "POST", "/crm/customers/12/purge", agent, "", http.Header{"Prefer": {"wait=5, respond-async"}}); status != 200 {
			t.Errorf("approved retry = %d, want 200", status)
		}
		// A route may answer 202 to every client: no Preference-Applied then.
		resp, body = h.do(t, "POST", "/crm/customers/13/purge-async", agent, "", nil)
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Preference-Applied") != "" || !strings.Contains(modelReads(resp, body), "Nothing was done yet") {
			t.Errorf("route with pending_status 202: %d %v %s", resp.StatusCode, resp.Header, body)
		}
		h.crm.Reset()
	})

	t.Run("min_approvals 2", func(t *testing.T) {
		agent := h.agent(t, "agent-two")
		h.crm.Reset()
		_, _, id := h.send(t, "DELETE", "/crm/accounts/8", agent, "", nil)
		if status, out := h.decide(t, h.approver, id, "approve", "one"); status != 200 || out["state"] != "pending" {
			t.Fatalf("first approval = %d %v, want still pending", status, out)
		}
		if status, code, _ := h.send(t, "DELETE", "/crm/accounts/8", agent, "", nil); status != 403 || code != "approval_pending" {
			t.Errorf("retry after one of two approvals = %d %s", status, code)
		}
		if status, out := h.decide(t, h.approver, id, "approve", "again"); status != 409 || out["error"] != "already_decided" {
			t.Errorf("same approver twice = %d %v, want 409 already_decided", status, out)
		}
		if status, out := h.decide(t, h.approver2, id, "approve", "two"); status != 200 || out["state"] != "approved" {
			t.Fatalf("second approval = %d %v", status, out)
		}
		if status, _, _ := h.send(t, "DELETE", "/crm/accounts/8", agent, "", nil); status != 200 || len(h.crm.Requests()) != 1 {
			t.Errorf("retry after two approvals = %d, upstream got %d", status, len(h.crm.Requests()))
		}
	})

	t.Run("a different request needs its own approval", func(t *testing.T) {
		agent := h.agent(t, "agent-binding")
		h.crm.Reset()
		_, _, id := h.send(t, "POST", "/crm/customers/9/purge?mode=soft", agent, `{"a":1}`, nil)
		h.decide(t, h.approver, id, "approve", "")
		other := h.agent(t, "agent-binding-2")
		for _, c := range []struct{ name, path, token, body string }{
			{"body", "/crm/customers/9/purge?mode=soft", agent, `{"a":2}`},
			{"query", "/crm/customers/9/purge?mode=hard", agent, `{"a":1}`},
			{"path", "/crm/customers/10/purge?mode=soft", agent, `{"a":1}`},
			{"caller", "/crm/customers/9/purge?mode=soft", other, `{"a":1}`},
		} {
			if status, code, got := h.send(t, "POST", c.path, c.token, c.body, nil); status != 403 || code != "approval_pending" || got == id {
				t.Errorf("changed %s = %d %s approval %q, want a new pending approval", c.name, status, code, got)
			}
		}
		if n := len(h.crm.Requests()); n != 0 {
			t.Errorf("upstream received %d changed requests", n)
		}
		if status, _, _ := h.send(t, "POST", "/crm/customers/9/purge?mode=soft", agent, `{"a":1}`, nil); status != 200 {
			t.Errorf("the approved request itself = %d, want 200", status)
		}
	})

	t.Run("headers are part of the approval", func(t *testing.T) {
		agent := h.agent(t, "agent-headers")
		h.crm.Reset()
		_, _, id := h.send(t, "POST", "/crm/customers/31/purge", agent, "", http.Header{"X-Tenant": {"acme"}})
		_, shown := h.apiGet(t, h.approver, "/api/v1/approvals/"+id)
		if !strings.Contains(fmt.Sprint(shown["headers"]), "acme") {
			t.Errorf("approvers are not shown the headers: %v", shown["headers"])
		}
		h.decide(t, h.approver, id, "approve", "")
		for _, hdr := range []http.Header{{"X-Tenant": {"megacorp"}}, {"X-Tenant": {"acme"}, "If-Match": {"*"}}, {}} {
			if status, code, got := h.send(t, "POST", "/crm/customers/31/purge", agent, "", hdr); status != 403 || got == id {
				t.Errorf("retry with headers %v = %d %s approval %q, want a new approval", hdr, status, code, got)
			}
		}
		if status, _, _ := h.send(t, "POST", "/crm/customers/31/purge", agent, "", http.Header{"X-Tenant": {"acme"}, "User-Agent": {"other/1"}}); status != 200 {
			t.Errorf("the approved request (another User-Agent) = %d, want 200", status)
		}
		if n := len(h.crm.Requests()); n != 1 {
			t.Errorf("upstream received %d requests, want 1", n)
		}
	})

	t.Run("the body is bound without a body guard too", func(t *testing.T) {
		// testConfig's guard reads every body; without it, only the approval does.
		a, b := strings.Index(approvalConfig, "guards:\n"), strings.Index(approvalConfig, "routes:\n")
		h.load(t, approvalConfig[:a]+approvalConfig[b:])
		defer h.load(t, approvalConfig)
		agent := h.agent(t, "agent-noguard")
		h.crm.Reset()
		_, _, id := h.send(t, "POST", "/crm/customers/32/purge", agent, `{"amount":1}`, nil)
		h.decide(t, h.approver, id, "approve", "")
		if status, _, got := h.send(t, "POST", "/crm/customers/32/purge", agent, `{"amount":1000000}`, nil); status != 403 || got == id {
			t.Errorf("another body on the approval = %d %q, want a new approval", status, got)
		}
		if status, _, _ := h.send(t, "POST", "/crm/customers/32/purge", agent, `{"amount":1}`, nil); status != 200 {
			t.Errorf("the approved body = %d, want 200", status)
		}
		if got := h.crm.Requests(); len(got) != 1 || got[0].Body != `{"amount":1}` {
			t.Errorf("upstream received %+v, want the approved body once", got)
		}
	})

	t.Run("fifty identical retries race: exactly one is forwarded", func(t *testing.T) {
		agent := h.agent(t, "agent-race")
		h.crm.Reset()
		_, _, id := h.send(t, "POST", "/crm/customers/11/purge", agent, `{"x":1}`, nil)
		h.decide(t, h.approver, id, "approve", "")
		var wg sync.WaitGroup
		statuses := make(chan int, 50)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _ := h.do(t, "POST", "/crm/customers/11/purge", agent, `{"x":1}`, nil)
				statuses <- resp.StatusCode
			}()
		}
		wg.Wait()
		close(statuses)
		ok := 0
		for s := range statuses {
			if s == 200 {
				ok++
			} else if s != 403 {
				t.Errorf("a racing retry got %d", s)
			}
		}
		if ok != 1 || len(h.crm.Requests()) != 1 {
			t.Errorf("%d retries answered 200 and the upstream received %d, want exactly 1 and 1", ok, len(h.crm.Requests()))
		}
	})

	t.Run("too many pending approvals", func(t *testing.T) {
		agent := h.agent(t, "agent-flood")
		for i := range 3 {
			if status, code, _ := h.send(t, "POST", fmt.Sprintf("/crm/customers/%d/purge", 100+i), agent, "", nil); status != 403 || code != "approval_pending" {
				t.Fatalf("request %d = %d %s", i, status, code)
			}
		}
		resp, body := h.do(t, "POST", "/crm/customers/103/purge", agent, "", nil)
		if resp.StatusCode != 429 || !strings.Contains(string(body), "too_many_approvals") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("fourth pending approval = %d %s, want 429 too_many_approvals", resp.StatusCode, body)
		}
	})

	t.Run("records link the approval and its approver", func(t *testing.T) {
		agent := h.agent(t, "agent-records")
		resp, _ := h.do(t, "POST", "/crm/customers/12/purge", agent, "", nil)
		heldID, id := resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Keyhole-Approval")
		h.decide(t, h.approver, id, "approve", "checked the ticket")
		resp, _ = h.do(t, "POST", "/crm/customers/12/purge", agent, "", nil)
		fwdID := resp.Header.Get("X-Request-Id")
		held, fwd := waitRecord(t, h.store, heldID), waitRecord(t, h.store, fwdID)
		if held.ApprovalID != id || held.Decision != "approval_pending" || fwd.ApprovalID != id || fwd.Decision != "approved" {
			t.Errorf("records: held %s/%s, forwarded %s/%s; want both linked to %s", held.ApprovalID, held.Decision, fwd.ApprovalID, fwd.Decision, id)
		}
		_, a := h.apiGet(t, h.approver, "/api/v1/approvals/"+id)
		ds, _ := a["decisions"].([]any)
		if a["exchange_id"] != heldID || a["used_by"] != fwdID || len(ds) != 1 ||
			!strings.Contains(fmt.Sprint(ds[0]), "alice@example.com") || !strings.Contains(fmt.Sprint(ds[0]), "checked the ticket") {
			t.Errorf("approval = %v, want it to name the held and forwarded exchanges and alice's decision", a)
		}
	})

	t.Run("the webhook hears of each approval, without secrets", func(t *testing.T) {
		webhook.Reset()
		agent := h.agent(t, "agent-hook")
		_, _, id := h.send(t, "POST", "/crm/customers/13/purge?api_key="+crmKey, agent, `{"token":"`+crmKey+`"}`,
			http.Header{"X-Keyhole-Reason": {"cleanup <https://evil.example|approve here>"}})
		var got []testkit.Received
		for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			got = webhook.Requests()
		}
		if len(got) != 1 {
			t.Fatalf("webhook received %d notifications, want 1", len(got))
		}
		var msg struct{ Text string }
		if err := json.Unmarshal([]byte(got[0].Body), &msg); err != nil || got[0].Header.Get("Content-Type") != "application/json" {
			t.Fatalf("webhook body %q: %v", got[0].Body, err)
		}
		for _, want := range []string{"agent-hook", "purge", "POST", "/crm/customers/13/purge", "cleanup", "https://keyhole.example:9090/api/v1/approvals/" + id} {
			if !strings.Contains(msg.Text, want) {
				t.Errorf("notification %q lacks %q", msg.Text, want)
			}
		}
		for _, secret := range []string{crmKey, agent, "<https://evil"} {
			if strings.Contains(got[0].Body, secret) {
				t.Errorf("notification carries %.20q: %s", secret, msg.Text)
			}
		}
		req, _ := http.NewRequest("GET", h.api.URL+"/api/v1/approvals/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+h.approver)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		shown, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(shown), crmKey) || !strings.Contains(string(shown), recorder.Redacted) {
			t.Errorf("approvers are shown the credential: %s", shown)
		}
	})

	t.Run("a failing webhook does not hold up the request", func(t *testing.T) {
		hookFails.Store(true)
		defer func() { hookFails.Store(false); close(release) }()
		agent := h.agent(t, "agent-hook-down")
		start := time.Now()
		if status, code, _ := h.send(t, "POST", "/crm/customers/15/purge", agent, "", nil); status != 403 || code != "approval_pending" {
			t.Errorf("request while the webhook hangs = %d %s", status, code)
		}
		// The webhook hangs for 2 s (the notifier waits up to 5 s): a request that waited
		// for the notification would take longer.
		if d := time.Since(start); d > 1800*time.Millisecond {
			t.Errorf("request took %s while the webhook hung; the hold is 150ms", d)
		}
	})

	t.Run("no secret in the database files", func(t *testing.T) {
		files, _ := filepath.Glob(h.path + "*")
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(crmKey)) {
				t.Errorf("%s holds the upstream credential", filepath.Base(f))
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		h.svc.Sweep(context.Background())
		for _, c := range []struct {
			outcome string
			min     float64
		}{{"requested", 5}, {"approved", 3}, {"denied", 1}, {"used", 3}, {"expired", 1}, {"limited", 1}} {
			if got := testutil.ToFloat64(h.m.ApprovalsTotal.WithLabelValues("purge", c.outcome)); got < c.min {
				t.Errorf("keyhole_approvals_total{route=purge,outcome=%s} = %v, want at least %v", c.outcome, got, c.min)
			}
		}
		if got := testutil.ToFloat64(h.m.ApprovalsPending); got < 3 {
			t.Errorf("keyhole_approvals_pending = %v, want at least 3", got)
		}
	})
	t.Run("restart between approval and retry", func(t *testing.T) {
		agent := h.agent(t, "agent-restart")
		_, _, id := h.send(t, "POST", "/crm/customers/14/purge", agent, "", nil)
		h.decide(t, h.approver, id, "approve", "")
		h.restart(t)
		h.crm.Reset()
		if status, _, got := h.send(t, "POST", "/crm/customers/14/purge", agent, "", nil); status != 200 || got != id {
			t.Errorf("retry on the restarted gateway = %d %q, want 200 with %q", status, got, id)
		}
		if n := len(h.crm.Requests()); n != 1 {
			t.Errorf("upstream received %d requests, want 1", n)
		}
	})

}

// waitPending waits until subject has a pending approval and returns its id.
func waitPending(t *testing.T, h *approvalHarness, subject string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, out := h.apiGet(t, h.approver, "/api/v1/approvals?subject="+subject)
		if list, _ := out["approvals"].([]any); len(list) == 1 {
			return list[0].(map[string]any)["id"].(string)
		}
	}
	t.Fatalf("no pending approval of %s", subject)
	return ""
}

// waitRecord waits until exchange id is recorded whole, and returns it.
func waitRecord(t *testing.T, st *sqlite.Store, id string) recorder.Exchange {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if rec, err := st.Get(context.Background(), id); err == nil && rec.Response != nil {
			x, err := recorder.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			return x
		}
	}
	t.Fatalf("exchange %s not recorded", id)
	return recorder.Exchange{}
}
