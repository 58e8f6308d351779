package approvals_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
)

func TestMessageOfAToolCall(t *testing.T) {
	args := approvals.ShownArguments([]byte(`{"id":7,"note":"<!here> ` + "```" + `"}`))
	if want := "{\n  \"id\": 7,\n  \"note\": \"<!here> ```\"\n}"; args != want {
		t.Fatalf("ShownArguments: got %q, want %q", args, want)
	}
	a := &approvals.Approval{ID: "01JDAPPROVAL", Route: "crm-mcp", Tool: "delete_customer", Method: "POST", Path: "/crm/mcp",
		Body: args, Requester: approvals.Identity{Subject: "agent", ClientID: "bot"},
		ExpiresAt: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	msg := approvals.Message(a, "")
	for _, want := range []string{"MCP tool `delete_customer` (route `crm-mcp`)", "Arguments:\n```\n{\n  \"id\": 7,", "&lt;!here&gt; '''"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Count(msg, "```") != 2 || strings.Contains(msg, "POST") {
		t.Errorf("message: want one code block (arguments cannot close it) and the tool, not the HTTP method:\n%s", msg)
	}
}
