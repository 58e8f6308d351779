package mcp

import (
	"encoding/json"
	"fmt"
)

// listShape names, for a list method, the result member holding the list and the
// member of each element that the policy matches.
type listShape struct{ method, list, key string }

// listShapes are the list methods whose answers the filters narrow, in a fixed order.
var listShapes = []listShape{
	{MethodToolsList, "tools", "name"},
	{MethodPromptsList, "prompts", "name"},
	{MethodResourcesList, "resources", "uri"},
	{MethodResourceTemplatesList, "resourceTemplates", "uriTemplate"},
}

func shapeOf(method string) (listShape, bool) {
	for _, s := range listShapes {
		if s.method == method {
			return s, true
		}
	}
	return listShape{}, false
}

// IsList reports whether method is a list method whose answers FilterList narrows.
func IsList(method string) bool { _, ok := shapeOf(method); return ok }

// FilterList narrows msg, one JSON-RPC message the server sent while answering a list
// method request, to what the caller may use: elements are removed (never replaced by
// null), every other member (nextCursor, _meta) is kept. A tool is kept when the first
// entry naming it allows the caller, including one that needs approval; resource
// templates are matched by their uriTemplate text against the resource globs. It returns
// msg unchanged when it is not a result (an error, a notification, a server request);
// changed reports whether anything was removed.
//
// Members are matched ignoring case, as Go's encoding/json matches them to a struct's
// fields: a lone "Result", "Tools" or "Name" is read as the member by such a client, so it
// is filtered as the member. Invalid JSON, two keys of an object equal but for case, or a
// list element without its name, is an error: the gateway must not pass what it could not
// filter.
func (p *Policy) FilterList(method string, msg []byte, missing Missing) (out []byte, changed bool, err error) {
	shape, ok := shapeOf(method)
	if !ok {
		return msg, false, nil
	}
	return p.filter(msg, []listShape{shape}, true, missing)
}

// FilterAnyList narrows msg, one JSON-RPC message the server sent where the request it
// answers is unknown to the gateway (the GET stream, which replays earlier answers after a
// reconnection, or the stream of another request), as FilterList would narrow the answer
// of each list method whose list member its result holds: a result with "tools" is
// filtered as a tools/list answer, whatever request it answers. A message without a
// result, or whose result is not an object, holds no list and is returned unchanged; msg
// that is not one strict JSON object, or a list it cannot filter, is an error.
func (p *Policy) FilterAnyList(msg []byte, missing Missing) (out []byte, changed bool, err error) {
	return p.filter(msg, listShapes, false, missing)
}

// filter narrows the lists of shapes in msg's result. With answer, msg is known to answer
// a list method: its result must be an object, and a missing list becomes an empty one.
func (p *Policy) filter(msg []byte, shapes []listShape, answer bool, missing Missing) ([]byte, bool, error) {
	what := "list"
	if answer {
		what = shapes[0].method
	}
	top, err := strictObject(msg)
	if err != nil {
		return nil, false, fmt.Errorf("mcp: %s answer: %w", what, err)
	}
	rk, ok := keyFold(top, "result")
	if !ok {
		return msg, false, nil
	}
	var result map[string]json.RawMessage
	if err := json.Unmarshal(top[rk], &result); err != nil || result == nil {
		if !answer {
			return msg, false, nil // no object, so no list a client could read
		}
		return nil, false, fmt.Errorf("mcp: %s answer: result is not an object", what)
	}
	changed := false
	for _, shape := range shapes {
		lk, ok := keyFold(result, shape.list)
		if !ok && !answer {
			continue
		}
		if !ok {
			lk = shape.list // an answer without its list gets an empty one, as the schema requires
		}
		kept, c, err := p.filterItems(shape, result[lk], missing)
		if err != nil {
			return nil, false, err
		}
		if c {
			result[lk], changed = kept, true
		}
	}
	if !changed {
		return msg, false, nil
	}
	if top[rk], err = json.Marshal(result); err != nil {
		return nil, false, err
	}
	out, err := json.Marshal(top)
	return out, true, err
}

// filterItems returns the list raw of a shape's answer with the elements the caller may
// not use removed, and whether it changed; an absent or null list becomes [].
func (p *Policy) filterItems(shape listShape, raw json.RawMessage, missing Missing) (json.RawMessage, bool, error) {
	var items []json.RawMessage
	if raw != nil {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, false, fmt.Errorf("mcp: %s answer: %s is not a list", shape.method, shape.list)
		}
	}
	entries := p.tools
	switch shape.method {
	case MethodPromptsList:
		entries = p.prompts
	case MethodResourcesList, MethodResourceTemplatesList:
		entries = p.resources
	}
	kept := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		var el map[string]json.RawMessage
		var name string
		if err := json.Unmarshal(it, &el); err != nil {
			return nil, false, fmt.Errorf("mcp: %s answer: an element is not an object", shape.method)
		}
		k, ok := keyFold(el, shape.key)
		if !ok || json.Unmarshal(el[k], &name) != nil {
			return nil, false, fmt.Errorf("mcp: %s answer: an element has no %s", shape.method, shape.key)
		}
		if visible(entries, name, missing) {
			kept = append(kept, it)
		}
	}
	if len(kept) == len(items) && raw != nil && string(raw) != "null" {
		return raw, false, nil
	}
	out, err := json.Marshal(kept)
	return out, true, err
}

// keyFold returns the key of obj equal to name ignoring case, as encoding/json matches a
// key to a struct field. strictObject refused objects with two such keys, so there is at
// most one.
func keyFold(obj map[string]json.RawMessage, name string) (string, bool) {
	if _, ok := obj[name]; ok {
		return name, true
	}
	f := foldKey(name)
	for k := range obj {
		if foldKey(k) == f {
			return k, true
		}
	}
	return "", false
}
