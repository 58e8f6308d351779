package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

func TestCheckMCP(t *testing.T) {
	dir := t.TempDir()
	soft := filepath.Join(dir, "soft.json")
	os.WriteFile(soft, []byte(`{"id":"c-1","hard":false}`), 0o600)
	notObject := filepath.Join(dir, "list.json")
	os.WriteFile(notObject, []byte(`["c-1"]`), 0o600)
	base := []string{"check", "--config", "../../configs/keyhole.yaml", "--path", "/crm/mcp"}
	const route = "route:     crm-mcp (pattern /crm/mcp, upstream crm-mcp, forwards /crm/mcp)"
	tests := []struct {
		name    string
		args    []string
		stdin   string
		want    []string
		wantErr string // "" for success; "usage" for errUsage
	}{
		{name: "allowed tool", args: []string{"--groups", "agents", "--mcp-tool", "lookup_customer"},
			want: []string{"request:   POST /crm/mcp", route, "mcp:       tools/call lookup_customer arguments {}",
				`entry:     mcp.tools[0] "lookup_customer"`, "decision:  allow (200)", "answer:    forwarded to the MCP server",
				`reason:    tool lookup_customer is allowed by entry "lookup_customer"`}},
		{name: "when.arguments selects the entry that forbids", args: []string{"--groups", "agents", "--mcp-tool", "delete_customer", "--mcp-args", soft},
			want: []string{`mcp:       tools/call delete_customer arguments {"id":"c-1","hard":false}`, `entry:     mcp.tools[1] "delete_customer"`,
				"decision:  forbidden (200 forbidden)", `answer:    a CallToolResult with isError (HTTP 200), _meta.keyhole.error "forbidden"`,
				"reason:    route crm-mcp requires group crm-writers"}},
		{name: "arguments from stdin; approval with approvers and hold", stdin: `{"id":"c-1","hard":true}`,
			args: []string{"--groups", "agents,crm-writers", "--mcp-tool", "delete_customer", "--mcp-args", "-"},
			want: []string{`entry:     mcp.tools[2] "delete_customer"`, "decision:  approval (200 approval_pending)",
				"reason:    tool delete_customer needs approval; it is held until approved by 1 approver (group crm-admins) (hold 20s, ttl 15m0s)"}},
		{name: "denied by a glob entry", args: []string{"--groups", "agents", "--mcp-tool", "drop_customers"},
			want: []string{`entry:     mcp.tools[3] "drop_*"`, "decision:  denied (200 denied)", "reason:    schema changes never go through the gateway"}},
		{name: "unlisted tool", args: []string{"--groups", "agents", "--mcp-tool", "export_all"},
			want: []string{"entry:     none", "decision:  denied (200 denied)", "reason:    tool export_all is not offered on route crm-mcp"}},
		{name: "resources/read", args: []string{"--groups", "agents", "--mcp-method", "resources/read", "--mcp-name", "crm://customers/42"},
			want: []string{"mcp:       resources/read crm://customers/42", `entry:     mcp.resources[0] "crm://customers/*"`,
				"decision:  forbidden (200 forbidden)", `answer:    JSON-RPC error -32003 (HTTP 200), data.error "forbidden"`}},
		{name: "mcp.methods", args: []string{"--groups", "agents", "--mcp-method", "completion/complete"},
			want: []string{"mcp:       completion/complete\n", `entry:     mcp.methods "completion/complete"`, "decision:  allow (200)"}},
		{name: "the route refuses before the tool is judged", args: []string{"--groups", "crm-writers", "--mcp-tool", "lookup_customer"},
			want: []string{route, "entry:     none: the route refused the caller", "decision:  forbidden (403 forbidden)", "reason:    route crm-mcp requires group agents"}},
		{name: "a mismatched Mcp-Name header", args: []string{"--groups", "agents", "--mcp-tool", "lookup_customer", "--header", "Mcp-Name: drop_customers"},
			want: []string{"decision:  bad_request (400 bad_request)", "answer:    JSON-RPC error -32020 (HTTP 400)"}},
		{name: "not an mcp route", args: []string{"--path", "/billing/mcp", "--scopes", "billing.read", "--mcp-tool", "get_invoice"},
			wantErr: "route billing-mcp-read-invoice is not an mcp route"},
		{name: "arguments not an object", args: []string{"--groups", "agents", "--mcp-tool", "lookup_customer", "--mcp-args", notObject},
			wantErr: "want a JSON object"},
		{name: "not a POST", args: []string{"--method", "GET", "--mcp-tool", "lookup_customer"}, wantErr: "an MCP message is a POST, not GET"},
		{name: "a name without a tool or method", args: []string{"--mcp-name", "x"}, wantErr: "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut testkit.Buffer
			err := cmdCheck(append(base[1:], tt.args...), testEnv, strings.NewReader(tt.stdin), &out, &errOut)
			switch {
			case tt.wantErr == "usage":
				if !errors.Is(err, errUsage) {
					t.Fatalf("check %v = %v, want errUsage", tt.args, err)
				}
				return
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("check %v = %v, want an error containing %q", tt.args, err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("check %v = %v: %s", tt.args, err, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("check %v output lacks %q:\n%s", tt.args, w, out.String())
				}
			}
		})
	}
}

