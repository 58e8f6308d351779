package recorder

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Ops of a HeaderChange or BodyChange.
const (
	OpAdded   = "added"
	OpRemoved = "removed"
	OpChanged = "changed"
)

// maxBodyChanges bounds Changes.Body, so that a replay of a large, wholly different
// JSON body answers with a readable list rather than one line per value.
const maxBodyChanges = 1000

// diffTextLimit bounds each text of a whole-body BodyChange.
const diffTextLimit = 4 << 10

// volatileHeaders differ between any two responses, or describe the connection or the
// framing rather than the response, so Diff does not report them.
var volatileHeaders = map[string]bool{
	"Age": true, "Connection": true, "Content-Length": true, "Date": true,
	"Keep-Alive": true, "Transfer-Encoding": true, "X-Request-Id": true,
}

// Changes is how one response differs from another: what a replay answers about the
// response it got compared with the recorded one. The zero value means no difference
// was looked for; Diff always sets Same.
type Changes struct {
	// Status is set when the status codes differ.
	Status *StatusChange `json:"status,omitempty"`
	// Headers lists the headers that differ, sorted by name.
	Headers []HeaderChange `json:"headers,omitempty"`
	// Body lists the differences of the bodies, at most 1000 of them.
	Body []BodyChange `json:"body,omitempty"`
	// Truncated is true when the bodies had more differences than Body lists.
	Truncated bool `json:"truncated,omitempty"`
	// BodyIncomplete is true when either body was recorded only in part (Body.Truncated):
	// then only the captured bytes and the sizes were compared, byte for byte.
	BodyIncomplete bool `json:"body_incomplete,omitempty"`
	// Same is true when no difference was found: with BodyIncomplete, none in what was
	// recorded.
	Same bool `json:"same"`
}

// StatusChange is a changed status code.
type StatusChange struct {
	Old int `json:"old"`
	New int `json:"new"`
}

// HeaderChange is a header present in one response only (Op OpAdded or OpRemoved) or
// with other values in each (OpChanged). Old and New are the header's values, in order;
// a header absent from a response has none.
type HeaderChange struct {
	Name string   `json:"name"`
	Op   string   `json:"op"`
	Old  []string `json:"old,omitempty"`
	New  []string `json:"new,omitempty"`
}

// BodyChange is one difference of two bodies. When both bodies are JSON, Path is the
// gjson path of a value (keys escaped as gjson.Escape does, array elements by index:
// "customers.3.email"; "" for the whole document), Op says whether the value was added,
// removed or changed, and Old and New are the values as JSON. Otherwise there is one
// BodyChange, with Path "" and Op OpChanged, whose Old and New are JSON strings holding
// each body's Body.Text (base64 for a binary body, as Body.Encoding says), cut to their
// first 4 KiB.
type BodyChange struct {
	Path string          `json:"path"`
	Op   string          `json:"op"`
	Old  json.RawMessage `json:"old,omitempty"`
	New  json.RawMessage `json:"new,omitempty"`
}

// Diff returns how after differs from before. A nil Response counts as one with status
// 0, no headers and an empty body.
//
// Headers are compared by canonical name and then value by value, in order. These are
// never reported: Age, Connection, Content-Length, Date, Keep-Alive, Transfer-Encoding
// and X-Request-Id.
//
// Bodies that are both JSON are compared as values: object key order, whitespace and
// string escapes make no difference; objects are compared key by key in sorted order,
// arrays index by index, extra elements reported as added or removed at the tail;
// numbers are equal when they are the same float64 (1.0 equals 1 and 1e2 equals 100),
// except that two integers, which JSON writes in one form only, are equal only when
// written alike (or both zero), so integers beyond 2^53 (IDs) are compared exactly. An
// object with a key twice counts its last value. Other bodies are compared byte for
// byte. A body recorded only in part is compared byte for byte too, together with its
// size, and sets BodyIncomplete.
//
// Diff does not modify its arguments and never panics, whatever the bodies hold.
func Diff(before, after *Response) Changes {
	var c Changes
	b, a := responseOrEmpty(before), responseOrEmpty(after)
	if b.Status != a.Status {
		c.Status = &StatusChange{Old: b.Status, New: a.Status}
	}
	c.Headers = diffHeaders(b.Header, a.Header)
	c.diffBody(b.Body, a.Body)
	c.Same = c.Status == nil && len(c.Headers) == 0 && len(c.Body) == 0
	return c
}

func responseOrEmpty(r *Response) *Response {
	if r == nil {
		return &Response{}
	}
	return r
}

// diffHeaders returns the changes from before to after, sorted by name.
func diffHeaders(before, after http.Header) []HeaderChange {
	b, a := canonicalHeader(before), canonicalHeader(after)
	names := make([]string, 0, len(b)+len(a))
	for k := range b {
		names = append(names, k)
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var out []HeaderChange
	for _, k := range names {
		bv, av := b[k], a[k]
		switch {
		case len(bv) == 0:
			out = append(out, HeaderChange{Name: k, Op: OpAdded, New: av})
		case len(av) == 0:
			out = append(out, HeaderChange{Name: k, Op: OpRemoved, Old: bv})
		case !slices.Equal(bv, av):
			out = append(out, HeaderChange{Name: k, Op: OpChanged, Old: bv, New: av})
		}
	}
	return out
}

// canonicalHeader returns the values of h by canonical name, without volatile headers
// and headers with no value. Keys that canonicalise alike are merged in sorted order.
func canonicalHeader(h http.Header) map[string][]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string][]string, len(h))
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		if volatileHeaders[ck] || len(h[k]) == 0 {
			continue
		}
		out[ck] = append(out[ck], h[k]...)
	}
	return out
}

