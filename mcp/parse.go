// Package mcp judges Model Context Protocol traffic (Streamable HTTP, JSON-RPC 2.0) for a
// route that protects one MCP server: it parses one POST body strictly, decides a tool call,
// resource read or prompt against the route's compiled policy, filters list answers down to
// what the caller may use, and builds the refusals an MCP client shows its model.
//
// It is pure: no I/O, no logging, no clock. Who the caller is stays outside: Judge and the
// filters take a function that reports what a caller lacks for a config.Allow.
package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Kind is what a JSON-RPC message is.
type Kind uint8

// Kinds of message a client may POST.
const (
	Request      Kind = iota + 1 // has a method and an id: the server answers it
	Notification                 // has a method and no id
	Response                     // has an id and a result or error: the answer to a server's request
)

// String returns "request", "notification" or "response".
func (k Kind) String() string {
	switch k {
	case Request:
		return "request"
	case Notification:
		return "notification"
	case Response:
		return "response"
	}
	return "unknown"
}

// Message is one parsed client-to-server JSON-RPC message.
type Message struct {
	Kind Kind
	// ID is the id as sent (a JSON string or number, raw), nil for a notification.
	ID json.RawMessage
	// Method is the JSON-RPC method, "" for a response.
	Method string
	// Name is what the method acts on: params.name of tools/call and prompts/get,
	// params.uri of resources/read, resources/subscribe and resources/unsubscribe; "" otherwise.
	Name string
	// Arguments is params.arguments as sent (a JSON object), nil when absent.
	Arguments json.RawMessage

	args map[string]any // Arguments decoded with UseNumber, for when.arguments
}

// ParseError is a body that is not one strict JSON-RPC message. The gateway answers it
// with HTTP 400 and a JSON-RPC error of Code.
type ParseError struct {
	Code int // CodeParseError or CodeInvalidRequest
	Msg  string
}

func (e *ParseError) Error() string { return "mcp: " + e.Msg }

// JSON-RPC 2.0 error codes of a body the gateway cannot judge.
const (
	CodeParseError     = -32700 // not strict JSON
	CodeInvalidRequest = -32600 // JSON, but not one JSON-RPC message the gateway accepts
)

// batchesRemoved is the first protocol revision without JSON-RPC batches.
const batchesRemoved = "2025-06-18"

// maxDepth bounds nesting, as the route rules do: deeper documents are refused rather
// than judged by a parser that a backend with another limit would read differently.
const maxDepth = 512

