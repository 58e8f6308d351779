package mcp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// JSON-RPC error codes of the gateway's refusals of methods other than tools/call,
// which is refused with a CallToolResult instead (ToolRefusal).
const (
	// CodeMethodNotFound (JSON-RPC's own) answers a method mcp.methods does not enable:
	// to the client, the server does not offer it.
	CodeMethodNotFound = -32601
	// CodeResourceNotFound (MCP's) answers a resource the policy does not list.
	CodeResourceNotFound = -32002
	// CodeInvalidParams (JSON-RPC's) answers a prompt the policy does not list, as a
	// server answers an unknown prompt.
	CodeInvalidParams = -32602
	// CodeRefused answers a listed resource or prompt the caller may not use (the
	// Keyhole codes forbidden and denied).
	CodeRefused = -32003
	// CodeApprovalRequired answers a call that waits for a human's approval.
	CodeApprovalRequired = -32004
	// CodeHeaderMismatch (MCP 2026-07-28's) answers an Mcp-Method or Mcp-Name header
	// that differs from the body.
	CodeHeaderMismatch = -32020
)

// ErrorCode returns the JSON-RPC error code that refuses m with decision d.
func ErrorCode(m *Message, d Decision) int {
	switch d.Effect {
	case Approval:
		return CodeApprovalRequired
	case Hidden:
		switch m.Method {
		case MethodResourcesRead, MethodResourcesSubscribe, MethodResourcesUnsubscribe:
			return CodeResourceNotFound
		case MethodPromptsGet, MethodToolsCall:
			return CodeInvalidParams
		}
		return CodeMethodNotFound
	}
	return CodeRefused
}

// ErrorMessage returns a JSON-RPC error response to id with code, message and data
// (Keyhole's error JSON, raw; nil for none).
func ErrorMessage(id json.RawMessage, code int, message string, data json.RawMessage) []byte {
	type rpcError struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data,omitempty"`
	}
	if id == nil {
		id = json.RawMessage("null") // JSON-RPC: the id could not be read
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, rpcError{code, message, data}})
	return b
}

// ToolRefusal returns the answer to a refused tools/call with id: a CallToolResult with
// isError set, so an MCP client hands text to its model instead of throwing a transport
// error, and Keyhole's error JSON (raw) in _meta.keyhole for programs.
func ToolRefusal(id json.RawMessage, text string, keyhole json.RawMessage) []byte {
	type content struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	type result struct {
		Content []content `json:"content"`
		IsError bool      `json:"isError"`
		Meta    struct {
			Keyhole json.RawMessage `json:"keyhole"`
		} `json:"_meta"`
	}
	r := result{Content: []content{{"text", text}}, IsError: true}
	r.Meta.Keyhole = keyhole
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  result          `json:"result"`
	}{"2.0", id, r})
	return b
}

// RefusalText is what the model reads when m was refused with d: what was refused, why,
// that nothing was done, and the request id to quote.
func RefusalText(m *Message, d Decision, requestID string) string {
	what := m.Method
	if m.Name != "" {
		what += " " + m.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Keyhole refused %s: %s. Nothing was done. ", what, d.Reason)
	switch d.Effect {
	case Hidden:
		b.WriteString("It is not available to you; do not retry it. ")
	case Forbid:
		b.WriteString("Your credentials do not allow it; retrying will not help unless your access changes. ")
	case Deny:
		b.WriteString("The gateway's policy never allows it; do not retry it. ")
	}
	fmt.Fprintf(&b, "Request id: %s.", requestID)
	return b.String()
}

// ApprovalText is what the model reads when a call waits for approval: who must
// approve, the approval id, when to call again, and that nothing was done yet.
func ApprovalText(m *Message, approvers, approvalID, requestID string, retry time.Duration) string {
	return fmt.Sprintf("Keyhole is holding %s %s for approval by %s (approval id %s). Nothing was done. "+
		"Once it is approved, make the same call again with the same arguments, no sooner than %s from now; "+
		"it will then run exactly once. Request id: %s.", m.Method, m.Name, approvers, approvalID, retry.Round(time.Second), requestID)
}

// CheckHeaders checks the Mcp-Method and Mcp-Name headers (MCP 2026-07-28) against m:
// each that is present must appear once and equal the body's method and name (tool or
// prompt name, resource uri). A server that dispatches on a header would otherwise run
// what the gateway never judged. The error is a *ParseError of CodeHeaderMismatch.
func CheckHeaders(h http.Header, m *Message) error {
	for _, c := range []struct{ header, body string }{{"Mcp-Method", m.Method}, {"Mcp-Name", m.Name}} {
		vs := h.Values(c.header)
		if len(vs) == 0 {
			continue
		}
		if len(vs) != 1 || c.body == "" || vs[0] != c.body {
			return &ParseError{Code: CodeHeaderMismatch, Msg: c.header + " header does not match the JSON-RPC body"}
		}
	}
	return nil
}
