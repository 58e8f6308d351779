// Package rules compiles the guards and routes of a configuration into a table and
// decides requests against it: which route a request takes and whether the caller
// may use it. It is pure: no I/O, no logging, no clock.
//
// Matching is chi's: a request takes the most specific path pattern that matches it
// (static over {param} over /* suffix, longer literal first), then the first route on
// that pattern, in config order, whose methods and when conditions hold. There is no
// fall-through to a less specific pattern: a request that reaches a pattern but none of
// its routes is refused as NoRoute. Guards are checked before any route and always deny.
package rules

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// Effect is the outcome of a decision.
// The zero Effect is NoRoute, so a zero Decision refuses.
type Effect uint8

// Effects of a decision.
const (
	NoRoute Effect = iota // no route takes the request: 404 no_route
	Allow                 // the route allows the caller (it may still need approval: Route.Approval)
	Forbid                // the route's allow does not hold for the caller: 403 forbidden
	Deny                  // a guard or a deny route refuses the request: 403 denied
	Invalid               // the body a body condition must inspect is not a single strict JSON object: 400 bad_request
)

// String returns the error code of the effect as the data plane reports it:
// "no_route", "allow", "forbidden", "denied" or "bad_request".
func (e Effect) String() string {
	switch e {
	case NoRoute:
		return "no_route"
	case Allow:
		return "allow"
	case Forbid:
		return "forbidden"
	case Deny:
		return "denied"
	case Invalid:
		return "bad_request"
	}
	return "unknown"
}

// Decision is the verdict on one request.
type Decision struct {
	Effect Effect
	// Route is the guard or route that decided; for Invalid, the one whose body
	// condition refused the body. It is nil only for NoRoute.
	Route *Route
	// Reason explains the decision to a human, for example
	// "route crm-delete-customer requires group crm-writers". It never holds a secret
	// but may repeat the request's method and path (NoRoute) or a body key (Invalid).
	Reason string
}

// Request is what rules look at in an HTTP request.
type Request struct {
	// Method is the method as received. HEAD is judged as GET; a method other than
	// GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (exact case) matches only "*".
	Method string
	// Path is the canonical, percent-decoded path; what is matched is what is forwarded.
	Path string
	// Query is the parsed query string.
	Query url.Values
	// Header is the request header.
	Header http.Header
	// Body is the whole request body, already content-decoded, when NeedsBody
	// reported true for Method and Path; otherwise it is ignored.
	Body []byte
}

// Route is one compiled guard or route. Its fields are read-only.
type Route struct {
	Name string
	// Index is the position of the entry in cfg.Guards (when Guard) or cfg.Routes.
	Index int
	// Guard is true for an entry of cfg.Guards.
	Guard bool
	// Methods and Pattern are match.methods and match.path as configured.
	Methods []string
	Pattern string
	// Upstream names the upstream a route forwards to; "" for guards and deny routes.
	Upstream  string
	Websocket bool
	// StripPrefix and AddPrefix are rewrite.strip_prefix and rewrite.add_prefix; see ForwardPath.
	StripPrefix, AddPrefix string
	// Deny is the refusal message of a guard or deny route, "" otherwise.
	Deny string
	// Approval is the route's approval block, nil when none. An Allow decision on a
	// route with Approval still needs a human's approval before it is forwarded.
	Approval *config.Approval
	// Config is the configuration entry the route was compiled from (mask, detect, ...).
	Config *config.Route

	methods   methodSet
	when      *when
	allow     *allow
	approvers *allow // approval.approvers
	// toolApprovers and mcpAllows are the approvers of an mcp route's tool approvals and
	// every allow of its mcp entries (approvers included): see rules/mcp.go.
	toolApprovers []toolApprover
	mcpAllows     []*allow
	allowReason   string
	mux           *chi.Mux // guards only: a tree holding just the guard's pattern
}

// ForwardPath returns the path to forward upstream for the canonical path the route
// matched: rewrite.strip_prefix removed, then rewrite.add_prefix prepended. The prefix is
// stripped only where it ends at a segment boundary of path; an emptied path becomes "/"
// (or AddPrefix alone, when set).
func (r *Route) ForwardPath(path string) string {
	if r.StripPrefix != "" {
		if rest, ok := stripPrefix(path, r.StripPrefix); ok {
			path = rest
		}
	}
	if r.AddPrefix != "" {
		path = r.AddPrefix + path
	}
	if path == "" {
		return "/"
	}
	return path
}

