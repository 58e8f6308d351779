package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// CanonicalArguments returns the RFC 8785 (JCS) canonical form of m's params.arguments,
// "{}" when it has none. An approval binds to it rather than to the body, so a retried
// call with a new JSON-RPC id, a new _meta.progressToken or its keys in another order is
// the same call, while any change to an argument is a different one.
func (m *Message) CanonicalArguments() ([]byte, error) {
	if m.Arguments == nil {
		return []byte("{}"), nil
	}
	return Canonical(m.Arguments)
}

// Canonical returns the RFC 8785 canonical form of the JSON value raw: object members
// sorted by the UTF-16 code units of their keys, no insignificant whitespace, strings
// with the minimal escapes, numbers as ECMAScript prints them. A number beyond the
// range of a float64 has no canonical form and is an error.
func Canonical(raw []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical form: %w", err)
	}
	var b []byte
	b, err := appendCanonical(b, v)
	if err != nil {
		return nil, fmt.Errorf("canonical form: %w", err)
	}
	return b, nil
}

func appendCanonical(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendString(b, x), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, errors.New("number " + string(x) + " is out of range")
		}
		return appendNumber(b, f), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendCanonical(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("unexpected %T", v)
}

// compareUTF16 orders strings by their UTF-16 code units, as RFC 8785 §3.2.3 sorts keys.
func compareUTF16(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

// appendString writes s as RFC 8785 §3.2.2.2 does: only '"', '\\' and control characters
// are escaped, the short forms where JSON has one.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if r < 0x20 {
				b = append(b, fmt.Sprintf(`\u%04x`, r)...)
			} else {
				b = append(b, string(r)...)
			}
		}
	}
	return append(b, '"')
}

// appendNumber writes f as ECMAScript's Number.prototype.toString (RFC 8785 §3.2.2.3):
// the shortest digits that round-trip, in plain notation for 1e-6 <= |f| < 1e21, else
// as d.ddde±n.
func appendNumber(b []byte, f float64) []byte {
	if f == 0 {
		return append(b, '0') // -0 too
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	// Shortest round-trip digits and the decimal exponent.
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	n, _ := strconv.Atoi(exp) // f = 0.digits × 10^(n+1)
	k := len(digits)
	n++ // position of the decimal point relative to the digits
	switch {
	case k <= n && n <= 21:
		b = append(b, digits...)
		for range n - k {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		b = append(b, digits[n:]...)
	case -6 < n && n <= 0:
		b = append(b, "0."...)
		for range -n {
			b = append(b, '0')
		}
		b = append(b, digits...)
	default:
		b = append(b, digits[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if n-1 >= 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(n-1), 10)
	}
	return b
}

// CallScope is what an approval of a tools/call covers besides its requester, route, tool
// and arguments: what else of the request changes what the server does. Zero fields add
// nothing.
type CallScope struct {
	// Header holds the request headers the approval binds (approvals.BoundHeaders less
	// TransportHeader): a tenant header sends the same call to another tenant.
	Header http.Header
	// Path is the request's canonical path when the route's pattern matches more than one
	// (/tenants/{t}/mcp), "" otherwise; Query is its raw query.
	Path, Query string
}

// ApprovalDocument returns the JSON an approval of m binds and its approvers read: the
// canonical arguments (CanonicalArguments) when s is zero, so that approvers see just the
// arguments; otherwise the canonical form of
//
//	{"arguments": {...}, "headers": {"X-Tenant": ["acme"]}, "path": "...", "query": "..."}
//
// with only the members s sets. Arguments that are themselves of that shape (an
// "arguments" member and no member but those four) are wrapped too, so that no call binds
// like another with other headers, path or query. A number beyond a float64, or a header,
// path or query that is not UTF-8 (JSON could not show it apart from another), is an error.
func (m *Message) ApprovalDocument(s CallScope) ([]byte, error) {
	args, err := m.CanonicalArguments()
	if err != nil {
		return nil, err
	}
	if len(s.Header) == 0 && s.Path == "" && s.Query == "" && !scopeShaped(m.args) {
		return args, nil
	}
	a := any(map[string]any{})
	if m.args != nil {
		a = m.args
	}
	doc := map[string]any{"arguments": a}
	if len(s.Header) > 0 {
		h := make(map[string]any, len(s.Header))
		for k, vs := range s.Header {
			list := make([]any, len(vs))
			for i, v := range vs {
				if !utf8.ValidString(v) {
					return nil, fmt.Errorf("header %s is not UTF-8", k)
				}
				list[i] = v
			}
			if !utf8.ValidString(k) {
				return nil, errors.New("a header name is not UTF-8")
			}
			h[k] = list
		}
		doc["headers"] = h
	}
	for k, v := range map[string]string{"path": s.Path, "query": s.Query} {
		if v == "" {
			continue
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("the %s is not UTF-8", k)
		}
		doc[k] = v
	}
	b, err := appendCanonical(nil, doc)
	if err != nil {
		return nil, fmt.Errorf("canonical form: %w", err)
	}
	return b, nil
}

// scopeShaped reports whether args look like an ApprovalDocument with a scope.
func scopeShaped(args map[string]any) bool {
	if _, ok := args["arguments"]; !ok {
		return false
	}
	for k := range args {
		switch k {
		case "arguments", "headers", "path", "query":
		default:
			return false
		}
	}
	return true
}

// TransportHeader reports whether name is a header of the Streamable HTTP transport
// itself, which an approval of a call does not bind: Mcp-Session-Id and
// MCP-Protocol-Version change with every connection and Last-Event-ID with every
// reconnection, so binding them would leave no retry able to use an approval; Mcp-Method
// and Mcp-Name must equal the body (the gateway refuses them otherwise), which is bound;
// Content-Type is application/json on every POST, spelt differently by different SDKs.
func TransportHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Mcp-Method", "Mcp-Name", "Content-Type":
		return true
	}
	return false
}
