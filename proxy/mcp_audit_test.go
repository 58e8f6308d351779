package proxy_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/recorder"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMCPAudit calls tools through a recording gateway with the Go SDK and reads the
// records back through the admin API: each carries the JSON-RPC method, the tool, the id
// and the session, `?tool=` finds them, and keyhole_mcp_requests_total counts them with
// labels from the config only.
func TestMCPAudit(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	up := httptest.NewServer(maskingMCPServer(false))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	table := h.load(t, mcpMaskConfig+`
        - { name: "drop_*", deny: "schema changes never go through the gateway" }
admin:
  roles:
    auditors: { groups: [auditors] }
`)
	api := httptest.NewServer(admin.New(admin.Options{Gatherer: h.reg, Ready: func() error { return nil },
		API: &admin.API{Verifier: func() admin.Verifier { return h.v }, Roles: func() admin.Roles { return table },
			Store: h.store, Version: "test", Log: slog.New(slog.DiscardHandler)}}))
	t.Cleanup(api.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok := h.token(t, map[string]any{"sub": "agent", "groups": []string{"agents"}})
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
		HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("initialize through the gateway: %v", err)
	}
	const planted = "PLANTED-ARGUMENT-5d1e"
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"q": planted}}); err != nil {
		t.Fatalf("lookup_customer: %v", err)
	}
	for _, name := range []string{"drop_table", "drop_index", "made_up_tool_1", "made_up_tool_2"} {
		if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: map[string]any{}}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	session := cs.ID()
	cs.Close()
	h.flush(t)

	auditor := h.token(t, map[string]any{"sub": "auditor", "groups": []string{"auditors"}})
	list := func(query string) []recorder.Exchange {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, api.URL+"/api/v1/exchanges?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+auditor)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page struct{ Exchanges []recorder.Exchange }
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("list %s: %d, %v", query, resp.StatusCode, err)
		}
		return page.Exchanges
	}
	xs := list("tool=lookup_customer")
	if len(xs) != 1 {
		t.Fatalf("?tool=lookup_customer: got %d exchanges, want 1", len(xs))
	}
	x := xs[0]
	if x.MCP == nil || x.MCP.Method != "tools/call" || x.MCP.Name != "lookup_customer" || x.MCP.ID == "" || x.MCP.Session != session || session == "" {
		t.Errorf("record's mcp: got %+v, want tools/call of lookup_customer with its id and session %q", x.MCP, session)
	}
	if !strings.Contains(x.Request.Body.Text, planted) {
		t.Errorf("request body %q: want the arguments recorded", x.Request.Body.Text)
	}
	if got := list("tool=drop_table"); len(got) != 1 || got[0].Decision != "denied" {
		t.Errorf("?tool=drop_table: got %+v, want the one denied call", got)
	}
	if got := list("tool=no_such_tool"); len(got) != 0 {
		t.Errorf("?tool=no_such_tool: got %d exchanges, want none", len(got))
	}
	if got := list("route=crm-mcp"); len(got) < 6 {
		t.Errorf("route=crm-mcp: got %d exchanges, want initialize, the notification and five calls at least", len(got))
	}

	want := `
# HELP keyhole_mcp_requests_total Requests of mcp routes by route, JSON-RPC method, tool (config names, other) and decision.
# TYPE keyhole_mcp_requests_total counter
keyhole_mcp_requests_total{decision="allowed",method="DELETE",route="crm-mcp",tool=""} 1
keyhole_mcp_requests_total{decision="allowed",method="GET",route="crm-mcp",tool=""} 1
keyhole_mcp_requests_total{decision="allowed",method="initialize",route="crm-mcp",tool=""} 1
keyhole_mcp_requests_total{decision="allowed",method="notifications/initialized",route="crm-mcp",tool=""} 1
keyhole_mcp_requests_total{decision="allowed",method="tools/call",route="crm-mcp",tool="broken"} 0
keyhole_mcp_requests_total{decision="allowed",method="tools/call",route="crm-mcp",tool="drop_*"} 0
keyhole_mcp_requests_total{decision="allowed",method="tools/call",route="crm-mcp",tool="lookup_customer"} 1
keyhole_mcp_requests_total{decision="allowed",method="tools/call",route="crm-mcp",tool="notes"} 0
keyhole_mcp_requests_total{decision="allowed",method="tools/call",route="crm-mcp",tool="other"} 0
keyhole_mcp_requests_total{decision="denied",method="other",route="crm-mcp",tool=""} 1
keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="broken"} 0
keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="drop_*"} 2
keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="lookup_customer"} 0
keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="notes"} 0
keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="other"} 2
keyhole_mcp_requests_total{decision="forbidden",method="tools/call",route="crm-mcp",tool="broken"} 0
keyhole_mcp_requests_total{decision="forbidden",method="tools/call",route="crm-mcp",tool="drop_*"} 0
keyhole_mcp_requests_total{decision="forbidden",method="tools/call",route="crm-mcp",tool="lookup_customer"} 0
keyhole_mcp_requests_total{decision="forbidden",method="tools/call",route="crm-mcp",tool="notes"} 0
keyhole_mcp_requests_total{decision="forbidden",method="tools/call",route="crm-mcp",tool="other"} 0
`
	// The SDK's server/discover probe is no method of the specification: other.
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "keyhole_mcp_requests_total")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	db, _ := os.ReadFile(filepath.Join(h.dir, "keyhole.db"))
	if strings.Contains(string(db), "123456789") {
		t.Error("the record store holds the unmasked SSN: records must hold what the client got")
	}
}
