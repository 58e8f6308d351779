package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/mcp"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/rules"
)

// policy is a loaded config as `keyhole check` and `keyhole test` judge it: the route
// table and the compiled mcp block of each mcp route, by route name.
type policy struct {
	table *rules.Table
	mcp   map[string]*proxy.MCPPolicy
}

func newPolicy(cfg *config.Config, table *rules.Table) (*policy, error) {
	m, err := proxy.CompileMCP(cfg)
	if err != nil {
		return nil, err
	}
	return &policy{table: table, mcp: m}, nil
}

// policyMCP is the JSON-RPC message a case (or `keyhole check --mcp-*`) posts to an mcp
// route: a tools/call of Tool, or Method on Name.
type policyMCP struct {
	// Tool is the tool of a tools/call.
	Tool string `yaml:"tool"`
	// Method is another JSON-RPC method (resources/read, prompts/get, completion/complete, ...).
	Method string `yaml:"method"`
	// Name is what Method acts on: the prompt's name, the resource's uri.
	Name string `yaml:"name"`
	// Arguments are params.arguments of tools/call and prompts/get; a tools/call without
	// them sends {}.
	Arguments map[string]any `yaml:"arguments"`

	rawArgs json.RawMessage // --mcp-args, as given
}

// body returns the JSON-RPC request the message describes, as an MCP client would POST it.
func (m *policyMCP) body() ([]byte, error) {
	method, name := m.Method, m.Name
	switch {
	case m.Tool != "" && method != "" && method != mcp.MethodToolsCall:
		return nil, fmt.Errorf("a tool is called with tools/call, not %s", method)
	case m.Tool != "" && name != "" && name != m.Tool:
		return nil, fmt.Errorf("give the tool's name once (tool %q, name %q)", m.Tool, name)
	case m.Tool != "":
		method, name = mcp.MethodToolsCall, m.Tool
	case method == "":
		return nil, fmt.Errorf("name a tool, or a method")
	}
	params := map[string]any{}
	if name != "" {
		key := "name"
		if strings.HasPrefix(method, "resources/") {
			key = "uri"
		}
		params[key] = name
	}
	switch {
	case m.rawArgs != nil:
		params["arguments"] = m.rawArgs
	case m.Arguments != nil:
		params["arguments"] = m.Arguments
	case method == mcp.MethodToolsCall:
		params["arguments"] = map[string]any{}
	}
	msg := map[string]any{"jsonrpc": "2.0", "id": 1, "method": method}
	if len(params) > 0 {
		msg["params"] = params
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	return b, nil
}

// mcpVerdict is what the gateway does with the JSON-RPC message of a case.
type mcpVerdict struct {
	msg *mcp.Message // nil when the body could not be read
	d   mcp.Decision
	// entry names the policy entry that decided ("mcp.tools[2] \"delete_customer\""), or none.
	entry string
	// answer is what the MCP client receives.
	answer string
}

// judgeMCP judges the case's JSON-RPC message on the mcp route that route verdict v
// allowed, with the gateway's own code (proxy.MCPPolicy).
func (p *policy) judgeMCP(v verdict, c policyCase, body []byte) (verdict, error) {
	r := v.decision.Route
	if r == nil || r.Guard {
		return v, nil // refused before any route: the message is never read
	}
	mp := p.mcp[r.Name]
	if mp == nil {
		return v, fmt.Errorf("route %s is not an mcp route: an MCP message goes to the path of one (match.path of a route with mcp:)", r.Name)
	}
	if v.decision.Effect != rules.Allow {
		v.mcp = &mcpVerdict{entry: "none: the route refused the caller, so the message is not judged",
			answer: "the route's HTTP refusal"}
		return v, nil
	}
	h := http.Header{}
	for k, val := range c.Request.Headers {
		h.Set(k, val)
	}
	proxy.PrepareHeaders(h)
	m, d, err := mp.Judge(body, h, c.Identity.principal())
	var pe *mcp.ParseError
	if errors.As(err, &pe) {
		v.effect, v.status, v.code, v.reason = "bad_request", http.StatusBadRequest, "bad_request", pe.Msg
		v.mcp = &mcpVerdict{msg: m, entry: "none", answer: fmt.Sprintf("JSON-RPC error %d (HTTP 400)", pe.Code)}
		return v, nil
	}
	if err != nil {
		return v, err
	}
	mv := &mcpVerdict{msg: m, d: d, entry: entryName(m, d)}
	v.status, v.code, v.reason = http.StatusOK, "", d.Reason
	switch d.Effect {
	case mcp.Allow:
		v.effect, mv.answer = "allow", "forwarded to the MCP server"
	case mcp.Approval:
		v.effect, v.code = "approval", "approval_pending"
		v.reason = fmt.Sprintf("%s; it is held until approved by %s (hold %s, ttl %s)", d.Reason,
			approversText(d.Approval), time.Duration(d.Approval.Hold), time.Duration(d.Approval.TTL))
		mv.answer = "held; a CallToolResult with isError (HTTP 200) naming the approvers and the approval id " +
			"until approved, then the same call (any id, any session) is forwarded once"
	default:
		v.effect, v.code = d.Effect.String(), d.Effect.String()
		if m.Method == mcp.MethodToolsCall {
			mv.answer = fmt.Sprintf("a CallToolResult with isError (HTTP 200), _meta.keyhole.error %q", v.code)
		} else {
			mv.answer = fmt.Sprintf("JSON-RPC error %d (HTTP 200), data.error %q", mcp.ErrorCode(m, d), v.code)
		}
	}
	v.mcp = mv
	return v, nil
}

// entryName names the mcp entry that decided m, as the config spells it.
func entryName(m *mcp.Message, d mcp.Decision) string {
	if d.Entry == "" {
		return "none"
	}
	list := "methods"
	switch m.Method {
	case mcp.MethodToolsCall:
		list = "tools"
	case mcp.MethodPromptsGet:
		list = "prompts"
	case mcp.MethodResourcesRead, mcp.MethodResourcesSubscribe, mcp.MethodResourcesUnsubscribe:
		list = "resources"
	}
	if list == "methods" {
		return fmt.Sprintf("mcp.methods %q", d.Entry)
	}
	return fmt.Sprintf("mcp.%s[%d] %q", list, d.Index, d.Entry)
}

// mcpFlags describes the message of `keyhole check --mcp-tool NAME [--mcp-args FILE]` or
// `--mcp-method M --mcp-name N` (one of tool and method is set); argsFile "-" is read
// from stdin.
func mcpFlags(tool, method, name, argsFile string, stdin io.Reader) (*policyMCP, error) {
	m := &policyMCP{Tool: tool, Method: method, Name: name}
	if argsFile == "" {
		return m, nil
	}
	var b []byte
	var err error
	if argsFile == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(argsFile)
	}
	if err != nil {
		return nil, fmt.Errorf("--mcp-args: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return nil, fmt.Errorf("--mcp-args %s: want a JSON object", argsFile)
	}
	m.rawArgs = b
	return m, nil
}
