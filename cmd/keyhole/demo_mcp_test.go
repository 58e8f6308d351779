package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds a token to every request of an MCP client.
type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// TestDemoMCP connects the official Go SDK client to the demo's MCP server through the
// gateway, as the demo's printout says, and sees each decision of route crm-mcp.
func TestDemoMCP(t *testing.T) {
	d := startDemo(t)
	endpoint := "http://" + d.data + "/crm/mcp"
	for _, want := range []string{"URL (Streamable HTTP):  " + endpoint, "npx @modelcontextprotocol/inspector --cli " + endpoint} {
		if !strings.Contains(d.stdout.String(), want) {
			t.Errorf("demo does not print how to connect an MCP client: lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(who string) *sdk.ClientSession {
		t.Helper()
		c := sdk.NewClient(&sdk.Implementation{Name: "demo-agent", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: endpoint,
			HTTPClient: &http.Client{Transport: bearer(d.tokens[who])}, MaxRetries: -1}, nil)
		if err != nil {
			t.Fatalf("initialize through the gateway as %s: %v", who, err)
		}
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	call := func(cs *sdk.ClientSession, tool string, args map[string]any) *sdk.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			t.Fatalf("tools/call %s: %v, want a result", tool, err)
		}
		return res
	}
	text := func(res *sdk.CallToolResult) string {
		var out []string
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				out = append(out, tc.Text)
			}
		}
		return strings.Join(out, "\n")
	}
	keyholeError := func(res *sdk.CallToolResult) map[string]any {
		k, _ := res.Meta["keyhole"].(map[string]any)
		return k
	}
	reader, writer := connect("READER"), connect("WRITER")

	for _, c := range []struct {
		who  string
		cs   *sdk.ClientSession
		want []string
	}{
		{"reader", reader, []string{"list_customers", "lookup_customer"}},
		{"writer", writer, []string{"delete_customer", "list_customers", "lookup_customer"}}, // approval: listed
	} {
		res, err := c.cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatalf("%s's tools/list: %v", c.who, err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, c.want) {
			t.Errorf("%s's tools/list = %v, want %v (drop_table denied, so hidden)", c.who, names, c.want)
		}
	}

	// Masked alike in structuredContent and in the JSON text.
	res := call(reader, "lookup_customer", map[string]any{"id": 1})
	structured, _ := json.Marshal(res.StructuredContent)
	for part, got := range map[string]string{"structuredContent": string(structured), "text": text(res)} {
		var c struct {
			Name  string `json:"name"`
			Email string `json:"email"`
			SSN   string `json:"ssn"`
			Card  struct {
				Number string `json:"number"`
			} `json:"card"`
		}
		if err := json.Unmarshal([]byte(got), &c); err != nil || res.IsError {
			t.Fatalf("lookup_customer %s = %s (isError %v), want the customer as JSON", part, got, res.IsError)
		}
		if c.Name != "Ada Lovelace" || c.SSN != "[REDACTED]" || c.Card.Number != "************4242" || !strings.HasPrefix(c.Email, "sha256:") {
			t.Errorf("lookup_customer %s = %s, want ssn redacted, card number's last 4, email hashed", part, got)
		}
	}

	for _, c := range []struct {
		who, tool, code, says string
		cs                    *sdk.ClientSession
	}{
		{"reader", "drop_table", "denied", "schema changes never go through the gateway", reader},
		{"writer", "drop_table", "denied", "schema changes never go through the gateway", writer},
		{"reader", "delete_customer", "forbidden", "delete_customer", reader},
	} {
		res := call(c.cs, c.tool, map[string]any{"id": 2, "table": "customers"})
		if got := keyholeError(res)["error"]; !res.IsError || got != c.code || !strings.Contains(text(res), c.says) {
			t.Errorf("%s calls %s = isError %v, %v, %q; want an isError result %s saying %q", c.who, c.tool, res.IsError, got, text(res), c.code, c.says)
		}
	}

	// delete_customer waits for a person: pending, approved with the demo's command, then
	// the same call, in another session with another id, runs.
	res = call(writer, "delete_customer", map[string]any{"id": 3})
	k := keyholeError(res)
	approvalID, _ := k["approval_id"].(string)
	if !res.IsError || k["error"] != "approval_pending" || approvalID == "" || !strings.Contains(text(res), approvalID) {
		t.Fatalf("writer's delete_customer = isError %v, _meta.keyhole %v, %q; want approval_pending naming the approval", res.IsError, k, text(res))
	}
	approverEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": d.tokens["APPROVER"]}[k] }
	if out, errOut, err := runCmd(t, approverEnv, "approvals", "approve", approvalID, "--comment", "ticket 4412", "--server", "http://"+d.adm); err != nil {
		t.Fatalf("approvals approve %s = %v %s %s", approvalID, err, errOut, out)
	}
	if res := call(connect("WRITER"), "delete_customer", map[string]any{"id": 3}); res.IsError || text(res) != "customer 3 deleted" {
		t.Errorf("approved delete_customer = isError %v %q, want the server's answer", res.IsError, text(res))
	}
	if res := call(reader, "lookup_customer", map[string]any{"id": 3}); !res.IsError || !strings.Contains(text(res), "no customer with id 3") {
		t.Errorf("lookup_customer 3 after the approved delete = %q, want no such customer", text(res))
	}

	if r, err := reader.ReadResource(ctx, &sdk.ReadResourceParams{URI: "crm://customers/index"}); err != nil || !strings.Contains(r.Contents[0].Text, "Ada Lovelace") {
		t.Errorf("resources/read crm://customers/index = %v, %v", r, err)
	}
	if p, err := reader.GetPrompt(ctx, &sdk.GetPromptParams{Name: "summarize_customer", Arguments: map[string]string{"id": "1"}}); err != nil || len(p.Messages) != 1 {
		t.Errorf("prompts/get summarize_customer = %v, %v", p, err)
	}

	// OAuth discovery names the gateway's own URL as the resource.
	s, body := get("http://"+d.data+"/.well-known/oauth-protected-resource/crm/mcp", "")
	var meta struct {
		Resource string   `json:"resource"`
		Servers  []string `json:"authorization_servers"`
	}
	if json.Unmarshal([]byte(body), &meta) != nil || s != 200 || meta.Resource != endpoint || len(meta.Servers) != 1 {
		t.Errorf("discovery = %d %s, want resource %s and the dev issuer", s, body, endpoint)
	}

	auditorEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": d.tokens["KEYHOLE_TOKEN"]}[k] }
	out, errOut, err := runCmd(t, auditorEnv, "records", "list", "--tool", "delete_customer", "--server", "http://"+d.adm)
	if err != nil || !strings.Contains(out, "approval_pending") || !strings.Contains(out, "approved") || strings.Contains(out, "lookup_customer") {
		t.Errorf("records list --tool delete_customer = %v %s\n%s", err, errOut, out)
	}
	_, m := get("http://"+d.adm+"/metrics", "")
	if want := `keyhole_mcp_requests_total{decision="denied",method="tools/call",route="crm-mcp",tool="drop_*"} 2`; !strings.Contains(m, want) {
		t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "keyhole_mcp_requests_total"))
	}
}
