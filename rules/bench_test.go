package rules

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// benchConfig has a guard and 50 routes: for each of 16 services a static, a param
// and a wildcard pattern, plus MCP-style body routes on /svc0/rpc.
func benchConfig() *config.Config {
	cfg := &config.Config{Guards: []config.Route{
		{Name: "no-admin", Match: match("/admin/*", "*"), Deny: "the admin API is not exposed"},
	}}
	for i := range 16 {
		svc := fmt.Sprintf("/svc%d", i)
		cfg.Routes = append(cfg.Routes,
			config.Route{Name: fmt.Sprintf("svc%d-list", i), Match: match(svc+"/items", "GET"), Upstream: "u", Allow: groups("crm-readers")},
			config.Route{Name: fmt.Sprintf("svc%d-item", i), Match: match(svc+"/items/{id}", "GET", "PUT"), Upstream: "u",
				Rewrite: &config.Rewrite{StripPrefix: svc}, Allow: &config.Allow{Groups: []string{"ops", "crm-readers"}, Scopes: []string{"crm.read"}}},
			config.Route{Name: fmt.Sprintf("svc%d-any", i), Match: match(svc+"/*", "GET"), Upstream: "u", Allow: groups("crm-admins")},
		)
	}
	cfg.Routes = append(cfg.Routes,
		config.Route{Name: "rpc-lookup", Match: config.Match{Methods: []string{"POST"}, Path: "/svc0/rpc",
			When: &config.When{Body: map[string]config.Scalars{"method": str("tools/call"), "params.name": str("lookup_customer")}}},
			Upstream: "u", Allow: groups("crm-readers")},
		config.Route{Name: "rpc-deny", Match: match("/svc0/rpc", "POST"), Deny: "not this call"},
	)
	return cfg
}

func BenchmarkDecide(b *testing.B) {
	cfg := benchConfig()
	if n := len(cfg.Routes); n != 50 {
		b.Fatalf("%d routes, want 50", n)
	}
	tb := compile(b, cfg)
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":"42","note":"` +
		strings.Repeat("x", 880) + `","fields":["name","email","phone"],"limit":10}}}`
	if len(body) < 1000 || len(body) > 1100 {
		b.Fatalf("body is %d bytes, want about 1 KB", len(body))
	}
	nobody := &identity.Principal{Subject: "00u9", Groups: []string{"sales"}, Scopes: []string{"crm.read"}}
	tests := []struct {
		name string
		r    *Request
		p    *identity.Principal
		want Effect
	}{
		{"allowed-get", req("GET", "/svc7/items/12345", "", "", "Accept", "application/json"), reader, Allow},
		{"forbidden", req("GET", "/svc7/items/12345", "", ""), nobody, Forbid},
		{"no-route", req("GET", "/nowhere/at/all", "", ""), reader, NoRoute},
		{"wildcard", req("GET", "/svc12/reports/2024/q1", "", ""), admin, Allow},
		{"json-body-1k", req("POST", "/svc0/rpc", "", body), reader, Allow},
	}
	for _, tt := range tests {
		if d := tb.Decide(tt.r, tt.p); d.Effect != tt.want {
			b.Fatalf("%s: Decide = %v (%s), want %v", tt.name, d.Effect, d.Reason, tt.want)
		}
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.Decide(tt.r, tt.p)
			}
		})
	}

	// The spec's SQL guard: a case-insensitive RE2 with \b over every body. Go's regexp
	// costs most of this; the rules' own work is the json-body-1k case above.
	cfg.Guards = append(cfg.Guards, config.Route{Name: "no-sql-drop", Match: config.Match{Methods: []string{"*"}, Path: "/*",
		When: &config.When{BodyRegex: `(?i)\bdrop\s+(table|database)\b`}}, Deny: "destructive SQL is never forwarded"})
	tb = compile(b, cfg)
	r := req("POST", "/svc0/rpc", "", body)
	b.Run("json-body-1k+regex-guard", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tb.Decide(r, reader)
		}
	})
}

func BenchmarkNeedsBody(b *testing.B) {
	tb := compile(b, benchConfig())
	b.ReportAllocs()
	for b.Loop() {
		tb.NeedsBody("GET", "/svc7/items/12345")
	}
}

func BenchmarkCompile(b *testing.B) {
	cfg := benchConfig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(cfg); err != nil {
			b.Fatal(err)
		}
	}
}