func stripPrefix(path, prefix string) (string, bool) {
	if len(path) < len(prefix) || path[:len(prefix)] != prefix {
		return path, false
	}
	rest := path[len(prefix):]
	if rest != "" && rest[0] != '/' {
		return path, false
	}
	return rest, true
}

// Table is a compiled route table. Build it with Compile; it is immutable and safe for
// concurrent use. Decide and NeedsBody do not allocate on the common path.
type Table struct {
	guards     []*Route
	bodyGuards []*Route // guards with a body condition, for NeedsBody
	all        []*Route // guards then routes, in config order
	mux        *chi.Mux // one representative of every distinct route pattern
	groups     map[string]*group
	keys       *keyNode // every body-condition path, to refuse case variants of its keys
	ctxs       sync.Pool
	scanners   sync.Pool
	roles      map[string]*allow // admin.roles by name
	adminAllow *allow            // admin.allow: every role
	// adminClients are admin.clients; nil accepts every client.
	adminClients map[string]bool
}

// Admin roles of the admin plane (admin.roles).
const (
	RoleAdmins    = "admins"
	RoleAuditors  = "auditors"
	RoleApprovers = "approvers"
)

// AdminClient reports whether the admin plane accepts p's token: admin.clients is not
// set, or lists p's client id.
func (t *Table) AdminClient(p *identity.Principal) bool {
	return p != nil && (t.adminClients == nil || t.adminClients[p.ClientID])
}

// HasRole reports whether p holds role on the admin plane: p satisfies admin.roles.<role>,
// admin.roles.admins, or admin.allow. Nobody holds a role the configuration does not grant.
func (t *Table) HasRole(p *identity.Principal, role string) bool {
	if p == nil {
		return false
	}
	if t.adminAllow != nil && t.adminAllow.missing(p) == "" {
		return true
	}
	for _, r := range []string{role, RoleAdmins} {
		if a := t.roles[r]; a != nil && a.missing(p) == "" {
			return true
		}
	}
	return false
}

// ClaimNames returns, sorted, the name of every token claim some allow of the table
// reads (routes, approvers, admin roles): the claims a verifier must keep for it.
func (t *Table) ClaimNames() []string {
	if t == nil {
		return nil
	}
	set := map[string]bool{}
	add := func(a *allow) {
		if a != nil {
			for _, c := range a.claims {
				set[c.name] = true
			}
		}
	}
	for _, rt := range t.all {
		add(rt.allow)
		add(rt.approvers)
		for _, a := range rt.mcpAllows {
			add(a)
		}
	}
	add(t.adminAllow)
	for _, a := range t.roles {
		add(a)
	}
	return slices.Sorted(maps.Keys(set))
}

// Approves reports whether p may decide approvals of the route named route: p satisfies
// its approval.approvers. With route "" it reports whether p approves any route, or any
// tool of an mcp route (ApprovesTool).
// Admin roles grant nothing here: only a route's approvers decide its approvals.
func (t *Table) Approves(p *identity.Principal, route string) bool {
	if t == nil || p == nil {
		return false
	}
	for _, rt := range t.all {
		if rt.approvers != nil && (route == "" || rt.Name == route) && rt.approvers.missing(p) == "" {
			return true
		}
		if route == "" && rt.approvesAnyTool(p) {
			return true
		}
	}
	return false
}

// group holds the routes that share one path pattern, in config order.
type group struct {
	routes      []*Route
	bodyMethods methodSet // methods for which some route of the group has a body condition
}

// Routes returns every guard and route in config order, guards first.
// The slice is the caller's; the Routes are shared and read-only.
func (t *Table) Routes() []*Route {
	return slices.Clone(t.all)
}

// NeedsBody reports whether deciding a request with this method and path may have to
// look at its body: a guard, or a route on the pattern the path takes, has when.body or
// when.body_regex and accepts the method. When it reports true the caller must pass the
// whole (content-decoded) body in Request.Body, and forward exactly those bytes.
func (t *Table) NeedsBody(method, path string) bool {
	if t == nil || t.mux == nil {
		return false
	}
	m := methodOf(method)
	rctx := t.ctxs.Get().(*chi.Context)
	defer t.ctxs.Put(rctx)
	for _, g := range t.bodyGuards {
		if g.methods&m != 0 && matches(g.mux, rctx, path) {
			return true
		}
	}
	grp := t.group(rctx, path)
	return grp != nil && grp.bodyMethods&m != 0
}

