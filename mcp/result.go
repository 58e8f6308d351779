package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keyholehq/keyhole/jsonscan"
)

// ResultMask is how MaskResult masks the parts of one tools/call answer. The caller binds
// the functions to the called tool's mask rules and the route's detectors, so this package
// needs no masker.
type ResultMask struct {
	// Fields masks one JSON document (structuredContent, or the JSON a text content holds)
	// with the tool's field rules and the route's detectors.
	Fields func(doc []byte) ([]byte, error)
	// Text masks plain text with the route's detectors.
	Text func(text []byte) []byte
	// Other masks any other JSON value of the message (an error, _meta, a resource's uri
	// or blob) with the route's detectors; nil keeps them as they are.
	Other func(v []byte) ([]byte, error)
	// Strict refuses a text content that begins like JSON ('{' or '[') but is not valid
	// JSON, as it must when the tool has field rules: the model reads the fields the rules
	// name in it as well as a parser would, and the rules cannot find them.
	Strict bool
}

// MaskResult masks msg, one JSON-RPC message the server sent while answering a tools/call
// request. The answer itself (a message with no method) gets Fields on
// result.structuredContent and on every result.content[].text (and the text of every
// embedded resource, content[].resource.text) that is a JSON object or array (parsed,
// masked, written back as a JSON string), so that a value is masked alike in all; Text on
// every other such text; Other on everything else. A message with a method
// (a server request or notification on the same stream) gets Other whole. Members keep their
// order and bytes where nothing changed; msg is returned as is when nothing did.
//
// Members are matched as Go's encoding/json matches them to a struct's fields, ignoring
// case: a client decoding with it reads a lone "StructuredContent" or "Text" as the member,
// so the member is masked as such whatever its spelling.
//
// It fails closed: msg that is not one JSON object, a result or content item that is not
// an object, content that is not an array, a member repeated in an object it reads (two
// readers would see different answers), or an error of a mask function is an error.
func MaskResult(msg []byte, rm ResultMask) ([]byte, error) {
	top, err := members(msg)
	if err != nil {
		return nil, fmt.Errorf("mcp: tools/call answer: %w", err)
	}
	if top.has("method") {
		return other(msg, rm)
	}
	out, _, err := top.rewrite(msg, func(m *member) ([]byte, error) {
		switch {
		case m.is("jsonrpc"), m.is("id"):
			return nil, nil
		case m.is("result"):
			return maskCallResult(m.value, rm)
		}
		return other(m.value, rm)
	})
	return out, err
}

func maskCallResult(raw []byte, rm ResultMask) ([]byte, error) {
	res, err := members(raw)
	if err != nil {
		return nil, fmt.Errorf("mcp: tools/call result: %w", err)
	}
	out, _, err := res.rewrite(raw, func(m *member) ([]byte, error) {
		switch {
		case m.is("structuredContent"):
			if bytes.Equal(m.value, []byte("null")) {
				return nil, nil
			}
			v, err := rm.Fields(m.value)
			if err != nil {
				return nil, fmt.Errorf("mcp: tools/call structuredContent: %w", err)
			}
			return v, nil
		case m.is("content"):
			return maskContent(m.value, rm)
		case m.is("isError"):
			return nil, nil
		}
		return other(m.value, rm)
	})
	return out, err
}

func maskContent(raw []byte, rm ResultMask) ([]byte, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New("mcp: tools/call content is not a list")
	}
	changed := false
	for j, it := range items {
		item, err := members(it)
		if err != nil {
			return nil, fmt.Errorf("mcp: tools/call content[%d]: %w", j, err)
		}
		out, itemChanged, err := item.rewrite(it, func(m *member) ([]byte, error) {
			switch {
			case m.is("type"):
				return nil, nil
			case m.is("text") && len(m.value) > 0 && m.value[0] == '"':
				v, err := maskText(m.value, rm)
				if err != nil {
					return nil, fmt.Errorf("mcp: tools/call content[%d].text: %w", j, err)
				}
				return v, nil
			case m.is("resource") && len(m.value) > 0 && m.value[0] == '{':
				// An embedded resource's text is the tool's answer as much as a text
				// content's: JSON in it gets the tool's rules too.
				v, err := maskResource(m.value, rm)
				if err != nil {
					return nil, fmt.Errorf("mcp: tools/call content[%d].resource: %w", j, err)
				}
				return v, nil
			}
			return other(m.value, rm)
		})
		if err != nil {
			return nil, err
		}
		if itemChanged {
			items[j], changed = out, true
		}
	}
	if !changed {
		return raw, nil
	}
	b := []byte{'['}
	for j, it := range items {
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']'), nil
}

