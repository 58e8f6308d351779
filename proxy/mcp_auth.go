package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/mcp"
	"github.com/keyholehq/keyhole/rules"
)

// wellKnownResource is the RFC 9728 well-known prefix of protected resource metadata.
const wellKnownResource = "/.well-known/oauth-protected-resource"

// mcpAuth is the OAuth protected-resource side of a State's mcp routes (RFC 9728, the MCP
// authorization spec): the metadata documents, the challenges of 401 and 403 answers,
// and which resource audience a path accepts. The zero value (no mcp routes) does nothing.
type mcpAuth struct {
	byPath    map[string]*mcpResource // mcp.resource set: by the route's exact path
	wellKnown map[string]*mcpResource // by metadata path
	byRoute   map[string]*mcpResource // every mcp route, by route name
}

// mcpResource is one mcp route as an OAuth protected resource.
type mcpResource struct {
	route       string
	resource    string // mcp.resource, "" when not set
	metadataURL string
	metadata    []byte   // the RFC 9728 document, built once at load
	scopes      []string // scopes_supported: every scope the route's policy names
	allow       *rules.Allower
	allowScopes []string // the route allow's scopes
}

// protectedResource is the RFC 9728 metadata document.
type protectedResource struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name,omitempty"`
}

// newMCPAuth builds the protected-resource view of cfg's mcp routes. issuers are the
// authorization servers the verifier trusts (the dev issuer included).
func newMCPAuth(cfg *config.Config, issuers []string) (*mcpAuth, error) {
	a := &mcpAuth{byPath: map[string]*mcpResource{}, wellKnown: map[string]*mcpResource{}, byRoute: map[string]*mcpResource{}}
	var withResource []*mcpResource
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		if r.MCP == nil {
			continue
		}
		res := &mcpResource{route: r.Name, resource: r.MCP.Resource, scopes: policyScopes(r)}
		if r.Allow != nil {
			c, err := rules.CompileAllow(cfg, fmt.Sprintf("routes[%d].allow", i), r.Name, r.Allow)
			if err != nil {
				return nil, err
			}
			res.allow, res.allowScopes = c, r.Allow.Scopes
		}
		a.byRoute[r.Name] = res
		if res.resource == "" {
			continue
		}
		u, err := url.Parse(res.resource)
		if err != nil {
			// config.Load has checked it; fail closed on a config that did not come from Load.
			return nil, fmt.Errorf("route %q: mcp.resource: %w", r.Name, err)
		}
		metaPath := wellKnownResource + strings.TrimSuffix(u.EscapedPath(), "/")
		res.metadataURL = u.Scheme + "://" + u.Host + metaPath
		res.metadata, err = json.Marshal(protectedResource{Resource: res.resource, AuthorizationServers: issuers,
			ScopesSupported: res.scopes, BearerMethodsSupported: []string{"header"}, ResourceName: r.Name})
		if err != nil {
			return nil, err
		}
		a.byPath[r.Match.Path] = res
		a.wellKnown[metaPath] = res
		withResource = append(withResource, res)
	}
	// The root document names one resource; with several it would have to choose, and a
	// client that guessed the root would get the wrong resource's metadata.
	if len(withResource) == 1 {
		if _, taken := a.wellKnown[wellKnownResource]; !taken {
			a.wellKnown[wellKnownResource] = withResource[0]
		}
	}
	return a, nil
}

// policyScopes returns the scopes named by the allow of route r and of its mcp entries,
// sorted, each once.
func policyScopes(r *config.Route) []string {
	var out []string
	add := func(a *config.Allow) {
		if a != nil {
			out = append(out, a.Scopes...)
		}
	}
	add(r.Allow)
	for _, t := range r.MCP.Tools {
		add(t.Allow)
	}
	for _, rs := range r.MCP.Resources {
		add(rs.Allow)
	}
	for _, p := range r.MCP.Prompts {
		add(p.Allow)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// verifierIssuers returns the issuers v trusts when it can say, else those of cfg.
func verifierIssuers(v Verifier, cfg *config.Config) []string {
	if l, ok := v.(interface{ Issuers() []string }); ok {
		return l.Issuers()
	}
	var out []string
	for _, is := range cfg.Identity.Issuers {
		out = append(out, is.Issuer)
	}
	return out
}

// discover serves the protected resource metadata of mcp routes with a resource, to
// anyone: an OAuth client reads it before it has a token (RFC 9728 §3), so it is served
// ahead of authentication. It holds nothing secret: the resource URL, the issuers and
// the scope names are what the 401 challenge would tell the client anyway.
func (g *Gateway) discover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		res := info.state.mcpAuth.metadataFor(info.path)
		if res == nil || r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		info.decision, info.reason = labelAllowed, "OAuth protected resource metadata of route "+res.route
		r.Header.Del("Authorization")
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store") // a reload may change it
		h.Set("X-Content-Type-Options", "nosniff")
		// Browser-based MCP clients (the MCP Inspector) read it from another origin; it
		// is public and no credential is sent or honoured with it.
		h.Set("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.metadata)
	})
}

