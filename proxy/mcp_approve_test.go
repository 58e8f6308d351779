package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// mcpApprovalConfig protects an MCP server whose delete_customer needs approval (held
// briefly) and purge_customer too (held long enough to approve during the hold).
const mcpApprovalConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm-mcp:
    url: ${MCP_URL}
    timeout: 2s
routes:
  - name: crm-mcp
    match: { methods: [POST, GET, DELETE], path: /crm/mcp }
    upstream: crm-mcp
    allow: { groups: [agents] }
    mcp:
      tools:
        - name: lookup_customer
        - name: delete_customer
          approval: { approvers: { groups: [crm-admins] }, hold: 300ms }
        - name: purge_customer
          approval: { approvers: { groups: [crm-admins] }, hold: 4s }
  - name: tenant-mcp
    match: { methods: [POST, GET, DELETE], path: "/tenants/{tenant}/mcp" }
    upstream: crm-mcp
    rewrite: { strip_prefix: /tenants }
    allow: { groups: [agents] }
    mcp:
      tools:
        - name: delete_customer
          approval: { approvers: { groups: [crm-admins] }, hold: 300ms }
approvals:
  max_pending_per_subject: 60
`

// mcpApprovalHarness is an approval harness in front of an MCP server on the Go SDK.
type mcpApprovalHarness struct {
	*approvalHarness
	server *mcpServer
}

func newMCPApprovalHarness(t *testing.T, jsonAnswers bool) *mcpApprovalHarness {
	t.Helper()
	server := &mcpServer{}
	up := httptest.NewServer(server.statelessHandler(jsonAnswers))
	t.Cleanup(up.Close)
	h := newApprovalHarnessFor(t, &testClock{t: time.Now()}, testkit.NewUpstream(t), mcpApprovalConfig, map[string]string{"MCP_URL": up.URL})
	return &mcpApprovalHarness{approvalHarness: h, server: server}
}

// statelessHandler is handler(json) without sessions, so that a bare tools/call POST
// (no initialize first) runs, as the racing test sends them.
func (s *mcpServer) statelessHandler(json bool) http.Handler {
	srv := sdk.NewServer(&sdk.Implementation{Name: "crm", Version: "1"}, nil)
	type args struct {
		ID     int    `json:"id"`
		Reason string `json:"reason,omitempty"`
	}
	for _, name := range []string{"lookup_customer", "delete_customer", "purge_customer"} {
		sdk.AddTool(srv, &sdk.Tool{Name: name, Description: name}, func(ctx context.Context, req *sdk.CallToolRequest, in args) (*sdk.CallToolResult, any, error) {
			s.mu.Lock()
			s.calls = append(s.calls, fmt.Sprintf("%s %d", name, in.ID))
			s.mu.Unlock()
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: name + " done"}}}, nil, nil
		})
	}
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv },
		&sdk.StreamableHTTPOptions{JSONResponse: json, Stateless: true})
}

// connect opens a new MCP client session through the gateway as agent sub.
func (h *mcpApprovalHarness) connect(t *testing.T, ctx context.Context, sub string, opts *sdk.ClientOptions) *sdk.ClientSession {
	t.Helper()
	tok := h.token(t, map[string]any{"sub": sub, "cid": sub + "-client", "groups": []string{"agents"}})
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, opts)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
		HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("initialize through the gateway: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// keyholeMeta is _meta.keyhole of a refused call.
type keyholeMeta struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	RequestID  string `json:"request_id"`
	ApprovalID string `json:"approval_id"`
	Approvers  string `json:"approvers"`
	RetryAfter int    `json:"retry_after_seconds"`
}

// refused checks that res is an isError result saying each of says, and returns its
// _meta.keyhole.
func refused(t *testing.T, what string, res *sdk.CallToolResult, err error, says ...string) keyholeMeta {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: got error %v, want an isError result the model can read", what, err)
	}
	if !res.IsError || len(res.Content) != 1 {
		t.Fatalf("%s: got %+v, want one text and isError", what, res)
	}
	text := res.Content[0].(*sdk.TextContent).Text
	for _, want := range says {
		if !strings.Contains(text, want) {
			t.Errorf("%s: got text %q, want it to say %q", what, text, want)
		}
	}
	var kh keyholeMeta
	b, _ := json.Marshal(res.Meta["keyhole"])
	if err := json.Unmarshal(b, &kh); err != nil {
		t.Fatalf("%s: _meta.keyhole %s: %v", what, b, err)
	}
	return kh
}

func TestMCPApprovals(t *testing.T) {
	h := newMCPApprovalHarness(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("pending, approved, retried in a new session once", func(t *testing.T) {
		first := h.connect(t, ctx, "agent-retry", nil)
		args := map[string]any{"id": 7, "reason": "gdpr"}
		res, err := first.CallTool(ctx, &sdk.CallToolParams{Name: "delete_customer", Arguments: args})
		kh := refused(t, "held call", res, err, "delete_customer", "group crm-admins", "Nothing was done", "same call again")
		if kh.Error != "approval_pending" || kh.ApprovalID == "" || kh.Approvers != "group crm-admins" || kh.RetryAfter <= 0 {
			t.Fatalf("held call: got _meta.keyhole %+v, want approval_pending with the approval id, approvers and retry after", kh)
		}
		if !strings.Contains(res.Content[0].(*sdk.TextContent).Text, kh.ApprovalID) {
			t.Errorf("held call: text %q does not name approval %s", res.Content[0].(*sdk.TextContent).Text, kh.ApprovalID)
		}
		if got := h.server.ran(); len(got) != 0 {
			t.Fatalf("the server ran %v before approval, want nothing", got)
		}

		// Approvers see the tool and its arguments, indented, not the envelope.
		status, shown := h.apiGet(t, h.approver, "/api/v1/approvals/"+kh.ApprovalID)
		wantBody := "{\n  \"id\": 7,\n  \"reason\": \"gdpr\"\n}"
		if status != 200 || shown["tool"] != "delete_customer" || shown["body"] != wantBody || shown["route"] != "crm-mcp" {
			t.Errorf("approver sees %d %v, want tool delete_customer and body %q", status, shown, wantBody)
		}
		if status, out := h.decide(t, h.outsider, kh.ApprovalID, "approve", ""); status != 404 && status != 403 {
			t.Errorf("an outsider's approval = %d %v, want it refused", status, out)
		}
		if status, out := h.decide(t, h.approver, kh.ApprovalID, "approve", "ok"); status != 200 || out["state"] != "approved" {
			t.Fatalf("approve = %d %v", status, out)
		}

		// A new session, a new JSON-RPC id, the arguments in another order: the same call.
		first.Close()
		second := h.connect(t, ctx, "agent-retry", nil)
		raw := json.RawMessage(`{"reason":"gdpr","id":7}`)
		res, err = second.CallTool(ctx, &sdk.CallToolParams{Name: "delete_customer", Arguments: raw})
		if err != nil || res.IsError || res.Content[0].(*sdk.TextContent).Text != "delete_customer done" {
			t.Fatalf("retry after approval: got %+v, %v, want the server's result", res.Content[0], err)
		}
		if got, want := h.server.ran(), []string{"delete_customer 7"}; !slices.Equal(got, want) {
			t.Fatalf("the server ran %v, want %v", got, want)
		}
		res, err = second.CallTool(ctx, &sdk.CallToolParams{Name: "delete_customer", Arguments: args})
		again := refused(t, "third call", res, err, "delete_customer")
		if again.Error != "approval_pending" || again.ApprovalID == kh.ApprovalID {
			t.Errorf("third call: got %+v, want a new approval pending", again)
		}
		if got := h.server.ran(); len(got) != 1 {
			t.Errorf("the server ran %v, want the approved call once", got)
		}
		// The true decisions are in the log, with the 200 the client got.
		waitLog(t, h.harness, `"status":200,"decision":"approval_pending"`, `"status":200,"decision":"approved"`)
	})

	t.Run("denied", func(t *testing.T) {
		cs := h.connect(t, ctx, "agent-denied", nil)
		args := map[string]any{"id": 8}
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_customer", Arguments: args})
		kh := refused(t, "held call", res, err)
		if status, out := h.decide(t, h.approver, kh.ApprovalID, "deny", "not today"); status != 200 || out["state"] != "denied" {
			t.Fatalf("deny = %d %v", status, out)
		}
		res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "delete_customer", Arguments: args})
		denied := refused(t, "denied call", res, err, "denied", "not today", kh.ApprovalID, "Nothing was done")
		if denied.Error != "approval_denied" || denied.ApprovalID != kh.ApprovalID {
			t.Errorf("denied call: got _meta.keyhole %+v, want approval_denied of %s", denied, kh.ApprovalID)
		}
		if got := h.server.ran(); slices.Contains(got, "delete_customer 8") {
			t.Errorf("the server ran %v, want no delete_customer 8", got)
		}
		waitLog(t, h.harness, `"status":200,"decision":"approval_denied"`)
	})
}

// waitLog waits (boundedly) until the gateway's log holds every one of wants.
func waitLog(t *testing.T, h *harness, wants ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		logs := h.logs.String()
		missing := slices.IndexFunc(wants, func(w string) bool { return !strings.Contains(logs, w) })
		if missing < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log lines: got\n%s\nwant %s", logs, wants[missing])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var waitingFor = regexp.MustCompile(`^waiting for approval ([0-9A-Z]{26}) by group crm-admins \(`)

// TestMCPApprovalProgress holds a call whose client asked for progress: the SDK client
// hears notifications/progress during the hold, an approver approves during it, and the
// call's answer comes on the same stream, whether the server answers JSON or SSE.
func TestMCPApprovalProgress(t *testing.T) {
	for _, mode := range []struct {
		name string
		json bool
	}{{"json answers", true}, {"sse answers", false}} {
		t.Run(mode.name, func(t *testing.T) {
			h := newMCPApprovalHarness(t, mode.json)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var mu sync.Mutex
			var heard []*sdk.ProgressNotificationParams
			approve := make(chan string, 1)
			opts := &sdk.ClientOptions{ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
				mu.Lock()
				defer mu.Unlock()
				heard = append(heard, req.Params)
				if m := waitingFor.FindStringSubmatch(req.Params.Message); m != nil && len(heard) == 2 {
					approve <- m[1]
				}
			}}
			cs := h.connect(t, ctx, "agent-progress", opts)
			go func() {
				select {
				case id := <-approve:
					h.decide(t, h.approver, id, "approve", "")
				case <-ctx.Done():
				}
			}()
			p := &sdk.CallToolParams{Name: "purge_customer", Arguments: map[string]any{"id": 9}}
			p.SetProgressToken("purge-9")
			res, err := cs.CallTool(ctx, p)
			if err != nil || res.IsError || res.Content[0].(*sdk.TextContent).Text != "purge_customer done" {
				t.Fatalf("held call approved during the hold: got %+v, %v, want the server's result", res, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(heard) < 2 {
				t.Fatalf("heard %d progress notifications, want at least 2 before the approval", len(heard))
			}
			for i, n := range heard {
				if n.ProgressToken != "purge-9" || n.Progress != float64(i+1) || !waitingFor.MatchString(n.Message) {
					t.Errorf("progress %d: got %+v, want token purge-9, progress %d and a message naming the approval and approvers", i, n, i+1)
				}
			}
			if got, want := h.server.ran(), []string{"purge_customer 9"}; !slices.Equal(got, want) {
				t.Errorf("the server ran %v, want %v", got, want)
			}
			waitLog(t, h.harness, `"status":200,"decision":"approved"`)
		})
	}
}

// TestMCPApprovalRacingRetries sends 50 identical calls at once, each with its own
// JSON-RPC id and no session, on one approved approval: exactly one is forwarded.
func TestMCPApprovalRacingRetries(t *testing.T) {
	h := newMCPApprovalHarness(t, true)
	tok := h.token(t, map[string]any{"sub": "agent-race", "cid": "agent-race-client", "groups": []string{"agents"}})
	call := func(id int) (int, string) {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"delete_customer","arguments":{"id":11},"_meta":{"progressToken":%d}}}`, id, id)
		if id == 1 {
			body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_customer","arguments":{"id":11}}}`
		}
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/crm/mcp", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, first := call(1)
	var held struct {
		Result struct {
			Meta struct{ Keyhole keyholeMeta } `json:"_meta"`
		}
	}
	if err := json.Unmarshal([]byte(first), &held); status != 200 || err != nil || held.Result.Meta.Keyhole.Error != "approval_pending" {
		t.Fatalf("first call = %d %s, want 200 with approval_pending", status, first)
	}
	if status, out := h.decide(t, h.approver, held.Result.Meta.Keyhole.ApprovalID, "approve", ""); status != 200 || out["state"] != "approved" {
		t.Fatalf("approve = %d %v", status, out)
	}
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, body := call(100 + i); status == 200 && strings.Contains(body, "delete_customer done") {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := h.server.ran(); len(got) != 1 || ok.Load() != 1 {
		t.Errorf("the server ran %v and %d clients got its answer, want exactly one of each", got, ok.Load())
	}
}