// maskResource masks an embedded resource's contents: its text as a content's text, the
// rest (uri, blob, _meta) with Other.
func maskResource(raw []byte, rm ResultMask) ([]byte, error) {
	res, err := members(raw)
	if err != nil {
		return nil, err
	}
	out, _, err := res.rewrite(raw, func(m *member) ([]byte, error) {
		if m.is("text") && len(m.value) > 0 && m.value[0] == '"' {
			return maskText(m.value, rm)
		}
		return other(m.value, rm)
	})
	return out, err
}

// maskText masks the JSON string raw: as a JSON document when its text is a JSON object or
// array, as plain text otherwise.
func maskText(raw []byte, rm ResultMask) ([]byte, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, errors.New("not a JSON string")
	}
	text := []byte(s)
	var out []byte
	switch t := bytes.TrimLeft(text, " \t\r\n"); {
	case len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(text):
		v, err := rm.Fields(text)
		if err != nil {
			return nil, err
		}
		out = v
	case len(t) > 0 && (t[0] == '{' || t[0] == '[') && rm.Strict:
		return nil, errors.New("text looks like JSON but is not valid JSON, so the tool's mask rules cannot be applied")
	default:
		out = rm.Text(text)
	}
	if bytes.Equal(out, text) {
		return raw, nil
	}
	return marshalString(out)
}

// marshalString writes b as a JSON string without HTML escaping, which would change text
// the client shows.
func marshalString(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(string(b)); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func other(v []byte, rm ResultMask) ([]byte, error) {
	if rm.Other == nil {
		return v, nil
	}
	return rm.Other(v)
}

// member is one member of a JSON object, as written.
type member struct {
	folded string // the unescaped key, case folded (jsonscan.AppendFold)
	rawKey json.RawMessage
	value  json.RawMessage
}

// is reports whether m is the member name as encoding/json matches a key to a struct
// field: ignoring case.
func (m *member) is(name string) bool { return m.folded == foldKey(name) }

// foldKey returns key case folded, as members and strictObject compare keys.
func foldKey(key string) string { return string(jsonscan.AppendFold(nil, []byte(key))) }

// object is a JSON object's members in order.
type object []member

// has reports whether o has the member key, ignoring case (member.is).
func (o object) has(key string) bool {
	for i := range o {
		if o[i].is(key) {
			return true
		}
	}
	return false
}

// rewrite replaces each member's value with what fn returns for it (nil: keep it) and
// returns o encoded, or raw, which o was read from, when nothing changed; and whether
// anything did. fn's first error is returned.
func (o object) rewrite(raw []byte, fn func(m *member) ([]byte, error)) ([]byte, bool, error) {
	changed := false
	for i := range o {
		m := &o[i]
		v, err := fn(m)
		if err != nil {
			return nil, false, err
		}
		if v != nil && !bytes.Equal(m.value, v) {
			m.value, changed = v, true
		}
	}
	if !changed {
		return raw, false, nil
	}
	return o.encode(), true, nil
}

func (o object) encode() []byte {
	b := []byte{'{'}
	for i, m := range o {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, m.rawKey...), ':'), m.value...)
	}
	return append(b, '}')
}

// members reads raw, one JSON object, into its members in order. Two keys equal after case
// folding are refused: readers that keep the first, the last, or match keys
// case-insensitively (Go's encoding/json into a struct) would read different answers.
func members(raw []byte) (object, error) {
	var s jsonscan.Scanner
	s.Reset(raw, jsonscan.Options{MaxDepth: maxDepth, AllowDuplicateKeys: true})
	if tok, err := s.Next(); err != nil || tok.Kind != jsonscan.ObjectStart {
		return nil, errors.New("not a JSON object")
	}
	var o object
	seen := map[string]bool{}
	for {
		tok, err := s.Next()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		if tok.Kind == jsonscan.ObjectEnd {
			break
		}
		folded := foldKey(string(s.Key()))
		if seen[folded] {
			return nil, fmt.Errorf("a key is repeated (keys are compared ignoring case)")
		}
		seen[folded] = true
		rawKey := tok.Raw(raw)
		v, err := s.Next()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		end := v.End
		if v.Kind == jsonscan.ObjectStart || v.Kind == jsonscan.ArrayStart {
			// The container's end is the next token at its own depth.
			for {
				t, err := s.Next()
				if err != nil {
					return nil, fmt.Errorf("not JSON: %w", err)
				}
				if t.Depth == v.Depth && (t.Kind == jsonscan.ObjectEnd || t.Kind == jsonscan.ArrayEnd) {
					end = t.End
					break
				}
			}
		}
		o = append(o, member{folded: folded, rawKey: rawKey, value: raw[v.Start:end]})
	}
	if tok, err := s.Next(); err != nil || tok.Kind != jsonscan.End {
		return nil, errors.New("more than one JSON value")
	}
	return o, nil
}