func (a *mcpAuth) metadataFor(path string) *mcpResource {
	if a == nil {
		return nil
	}
	return a.wellKnown[path]
}

// audience returns the resource audience a token is also accepted for on path: the
// mcp.resource of the route at that exact path (RFC 8707), "" when none.
func (a *mcpAuth) audience(path string) string {
	if a == nil || a.byPath[path] == nil {
		return ""
	}
	return a.byPath[path].resource
}

// challenge adds to an authentication refusal on path the MCP authorization spec's
// parameters: where the metadata is (resource_metadata) and which scopes to ask for.
// The scopes are all the route's policy names: a tool call refused for a scope is an
// MCP result the model reads, not a challenge a client steps up on, so the first
// authorization asks for every scope, and the authorization server grants what it will.
func (a *mcpAuth) challenge(path string, rf *refusal) {
	if a == nil || a.byPath[path] == nil {
		return
	}
	res := a.byPath[path]
	v := `Bearer realm="keyhole"`
	if rf.header != nil && rf.header.Get("Www-Authenticate") != "" {
		v = rf.header.Get("Www-Authenticate")
	}
	v += ", resource_metadata=" + quote(res.metadataURL)
	if len(res.scopes) > 0 {
		v += ", scope=" + quote(strings.Join(res.scopes, " "))
	}
	if rf.header == nil {
		rf.header = http.Header{}
	}
	rf.header.Set("Www-Authenticate", v)
}

// refusal completes the rules' refusal rf (nil when they allow) of decision d for p on
// an mcp route: a token accepted only for a resource audience is refused anywhere but at
// that resource's route, and a route allow that fails only for want of a scope carries
// the insufficient_scope challenge (RFC 6750 §3.1) a client steps up on.
func (a *mcpAuth) refusal(d rules.Decision, p *identity.Principal, path string, rf *refusal) *refusal {
	if a == nil {
		return rf
	}
	var res *mcpResource
	if d.Route != nil {
		res = a.byRoute[d.Route.Name]
	}
	if rf == nil && p != nil && p.Resource != "" && (res == nil || res.resource != p.Resource) {
		// identity accepted the resource audience for this path only; the route that
		// decided is not that resource's.
		rf = statusFor(&identity.Error{Reason: identity.ReasonBadAudience, Msg: "token audience is not accepted"})
		a.challenge(path, rf)
		return rf
	}
	if rf != nil && res != nil && d.Effect == rules.Forbid && res.allow != nil && scopeOnly(res.allow, res.allowScopes, p) {
		rf.header = http.Header{"Www-Authenticate": {insufficientScope(res.allowScopes, rf.msg)}}
	}
	return rf
}

// stepUp sets the insufficient_scope challenge on h when m was refused (Forbid) by an
// entry's allow that fails only for want of a scope. The answer stays the MCP message
// (HTTP 200): the model reads why; RFC 9110 §11.6.1 lets any response carry
// WWW-Authenticate, so a client that looks can still step up.
func (mr *mcpRoute) stepUp(h http.Header, m *mcp.Message, p *identity.Principal) {
	var failed *config.Allow
	missing := mr.missing(p)
	mr.policy.Judge(m, func(a *config.Allow) string {
		why := missing(a)
		if why != "" {
			failed = a
		}
		return why
	})
	if failed != nil && mr.allows[failed] != nil && scopeOnly(mr.allows[failed], failed.Scopes, p) {
		h.Set("Www-Authenticate", insufficientScope(failed.Scopes, "the token lacks a scope this call requires"))
	}
}

// scopeOnly reports whether p fails allow only for want of one of scopes: with them it
// would pass. A caller missing a group gains nothing from a new token with more scopes.
func scopeOnly(allow *rules.Allower, scopes []string, p *identity.Principal) bool {
	if len(scopes) == 0 || allow.Missing(p) == "" {
		return false
	}
	q := identity.Principal{}
	if p != nil {
		q = *p
	}
	q.Scopes = append(slices.Clone(q.Scopes), scopes...)
	return allow.Missing(&q) == ""
}

func insufficientScope(scopes []string, why string) string {
	return `Bearer realm="keyhole", error="insufficient_scope", scope=` + quote(strings.Join(scopes, " ")) +
		", error_description=" + quote(why)
}
