package rules

import (
	"bytes"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// when is a compiled match.when: every condition set must hold.
type when struct {
	query     []paramCond
	headers   []paramCond // names canonical
	body      []bodyCond
	bodyRegex *regexp.Regexp
}

// paramCond accepts a query parameter or header whose every value is listed.
type paramCond struct {
	name   string
	values []string
}

// bodyCond accepts a JSON body whose value at path equals one of values.
type bodyCond struct {
	path   string
	values []value
}

func (w *when) hasBody() bool { return w != nil && (len(w.body) > 0 || w.bodyRegex != nil) }

// value is a typed condition value.
type value struct {
	kind  config.Kind
	str   string // String: the text; other kinds: the text as written
	num   float64
	isInt bool // Number: num is integral and i holds it exactly
	i     int64
	b     bool
}

// outcome of checking a guard's or route's when conditions.
type outcome uint8

const (
	failed outcome = iota
	held
	invalid
)

// bodyState remembers, for one Decide, whether the body has been checked as strict JSON.
type bodyState struct {
	checked bool
	reason  string // why the body is refused; "" when it is acceptable
}

// conditions checks rt's when against r. rt's method and path already match.
func (t *Table) conditions(rt *Route, r *Request, bs *bodyState) outcome {
	w := rt.when
	if w == nil {
		return held
	}
	// A body that a body condition will read must be unambiguous before any condition is
	// looked at, so that a route's verdict never depends on which duplicate key, which
	// element of a batch or which spelling of a key a parser happens to pick.
	if len(w.body) > 0 && len(r.Body) > 0 {
		if !bs.checked {
			bs.checked = true
			bs.reason = t.checkBody(r.Body)
		}
		if bs.reason != "" {
			return invalid
		}
	}
	for i := range w.query {
		if !paramHolds(r.Query, &w.query[i], strings.EqualFold) {
			return failed
		}
	}
	for i := range w.headers {
		if !paramHolds(r.Header, &w.headers[i], sameHeaderName) {
			return failed
		}
	}
	if w.bodyRegex != nil && (len(r.Body) == 0 || !regexHolds(w.bodyRegex, r.Body)) {
		return failed
	}
	for i := range w.body {
		if len(r.Body) == 0 || !w.body[i].holds(r.Body) {
			return failed
		}
	}
	return held
}

// paramHolds reports whether c's parameter is present under its exact name and every
// value of every parameter whose name is the same as c's under sameName is accepted.
// Counting the other spellings closes parameter pollution through frameworks that
// read names case-insensitively (or, for headers, with '_' for '-').
func paramHolds(vals map[string][]string, c *paramCond, sameName func(a, b string) bool) bool {
	present := false
	for name, vs := range vals {
		if name != c.name && !sameName(name, c.name) {
			continue
		}
		for _, v := range vs {
			if !slices.Contains(c.values, v) {
				return false
			}
		}
		if name == c.name && len(vs) > 0 {
			present = true
		}
	}
	return present
}

// sameHeaderName reports whether two header names are the same for a lenient server:
// ASCII case-insensitive, with '_' equal to '-' (CGI, PHP, Django and nginx options fold
// X_Tenant into X-Tenant).
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// holds reports whether the value at c.path in body (strictly checked JSON) is one of c.values.
func (c *bodyCond) holds(body []byte) bool {
	res := gjson.GetBytes(body, c.path)
	if !res.Exists() {
		return false
	}
	for i := range c.values {
		if c.values[i].equalJSON(res) {
			return true
		}
	}
	return false
}

// equalJSON reports whether the JSON value res is v: same type and value. Objects and
// arrays never equal a scalar.
func (v *value) equalJSON(res gjson.Result) bool {
	switch v.kind {
	case config.String:
		return res.Type == gjson.String && res.Str == v.str
	case config.Number:
		return res.Type == gjson.Number && v.equalNumberText(res.Raw)
	case config.Bool:
		return (res.Type == gjson.True && v.b) || (res.Type == gjson.False && !v.b)
	case config.Null:
		return res.Type == gjson.Null
	}
	return false
}

// equalNumberText compares a JSON number literal numerically: exactly for integers
// that fit int64, as float64 otherwise.
func (v *value) equalNumberText(s string) bool {
	if v.isInt && isDigits(s) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n == v.i
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f == v.num
}

// isDigits reports whether s is an optionally negative run of decimal digits.
func isDigits(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// equalClaim reports whether a decoded token claim is v, or for an array claim, holds v.
func (v *value) equalClaim(c any) bool {
	switch c := c.(type) {
	case []any:
		for _, e := range c {
			if v.equalScalarClaim(e) {
				return true
			}
		}
		return false
	case []string:
		return v.kind == config.String && slices.Contains(c, v.str)
	}
	return v.equalScalarClaim(c)
}

func (v *value) equalScalarClaim(c any) bool {
	switch v.kind {
	case config.String:
		s, ok := c.(string)
		return ok && s == v.str
	case config.Number:
		switch n := c.(type) {
		case float64:
			if v.isInt {
				return n == float64(v.i)
			}
			return n == v.num
		case json.Number:
			return v.equalNumberText(string(n))
		case int:
			return v.isInt && int64(n) == v.i
		case int64:
			return v.isInt && n == v.i
		}
		return false
	case config.Bool:
		b, ok := c.(bool)
		return ok && b == v.b
	case config.Null:
		return c == nil
	}
	return false
}

// allow is a compiled allow block with its refusal reasons, built at Compile.
type allow struct {
	groups, scopes, subjects []string
	groupsWhy, scopesWhy     string
	subjectsWhy              string
	claims                   []claimCond // sorted by name
}

type claimCond struct {
	name   string
	values []value
	why    string
}

// missing returns why p does not satisfy a, or "" when it does. The first unmet key is
// reported, in the order groups, scopes, subjects, claims.
func (a *allow) missing(p *identity.Principal) string {
	if p == nil {
		p = &identity.Principal{}
	}
	if a.groups != nil && !anyIn(a.groups, p.Groups) {
		return a.groupsWhy
	}
	if a.scopes != nil && !anyIn(a.scopes, p.Scopes) {
		return a.scopesWhy
	}
	if a.subjects != nil && !slices.Contains(a.subjects, p.Subject) {
		return a.subjectsWhy
	}
	for i := range a.claims {
		c := &a.claims[i]
		got, ok := p.Claims[c.name]
		if !ok || !anyClaim(c.values, got) {
			return c.why
		}
	}
	return ""
}

func anyIn(want, have []string) bool {
	for _, w := range want {
		if slices.Contains(have, w) {
			return true
		}
	}
	return false
}

func anyClaim(values []value, got any) bool {
	for i := range values {
		if values[i].equalClaim(got) {
			return true
		}
	}
	return false
}

// regexHolds reports whether re matches body as an upstream may read it: the raw bytes,
// the URL-decoded form (a form body), and every decoded string of a JSON body. Matching
// the raw bytes alone would let `{"q":"DROP\u0020TABLE"}` or `q=drop%20table` past a guard
// whose backend decodes them.
func regexHolds(re *regexp.Regexp, body []byte) bool {
	if re.Match(body) {
		return true
	}
	if bytes.ContainsAny(body, "%+") {
		if s, err := url.QueryUnescape(string(body)); err == nil && re.MatchString(s) {
			return true
		}
	}
	// Without a backslash every JSON string decodes to its own bytes, already matched above.
	if bytes.IndexByte(body, '\\') < 0 || !jsonDepthWithin(body, maxDepth) || !gjson.ValidBytes(body) {
		return false
	}
	return jsonStringMatches(re, gjson.ParseBytes(body))
}

// jsonStringMatches reports whether re matches any string key or value within v.
func jsonStringMatches(re *regexp.Regexp, v gjson.Result) bool {
	switch {
	case v.Type == gjson.String:
		return re.MatchString(v.Str)
	case v.IsObject() || v.IsArray():
		found := false
		v.ForEach(func(k, e gjson.Result) bool {
			found = (k.Type == gjson.String && re.MatchString(k.Str)) || jsonStringMatches(re, e)
			return !found
		})
		return found
	}
	return false
}

// jsonDepthWithin reports whether the brackets of b, outside strings, nest at most max deep,
// so that gjson's recursive walk stays bounded.
func jsonDepthWithin(b []byte, max int) bool {
	depth, inStr := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			if depth++; depth > max {
				return false
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return true
}
