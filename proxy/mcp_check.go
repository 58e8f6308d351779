package proxy

import (
	"net/http"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/mcp"
)

// MCPPolicy is the compiled mcp block of one route as the data plane judges it, for
// `keyhole check` and `keyhole test`, which must reach the gateway's own decision. It is
// immutable and safe for concurrent use.
type MCPPolicy struct{ mr *mcpRoute }

// CompileMCP compiles the mcp block of every mcp route of cfg, by route name, exactly as
// NewState does. cfg must come from config.Parse (or Load).
func CompileMCP(cfg *config.Config) (map[string]*MCPPolicy, error) {
	out := map[string]*MCPPolicy{}
	for i, r := range cfg.Routes {
		if r.MCP == nil {
			continue
		}
		mr, err := newMCPRoute(cfg, i)
		if err != nil {
			return nil, err
		}
		out[r.Name] = &MCPPolicy{mr: mr}
	}
	return out, nil
}

// Judge decides body, one POST to the route, for principal p once the route's allow has
// held, as the data plane does: h supplies MCP-Protocol-Version and the Mcp-Method and
// Mcp-Name headers. A body the gateway answers with HTTP 400 returns a *mcp.ParseError
// (and the message, when it could be read).
func (p *MCPPolicy) Judge(body []byte, h http.Header, principal *identity.Principal) (*mcp.Message, mcp.Decision, error) {
	m, _, d, err := p.mr.judge(body, h, principal)
	return m, d, err
}

// judge parses body and decides it for principal: the one judgement of an mcp POST, used
// by the data plane (judgeMCP) and by MCPPolicy. missing is bound to principal, for list
// filtering. On a *mcp.ParseError, m is the message when it could be read, else nil.
func (mr *mcpRoute) judge(body []byte, h http.Header, principal *identity.Principal) (m *mcp.Message, missing mcp.Missing, d mcp.Decision, err error) {
	m, err = mcp.Parse(body, h.Get("Mcp-Protocol-Version"))
	if err == nil {
		err = mcp.CheckHeaders(h, m)
	}
	if err != nil {
		return m, nil, mcp.Decision{}, err
	}
	missing = mr.missing(principal)
	return m, missing, mr.policy.Judge(m, missing), nil
}
