package rules

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/keyholehq/keyhole/config"
)

// Compile builds the route table from cfg.Guards and cfg.Routes. It reports every error
// it finds, joined with errors.Join, each a *config.FieldError at its field path:
// a path pattern chi refuses, an unsupported gjson path, a bad RE2 expression, a rewrite
// prefix that does not fit the pattern, an empty allow list, a route that can never be
// selected. Compile does not check what config.Load already checks (names, upstreams,
// required keys) beyond what it needs to fail closed.
func Compile(cfg *config.Config) (*Table, error) {
	c := &compiler{cfg: cfg}
	t := &Table{
		mux:    chi.NewMux(),
		groups: make(map[string]*group),
		keys:   &keyNode{},
	}
	t.ctxs.New = func() any { return chi.NewRouteContext() }

	for i := range cfg.Guards {
		rt := c.route(&cfg.Guards[i], fmt.Sprintf("guards[%d]", i), i, true)
		t.guards = append(t.guards, rt)
		if rt.when.hasBody() {
			t.bodyGuards = append(t.bodyGuards, rt)
		}
		t.all = append(t.all, rt)
	}
	var routes []*Route
	for i := range cfg.Routes {
		rt := c.route(&cfg.Routes[i], fmt.Sprintf("routes[%d]", i), i, false)
		routes = append(routes, rt)
		t.all = append(t.all, rt)
	}
	for _, rt := range t.all {
		if rt.when != nil {
			for _, bc := range rt.when.body {
				comps, _ := splitPath(bc.path)
				t.keys.add(comps)
			}
		}
	}
	c.groups(t, routes)
	if a := cfg.Admin.Allow; a != nil {
		t.adminAllow = c.allow("admin.allow", "admin", a)
	}
	if len(cfg.Admin.Clients) > 0 {
		t.adminClients = make(map[string]bool, len(cfg.Admin.Clients))
		for _, id := range cfg.Admin.Clients {
			t.adminClients[id] = true
		}
	}
	for name, a := range cfg.Admin.Roles {
		if a != nil {
			if t.roles == nil {
				t.roles = map[string]*allow{}
			}
			t.roles[name] = c.allow(config.KeyPath("admin.roles", name), "role "+name, a)
		}
	}

	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return t, nil
}

type compiler struct {
	cfg  *config.Config
	errs []error
}

func (c *compiler) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, c.cfg.Errorf(path, format, args...))
}

// route compiles one guard or route; field is its path, "routes[3]".
func (c *compiler) route(cr *config.Route, field string, index int, guard bool) *Route {
	rt := &Route{
		Name:     cr.Name,
		Index:    index,
		Guard:    guard,
		Methods:  cr.Match.Methods,
		Pattern:  cr.Match.Path,
		Upstream: cr.Upstream,
		Deny:     cr.Deny,
		Approval: cr.Approval,
		Config:   cr,
	}
	if !guard {
		rt.Websocket = cr.Websocket
	}
	if len(cr.Match.Methods) == 0 {
		c.errorf(field+".match.methods", "no methods: list methods or \"*\"")
	}
	for i, m := range cr.Match.Methods {
		set, ok := configMethod(m)
		if !ok {
			c.errorf(fmt.Sprintf("%s.match.methods[%d]", field, i),
				"unknown method %q: want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or \"*\"", m)
		}
		rt.methods |= set
	}
	patternOK := c.pattern(field+".match.path", cr.Match.Path)
	if guard {
		rt.mux = chi.NewMux()
		if patternOK {
			_ = tryRegister(rt.mux, cr.Match.Path) // chi accepted it above; nothing to report
		}
	}
	rt.when = c.when(field+".match.when", cr.Match.When)

	if guard {
		if cr.Deny == "" {
			c.errorf(field+".deny", "a guard needs a deny message")
		}
		return rt
	}
	switch {
	case cr.Deny != "" && (cr.Allow != nil || cr.Upstream != "" || cr.Approval != nil):
		c.errorf(field+".deny", "a deny route takes no allow, approval or upstream")
	case cr.Deny == "" && cr.Allow == nil && cr.Approval == nil:
		c.errorf(field, "route %q has neither allow, deny nor approval; nothing would be allowed", cr.Name)
	}
	if cr.Allow != nil && cr.Deny == "" {
		rt.allow = c.allow(field+".allow", cr.Name, cr.Allow)
	}
	if cr.Approval != nil && cr.Deny == "" {
		rt.approvers = c.allow(field+".approval.approvers", "approvers of "+cr.Name, &cr.Approval.Approvers)
	}
	if cr.MCP != nil && cr.Deny == "" {
		c.mcp(rt, field, cr.MCP)
	}
	rt.allowReason = "allowed by route " + cr.Name
	if cr.Rewrite != nil {
		rt.StripPrefix, rt.AddPrefix = cr.Rewrite.StripPrefix, cr.Rewrite.AddPrefix
		c.rewrite(field+".rewrite", cr.Match.Path, patternOK, cr.Rewrite)
	}
	return rt
}