// diffBody adds the changes from before to after.
func (c *Changes) diffBody(before, after Body) {
	if before.Truncated || after.Truncated {
		c.BodyIncomplete = true
		if before.Size != after.Size || !sameBytes(before, after) {
			c.addWhole(before, after)
		}
		return
	}
	if sameBytes(before, after) {
		return
	}
	bv, bok := decodeJSON(before)
	av, aok := decodeJSON(after)
	if bok && aok {
		c.walk("", bv, av)
		return
	}
	c.addWhole(before, after)
}

// decodeJSON returns the captured bytes of b decoded as one JSON value, numbers as
// json.Number, and false if they are not JSON. The bodies are decoded once rather than
// walked in place (gjson), which would scan a deeply nested value once per level.
// json.Valid also refuses nesting deeper than encoding/json's limit (10000), which
// bounds the recursion of walk.
func decodeJSON(b Body) (any, bool) {
	p, ok := bodyBytes(b)
	if !ok || !json.Valid(p) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	return v, true
}

// bodyBytes returns the captured bytes of b, and false if they cannot be told: an
// unknown encoding or bad base64.
func bodyBytes(b Body) ([]byte, bool) {
	switch b.Encoding {
	case "":
		return []byte(b.Text), true
	case "base64":
		p, err := base64.StdEncoding.DecodeString(b.Text)
		return p, err == nil
	}
	return nil, false
}

// sameBytes reports whether before and after hold the same captured bytes.
func sameBytes(before, after Body) bool {
	if before.Encoding == after.Encoding {
		return before.Text == after.Text
	}
	bp, bok := bodyBytes(before)
	ap, aok := bodyBytes(after)
	return bok && aok && bytes.Equal(bp, ap)
}

// addWhole adds the one change of bodies that are not compared as JSON.
func (c *Changes) addWhole(before, after Body) {
	c.add(BodyChange{Op: OpChanged, Old: marshalValue(diffText(before)), New: marshalValue(diffText(after))})
}

// diffText returns the text of b cut to diffTextLimit bytes, at a rune boundary, or at a
// whole base64 quantum for a base64 body.
func diffText(b Body) string {
	s := b.Text
	if len(s) <= diffTextLimit {
		return s
	}
	n := diffTextLimit
	if b.Encoding == "base64" {
		return s[:n-n%4]
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// marshalValue returns v, a string or a value decoded by decodeJSON, as compact JSON.
func marshalValue(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Such values always encode: strings (invalid UTF-8 becomes U+FFFD), and what
	// encoding/json decoded, whose numbers are valid json.Numbers.
	_ = enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// add appends ch unless Body is full, in which case it marks the list truncated.
func (c *Changes) add(ch BodyChange) {
	if len(c.Body) >= maxBodyChanges {
		c.Truncated = true
		return
	}
	c.Body = append(c.Body, ch)
}

// walk adds the differences between the JSON values b and a, found at path.
func (c *Changes) walk(path string, b, a any) {
	if c.Truncated {
		return
	}
	same := false
	switch bv := b.(type) {
	case map[string]any:
		if av, ok := a.(map[string]any); ok {
			c.walkObject(path, bv, av)
			return
		}
	case []any:
		if av, ok := a.([]any); ok {
			c.walkArray(path, bv, av)
			return
		}
	case json.Number:
		av, ok := a.(json.Number)
		same = ok && numbersEqual(string(bv), string(av))
	default: // string, bool, nil
		same = b == a
	}
	if !same {
		c.add(BodyChange{Path: path, Op: OpChanged, Old: marshalValue(b), New: marshalValue(a)})
	}
}

func (c *Changes) walkObject(path string, b, a map[string]any) {
	keys := make([]string, 0, len(b)+len(a))
	for k := range b {
		keys = append(keys, k)
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if c.Truncated {
			return
		}
		p := childPath(path, gjson.Escape(k))
		bv, inB := b[k]
		av, inA := a[k]
		switch {
		case !inA:
			c.add(BodyChange{Path: p, Op: OpRemoved, Old: marshalValue(bv)})
		case !inB:
			c.add(BodyChange{Path: p, Op: OpAdded, New: marshalValue(av)})
		default:
			c.walk(p, bv, av)
		}
	}
}

func (c *Changes) walkArray(path string, b, a []any) {
	for i := 0; i < max(len(b), len(a)) && !c.Truncated; i++ {
		p := childPath(path, strconv.Itoa(i))
		switch {
		case i >= len(a):
			c.add(BodyChange{Path: p, Op: OpRemoved, Old: marshalValue(b[i])})
		case i >= len(b):
			c.add(BodyChange{Path: p, Op: OpAdded, New: marshalValue(a[i])})
		default:
			c.walk(p, b[i], a[i])
		}
	}
}

func childPath(path, seg string) string {
	if path == "" {
		return seg
	}
	return path + "." + seg
}

// numbersEqual reports whether the JSON numbers x and y are equal as Diff describes.
func numbersEqual(x, y string) bool {
	if x == y {
		return true
	}
	if isJSONInteger(x) && isJSONInteger(y) {
		// JSON has one spelling per integer, but for the sign of zero.
		return strings.TrimPrefix(x, "-") == "0" && strings.TrimPrefix(y, "-") == "0"
	}
	fx, errx := strconv.ParseFloat(x, 64)
	fy, erry := strconv.ParseFloat(y, 64)
	// Out of float64's range both would be ±Inf: compare as written, which already differs.
	return errx == nil && erry == nil && fx == fy
}

func isJSONInteger(s string) bool {
	return !strings.ContainsAny(s, ".eE")
}
