package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const mcpMaskConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
masking:
  hash_key: a-test-hash-key-of-32-bytes-long
upstreams:
  crm-mcp:
    url: ${MCP_URL}
    timeout: 2s
routes:
  - name: crm-mcp
    match: { methods: [POST, GET, DELETE], path: /crm/mcp }
    upstream: crm-mcp
    allow: { groups: [agents] }
    detect: [us_ssn, email]
    mcp:
      tools:
        - name: lookup_customer
          mask:
            - { field: ssn, action: hash }
            - { field: secret_answer, action: redact }
            - { field: card.number, action: last4 }
        - name: notes
        - name: broken
          mask: [ { field: ssn, action: redact } ]
`

// customer is what lookup_customer answers: a bare-digit SSN no detector finds, and a
// field only a rule can name.
const customer = `{"name":"Ada","ssn":"123456789","secret_answer":"Fluffy","card":{"number":"4242424242424242"}}`

// maskingMCPServer answers lookup_customer with the customer as text JSON and as
// structuredContent, notes with plain text, and broken with text that is almost JSON.
func maskingMCPServer(jsonAnswers bool) http.Handler {
	srv := sdk.NewServer(&sdk.Implementation{Name: "crm", Version: "1"}, nil)
	answer := func(name string, res func() *sdk.CallToolResult) {
		srv.AddTool(&sdk.Tool{Name: name, InputSchema: map[string]any{"type": "object"}},
			func(context.Context, *sdk.CallToolRequest) (*sdk.CallToolResult, error) { return res(), nil })
	}
	answer("lookup_customer", func() *sdk.CallToolResult {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: customer}},
			StructuredContent: json.RawMessage(customer)}
	})
	answer("notes", func() *sdk.CallToolResult {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: "Ada (ada@example.com) gave SSN 123-45-6789 on the phone"}}}
	})
	answer("broken", func() *sdk.CallToolResult {
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: `{"ssn": "123456789",}`}}}
	})
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{JSONResponse: jsonAnswers})
}

func TestMCPToolResultsMasked(t *testing.T) {
	for _, mode := range []struct {
		name string
		json bool
	}{{"sse answers", false}, {"json answers", true}} {
		t.Run(mode.name, func(t *testing.T) {
			h := newHarness(t)
			up := httptest.NewServer(maskingMCPServer(mode.json))
			t.Cleanup(up.Close)
			h.cfgEnv["MCP_URL"] = up.URL
			h.load(t, mcpMaskConfig)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tok := h.token(t, map[string]any{"sub": "agent", "groups": []string{"agents"}})
			c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
			cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
				HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
			if err != nil {
				t.Fatalf("initialize through the gateway: %v", err)
			}
			defer cs.Close()

			res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{}})
			if err != nil || res.IsError || len(res.Content) != 1 {
				t.Fatalf("lookup_customer: got %+v, %v, want one text content", res, err)
			}
			all, _ := json.Marshal(res)
			for _, secret := range []string{"123456789", "Fluffy", "4242424242424242"} {
				if strings.Contains(string(all), secret) {
					t.Errorf("the client got %q in %s", secret, all)
				}
			}
			type cust struct {
				Name, SSN    string
				SecretAnswer string `json:"secret_answer"`
				Card         struct{ Number string }
			}
			var fromText, structured cust
			if err := json.Unmarshal([]byte(res.Content[0].(*sdk.TextContent).Text), &fromText); err != nil {
				t.Fatalf("content text is no longer JSON: %v", err)
			}
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, &structured); err != nil {
				t.Fatalf("structuredContent %s: %v", b, err)
			}
			if fromText != structured {
				t.Errorf("text JSON %+v and structuredContent %+v differ: one value masked two ways", fromText, structured)
			}
			if !strings.HasPrefix(fromText.SSN, "sha256:") || fromText.SecretAnswer != "[REDACTED]" ||
				fromText.Card.Number != "************4242" || fromText.Name != "Ada" {
				t.Errorf("masked customer: got %+v, want ssn hashed, secret_answer redacted, card last4, name kept", fromText)
			}

			res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "notes", Arguments: map[string]any{}})
			if err != nil || len(res.Content) != 1 {
				t.Fatalf("notes: got %+v, %v", res, err)
			}
			if got, want := res.Content[0].(*sdk.TextContent).Text, "Ada ([EMAIL]) gave SSN [US_SSN] on the phone"; got != want {
				t.Errorf("plain text: got %q, want %q (the route's detectors)", got, want)
			}

			// Text that looks like JSON but is not: the tool's rules cannot see into it.
			res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "broken", Arguments: map[string]any{}})
			if err == nil {
				t.Fatalf("broken: got %+v, want a JSON-RPC error", res)
			}
			if strings.Contains(err.Error(), "123456789") || !strings.Contains(err.Error(), "could not be masked") {
				t.Errorf("broken: got error %q, want it to say the answer could not be masked, without the answer", err)
			}

			want := `