// TestMCPApprovalBindsHeadersAndQuery: an approval of a call covers the headers a plain
// route's approval covers and the query, but not the MCP transport's own headers. A retry
// for another tenant (header or query) asks anew and runs nothing; the same call in a new
// session, at another protocol version, with a new id, runs once on the approval. The
// approvers saw the tenant header.
func TestMCPApprovalBindsHeadersAndQuery(t *testing.T) {
	h := newMCPApprovalHarness(t, true)
	tok := h.token(t, map[string]any{"sub": "agent-tenant", "cid": "agent-tenant-client", "groups": []string{"agents"}})
	call := func(id int, target string, hdr map[string]string) (int, keyholeMeta, string) {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"delete_customer","arguments":{"id":12}}}`, id)
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+target, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var held struct {
			Result struct {
				Meta struct{ Keyhole keyholeMeta } `json:"_meta"`
			}
		}
		_ = json.Unmarshal(b, &held)
		return resp.StatusCode, held.Result.Meta.Keyhole, string(b)
	}
	acme := map[string]string{"X-Tenant": "acme", "Mcp-Session-Id": "s-1", "Mcp-Protocol-Version": "2025-06-18"}
	status, first, body := call(1, "/crm/mcp", acme)
	if status != 200 || first.Error != "approval_pending" {
		t.Fatalf("first call = %d %s, want 200 with approval_pending", status, body)
	}
	if status, shown := h.apiGet(t, h.approver, "/api/v1/approvals/"+first.ApprovalID); status != 200 ||
		!strings.Contains(fmt.Sprint(shown["body"]), `"X-Tenant": [`) || !strings.Contains(fmt.Sprint(shown["body"]), `"acme"`) {
		t.Errorf("approver sees %d %v, want the X-Tenant header and its value acme in what the approval covers", status, shown)
	}
	if status, out := h.decide(t, h.approver, first.ApprovalID, "approve", ""); status != 200 || out["state"] != "approved" {
		t.Fatalf("approve = %d %v", status, out)
	}

	for _, c := range []struct {
		name, query string
		hdr         map[string]string
	}{
		{"another tenant header", "", map[string]string{"X-Tenant": "globex", "Mcp-Session-Id": "s-1", "Mcp-Protocol-Version": "2025-06-18"}},
		{"no tenant header", "", map[string]string{"Mcp-Session-Id": "s-1", "Mcp-Protocol-Version": "2025-06-18"}},
		{"another query", "?tenant=globex", acme},
	} {
		status, kh, body := call(2, "/crm/mcp"+c.query, c.hdr)
		if status != 200 || kh.Error != "approval_pending" || kh.ApprovalID == first.ApprovalID {
			t.Errorf("%s: got %d %s, want a new approval pending, not approval %s", c.name, status, body, first.ApprovalID)
		}
	}
	if got := h.server.ran(); len(got) != 0 {
		t.Fatalf("the server ran %v on calls the approval does not cover, want nothing", got)
	}

	// The transport's own headers are not bound: a new session at another version is the same call.
	status, kh, body := call(3, "/crm/mcp", map[string]string{"X-Tenant": "acme", "Mcp-Session-Id": "s-2", "Mcp-Protocol-Version": "2025-11-25"})
	if status != 200 || kh.Error != "" || !strings.Contains(body, "delete_customer done") {
		t.Fatalf("retry in a new session = %d %s, want the server's result", status, body)
	}
	if got, want := h.server.ran(), []string{"delete_customer 12"}; !slices.Equal(got, want) {
		t.Errorf("the server ran %v, want %v", got, want)
	}

	// On a route whose pattern matches many paths, the path is bound too.
	_, a, body := call(4, "/tenants/acme/mcp", nil)
	if a.Error != "approval_pending" {
		t.Fatalf("call for tenant acme = %s, want approval_pending", body)
	}
	if status, out := h.decide(t, h.approver, a.ApprovalID, "approve", ""); status != 200 || out["state"] != "approved" {
		t.Fatalf("approve = %d %v", status, out)
	}
	if _, kh, body := call(5, "/tenants/globex/mcp", nil); kh.Error != "approval_pending" || kh.ApprovalID == a.ApprovalID {
		t.Errorf("call for tenant globex = %s, want a new approval pending, not approval %s", body, a.ApprovalID)
	}
	if got := h.server.ran(); len(got) != 1 {
		t.Errorf("the server ran %v, want only the call approved before", got)
	}
}
