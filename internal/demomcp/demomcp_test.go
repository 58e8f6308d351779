package demomcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/demomcp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// withKey adds the API key to every request of an MCP client.
type withKey string

func (k withKey) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Api-Key", string(k))
	return http.DefaultTransport.RoundTrip(r)
}

func TestServer(t *testing.T) {
	for _, opts := range []demomcp.Options{{}, {Stateless: true}} {
		t.Run(map[bool]string{false: "sessions", true: "stateless"}[opts.Stateless], func(t *testing.T) {
			srv := httptest.NewServer(demomcp.New("k", opts).Handler())
			t.Cleanup(srv.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			if _, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx,
				&mcp.StreamableClientTransport{Endpoint: srv.URL, MaxRetries: -1}, nil); err == nil {
				t.Error("initialize without the API key succeeded, want refused")
			}
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx,
				&mcp.StreamableClientTransport{Endpoint: srv.URL, HTTPClient: &http.Client{Transport: withKey("k")}, MaxRetries: -1}, nil)
			if err != nil {
				t.Fatalf("initialize: %v", err)
			}
			defer cs.Close()
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("tools/list: %v", err)
			}
			var names []string
			for _, tl := range tools.Tools {
				names = append(names, tl.Name)
			}
			slices.Sort(names)
			if want := []string{"delete_customer", "drop_table", "list_customers", "lookup_customer"}; !slices.Equal(names, want) {
				t.Errorf("tools = %v, want %v", names, want)
			}

			for _, c := range []struct {
				tool    string
				args    map[string]any
				isError bool
				says    string
			}{
				{"lookup_customer", map[string]any{"id": 1}, false, `"ssn":"078-05-1120"`},
				{"lookup_customer", map[string]any{"id": 9}, true, "no customer with id 9"},
				{"list_customers", nil, false, `{"id":3,"name":"Alan Turing"}`},
				{"delete_customer", map[string]any{"id": 2}, false, "customer 2 deleted"},
				{"delete_customer", map[string]any{"id": 2}, true, "no customer with id 2"},
				{"drop_table", map[string]any{"table": "customers"}, false, "table customers dropped"},
			} {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: c.tool, Arguments: c.args})
				if err != nil {
					t.Fatalf("%s %v: %v", c.tool, c.args, err)
				}
				got := res.Content[0].(*mcp.TextContent).Text
				if res.IsError != c.isError || !strings.Contains(got, c.says) {
					t.Errorf("%s %v = isError %v %q, want isError %v and %q", c.tool, c.args, res.IsError, got, c.isError, c.says)
				}
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"id": 3}})
			if err != nil {
				t.Fatal(err)
			}
			var structured demomcp.Customer
			b, _ := json.Marshal(res.StructuredContent)
			if json.Unmarshal(b, &structured) != nil || structured.Card.Number != "378282246310005" {
				t.Errorf("lookup_customer structuredContent = %s, want Alan Turing's card", b)
			}
			if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "crm://customers/index"}); err != nil {
				t.Errorf("resources/read: %v", err)
			}
			p, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarize_customer", Arguments: map[string]string{"id": "1"}})
			if err != nil || !strings.Contains(p.Messages[0].Content.(*mcp.TextContent).Text, "lookup_customer with id 1") {
				t.Errorf("prompts/get = %+v, %v", p, err)
			}
		})
	}
}