# HELP keyhole_masked_values_total Masked response values by route and action.
# TYPE keyhole_masked_values_total counter
keyhole_masked_values_total{action="detect",route="crm-mcp"} 2
keyhole_masked_values_total{action="hash",route="crm-mcp"} 2
keyhole_masked_values_total{action="last4",route="crm-mcp"} 2
keyhole_masked_values_total{action="redact",route="crm-mcp"} 2
`
			if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "keyhole_masked_values_total"); err != nil {
				t.Error(err)
			}
			failures := `
# HELP keyhole_mask_failures_total Responses of masked routes that could not be masked (refused with 502, or aborted mid-stream), by route.
# TYPE keyhole_mask_failures_total counter
keyhole_mask_failures_total{route="crm-mcp"} 1
`
			if err := testutil.GatherAndCompare(h.reg, strings.NewReader(failures), "keyhole_mask_failures_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

// A GET stream may replay a tools/call answer after a reconnection (Last-Event-ID) without
// naming the tool: every tool's mask applies to it.
func TestMCPReplayedAnswerOnTheGETStreamMasked(t *testing.T) {
	h := newHarness(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "result": map[string]any{
			"content": []any{map[string]any{"type": "text", "text": customer}}, "structuredContent": json.RawMessage(customer)}})
		_, _ = w.Write([]byte("id: 1\nevent: message\ndata: " + string(b) + "\n\n"))
	}))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, mcpMaskConfig)
	tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})
	resp, b := h.do(t, http.MethodGet, "/crm/mcp", tok, "", http.Header{"Accept": {"text/event-stream"}, "Last-Event-Id": {"0"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, b)
	}
	for _, secret := range []string{"123456789", "Fluffy", "4242424242424242"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("the stream passed %q: %s", secret, b)
		}
	}
	// ssn is hashed by lookup_customer and redacted by broken: the rule that hides most wins.
	if got := strings.Count(string(b), `\"ssn\":\"[REDACTED]\"`) + strings.Count(string(b), `"ssn":"[REDACTED]"`); got != 2 {
		t.Errorf("got %s, want ssn redacted in the text and in structuredContent", b)
	}
}

// The tool's mask applies to every member a client reads the answer from, in JSON and in
// SSE answers: "StructuredContent", "Content", "Text" and "Result", which a client decoding
// with Go's encoding/json reads as the members they differ from only in case, and the text
// of an embedded resource.
func TestMCPResultMembersMasked(t *testing.T) {
	text, _ := json.Marshal(customer)
	for _, v := range []struct{ name, msg string }{
		{"StructuredContent", `{"jsonrpc":"2.0","id":1,"result":{"content":[],"StructuredContent":` + customer + `}}`},
		{"Content and Text", `{"jsonrpc":"2.0","id":1,"result":{"Content":[{"type":"text","Text":` + string(text) + `}]}}`},
		{"Result", `{"jsonrpc":"2.0","id":1,"Result":{"structuredContent":` + customer + `}}`},
		{"embedded resource", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"crm://customers/1","mimeType":"application/json","text":` + string(text) + `}}]}}`},
	} {
		for _, sse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s sse=%v", v.name, sse), func(t *testing.T) {
				msg := v.msg
				h := newHarness(t)
				up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if sse {
						w.Header().Set("Content-Type", "text/event-stream")
						_, _ = w.Write([]byte("event: message\ndata: " + msg + "\n\n"))
						return
					}
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write([]byte(msg))
				}))
				t.Cleanup(up.Close)
				h.cfgEnv["MCP_URL"] = up.URL
				h.load(t, mcpMaskConfig)
				tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"agents"}})
				resp, b := h.do(t, http.MethodPost, "/crm/mcp", tok,
					`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":1}}}`,
					http.Header{"Accept": {"application/json, text/event-stream"}, "Content-Type": {"application/json"}})
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "Ada") {
					t.Fatalf("got %d %s, want 200 with the masked answer", resp.StatusCode, b)
				}
				for _, secret := range []string{"123456789", "Fluffy", "4242424242424242"} {
					if strings.Contains(string(b), secret) {
						t.Errorf("the answer passed %q to a client that reads %s as the member: %s", secret, v.name, b)
					}
				}
			})
		}
	}
}
