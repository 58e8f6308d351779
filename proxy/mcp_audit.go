package proxy

import (
	"net/http"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/mcp"
	"github.com/keyholehq/keyhole/recorder"
)

// mcpRecord is the MCP part of the record of a request on an mcp route, nil on other
// routes: the JSON-RPC method, what it acts on, its id and the session. The arguments are
// in the recorded body, redacted as every body is.
func mcpRecord(r *http.Request, info *reqInfo) *recorder.MCP {
	m := info.mcp
	if m == nil {
		return nil
	}
	return &recorder.MCP{Method: m.method, Name: m.name, ID: string(m.id), Session: r.Header.Get("Mcp-Session-Id")}
}

// mcpMethods are the method labels of keyhole_mcp_requests_total: the methods a client
// sends in the MCP specification (2025-11-25); any other is counted as other, so a client
// cannot grow the label set.
var mcpMethods = map[string]bool{
	"initialize": true, "ping": true, "tools/list": true, "tools/call": true,
	"prompts/list": true, "prompts/get": true, "resources/list": true, "resources/templates/list": true,
	"resources/read": true, "resources/subscribe": true, "resources/unsubscribe": true,
	"completion/complete": true, "logging/setLevel": true,
	"tasks/get": true, "tasks/result": true, "tasks/list": true, "tasks/cancel": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true, "notifications/tasks/status": true,
}

// toolLabel is the tool label of a tools/call: the name of the mcp.tools entry that
// decided it (a config name, a glob included), other when none names the tool.
func toolLabel(m *mcp.Message, d mcp.Decision) string {
	if m.Method != mcp.MethodToolsCall {
		return ""
	}
	if d.Entry == "" {
		return "other"
	}
	return d.Entry
}

// mcpMethodLabel is the method label of a request on an mcp route.
func mcpMethodLabel(r *http.Request, st *mcpState) string {
	switch {
	case r.Method != http.MethodPost:
		if r.Method == http.MethodGet || r.Method == http.MethodDelete {
			return r.Method
		}
		return "other"
	case st.method == "" && st.id != nil:
		return "response" // to a request of the server (elicitation, sampling, roots)
	case st.method == "":
		return "invalid" // refused before it could be read as a JSON-RPC message
	case mcpMethods[st.method]:
		return st.method
	}
	return "other"
}

// countMCP adds a request of an mcp route to keyhole_mcp_requests_total.
func (g *Gateway) countMCP(r *http.Request, route string, info *reqInfo) {
	if info.mcp == nil {
		return
	}
	g.metrics.MCPRequests.WithLabelValues(route, mcpMethodLabel(r, info.mcp), info.mcp.tool, info.decision).Inc()
}

// initMCPMetrics starts the tools/call series of every tool entry of an mcp route at zero,
// so a first refusal is a rate, not a new series.
func (g *Gateway) initMCPMetrics(r *config.Route) {
	names := []string{"other"}
	for _, t := range r.MCP.Tools {
		names = append(names, t.Name)
	}
	for _, n := range names {
		for _, d := range []string{labelAllowed, labelForbidden, labelDenied} {
			g.metrics.MCPRequests.WithLabelValues(r.Name, mcp.MethodToolsCall, n, d)
		}
	}
}
