package rules

import (
	"slices"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

func TestApprovesTool(t *testing.T) {
	approval := func(gs ...string) *config.Approval {
		return &config.Approval{Approvers: config.Allow{Groups: gs}, MinApprovals: 1}
	}
	cfg := &config.Config{Routes: []config.Route{
		{Name: "crm-mcp", Match: match("/crm/mcp", "POST"), Upstream: "u", Allow: groups("agents"),
			MCP: &config.MCP{Tools: []config.MCPTool{
				{Name: "lookup_customer"},
				{Name: "delete_*", Approval: approval("crm-admins"),
					Allow: &config.Allow{Claims: map[string]config.Scalars{"tenant": str("acme")}}},
				{Name: "refund", Approval: approval("billing-admins")},
			}}},
		{Name: "other-mcp", Match: match("/other/mcp", "POST"), Upstream: "u", Allow: groups("agents"),
			MCP: &config.MCP{Tools: []config.MCPTool{{Name: "*", Approval: approval("other-admins")}}}},
	}}
	tb := compile(t, cfg)
	p := func(gs ...string) *identity.Principal { return &identity.Principal{Subject: "x", Groups: gs} }
	tests := []struct {
		name        string
		p           *identity.Principal
		route, tool string
		want        bool
	}{
		{"the tool's approvers, by glob", p("crm-admins"), "crm-mcp", "delete_customer", true},
		{"approvers of another tool", p("crm-admins"), "crm-mcp", "refund", false},
		{"a tool without approval", p("crm-admins"), "crm-mcp", "lookup_customer", false},
		{"the same tool on another route", p("crm-admins"), "other-mcp", "delete_customer", false},
		{"billing approves refund", p("billing-admins"), "crm-mcp", "refund", true},
		{"no principal", nil, "crm-mcp", "refund", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tb.ApprovesTool(tt.p, tt.route, tt.tool); got != tt.want {
				t.Errorf("ApprovesTool(%v, %q, %q) = %v, want %v", tt.p, tt.route, tt.tool, got, tt.want)
			}
		})
	}
	if !tb.Approves(p("billing-admins"), "") {
		t.Error(`Approves(billing-admins, "") = false, want true: a tool's approvers approve some route`)
	}
	if tb.Approves(p("billing-admins"), "crm-mcp") {
		t.Error(`Approves(billing-admins, "crm-mcp") = true, want false: route-level approvers only`)
	}
	// The verifier keeps only the claims some allow reads: an mcp entry's claims too.
	if got := tb.ClaimNames(); !slices.Equal(got, []string{"tenant"}) {
		t.Errorf("ClaimNames = %v, want [tenant] (read by tools[1].allow)", got)
	}
}
