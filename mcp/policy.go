package mcp

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/keyholehq/keyhole/config"
)

// Effect is the outcome of judging one message.
type Effect uint8

// Effects of Judge. The zero Effect is Hidden, so a zero Decision refuses.
const (
	Hidden   Effect = iota // not listed (or a method not enabled): refused, and left out of lists
	Allow                  // forward it
	Forbid                 // listed, but the entry's allow does not hold for the caller
	Deny                   // the entry denies it
	Approval               // allowed once a human approves it (Decision.Approval)
)

// String returns the Keyhole error code of the effect: "allow", "forbidden", "denied",
// "approval_pending" or, for Hidden, "denied".
func (e Effect) String() string {
	switch e {
	case Allow:
		return "allow"
	case Forbid:
		return "forbidden"
	case Approval:
		return "approval_pending"
	}
	return "denied"
}

// Decision is the verdict on one message.
type Decision struct {
	Effect Effect
	// Reason explains the decision to a human and to the model; it never holds a secret.
	Reason string
	// Entry is the name or uri pattern of the policy entry that decided, "" when none did.
	Entry string
	// Approval is the deciding tool entry's approval, for Effect Approval.
	Approval *config.Approval
	// Index is the deciding entry's position in mcp.tools, resources or prompts, when
	// Entry names one of them (-1 when a call matched none).
	Index int
}

// Missing reports why the caller does not satisfy a (never nil), "" when it does. The
// caller supplies it, bound to the principal, so this package needs no identity.
type Missing func(a *config.Allow) string

// Policy is the compiled mcp block of one route. It is immutable.
type Policy struct {
	route     string
	tools     []entry
	resources []entry
	prompts   []entry
	methods   []string
}

type entry struct {
	pattern  string
	allow    *config.Allow // nil: the route's allow, which already held
	deny     string
	when     []argCond
	approval *config.Approval
}

type argCond struct {
	path   []string
	values config.Scalars
}

// Compile compiles the mcp block of the route named route. Errors name the field below
// the block ("tools[2].name"); config.Load has already checked them, so Compile fails only
// on a configuration that did not come from Load.
func Compile(route string, c *config.MCP) (*Policy, error) {
	p := &Policy{route: route, methods: c.Methods}
	for _, m := range c.Methods {
		if err := checkGlob(m); err != nil {
			return nil, fmt.Errorf("methods: %w", err)
		}
	}
	for i, t := range c.Tools {
		e := entry{pattern: t.Name, allow: t.Allow, deny: t.Deny, approval: t.Approval}
		if err := checkGlob(t.Name); err != nil {
			return nil, fmt.Errorf("tools[%d].name: %w", i, err)
		}
		if t.When != nil {
			for _, k := range sortedKeys(t.When.Arguments) {
				comps, err := SplitArgumentPath(k)
				if err != nil {
					return nil, fmt.Errorf("tools[%d].when.arguments[%q]: %w", i, k, err)
				}
				e.when = append(e.when, argCond{path: comps, values: t.When.Arguments[k]})
			}
		}
		p.tools = append(p.tools, e)
	}
	for i, r := range c.Resources {
		if err := checkGlob(r.URI); err != nil {
			return nil, fmt.Errorf("resources[%d].uri: %w", i, err)
		}
		p.resources = append(p.resources, entry{pattern: r.URI, allow: r.Allow, deny: r.Deny})
	}
	for i, r := range c.Prompts {
		if err := checkGlob(r.Name); err != nil {
			return nil, fmt.Errorf("prompts[%d].name: %w", i, err)
		}
		p.prompts = append(p.prompts, entry{pattern: r.Name, allow: r.Allow, deny: r.Deny})
	}
	return p, nil
}

// checkGlob reports a pattern path.Match refuses. Patterns are path.Match globs: '*' is
// any run of characters other than '/', '?' one such character, [...] a class.
func checkGlob(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("bad glob %q: %w", p, err)
	}
	return nil
}

// CheckGlob reports whether p is a pattern the policy accepts, for config validation.
func CheckGlob(p string) error { return checkGlob(p) }

func glob(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}