// pattern reports whether chi accepts p, reporting chi's panic as a FieldError if not.
func (c *compiler) pattern(field, p string) bool {
	if err := tryRegister(chi.NewMux(), p); err != nil {
		c.errorf(field, "invalid path pattern %q: %v", p, err)
		return false
	}
	return true
}

// tryRegister adds pattern p to mux for GET, turning chi's panic into an error.
func tryRegister(mux *chi.Mux, p string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = errors.New(strings.TrimPrefix(fmt.Sprint(v), "chi: "))
		}
	}()
	// Method, not Handle: Handle would read "GET /x" or a path with a space as method + pattern.
	mux.Method(http.MethodGet, p, http.NotFoundHandler())
	return nil
}

// groups registers one representative of every distinct route pattern in t.mux and
// groups the routes by it, in config order.
func (c *compiler) groups(t *Table, routes []*Route) {
	reps := make(map[string]string) // shape → representative pattern
	var order []string
	for _, rt := range routes {
		if rt.methods == 0 || !validPattern(rt.Pattern) {
			continue
		}
		shape := patternShape(rt.Pattern)
		rep, ok := reps[shape]
		if !ok {
			rep = rt.Pattern
			reps[shape] = rep
			order = append(order, rep)
			t.groups[rep] = &group{}
			if err := tryRegister(t.mux, rep); err != nil {
				c.errorf(fmt.Sprintf("routes[%d].match.path", rt.Index), "invalid path pattern %q: %v", rep, err)
			}
		}
		g := t.groups[rep]
		c.shadowed(g, rt)
		g.routes = append(g.routes, rt)
		if rt.when.hasBody() {
			g.bodyMethods |= rt.methods
		}
	}
	// chi keeps one pattern per tree node. Two patterns of different shape must not share
	// a node, or one group would never be found; fail closed if they do.
	kept := make(map[string]bool)
	for _, r := range t.mux.Routes() {
		kept[r.Pattern] = true
	}
	for _, rep := range order {
		if !kept[rep] {
			rt := t.groups[rep].routes[0]
			c.errorf(fmt.Sprintf("routes[%d].match.path", rt.Index),
				"path pattern %q is indistinguishable from another pattern for chi; write them alike", rep)
		}
	}
}

// shadowed reports rt when an earlier route of its group takes all of its requests.
func (c *compiler) shadowed(g *group, rt *Route) {
	for _, prev := range g.routes {
		if prev.when == nil && prev.methods&rt.methods == rt.methods {
			c.errorf(fmt.Sprintf("routes[%d].match", rt.Index),
				"route %q is never selected: routes[%d] (%s) has the same path pattern, accepts all its methods and has no when conditions",
				rt.Name, prev.Index, prev.Name)
			return
		}
	}
}

func validPattern(p string) bool { return tryRegister(chi.NewMux(), p) == nil }

