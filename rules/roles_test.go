package rules

import (
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