// SplitArgumentPath splits a when.arguments key into object keys (or array indexes) at
// '.'; `\.` is a literal dot. Glob and gjson syntax (* ? # | @) is refused: the key names
// one value.
func SplitArgumentPath(k string) ([]string, error) {
	var comps []string
	var cur strings.Builder
	for i := 0; i < len(k); i++ {
		switch c := k[i]; c {
		case '\\':
			if i+1 < len(k) && k[i+1] == '.' {
				cur.WriteByte('.')
				i++
				continue
			}
			return nil, fmt.Errorf("a backslash only escapes a dot")
		case '.':
			if cur.Len() == 0 {
				return nil, fmt.Errorf(`empty key (escape a literal dot as \.)`)
			}
			comps = append(comps, cur.String())
			cur.Reset()
		case '*', '?', '#', '|', '@':
			return nil, fmt.Errorf("%q is not allowed: a path names one value", c)
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() == 0 {
		return nil, fmt.Errorf(`empty key (escape a literal dot as \.)`)
	}
	return append(comps, cur.String()), nil
}

// Judge decides m for the caller described by missing. The route's allow has already
// held for the caller. Always allowed: responses to the server's requests, initialize,
// ping, notifications/*, and the list methods (whose answers FilterList narrows).
// tools/call, prompts/get and resources/read|subscribe|unsubscribe are decided by the
// first entry matching the name (and, for tools, whose when holds); none is Hidden.
// Other methods are allowed when mcp.methods lists them, Hidden otherwise.
func (p *Policy) Judge(m *Message, missing Missing) Decision {
	if m.Kind == Response {
		return Decision{Effect: Allow, Reason: "response to a server request"}
	}
	switch m.Method {
	case MethodInitialize, MethodPing, MethodToolsList, MethodPromptsList, MethodResourcesList, MethodResourceTemplatesList:
		return Decision{Effect: Allow, Reason: "protocol method " + m.Method}
	case MethodToolsCall:
		return p.decide(p.tools, "tool", m.Name, m, missing)
	case MethodPromptsGet:
		return p.decide(p.prompts, "prompt", m.Name, m, missing)
	case MethodResourcesRead, MethodResourcesSubscribe, MethodResourcesUnsubscribe:
		return p.decide(p.resources, "resource", m.Name, m, missing)
	}
	if IsNotification(m.Method) {
		return Decision{Effect: Allow, Reason: "notification " + m.Method}
	}
	for _, g := range p.methods {
		if glob(g, m.Method) {
			return Decision{Effect: Allow, Reason: "method " + m.Method + " is in mcp.methods", Entry: g}
		}
	}
	return Decision{Reason: fmt.Sprintf("method %s is not offered on route %s", m.Method, p.route)}
}

func (p *Policy) decide(entries []entry, what, name string, m *Message, missing Missing) Decision {
	for i := range entries {
		e := &entries[i]
		if !glob(e.pattern, name) {
			continue
		}
		holds, err := e.holds(m)
		if err != nil {
			// An upstream that matches keys case-insensitively would read the argument the
			// condition found absent: refuse rather than guess.
			return Decision{Effect: Deny, Entry: e.pattern, Index: i, Reason: err.Error()}
		}
		if !holds {
			continue
		}
		d := p.verdict(e, what, name, missing)
		d.Index = i
		return d
	}
	return Decision{Reason: fmt.Sprintf("%s %s is not offered on route %s", what, name, p.route), Index: -1}
}

func (p *Policy) verdict(e *entry, what, name string, missing Missing) Decision {
	d := Decision{Entry: e.pattern}
	switch {
	case e.deny != "":
		d.Effect, d.Reason = Deny, e.deny
	case e.allow != nil && missing(e.allow) != "":
		d.Effect, d.Reason = Forbid, missing(e.allow)
	case e.approval != nil:
		d.Effect, d.Reason, d.Approval = Approval, fmt.Sprintf("%s %s needs approval", what, name), e.approval
	default:
		d.Effect, d.Reason = Allow, fmt.Sprintf("%s %s is allowed by entry %q", what, name, e.pattern)
	}
	return d
}

// visible reports whether a list answer shows name: the first entry matching it that
// has no when decides (shown when it allows the caller, approval included); an entry with
// a when shows it if it would allow, since some arguments may pass, and otherwise the
// search goes on.
func visible(entries []entry, name string, missing Missing) bool {
	for i := range entries {
		e := &entries[i]
		if !glob(e.pattern, name) {
			continue
		}
		allows := e.deny == "" && (e.allow == nil || missing(e.allow) == "")
		if allows || e.when == nil {
			return allows
		}
	}
	return false
}

// holds reports whether every when.arguments condition of e holds for m. It is an error
// when an argument key on a condition's path differs from it only in case.
func (e *entry) holds(m *Message) (bool, error) {
	for _, c := range e.when {
		v, ok, err := lookup(m.args, c.path)
		if err != nil {
			return false, err
		}
		if !ok || !anyEqual(c.values, v) {
			return false, nil
		}
	}
	return true, nil
}

func lookup(v any, path []string) (any, bool, error) {
	for _, k := range path {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				for other := range x {
					if strings.EqualFold(other, k) {
						return nil, false, fmt.Errorf("argument %q differs only in case from %q, which a condition of this tool reads", other, k)
					}
				}
				return nil, false, nil
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) || k != strconv.Itoa(i) {
				return nil, false, nil
			}
			v = x[i]
		default:
			return nil, false, nil
		}
	}
	return v, true, nil
}

// anyEqual reports whether the decoded JSON value v is one of vs, of the same type.
func anyEqual(vs config.Scalars, v any) bool {
	for _, s := range vs {
		switch x := v.(type) {
		case string:
			if s.Kind == config.String && s.Value == x {
				return true
			}
		case bool:
			if s.Kind == config.Bool && s.Value == strconv.FormatBool(x) {
				return true
			}
		case nil:
			if s.Kind == config.Null {
				return true
			}
		case json.Number:
			if s.Kind == config.Number && numberEqual(s.Value, string(x)) {
				return true
			}
		}
	}
	return false
}

// numberEqual compares two number literals: exactly as integers when both are, as
// float64 otherwise.
func numberEqual(a, b string) bool {
	ia, erra := strconv.ParseInt(a, 0, 64)
	ib, errb := strconv.ParseInt(b, 10, 64)
	if erra == nil && errb == nil {
		return ia == ib
	}
	fa, erra := strconv.ParseFloat(a, 64)
	fb, errb := strconv.ParseFloat(b, 64)
	return erra == nil && errb == nil && fa == fb
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
