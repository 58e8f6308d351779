package rules

import (
	"errors"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// Allower is a compiled allow block used outside the route table, by the entries of an mcp
// route's policy. Build it with CompileAllow; it is immutable.
type Allower struct{ a *allow }

// CompileAllow compiles the allow block a of cfg at field path field; route names the
// route in refusal reasons ("route crm-mcp requires group crm-writers").
func CompileAllow(cfg *config.Config, field, route string, a *config.Allow) (*Allower, error) {
	c := &compiler{cfg: cfg}
	out := c.allow(field, route, a)
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return &Allower{out}, nil
}

// Missing returns why p (nil for an anonymous caller) does not satisfy a, "" when it does.
func (a *Allower) Missing(p *identity.Principal) string { return a.a.missing(p) }