// patternShape returns p with parameter names removed and parameter regexps anchored as
// chi anchors them: chi stores "/a/{id}" and "/a/{name}" on one tree node, so they are
// one pattern for routing. p must be a pattern chi accepts.
func patternShape(p string) string {
	var b strings.Builder
	for {
		ps := strings.IndexByte(p, '{')
		ws := strings.IndexByte(p, '*')
		if ps < 0 || ws >= 0 && ws < ps {
			b.WriteString(p) // static, or a final catch-all
			return b.String()
		}
		// Find the closing brace as chi does, counting nested braces of a regexp.
		pe, depth := ps, 0
		for i := ps; i < len(p); i++ {
			if p[i] == '{' {
				depth++
			} else if p[i] == '}' {
				depth--
				if depth == 0 {
					pe = i
					break
				}
			}
		}
		b.WriteString(p[:ps])
		b.WriteByte('{')
		if _, re, isRe := strings.Cut(p[ps+1:pe], ":"); isRe {
			if re != "" && re[0] != '^' {
				re = "^" + re
			}
			if re != "" && re[len(re)-1] != '$' {
				re += "$"
			}
			b.WriteByte(':')
			b.WriteString(re)
		}
		b.WriteByte('}')
		p = p[pe+1:]
	}
}

// when compiles a match.when; nil when it sets no condition.
func (c *compiler) when(field string, w *config.When) *when {
	if w == nil {
		return nil
	}
	out := &when{}
	for _, name := range sortedKeys(w.Query) {
		p := config.KeyPath(field+".query", name)
		out.query = append(out.query, paramCond{name: name, values: c.texts(p, w.Query[name])})
	}
	for _, name := range sortedKeys(w.Headers) {
		p := config.KeyPath(field+".headers", name)
		canon := http.CanonicalHeaderKey(name)
		if canon == "" {
			c.errorf(p, "empty header name")
		}
		out.headers = append(out.headers, paramCond{name: canon, values: c.texts(p, w.Headers[name])})
	}
	for _, path := range sortedKeys(w.Body) {
		p := config.KeyPath(field+".body", path)
		if _, why := splitPath(path); why != "" {
			c.errorf(p, "unsupported gjson path %q: %s", path, why)
		}
		out.body = append(out.body, bodyCond{path: path, values: c.values(p, w.Body[path])})
	}
	if w.BodyRegex != "" {
		re, err := regexp.Compile(w.BodyRegex)
		if err != nil {
			c.errorf(field+".body_regex", "invalid RE2 expression: %v", err)
		}
		out.bodyRegex = re
	}
	if len(out.query) == 0 && len(out.headers) == 0 && len(out.body) == 0 && out.bodyRegex == nil {
		return nil
	}
	return out
}

// texts compiles the accepted values of a query parameter or header: compared as text.
func (c *compiler) texts(field string, vs config.Scalars) []string {
	if len(vs) == 0 {
		c.errorf(field, "want at least one value")
	}
	out := make([]string, 0, len(vs))
	for i, v := range vs {
		if v.Kind == config.Null {
			c.errorf(indexed(field, i, len(vs)), "null never matches a query parameter or header; quote \"null\" to match that text")
		}
		out = append(out, v.Value)
	}
	return out
}

// values compiles typed values of a body condition or claim.
func (c *compiler) values(field string, vs config.Scalars) []value {
	if len(vs) == 0 {
		c.errorf(field, "want at least one value")
	}
	out := make([]value, 0, len(vs))
	for i, s := range vs {
		v := value{kind: s.Kind, str: s.Value}
		switch s.Kind {
		case config.Number:
			if n, err := strconv.ParseInt(s.Value, 0, 64); err == nil {
				v.i, v.isInt, v.num = n, true, float64(n)
			} else if f, err := strconv.ParseFloat(s.Value, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				v.num = f
				if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
					v.i, v.isInt = int64(f), true
				}
			} else {
				c.errorf(indexed(field, i, len(vs)), "%q is not a finite number", s.Value)
			}
		case config.Bool:
			v.b = s.Value == "true"
		}
		out = append(out, v)
	}
	return out
}

func indexed(field string, i, n int) string {
	if n == 1 {
		return field
	}
	return fmt.Sprintf("%s[%d]", field, i)
}

