package config_test

import (
	"testing"
	"time"

	"github.com/keyholehq/keyhole/config"
)

func TestMCPToolApprovalDefaults(t *testing.T) {
	const yaml = `
identity:
  issuers:
    - issuer: https://acme.okta.com/oauth2/default
      audiences: [api://default]
upstreams:
  crm-mcp:
    url: http://crm-mcp.internal:8080
routes:
  - name: crm-mcp
    match: { methods: [POST], path: /crm/mcp }
    upstream: crm-mcp
    allow: { groups: [agents] }
    mcp:
      tools:
        - { name: a, approval: { approvers: { groups: [crm-admins] } } }
        - { name: b, approval: { approvers: { groups: [crm-admins] }, hold: 45s, min_approvals: 2 } }
`
	cfg, err := config.Parse([]byte(yaml), t.TempDir(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tool      int
		hold, ttl time.Duration
		min       int
	}{
		{0, 20 * time.Second, 15 * time.Minute, 1},
		{1, 45 * time.Second, 15 * time.Minute, 2},
	}
	for _, tt := range tests {
		a := cfg.Routes[0].MCP.Tools[tt.tool].Approval
		if time.Duration(a.Hold) != tt.hold || time.Duration(a.TTL) != tt.ttl || a.MinApprovals != tt.min {
			t.Errorf("tools[%d].approval: got hold %v ttl %v min %d, want %v %v %d", tt.tool,
				time.Duration(a.Hold), time.Duration(a.TTL), a.MinApprovals, tt.hold, tt.ttl, tt.min)
		}
	}
}
