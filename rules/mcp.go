package rules

import (
	"fmt"
	"path"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// toolApprover is the approvers of one mcp tools entry with an approval.
type toolApprover struct {
	pattern   string // the entry's name: exact, or a path.Match glob
	approvers *allow
}

// mcp compiles what the table needs of the mcp block of route rt: the approvers of its
// tools' approvals (ApprovesTool) and every allow of its entries (ClaimNames). The data
// plane compiles the policy itself (package mcp).
func (c *compiler) mcp(rt *Route, field string, m *config.MCP) {
	add := func(f string, a *config.Allow) {
		if a != nil {
			rt.mcpAllows = append(rt.mcpAllows, c.allow(f, rt.Name, a))
		}
	}
	for i := range m.Tools {
		t, tf := &m.Tools[i], fmt.Sprintf("%s.mcp.tools[%d]", field, i)
		add(tf+".allow", t.Allow)
		if t.Approval != nil && t.Deny == "" {
			a := c.allow(tf+".approval.approvers", "approvers of "+rt.Name+" tool "+t.Name, &t.Approval.Approvers)
			rt.toolApprovers = append(rt.toolApprovers, toolApprover{pattern: t.Name, approvers: a})
			rt.mcpAllows = append(rt.mcpAllows, a)
		}
	}
	for i := range m.Resources {
		add(fmt.Sprintf("%s.mcp.resources[%d].allow", field, i), m.Resources[i].Allow)
	}
	for i := range m.Prompts {
		add(fmt.Sprintf("%s.mcp.prompts[%d].allow", field, i), m.Prompts[i].Allow)
	}
}

// ApprovesTool reports whether p may decide approvals of calls to tool on the mcp route
// named route: p satisfies the approvers of a tools entry with an approval whose name
// matches tool. (Entries that differ only in their when share the name, and so the
// approvers of each may decide a call of that tool.) Admin roles grant nothing here.
func (t *Table) ApprovesTool(p *identity.Principal, route, tool string) bool {
	if t == nil || p == nil {
		return false
	}
	for _, rt := range t.all {
		if rt.Name != route {
			continue
		}
		for _, ta := range rt.toolApprovers {
			if ok, _ := path.Match(ta.pattern, tool); ok && ta.approvers.missing(p) == "" {
				return true
			}
		}
	}
	return false
}

// approvesAnyTool reports whether p satisfies the approvers of one of rt's tool approvals.
func (rt *Route) approvesAnyTool(p *identity.Principal) bool {
	for _, ta := range rt.toolApprovers {
		if ta.approvers.missing(p) == "" {
			return true
		}
	}
	return false
}
