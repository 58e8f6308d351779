package mcp

import (
	"encoding/json"
	"fmt"
)

// listShape names, for a list method, the result member holding the list and the
// member of each element that the policy matches.
var listShape = map[string]struct{ list, key string }{
	MethodToolsList:             {"tools", "name"},
	MethodPromptsList:           {"prompts", "name"},
	MethodResourcesList:         {"resources", "uri"},
	MethodResourceTemplatesList: {"resourceTemplates", "uriTemplate"},
}

// IsList reports whether method is a list method whose answers FilterList narrows.
func IsList(method string) bool { _, ok := listShape[method]; return ok }

// FilterList narrows msg, one JSON-RPC message the server sent while answering a list
// method request, to what the caller may use: elements are removed (never replaced by
// null), every other member (nextCursor, _meta) is kept. A tool is kept when the first
// entry naming it allows the caller, including one that needs approval; resource
// templates are matched by their uriTemplate text against the resource globs. It returns
// msg unchanged when it is not a result (an error, a notification, a server request);
// changed reports whether anything was removed. Invalid JSON, or a list element without
// its name, is an error: the gateway must not pass what it could not filter.
func (p *Policy) FilterList(method string, msg []byte, missing Missing) (out []byte, changed bool, err error) {
	shape, ok := listShape[method]
	if !ok {
		return msg, false, nil
	}
	top, err := strictObject(msg)
	if err != nil {
		return nil, false, fmt.Errorf("mcp: %s answer: %w", method, err)
	}
	raw, ok := top["result"]
	if !ok {
		return msg, false, nil
	}
	var result map[string]json.RawMessage
	if err := json.Unmarshal(raw, &result); err != nil || result == nil {
		return nil, false, fmt.Errorf("mcp: %s answer: result is not an object", method)
	}
	var items []json.RawMessage
	if v, ok := result[shape.list]; ok {
		if err := json.Unmarshal(v, &items); err != nil {
			return nil, false, fmt.Errorf("mcp: %s answer: %s is not a list", method, shape.list)
		}
	}
	entries := p.tools
	switch method {
	case MethodPromptsList:
		entries = p.prompts
	case MethodResourcesList, MethodResourceTemplatesList:
		entries = p.resources
	}
	kept := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		var el map[string]json.RawMessage
		var name string
		if err := json.Unmarshal(it, &el); err != nil || json.Unmarshal(el[shape.key], &name) != nil {
			return nil, false, fmt.Errorf("mcp: %s answer: an element has no %s", method, shape.key)
		}
		if visible(entries, name, missing) {
			kept = append(kept, it)
		}
	}
	if len(kept) == len(items) && result[shape.list] != nil && string(result[shape.list]) != "null" {
		return msg, false, nil
	}
	if result[shape.list], err = json.Marshal(kept); err != nil {
		return nil, false, err
	}
	if top["result"], err = json.Marshal(result); err != nil {
		return nil, false, err
	}
	out, err = json.Marshal(top)
	return out, true, err
}