// Parse parses body, one Streamable HTTP POST, as a JSON-RPC message. version is the
// request's MCP-Protocol-Version header ("" when absent).
//
// It is strict where a lenient server could read what the gateway did not judge: the body
// must be one JSON object in UTF-8, with no two keys of any object equal after case
// folding (Go's encoding/json matches keys case-insensitively and keeps the last, a
// JavaScript server keeps the exact key: {"method":"ping","Method":"tools/call"} would be
// two different calls), no keys beyond the JSON-RPC ones at the top, "jsonrpc":"2.0", and
// params an object. A batch (an array) is refused for every version: from 2025-06-18 the
// protocol forbids it, and before that the gateway does not judge batch elements one by one.
func Parse(body []byte, version string) (*Message, error) {
	top, err := strictObject(body)
	if err != nil {
		if errors.Is(err, errArray) {
			if version == "" || version >= batchesRemoved {
				return nil, &ParseError{CodeInvalidRequest, "JSON-RPC batches are not part of MCP since " + batchesRemoved}
			}
			return nil, &ParseError{CodeInvalidRequest, "JSON-RPC batches are not accepted by the gateway; send one message per request"}
		}
		return nil, &ParseError{CodeParseError, err.Error()}
	}
	for k := range top {
		switch k {
		case "jsonrpc", "id", "method", "params", "result", "error":
		default:
			return nil, invalid("unknown member %q", k)
		}
	}
	if v, ok := top["jsonrpc"]; !ok || string(v) != `"2.0"` {
		return nil, invalid(`"jsonrpc" must be "2.0"`)
	}
	m := &Message{}
	if id, ok := top["id"]; ok {
		if len(id) == 0 || (id[0] != '"' && id[0] != '-' && (id[0] < '0' || id[0] > '9')) {
			return nil, invalid(`"id" must be a string or a number`)
		}
		m.ID = id
	}
	_, hasResult := top["result"]
	_, hasError := top["error"]
	raw, hasMethod := top["method"]
	switch {
	case hasMethod:
		if hasResult || hasError {
			return nil, invalid("a message with a method has no result or error")
		}
		if err := json.Unmarshal(raw, &m.Method); err != nil || m.Method == "" {
			return nil, invalid(`"method" must be a non-empty string`)
		}
		m.Kind = Notification
		if m.ID != nil {
			m.Kind = Request
		}
	case hasResult != hasError && m.ID != nil:
		if _, ok := top["params"]; ok {
			return nil, invalid("a response has no params")
		}
		m.Kind = Response
		return m, nil
	default:
		return nil, invalid("not a request, notification or response")
	}
	params, hasParams := top["params"]
	if !hasParams {
		if nameKey(m.Method) != "" {
			return nil, invalid("%s needs params", m.Method)
		}
		return m, nil
	}
	if len(params) == 0 || params[0] != '{' {
		return nil, invalid(`"params" must be an object`)
	}
	var p map[string]json.RawMessage
	if err := json.Unmarshal(params, &p); err != nil {
		return nil, invalid(`"params" must be an object`)
	}
	for k := range p {
		for _, known := range paramsMembers {
			if k != known && strings.EqualFold(k, known) {
				// Go's encoding/json would read it as the member the gateway judged absent.
				return nil, invalid("params member %q differs only in case from %q", k, known)
			}
		}
	}
	if key := nameKey(m.Method); key != "" {
		if err := json.Unmarshal(p[key], &m.Name); err != nil || m.Name == "" {
			return nil, invalid("%s needs params.%s, a non-empty string", m.Method, key)
		}
	}
	if a, ok := p["arguments"]; ok && (m.Method == MethodToolsCall || m.Method == MethodPromptsGet) {
		if len(a) == 0 || a[0] != '{' {
			return nil, invalid("params.arguments must be an object")
		}
		d := json.NewDecoder(bytes.NewReader(a))
		d.UseNumber()
		if err := d.Decode(&m.args); err != nil {
			return nil, invalid("params.arguments must be an object")
		}
		m.Arguments = a
	}
	return m, nil
}

// paramsMembers are the params members the gateway reads or binds; a key equal to one
// of them but for case is refused.
var paramsMembers = []string{"name", "uri", "arguments", "_meta"}

func invalid(format string, args ...any) *ParseError {
	return &ParseError{CodeInvalidRequest, fmt.Sprintf(format, args...)}
}

// Methods the policy judges by name.
const (
	MethodInitialize            = "initialize"
	MethodPing                  = "ping"
	MethodToolsCall             = "tools/call"
	MethodToolsList             = "tools/list"
	MethodPromptsGet            = "prompts/get"
	MethodPromptsList           = "prompts/list"
	MethodResourcesRead         = "resources/read"
	MethodResourcesSubscribe    = "resources/subscribe"
	MethodResourcesUnsubscribe  = "resources/unsubscribe"
	MethodResourcesList         = "resources/list"
	MethodResourceTemplatesList = "resources/templates/list"
)

// nameKey returns the params member naming what method acts on, "" for other methods.
func nameKey(method string) string {
	switch method {
	case MethodToolsCall, MethodPromptsGet:
		return "name"
	case MethodResourcesRead, MethodResourcesSubscribe, MethodResourcesUnsubscribe:
		return "uri"
	}
	return ""
}

// IsNotification reports whether method is one of the protocol's notifications.
func IsNotification(method string) bool { return strings.HasPrefix(method, "notifications/") }