// Decide judges r (not nil) for principal p, which may be nil for an anonymous caller:
// no allow holds for it. Guards come first, in order; then the route selected by path
// pattern, method and conditions decides. A guard or route "considers" the body when its
// method and path match and it has when.body: a non-empty body must then be one JSON
// object in UTF-8, nested at most 512 deep, without lone surrogate escapes, without two
// keys of an object that are equal after unescaping and case folding, and without a case
// variant of a key some body condition reads; otherwise the decision is Invalid, whatever
// the other conditions. An empty body makes body conditions fail.
// Decide allocates only for NoRoute and Invalid reasons and for body conditions.
func (t *Table) Decide(r *Request, p *identity.Principal) Decision {
	if t == nil || t.mux == nil {
		return noRoute(r)
	}
	m := methodOf(r.Method)
	rctx := t.ctxs.Get().(*chi.Context)
	defer t.ctxs.Put(rctx)
	var bs bodyState

	for _, g := range t.guards {
		if g.methods&m == 0 || !matches(g.mux, rctx, r.Path) {
			continue
		}
		switch t.conditions(g, r, &bs) {
		case held:
			return Decision{Effect: Deny, Route: g, Reason: g.Deny}
		case invalid:
			return Decision{Effect: Invalid, Route: g, Reason: bs.reason}
		}
	}

	if grp := t.group(rctx, r.Path); grp != nil {
		for _, rt := range grp.routes {
			if rt.methods&m == 0 {
				continue
			}
			switch t.conditions(rt, r, &bs) {
			case held:
				return verdict(rt, p)
			case invalid:
				return Decision{Effect: Invalid, Route: rt, Reason: bs.reason}
			}
		}
	}
	return noRoute(r)
}

func noRoute(r *Request) Decision {
	return Decision{Effect: NoRoute, Reason: "no route for " + r.Method + " " + r.Path}
}

// verdict applies a selected route's deny or allow to p.
func verdict(rt *Route, p *identity.Principal) Decision {
	if rt.Deny != "" {
		return Decision{Effect: Deny, Route: rt, Reason: rt.Deny}
	}
	if rt.allow != nil {
		if why := rt.allow.missing(p); why != "" {
			return Decision{Effect: Forbid, Route: rt, Reason: why}
		}
	}
	return Decision{Effect: Allow, Route: rt, Reason: rt.allowReason}
}

// group returns the routes of the most specific pattern matching path, or nil.
func (t *Table) group(rctx *chi.Context, path string) *group {
	rctx.Reset()
	// Every pattern is registered for GET only and looked up as GET, so that the
	// method never steers chi to a less specific pattern: method mismatch is NoRoute.
	pat := t.mux.Find(rctx, http.MethodGet, path)
	if pat == "" {
		return nil
	}
	return t.groups[pat]
}

// matches reports whether path matches the single pattern held by mux.
func matches(mux *chi.Mux, rctx *chi.Context, path string) bool {
	rctx.Reset()
	return mux.Find(rctx, http.MethodGet, path) != ""
}

// methodSet is a set of request methods as bits.
type methodSet uint16

const (
	mGET methodSet = 1 << iota
	mHEAD
	mPOST
	mPUT
	mPATCH
	mDELETE
	mOPTIONS
	mOther // any other method, matched only by "*"

	mAny = mOther<<1 - 1
)

// methodOf returns the bit of a request method. Methods are case-sensitive (RFC 9110 §9.1).
func methodOf(s string) methodSet {
	switch s {
	case http.MethodGet:
		return mGET
	case http.MethodHead:
		return mHEAD
	case http.MethodPost:
		return mPOST
	case http.MethodPut:
		return mPUT
	case http.MethodPatch:
		return mPATCH
	case http.MethodDelete:
		return mDELETE
	case http.MethodOptions:
		return mOPTIONS
	}
	return mOther
}

// configMethod returns the set a configured method accepts; ok is false for an unknown spelling.
func configMethod(s string) (methodSet, bool) {
	switch s {
	case "*":
		return mAny, true
	case http.MethodGet:
		return mGET | mHEAD, true // HEAD is judged as GET
	case http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return methodOf(s), true
	}
	return 0, false
}
