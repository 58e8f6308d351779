package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const mcpConfig = `
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
        - name: delete_customer
          allow: { groups: [crm-writers] }
        - { name: "drop_*", deny: "schema changes never go through the gateway" }
`

// mcpServer is an MCP server on the official Go SDK that counts the calls it runs.
type mcpServer struct {
	mu    sync.Mutex
	calls []string
}

func (s *mcpServer) handler(json bool) http.Handler {
	srv := sdk.NewServer(&sdk.Implementation{Name: "crm", Version: "1"}, nil)
	type args struct {
		ID int `json:"id"`
	}
	for _, name := range []string{"lookup_customer", "delete_customer", "drop_table", "wipe_everything"} {
		sdk.AddTool(srv, &sdk.Tool{Name: name, Description: name}, func(ctx context.Context, req *sdk.CallToolRequest, in args) (*sdk.CallToolResult, any, error) {
			s.mu.Lock()
			s.calls = append(s.calls, name)
			s.mu.Unlock()
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: name + " done"}}}, nil, nil
		})
	}
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{JSONResponse: json})
}

func (s *mcpServer) ran() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// bearer adds a token to every request of an MCP client.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func TestMCPRouteWithTheGoSDK(t *testing.T) {
	for _, mode := range []struct {
		name string
		json bool
	}{{"sse answers", false}, {"json answers", true}} {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t)
			server := &mcpServer{}
			up := httptest.NewServer(server.handler(mode.json))
			t.Cleanup(up.Close)
			h.cfgEnv["MCP_URL"] = up.URL
			h.load(t, mcpConfig)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			connect := func(groups ...string) *sdk.ClientSession {
				tok := h.token(t, map[string]any{"sub": "agent-" + strings.Join(groups, "-"), "groups": groups})
				c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
				cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
					HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
				if err != nil {
					t.Fatalf("initialize through the gateway: %v", err)
				}
				return cs
			}
			names := func(cs *sdk.ClientSession) []string {
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

			agent := connect("agents")
			if got, want := names(agent), []string{"lookup_customer"}; !slices.Equal(got, want) {
				t.Errorf("agent's tools/list: got %v, want %v (forbidden, denied and unlisted tools hidden)", got, want)
			}
			writer := connect("agents", "crm-writers")
			if got, want := names(writer), []string{"delete_customer", "lookup_customer"}; !slices.Equal(got, want) {
				t.Errorf("writer's tools/list: got %v, want %v", got, want)
			}

			res, err := agent.CallTool(ctx, &sdk.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"id": 1}})
			if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*sdk.TextContent).Text != "lookup_customer done" {
				t.Fatalf("allowed call: got %+v, %v, want the server's result", res, err)
			}

			for _, c := range []struct{ tool, code, says string }{
				{"drop_table", "denied", "schema changes never go through the gateway"},
				{"delete_customer", "forbidden", "requires group crm-writers"},
				{"wipe_everything", "denied", "not offered"},
			} {
				res, err := agent.CallTool(ctx, &sdk.CallToolParams{Name: c.tool, Arguments: map[string]any{"id": 1}})
				if err != nil {
					t.Fatalf("%s: got error %v, want an isError result the model can read", c.tool, err)
				}
				if !res.IsError || len(res.Content) != 1 {
					t.Fatalf("%s: got %+v, want one text and isError", c.tool, res)
				}
				text := res.Content[0].(*sdk.TextContent).Text
				for _, want := range []string{c.tool, c.says, "Nothing was done", "Request id: "} {
					if !strings.Contains(text, want) {
						t.Errorf("%s: got text %q, want it to say %q", c.tool, text, want)
					}
				}
				var kh struct{ Error, Message, RequestID string }
				b, _ := json.Marshal(res.Meta["keyhole"])
				if err := json.Unmarshal(b, &kh); err != nil || kh.Error != c.code {
					t.Errorf("%s: got _meta.keyhole %s, want error %q", c.tool, b, c.code)
				}
			}
			if got, want := server.ran(), []string{"lookup_customer"}; !slices.Equal(got, want) {
				t.Errorf("the server ran %v, want only %v", got, want)
			}
			if err := agent.Close(); err != nil {
				t.Errorf("closing the session (DELETE): %v", err)
			}
			writer.Close()

			// The true decision is in the log and metrics, with the 200 the client got.
			deadline := time.Now().Add(3 * time.Second)
			for {
				logs := h.logs.String()
				ok := strings.Contains(logs, `"status":200,"decision":"denied"`) && strings.Contains(logs, `"status":200,"decision":"forbidden"`)
				if ok && !strings.Contains(logs, `"decision":"error"`) && strings.Contains(logs, `"method":"DELETE"`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("log lines: got\n%s\nwant refusals at status 200 with their decisions, a DELETE, and no error (closed streams are allowed)", logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestMCPBadMessages(t *testing.T) {
	h := newHarness(t)
	up := httptest.NewServer((&mcpServer{}).handler(true))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, mcpConfig)
	tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})
	accept := http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"}}
	tests := []struct {
		name, body string
		header     map[string]string
		status     int
		code       int
	}{
		{"invalid json", `{"jsonrpc":"2.0",`, nil, 400, -32700},
		{"duplicate key", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, nil, 400, -32700},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, map[string]string{"Mcp-Protocol-Version": "2025-06-18"}, 400, -32600},
		{"header mismatch", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer"}}`,
			map[string]string{"Mcp-Name": "drop_table"}, 400, -32020},
		{"method not offered", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}`, nil, 200, -32601},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := accept.Clone()
			for k, v := range tt.header {
				hdr.Set(k, v)
			}
			resp, b := h.do(t, http.MethodPost, "/crm/mcp", tok, tt.body, hdr)
			var got struct {
				Error struct {
					Code int
					Data struct {
						Error     string
						RequestID string `json:"request_id"`
					}
				}
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			if resp.StatusCode != tt.status || got.Error.Code != tt.code || got.Error.Data.RequestID != resp.Header.Get("X-Request-Id") {
				t.Errorf("got %d %s, want %d with JSON-RPC error %d and the request id in data", resp.StatusCode, b, tt.status, tt.code)
			}
		})
	}
}

func TestMCPClientClosingItsStreamIsAllowed(t *testing.T) {
	h := newHarness(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n"))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, mcpConfig)
	tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/crm/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(h.logs.String(), `"method":"GET"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for the stream: %s", h.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"decision":"allowed"`) || !strings.Contains(logs, `"error":"client_closed"`) || strings.Contains(logs, `"decision":"error"`) {
		t.Errorf("got log %s, want the closed stream allowed with a client_closed mark", logs)
	}
	want := `
# HELP keyhole_requests_total Data-plane requests by route, method, status code and decision.
# TYPE keyhole_requests_total counter
keyhole_requests_total{code="499",decision="allowed",method="GET",route="crm-mcp"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "keyhole_requests_total"); err != nil {
		t.Error(err)
	}
}

// mcpSSE is raw Streamable HTTP through the gateway, for what the SDK client does not
// let a test choose: the protocol revision (2025-11-25, whose servers send priming
// events) and a GET that resumes a stream with Last-Event-ID.
type mcpSSE struct {
	h       *harness
	token   string
	session string
}

func (c *mcpSSE) send(t *testing.T, method, body string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	h := http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"},
		"Mcp-Protocol-Version": {"2025-11-25"}}
	if c.session != "" {
		h.Set("Mcp-Session-Id", c.session)
	}
	for k, vs := range hdr {
		h[k] = vs
	}
	resp, b := c.h.do(t, method, "/crm/mcp", c.token, body, h)
	return resp, string(b)
}

// eventIDs returns the id of every event in an event stream.
func eventIDs(stream string) []string {
	var ids []string
	for _, l := range strings.Split(stream, "\n") {
		if id, ok := strings.CutPrefix(l, "id: "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// toolNames returns the tool names of the tools/list answer in an event stream, and
// whether there was one.
func toolNames(t *testing.T, stream string) ([]string, bool) {
	t.Helper()
	for _, l := range strings.Split(stream, "\n") {
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok || !strings.Contains(data, `"tools"`) {
			continue
		}
		var msg struct {
			Result struct{ Tools []struct{ Name string } }
		}
		if err := json.Unmarshal([]byte(data), &msg); err != nil {
			t.Fatalf("event data %s: %v", data, err)
		}
		var names []string
		for _, tl := range msg.Result.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names, true
	}
	return nil, false
}

// A server on the Go SDK with an event store, at protocol revision 2025-11-25, begins
// each stream with a priming event (an id and empty data) and replays a stream's events
// on a GET with Last-Event-ID: tools/list over SSE answers the filtered list after the
// priming event, and the replay of that answer on the GET stream is filtered too.
func TestMCPPrimingEventsAndReplayedLists(t *testing.T) {
	h := newHarness(t)
	srv := sdk.NewServer(&sdk.Implementation{Name: "crm", Version: "1"}, nil)
	for _, name := range []string{"lookup_customer", "delete_customer", "drop_table", "wipe_everything"} {
		srv.AddTool(&sdk.Tool{Name: name, InputSchema: map[string]any{"type": "object"}},
			func(context.Context, *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
				return &sdk.CallToolResult{}, nil
			})
	}
	up := httptest.NewServer(sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv },
		&sdk.StreamableHTTPOptions{EventStore: sdk.NewMemoryEventStore(nil)}))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, mcpConfig)
	c := &mcpSSE{h: h, token: h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})}

	resp, body := c.send(t, http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	if c.session = resp.Header.Get("Mcp-Session-Id"); resp.StatusCode != 200 || c.session == "" || !strings.Contains(body, `"protocolVersion":"2025-11-25"`) {
		t.Fatalf("initialize = %d %q (session %q), want 200 at 2025-11-25 with a session", resp.StatusCode, body, c.session)
	}
	if resp, body := c.send(t, http.MethodPost, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized = %d %q, want 202", resp.StatusCode, body)
	}

	resp, body = c.send(t, http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
	ids := eventIDs(body)
	got, ok := toolNames(t, body)
	if resp.StatusCode != 200 || len(ids) < 2 || !ok || !slices.Equal(got, []string{"lookup_customer"}) {
		t.Fatalf("tools/list = %d %q, want the priming event's id, then the answer listing only lookup_customer", resp.StatusCode, body)
	}

	// Resuming after the priming event replays the answer on the GET stream.
	resp, body = c.send(t, http.MethodGet, "", http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {ids[0]}})
	got, ok = toolNames(t, body)
	if resp.StatusCode != 200 || !ok || !slices.Equal(got, []string{"lookup_customer"}) {
		t.Errorf("GET resuming after %s = %d %q, want the replayed answer listing only lookup_customer", ids[0], resp.StatusCode, body)
	}
}

// On a stream where the gateway does not know which request an event answers (the GET
// stream, or the stream of a tools/call), a list answer is filtered by the list it holds,
// and an event it cannot read ends the stream rather than passing.
func TestMCPListOnOtherStreams(t *testing.T) {
	events := []struct{ name, ev string }{
		{"list answer", `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"lookup_customer"},{"name":"wipe_everything"}]}}`},
		{"case variant", `{"jsonrpc":"2.0","id":9,"Result":{"Tools":[{"Name":"lookup_customer"},{"Name":"wipe_everything"}]}}`},
		{"not JSON", `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"wipe_everything"}]},}`},
	}
	streams := []struct{ method, body string }{
		{http.MethodGet, ""},
		{http.MethodPost, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup_customer","arguments":{}}}`},
	}
	for _, e := range events {
		for _, st := range streams {
			t.Run(e.name+" "+st.method, func(t *testing.T) {
				h := newHarness(t)
				up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					_, _ = w.Write([]byte("id: 0\ndata: \n\nid: 1\nevent: message\ndata: " + e.ev + "\n\n"))
				}))
				t.Cleanup(up.Close)
				h.cfgEnv["MCP_URL"] = up.URL
				h.load(t, mcpConfig)
				tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})
				var rd io.Reader
				if st.body != "" {
					rd = strings.NewReader(st.body)
				}
				req, _ := http.NewRequest(st.method, h.srv.URL+"/crm/mcp", rd)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Content-Type", "application/json")
				if st.method == http.MethodGet {
					req.Header.Set("Last-Event-Id", "0")
				}
				resp, err := h.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body) // an ended stream is an error here: what arrived counts
				if resp.StatusCode != 200 || strings.Contains(string(b), "wipe_everything") {
					t.Errorf("stream = %d %q, want wipe_everything never shown", resp.StatusCode, b)
				}
				if e.name != "not JSON" && !strings.Contains(strings.ToLower(string(b)), `"name":"lookup_customer"`) {
					t.Errorf("stream = %q, want lookup_customer listed", b)
				}
				if !strings.Contains(string(b), "id: 0\ndata: \n\n") {
					t.Errorf("stream = %q, want the priming event passed as it was", b)
				}
			})
		}
	}
}
