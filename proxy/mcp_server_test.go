package proxy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMCPServerInitiatedTrafficThroughTheGateway runs what the server starts through a
// gateway with the Go SDK on both sides: an elicitation the server asks for in the middle
// of a tool call, answered by the client (a JSON-RPC response, no method); the session id
// the server issues reaching the client and coming back on every later request; and a
// tool added at run time, announced by notifications/tools/list_changed, whose follow-up
// tools/list is filtered like any other.
func TestMCPServerInitiatedTrafficThroughTheGateway(t *testing.T) {
	h := newHarness(t)
	srv := sdk.NewServer(&sdk.Implementation{Name: "crm", Version: "1"}, nil)
	type args struct {
		ID int `json:"id"`
	}
	sdk.AddTool(srv, &sdk.Tool{Name: "lookup_customer"}, func(ctx context.Context, req *sdk.CallToolRequest, in args) (*sdk.CallToolResult, any, error) {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "found"}}}, nil, nil
	})
	sdk.AddTool(srv, &sdk.Tool{Name: "confirm_delete"}, func(ctx context.Context, req *sdk.CallToolRequest, in args) (*sdk.CallToolResult, any, error) {
		res, err := req.Session.Elicit(ctx, &sdk.ElicitParams{Message: "Delete customer 7?",
			RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"confirm": map[string]any{"type": "boolean"}}}})
		if err != nil {
			return nil, nil, err
		}
		text := "kept"
		if res.Action == "accept" && res.Content["confirm"] == true {
			text = "deleted"
		}
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: text}}}, nil, nil
	})

	var mu sync.Mutex
	var sessionsSeen []string // Mcp-Session-Id of every request after the first
	issued := ""              // the session id the server answered initialize with
	mcpHandler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if id := r.Header.Get("Mcp-Session-Id"); id != "" || issued != "" {
			sessionsSeen = append(sessionsSeen, id)
		}
		mu.Unlock()
		sw := &sessionSpy{ResponseWriter: w, mu: &mu, issued: &issued}
		mcpHandler.ServeHTTP(sw, r)
	}))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm-mcp:
    url: ${MCP_URL}
    timeout: 2s
routes:
  - name: crm-mcp
    match: { methods: [POST, GET, DELETE], path: /crm/mcp }
    upstream: crm-mcp
    allow: { groups: [agents] }
    mcp:
      tools:
        - name: lookup_customer
        - name: confirm_delete
        - name: "export_*"
          allow: { groups: [crm-writers] }
`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	changed := make(chan struct{}, 4)
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, &sdk.ClientOptions{
		ElicitationHandler: func(ctx context.Context, req *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			if req.Params.Message != "Delete customer 7?" {
				t.Errorf("elicitation: got message %q", req.Params.Message)
			}
			return &sdk.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}, nil
		},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { changed <- struct{}{} },
	})
	tok := h.token(t, map[string]any{"sub": "agent-1", "groups": []string{"agents"}})
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
		HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("initialize through the gateway: %v", err)
	}
	defer cs.Close()

	// The elicitation goes out on the tool call's stream; the answer comes back as a POST
	// of a JSON-RPC response, which the gateway passes for a caller the route allows.
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "confirm_delete", Arguments: map[string]any{"id": 7}})
	if err != nil || res.IsError || res.Content[0].(*sdk.TextContent).Text != "deleted" {
		t.Fatalf("confirm_delete with an elicitation: got %+v, %v, want the server to read the client's answer", res, err)
	}

	tools := func() []string {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		var out []string
		for _, tl := range res.Tools {
			out = append(out, tl.Name)
		}
		slices.Sort(out)
		return out
	}
	if got, want := tools(), []string{"confirm_delete", "lookup_customer"}; !slices.Equal(got, want) {
		t.Fatalf("tools/list: got %v, want %v", got, want)
	}

	// Tools added while the session runs: the server says so on the GET stream, and the
	// list the client asks for then shows only what this caller may call.
	for _, name := range []string{"export_customers", "purge_customers", "lookup_orders"} {
		sdk.AddTool(srv, &sdk.Tool{Name: name}, func(ctx context.Context, req *sdk.CallToolRequest, in args) (*sdk.CallToolResult, any, error) {
			return &sdk.CallToolResult{}, nil, nil
		})
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("notifications/tools/list_changed never reached the client through the gateway")
	}
	if got, want := tools(), []string{"confirm_delete", "lookup_customer"}; !slices.Equal(got, want) {
		t.Errorf("tools/list after list_changed: got %v, want %v (export_* needs crm-writers, the rest is unlisted)", got, want)
	}

	mu.Lock()
	defer mu.Unlock()
	if issued == "" || cs.ID() != issued {
		t.Fatalf("session: the server issued %q, the client holds %q: want the same id through the gateway", issued, cs.ID())
	}
	if len(sessionsSeen) < 3 {
		t.Fatalf("the server saw %d requests after initialize, want at least 3", len(sessionsSeen))
	}
	for i, id := range sessionsSeen {
		if id != issued {
			t.Errorf("request %d after initialize reached the server with Mcp-Session-Id %q, want %q", i+1, id, issued)
		}
	}
}

// sessionSpy notes the Mcp-Session-Id a server's answer carries.
type sessionSpy struct {
	http.ResponseWriter
	mu     *sync.Mutex
	issued *string
}

func (s *sessionSpy) WriteHeader(code int) {
	s.note()
	s.ResponseWriter.WriteHeader(code)
}

func (s *sessionSpy) Write(b []byte) (int, error) {
	s.note()
	return s.ResponseWriter.Write(b)
}

func (s *sessionSpy) note() {
	if id := s.Header().Get("Mcp-Session-Id"); id != "" {
		s.mu.Lock()
		if *s.issued == "" {
			*s.issued = id
		}
		s.mu.Unlock()
	}
}

func (s *sessionSpy) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
