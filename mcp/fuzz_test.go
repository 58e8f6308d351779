package mcp

import (
	"encoding/json"
	"testing"

	"github.com/keyholehq/keyhole/config"
)

// FuzzParse checks that Parse never panics, never accepts what encoding/json calls
// invalid, and that what it accepts judges and canonicalises without panicking.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":1,"hard":false}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":"x","result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","Method":"x"}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://customers/1"}}`,
		`{"a":1e400}`, `{"a":"\ud800"}`, `{} {}`,
	} {
		f.Add([]byte(s), "2025-06-18")
	}
	p, err := Compile("r", testPolicyConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, version string) {
		m, err := Parse(body, version)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Parse accepted %q, which encoding/json calls invalid", body)
		}
		_ = p.Judge(m, func(*config.Allow) string { return "" })
		if c, err := m.CanonicalArguments(); err == nil && !json.Valid(c) {
			t.Fatalf("canonical form %q of %q is not JSON", c, m.Arguments)
		}
	})
}

func testPolicyConfig() *config.MCP {
	return &config.MCP{
		Tools: []config.MCPTool{
			{Name: "lookup_*"},
			{Name: "delete_customer", When: &config.MCPWhen{Arguments: map[string]config.Scalars{"hard": {{Value: "false", Kind: config.Bool}}, "a.0.b": {{Value: "1", Kind: config.Number}}}}},
		},
		Resources: []config.MCPResource{{URI: "crm://customers/*"}},
		Prompts:   []config.MCPPrompt{{Name: "*"}},
	}
}
