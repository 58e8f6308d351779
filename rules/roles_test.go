package rules

import (
	"slices"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

func TestHasRole(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{
		Allow: groups("keyhole-admins"),
		Roles: map[string]*config.Allow{
			RoleAuditors:  groups("auditors"),
			RoleApprovers: {Subjects: []string{"00uapprover"}},
			RoleAdmins:    groups("platform"),
		},
	}}
	tb := compile(t, cfg)
	none := compile(t, &config.Config{})
	p := func(sub string, gs ...string) *identity.Principal {
		return &identity.Principal{Subject: sub, Groups: gs}
	}
	tests := []struct {
		name  string
		table *Table
		p     *identity.Principal
		role  string
		want  bool
	}{
		{"auditor group", tb, p("a", "auditors"), RoleAuditors, true},
		{"auditor is no approver", tb, p("a", "auditors"), RoleApprovers, false},
		{"approver by subject", tb, p("00uapprover"), RoleApprovers, true},
		{"admins role holds every role", tb, p("x", "platform"), RoleAuditors, true},
		{"admin.allow holds every role", tb, p("x", "keyhole-admins"), RoleApprovers, true},
		{"outsider", tb, p("x", "crm-readers"), RoleAuditors, false},
		{"no principal", tb, nil, RoleAuditors, false},
		{"no roles configured: nobody", none, p("x", "auditors", "keyhole-admins"), RoleAuditors, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.table.HasRole(tt.p, tt.role); got != tt.want {
				t.Errorf("HasRole(%v, %s) = %v, want %v", tt.p, tt.role, got, tt.want)
			}
		})
	}
}

func TestApproves(t *testing.T) {
	cfg := &config.Config{
		Admin: config.Admin{Allow: groups("keyhole-admins")},
		Routes: []config.Route{
			{Name: "delete-customer", Match: match("/crm/customers/{id}", "DELETE"), Upstream: "crm", Allow: groups("crm-writers"),
				Approval: &config.Approval{Approvers: config.Allow{Groups: []string{"crm-admins"}}, MinApprovals: 1}},
			{Name: "refund", Match: match("/billing/refunds", "POST"), Upstream: "billing", Allow: groups("billing"),
				Approval: &config.Approval{Approvers: config.Allow{Subjects: []string{"00ufinance"}}, MinApprovals: 2}},
			{Name: "read", Match: match("/crm/customers/{id}", "GET"), Upstream: "crm", Allow: groups("crm-readers")},
		},
	}
	tb := compile(t, cfg)
	p := func(sub string, gs ...string) *identity.Principal {
		return &identity.Principal{Subject: sub, Groups: gs}
	}
	tests := []struct {
		name  string
		p     *identity.Principal
		route string
		want  bool
	}{
		{"route's approver group", p("x", "crm-admins"), "delete-customer", true},
		{"approver of another route", p("x", "crm-admins"), "refund", false},
		{"approver by subject", p("00ufinance"), "refund", true},
		{"any route", p("00ufinance"), "", true},
		{"admin.allow decides nothing", p("x", "keyhole-admins"), "delete-customer", false},
		{"route without approval", p("x", "crm-readers", "crm-admins"), "read", false},
		{"unknown route", p("x", "crm-admins"), "nope", false},
		{"outsider, any route", p("x", "crm-readers"), "", false},
		{"no principal", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tb.Approves(tt.p, tt.route); got != tt.want {
				t.Errorf("Approves(%v, %q) = %v, want %v", tt.p, tt.route, got, tt.want)
			}
		})
	}
}

func TestClaimNames(t *testing.T) {
	claims := func(names ...string) *config.Allow {
		a := &config.Allow{Claims: map[string]config.Scalars{}}
		for _, n := range names {
			a.Claims[n] = str("x")
		}
		return a
	}
	cfg := &config.Config{
		Admin: config.Admin{Allow: claims("admin_claim"), Roles: map[string]*config.Allow{RoleAuditors: claims("audit_claim")}},
		Routes: []config.Route{
			{Name: "a", Match: match("/a", "GET"), Upstream: "u", Allow: claims("tenant", "dept")},
			{Name: "b", Match: match("/b", "GET"), Upstream: "u", Allow: groups("g"),
				Approval: &config.Approval{Approvers: *claims("tenant", "level"), MinApprovals: 1}},
		},
	}
	got := compile(t, cfg).ClaimNames()
	want := []string{"admin_claim", "audit_claim", "dept", "level", "tenant"}
	if !slices.Equal(got, want) {
		t.Errorf("ClaimNames = %v, want %v", got, want)
	}
	if got := compile(t, &config.Config{}).ClaimNames(); len(got) != 0 {
		t.Errorf("ClaimNames of an empty table = %v, want none", got)
	}
}