func TestCheckMCPExitCodes(t *testing.T) {
	// Through run, as main maps its errors: 0 whatever the decision, 2 for usage, 1 otherwise.
	base := []string{"check", "--config", "../../configs/keyhole.yaml", "--path", "/crm/mcp"}
	tests := []struct {
		args []string
		want error
	}{
		{[]string{"--mcp-tool", "drop_customers", "--groups", "agents"}, nil},
		{[]string{"--mcp-args", "x.json"}, errUsage},
	}
	for _, tt := range tests {
		err := run(context.Background(), append(append([]string{"keyhole"}, base...), tt.args...), testEnv, &testkit.Buffer{}, &testkit.Buffer{})
		if !errors.Is(err, tt.want) {
			t.Errorf("check %v = %v, want %v", tt.args, err, tt.want)
		}
	}
}

func TestPolicyTestsMCP(t *testing.T) {
	const head = "cases:\n"
	tests := []struct {
		name    string
		cases   string
		want    []string
		wantErr error
	}{
		{name: "passing", cases: `
  - name: lookup
    request: { path: /crm/mcp }
    identity: { sub: a, groups: [agents] }
    mcp: { tool: lookup_customer, arguments: { id: c-1 } }
    expect: { decision: allow, route: crm-mcp, entry: lookup_customer }
  - name: hidden tool
    request: { path: /crm/mcp }
    identity: { sub: a, groups: [agents] }
    mcp: { tool: export_all }
    expect: { decision: denied, reason: not offered }
  - name: when.arguments
    request: { method: POST, path: /crm/mcp }
    identity: { sub: w, groups: [agents, crm-writers] }
    mcp: { tool: delete_customer, arguments: { hard: false } }
    expect: { decision: allow, entry: delete_customer }
  - name: approval
    request: { path: /crm/mcp }
    identity: { sub: w, groups: [agents, crm-writers] }
    mcp: { tool: delete_customer, arguments: { hard: true } }
    expect: { decision: approval, entry: delete_customer, reason: crm-admins }
`, want: []string{"pass ", ": lookup\n", ": hidden tool\n", ": when.arguments\n", ": approval\n", "ok: all 4 policy cases hold"}},
		{name: "failing expectations", cases: `
  - name: hard delete without approval
    request: { path: /crm/mcp }
    identity: { sub: w, groups: [agents, crm-writers] }
    mcp: { tool: delete_customer, arguments: { hard: true } }
    expect: { decision: allow }
  - name: wrong entry
    request: { path: /crm/mcp }
    identity: { sub: a, groups: [agents] }
    mcp: { tool: drop_x }
    expect: { decision: denied, entry: lookup_customer }
  - name: hidden tool allowed
    request: { path: /crm/mcp }
    identity: { sub: a, groups: [agents] }
    mcp: { tool: export_all }
    expect: { decision: allow }
  - name: mcp on a plain route
    request: { path: /billing/mcp }
    identity: { sub: b, scopes: [billing.read] }
    mcp: { tool: get_invoice }
    expect: { decision: allow }
`, wantErr: errReported, want: []string{
			": hard delete without approval: decision approval, want allow",
			`: wrong entry: mcp entry mcp.tools[3] "drop_*", want "lookup_customer"`,
			": hidden tool allowed: decision denied, want allow",
			": mcp on a plain route: route billing-mcp-read-invoice is not an mcp route",
			"FAIL: 4 of 4 policy cases failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "mcp.policy.yaml")
			os.WriteFile(file, []byte(head+tt.cases), 0o600)
			abs, _ := filepath.Abs("../../configs/keyhole.yaml")
			out, errOut, err := runCmd(t, testEnv, "test", "--config", abs, file)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("test = %v, want %v\n%s%s", err, tt.wantErr, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