// splitPath returns the object keys or array indexes of gjson path p, unescaped, or why
// p is refused. Only paths that name exactly one value are accepted: a condition on
// "#", a wildcard or a query would hold for whichever element gjson meets first.
func splitPath(p string) ([]string, string) {
	if p == "" {
		return nil, "empty path"
	}
	var comps []string
	var cur []byte
	for i := 0; i < len(p); i++ {
		switch ch := p[i]; ch {
		case '\\':
			if i+1 == len(p) {
				return nil, "it ends in a lone escape"
			}
			i++
			cur = append(cur, p[i])
		case '.':
			if len(cur) == 0 {
				return nil, "empty key; escape a literal dot as \\."
			}
			comps, cur = append(comps, string(cur)), cur[:0]
		case '#':
			return nil, "'#' (array length, map or query) does not name one value"
		case '*', '?':
			return nil, "wildcards match whichever key comes first"
		case '@':
			return nil, "modifiers are not supported"
		case '|':
			return nil, "pipes are not supported"
		case '!':
			return nil, "literals are not supported"
		case '[', ']', '{', '}':
			return nil, "multipaths are not supported"
		default:
			cur = append(cur, ch)
		}
	}
	if len(cur) == 0 {
		return nil, "empty key; escape a literal dot as \\."
	}
	return append(comps, string(cur)), ""
}

// allow compiles an allow block and the reasons its refusals give.
func (c *compiler) allow(field, name string, a *config.Allow) *allow {
	out := &allow{}
	list := func(key, singular, plural string, vs []string) ([]string, string) {
		if vs == nil {
			return nil, ""
		}
		if len(vs) == 0 {
			c.errorf(field+"."+key, "empty list; name at least one %s or leave %s out", singular, key)
		}
		if len(vs) == 1 {
			return vs, fmt.Sprintf("route %s requires %s %s", name, singular, vs[0])
		}
		return vs, fmt.Sprintf("route %s requires one of %s %s", name, plural, strings.Join(vs, ", "))
	}
	out.groups, out.groupsWhy = list("groups", "group", "groups", a.Groups)
	out.scopes, out.scopesWhy = list("scopes", "scope", "scopes", a.Scopes)
	out.subjects, out.subjectsWhy = list("subjects", "subject", "subjects", a.Subjects)
	for _, claim := range sortedKeys(a.Claims) {
		vs := a.Claims[claim]
		cc := claimCond{name: claim, values: c.values(config.KeyPath(field+".claims", claim), vs)}
		shown := make([]string, len(vs))
		for i, v := range vs {
			shown[i] = v.Value
			if v.Kind == config.String {
				shown[i] = strconv.Quote(v.Value)
			}
		}
		if len(vs) == 1 {
			cc.why = fmt.Sprintf("route %s requires claim %s = %s", name, claim, shown[0])
		} else {
			cc.why = fmt.Sprintf("route %s requires claim %s to be one of %s", name, claim, strings.Join(shown, ", "))
		}
		out.claims = append(out.claims, cc)
	}
	if out.groups == nil && out.scopes == nil && out.subjects == nil && out.claims == nil {
		c.errorf(field, "allow names no groups, scopes, subjects or claims; it would allow every caller")
	}
	return out
}

// rewrite checks strip_prefix against the pattern and add_prefix as a clean path.
func (c *compiler) rewrite(field, pattern string, patternOK bool, rw *config.Rewrite) {
	if s := rw.StripPrefix; s != "" {
		switch {
		case s[0] != '/' || s == "/" || s[len(s)-1] == '/':
			c.errorf(field+".strip_prefix", "%q must start with \"/\" and not end with \"/\"", s)
		case strings.ContainsAny(s, "{}*"):
			c.errorf(field+".strip_prefix", "%q must be literal text, without parameters or wildcards", s)
		case patternOK:
			if _, ok := stripPrefix(pattern, s); !ok {
				c.errorf(field+".strip_prefix", "%q is not a prefix of path pattern %q at a segment boundary", s, pattern)
			}
		}
	}
	if a := rw.AddPrefix; a != "" {
		if why := cleanPrefix(a); why != "" {
			c.errorf(field+".add_prefix", "%q %s", a, why)
		}
	}
}

// cleanPrefix returns why a is not a clean absolute path prefix, or "".
func cleanPrefix(a string) string {
	if a[0] != '/' || a == "/" || a[len(a)-1] == '/' {
		return "must start with \"/\" and not end with \"/\""
	}
	for _, seg := range strings.Split(a[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "must not hold empty, \".\" or \"..\" segments"
		}
	}
	for _, r := range a {
		if r < 0x20 || r == 0x7f || r == '?' || r == '#' || r == '\\' {
			return "must not hold control characters, '?', '#' or '\\'"
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
