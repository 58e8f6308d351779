package config

import (
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
)

// mcpMethods are the HTTP methods of MCP's Streamable HTTP transport: POST carries
// JSON-RPC, GET opens the server's stream, DELETE ends a session.
var mcpMethods = []string{"POST", "GET", "DELETE"}

// mcpJudged are the protocol methods that mcp.tools, resources and prompts decide, and the
// ones always allowed: mcp.methods cannot name them.
var mcpJudged = []string{"tools/call", "prompts/get", "resources/read", "resources/subscribe", "resources/unsubscribe",
	"initialize", "ping", "tools/list", "prompts/list", "resources/list", "resources/templates/list"}

// mcp checks the mcp block of route r at p. Keys the data plane does not act on yet are
// refused, never ignored: a user who writes a mask or an approval must not believe it holds.
func (v *validator) mcp(p string, r *Route) {
	mp := p + ".mcp"
	m := r.MCP
	notYet := func(path, what string) {
		v.errorf(path, "%s is not yet supported on mcp routes", what)
	}
	if v.set(mp + ".resource") {
		v.mcpResource(p, r)
	}
	if r.Approval != nil {
		notYet(p+".approval", "route-level approval (it would bind the JSON-RPC id, so no retry could use it)")
	}
	if v.set(p + ".mask") {
		v.errorf(p+".mask", "an mcp route masks per tool: set mask on its mcp.tools entries (detect applies to every answer)")
	}
	if r.Websocket {
		v.errorf(p+".websocket", "an mcp route is Streamable HTTP, not a websocket")
	}
	for j, meth := range r.Match.Methods {
		if !slices.Contains(mcpMethods, meth) {
			v.errorf(idx(p+".match.methods", j), "an mcp route takes only POST, GET and DELETE, not %s", v.show(idx(p+".match.methods", j), meth))
		}
	}
	for i := range m.Tools {
		t, tp := &m.Tools[i], idx(mp+".tools", i)
		v.mcpEntry(tp, "name", t.Name, t.Allow, v.set(tp+".deny"), t.Deny)
		if t.When != nil {
			wp := tp + ".when"
			if len(t.When.Arguments) == 0 {
				v.errorf(wp, "when is empty: remove it or add arguments conditions")
			}
			for _, k := range slices.Sorted(maps.Keys(t.When.Arguments)) {
				if why := argumentPathError(k); why != "" {
					v.errorf(KeyPath(wp+".arguments", k), "%s", why)
				}
			}
		}
		if v.set(tp + ".mask") {
			if len(t.Mask) == 0 {
				v.errorf(tp+".mask", "mask is empty; leave it out to mask nothing")
			}
			if t.Deny != "" {
				v.errorf(tp+".mask", "an entry with deny never forwards a call, so it has no result to mask")
			}
			v.maskRules(tp+".mask", t.Mask)
		}
		if t.Approval != nil {
			if v.set(tp + ".deny") {
				v.errorf(tp+".approval", "an entry with deny refuses every caller, so it must not set approval")
			}
			v.approval(tp+".approval", t.Approval)
			if v.set(tp + ".approval.pending_status") {
				v.errorf(tp+".approval.pending_status", "a held tool call is always answered as an MCP result (HTTP 200), so pending_status does not apply")
			}
		}
	}
	for i := range m.Resources {
		rs, rp := &m.Resources[i], idx(mp+".resources", i)
		v.mcpEntry(rp, "uri", rs.URI, rs.Allow, v.set(rp+".deny"), rs.Deny)
	}
	for i := range m.Prompts {
		pr, pp := &m.Prompts[i], idx(mp+".prompts", i)
		v.mcpEntry(pp, "name", pr.Name, pr.Allow, v.set(pp+".deny"), pr.Deny)
	}
	for j, meth := range m.Methods {
		jp := idx(mp+".methods", j)
		switch {
		case meth == "":
			v.errorf(jp, "empty method")
		case globError(meth) != "":
			v.errorf(jp, "%s", globError(meth))
		case slices.Contains(mcpJudged, meth) || strings.HasPrefix(meth, "notifications/"):
			v.errorf(jp, "method %s is always allowed or decided by tools, resources and prompts; it cannot be listed here", v.show(jp, meth))
		}
	}
}

// mcpEntry checks one tools, resources or prompts entry: its pattern, and deny or allow.
func (v *validator) mcpEntry(p, key, pattern string, allow *Allow, hasDeny bool, deny string) {
	kp := p + "." + key
	switch {
	case pattern == "":
		v.errorf(kp, "%s is required: exact, or a glob such as \"drop_*\"", key)
	case globError(pattern) != "":
		v.errorf(kp, "%s", globError(pattern))
	}
	if hasDeny && deny == "" {
		v.errorf(p+".deny", "deny needs a message: the reason the model is given")
	}
	if hasDeny && allow != nil {
		v.errorf(p+".allow", "an entry with deny refuses every caller, so it must not set allow")
	}
	if allow != nil {
		v.allow(p+".allow", allow, "allow")
	}
}

// globError describes why p is not a path.Match pattern, "" when it is one.
func globError(p string) string {
	if _, err := path.Match(p, ""); err != nil {
		return "bad glob " + strconv.Quote(p) + ": " + err.Error()
	}
	return ""
}

// argumentPathError describes why k is not a when.arguments path: dotted keys, `\.` a
// literal dot, no glob or gjson syntax. "" when it is one.
func argumentPathError(k string) string {
	var cur int
	for i := 0; i < len(k); i++ {
		switch k[i] {
		case '\\':
			if i+1 >= len(k) || k[i+1] != '.' {
				return "a backslash only escapes a dot"
			}
			i++
			cur++
		case '.':
			if cur == 0 {
				return `empty key (escape a literal dot as \.)`
			}
			cur = 0
		case '*', '?', '#', '|', '@':
			return "glob and gjson syntax (* ? # | @) is not allowed: a path names one value"
		default:
			cur++
		}
	}
	if cur == 0 {
		return `empty key (escape a literal dot as \.)`
	}
	return ""
}

// mcpApprovals reports whether any tool of m needs approval.
func mcpApprovals(m *MCP) bool {
	for _, t := range m.Tools {
		if t.Approval != nil {
			return true
		}
	}
	return false
}
