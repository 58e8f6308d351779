package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/jsonscan"
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
	if w.bodyRegex != nil {
		if len(r.Body) == 0 {
			return failed
		}
		matched, why := regexHolds(w.bodyRegex, r.Body, r.Header)
		switch {
		case why != "" && rt.Guard:
			// A guard that cannot read the body denies it: what it cannot see may be
			// what it exists to stop.
			return held
		case why != "":
			bs.reason = why
			return invalid
		case !matched:
			return failed
		}
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

// regexHolds reports whether re matches body as an upstream may read it, or why it
// cannot tell. An upstream may read the body in the charset its Content-Type declares,
// in the encoding a BOM or the RFC 4627 NUL pattern shows (UTF-16, UTF-32), as a form
// (percent-decoded) and with any lenient JSON parser: Python's json takes NaN and any
// depth, Go's json.Decoder stops after the first value, JSON5 takes single quotes,
// trailing commas and \x escapes. Matching only the raw bytes, or the strings of bodies
// that are strictly valid, would let `{"q":"DROP\u0020TABLE","n":NaN}` past a guard
// whose backend reads DROP TABLE. So re is matched against the raw bytes, and against
// every decoded string-like span (jsonscan.Strings) of every reading of the body. A body
// in a charset the gateway cannot decode, or not valid in the UTF-16/32 it declares or
// shows, cannot be judged: why says so and the caller refuses it.
func regexHolds(re *regexp.Regexp, body []byte, header http.Header) (matched bool, why string) {
	if re.Match(body) {
		return true, ""
	}
	text, others, why := readings(body, header)
	if why != "" {
		return false, why
	}
	if len(text) != len(body) && re.Match(text) {
		return true, ""
	}
	if readingHolds(re, text) {
		return true, ""
	}
	for _, t := range others {
		if re.Match(t) || readingHolds(re, t) {
			return true, ""
		}
	}
	return false, ""
}

// readingHolds reports whether re matches a decoded span of text, or of its form decoding.
func readingHolds(re *regexp.Regexp, text []byte) bool {
	if textHolds(re, text) {
		return true
	}
	if bytes.ContainsAny(text, "%+") {
		form := appendFormDecoded(nil, text)
		return re.Match(form) || textHolds(re, form)
	}
	return false
}

// textHolds reports whether re matches a decoded string-like span of text.
func textHolds(re *regexp.Regexp, text []byte) bool {
	// Without a backslash every span decodes to its own bytes, already matched.
	if bytes.IndexByte(text, '\\') < 0 {
		return false
	}
	return jsonscan.Strings(text, func(s []byte, decoded bool) bool { return decoded && re.Match(s) })
}

// readings returns body as read as UTF-8 (without a UTF-8 BOM), the other readings
// (transcoded from UTF-16/32) an upstream may make, or why it cannot be read.
func readings(body []byte, header http.Header) (text []byte, others [][]byte, why string) {
	declared := jsonscan.UTF8
	if ct := header.Get("Content-Type"); ct != "" {
		_, params, err := mime.ParseMediaType(ct)
		if err != nil && strings.Contains(strings.ToLower(ct), "charset") {
			return nil, nil, "request body has a Content-Type the gateway cannot parse for its charset"
		}
		enc, ok := jsonscan.EncodingOf(params["charset"])
		switch {
		case !ok && isLatin1(params["charset"]):
			// A single-byte charset reads ASCII as ASCII: the raw bytes say it all.
		case !ok:
			return nil, nil, fmt.Sprintf("request body is in charset %q, which the gateway cannot read", params["charset"])
		}
		declared = enc
	}
	enc, bom := jsonscan.Detect(body)
	if bom == 0 && declared != jsonscan.UTF8 {
		enc = declared
	}
	if enc != jsonscan.UTF8 {
		t, err := jsonscan.Transcode(nil, body[bom:], enc, false)
		if err != nil {
			return nil, nil, fmt.Sprintf("request body is not valid %s", enc)
		}
		others = append(others, t)
	} else if bytes.IndexByte(body, 0) >= 0 {
		// NUL bytes but no sign of UTF-16/32 at the start: text in those encodings after a
		// binary or misaligned start is read as such by some upstream, so read it too.
		for _, e := range []jsonscan.Encoding{jsonscan.UTF16LE, jsonscan.UTF16BE, jsonscan.UTF32LE, jsonscan.UTF32BE} {
			for off := range 2 {
				t, _ := jsonscan.Transcode(nil, body[off:], e, true)
				others = append(others, t)
			}
		}
	}
	return body[bom:], others, ""
}

// isLatin1 reports whether charset names a single-byte superset of ASCII an upstream
// may read a body in; for an ASCII expression its bytes are its text.
func isLatin1(charset string) bool {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "iso-8859-1", "latin1", "iso-8859-15", "windows-1252", "cp1252":
		return true
	}
	return false
}

// appendFormDecoded appends s form-decoded as lenient servers do: '+' is a space, a
// valid %XX its byte, and an invalid '%' is kept (PHP, many frameworks), so that one bad
// escape does not hide the rest of the body from the guard.
func appendFormDecoded(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			dst = append(dst, ' ')
		case c == '%' && i+2 < len(s) && unhex(s[i+1]) >= 0 && unhex(s[i+2]) >= 0:
			dst = append(dst, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
