package rules

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// crmConfig is the spec's CRM example, widened to exercise precedence.
func crmConfig() *config.Config {
	return &config.Config{
		Guards: []config.Route{
			{Name: "no-sql-drop", Match: config.Match{Methods: []string{"*"}, Path: "/*",
				When: &config.When{BodyRegex: `(?i)\bdrop\s+(table|database)\b`}},
				Deny: "destructive SQL is never forwarded"},
			{Name: "no-admin", Match: match("/crm/admin/*", "*"), Deny: "the admin API is not exposed"},
		},
		Routes: []config.Route{
			{Name: "crm-read-customer", Match: match("/crm/customers/{id}", "GET"), Upstream: "crm",
				Rewrite: &config.Rewrite{StripPrefix: "/crm"}, Allow: groups("crm-readers")},
			{Name: "crm-search", Match: match("/crm/customers/search", "GET"), Upstream: "crm",
				Allow: &config.Allow{Scopes: []string{"crm.read"}}},
			{Name: "crm-delete-customer", Match: match("/crm/customers/{id}", "DELETE"), Upstream: "crm",
				Allow: groups("crm-writers")},
			{Name: "never-bulk-delete", Match: match("/crm/customers/bulk/*", "DELETE", "POST"),
				Deny: "bulk deletion is not allowed through the gateway"},
			{Name: "crm-customer-numeric", Match: match("/crm/orders/{id:[0-9]+}", "GET"), Upstream: "crm",
				Allow: groups("crm-readers")},
			{Name: "crm-order-any", Match: match("/crm/orders/{ref}", "GET"), Upstream: "crm",
				Allow: groups("crm-admins")},
			{Name: "crm-customers-any", Match: match("/crm/customers/*", "GET"), Upstream: "crm",
				Allow: groups("crm-readers")},
			{Name: "crm-any", Match: match("/crm/*", "GET"), Upstream: "crm", Allow: groups("crm-admins")},
			{Name: "crm-write-any", Match: match("/crm/*", "PUT"), Upstream: "crm", Allow: groups("crm-writers")},
			{Name: "crm-profile-expanded", Match: config.Match{Methods: []string{"GET"}, Path: "/crm/customers/{id}/profile",
				When: &config.When{Query: map[string]config.Scalars{"expand": str("profile")}}},
				Upstream: "crm", Allow: groups("crm-readers")},
			// Same pattern as above, spelled with another parameter name: one pattern for routing.
			{Name: "crm-profile", Match: match("/crm/customers/{cid}/profile", "GET"), Upstream: "crm",
				Allow: groups("crm-admins")},
			{Name: "status", Match: match("/status", "*"), Upstream: "crm",
				Allow: &config.Allow{Scopes: []string{"crm.read"}}},
			{Name: "head-only", Match: match("/ping", "HEAD"), Upstream: "crm", Allow: groups("everyone")},
		},
	}
}

func TestDecidePrecedence(t *testing.T) {
	tb := compile(t, crmConfig())
	tests := []struct {
		name   string
		method string
		path   string
		p      *identity.Principal
		want   want
	}{
		{"param", "GET", "/crm/customers/42", reader, want{Allow, "crm-read-customer", "allowed by route crm-read-customer"}},
		{"static beats param", "GET", "/crm/customers/search", reader, want{Allow, "crm-search", ""}},
		{"static beats param, forbidden", "GET", "/crm/customers/search", admin, want{Forbid, "crm-search", "route crm-search requires scope crm.read"}},
		{"regexp param beats plain param", "GET", "/crm/orders/17", reader, want{Allow, "crm-customer-numeric", ""}},
		{"plain param when regexp fails", "GET", "/crm/orders/abc", reader, want{Forbid, "crm-order-any", "route crm-order-any requires group crm-admins"}},
		{"param beats wildcard", "GET", "/crm/customers/7", admin, want{Allow, "crm-read-customer", ""}},
		{"longer literal wildcard wins", "GET", "/crm/customers/7/notes", reader, want{Allow, "crm-customers-any", ""}},
		{"shorter wildcard", "GET", "/crm/invoices/1", reader, want{Forbid, "crm-any", "route crm-any requires group crm-admins"}},
		{"wildcard with empty suffix", "GET", "/crm/", admin, want{Allow, "crm-any", ""}},
		{"no trailing-slash match for wildcard", "GET", "/crm", admin, want{NoRoute, "", "no route for GET /crm"}},
		{"method picks among same pattern", "DELETE", "/crm/customers/42", writer, want{Allow, "crm-delete-customer", ""}},
		{"method picks among same pattern, forbidden", "DELETE", "/crm/customers/42", reader,
			want{Forbid, "crm-delete-customer", "route crm-delete-customer requires group crm-writers"}},
		{"method mismatch does not fall through to /crm/*", "PUT", "/crm/customers/42", writer,
			want{NoRoute, "", "no route for PUT /crm/customers/42"}},
		{"PUT on /crm/* itself", "PUT", "/crm/invoices/1", writer, want{Allow, "crm-write-any", ""}},
		{"POST nowhere", "POST", "/crm/customers/42", admin, want{NoRoute, "", "no route for POST /crm/customers/42"}},
		{"deny route", "DELETE", "/crm/customers/bulk/all", admin, want{Deny, "never-bulk-delete", "bulk deletion is not allowed through the gateway"}},
		{"deny route beats param", "POST", "/crm/customers/bulk/x", writer, want{Deny, "never-bulk-delete", ""}},
		{"bulk GET does not fall through", "GET", "/crm/customers/bulk/x", admin, want{NoRoute, "", ""}},
		{"HEAD as GET", "HEAD", "/crm/customers/42", reader, want{Allow, "crm-read-customer", ""}},
		{"HEAD-only route takes HEAD", "HEAD", "/ping", reader, want{Allow, "head-only", ""}},
		{"HEAD-only route refuses GET", "GET", "/ping", reader, want{NoRoute, "", ""}},
		{"* takes GET", "GET", "/status", reader, want{Allow, "status", ""}},
		{"* takes DELETE", "DELETE", "/status", reader, want{Allow, "status", ""}},
		{"* takes unknown methods", "PROPFIND", "/status", reader, want{Allow, "status", ""}},
		{"lowercase method only matches *", "get", "/crm/customers/42", reader, want{NoRoute, "", ""}},
		{"guard before routes", "GET", "/crm/admin/users", admin, want{Deny, "no-admin", "the admin API is not exposed"}},
		{"unknown path", "GET", "/billing/1", admin, want{NoRoute, "", "no route for GET /billing/1"}},
		{"empty path", "GET", "", admin, want{NoRoute, "", ""}},
		{"nil principal", "GET", "/crm/customers/42", nil, want{Forbid, "crm-read-customer", "route crm-read-customer requires group crm-readers"}},
		{"Okta service token has no groups", "GET", "/crm/customers/42", oktaService,
			want{Forbid, "crm-read-customer", "route crm-read-customer requires group crm-readers"}},
		{"Okta service token by scope", "GET", "/crm/customers/search", oktaService, want{Allow, "crm-search", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tb, req(tt.method, tt.path, "", ""), tt.p, tt.want)
		})
	}
}

func TestDecideGuardBodyRegex(t *testing.T) {
	tb := compile(t, crmConfig())
	tests := []struct {
		name string
		body string
		want want
	}{
		{"DROP TABLE", `{"sql": "select 1; DROP TABLE customers"}`, want{Deny, "no-sql-drop", "destructive SQL is never forwarded"}},
		{"drop database, not JSON", "drop   database crm", want{Deny, "no-sql-drop", ""}},
		{"harmless", `{"sql": "select * from dropped_tables"}`, want{Allow, "crm-read-customer", ""}},
		{"empty body", "", want{Allow, "crm-read-customer", ""}},
		{"JSON \\u escape for the space", `{"note":"DROP\u0020TABLE customers"}`, want{Deny, "no-sql-drop", ""}},
		{"JSON \\u escape inside the word", `{"note":"dr\u006fp table customers"}`, want{Deny, "no-sql-drop", ""}},
		{"escaped in a key", `{"dr\u006fp table x":1}`, want{Deny, "no-sql-drop", ""}},
		{"form encoding", `note=drop%20table+customers`, want{Deny, "no-sql-drop", ""}},
		{"form plus for space", `note=drop+table`, want{Deny, "no-sql-drop", ""}},
		{"escaped but harmless", `{"note":"dr\u006fpped tables"}`, want{Allow, "crm-read-customer", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tb, req("GET", "/crm/customers/1", "", tt.body), reader, tt.want)
		})
	}
}

func TestDecideQueryConditions(t *testing.T) {
	tb := compile(t, crmConfig())
	tests := []struct {
		query string
		p     *identity.Principal
		want  want
	}{
		{"expand=profile", reader, want{Allow, "crm-profile-expanded", ""}},
		{"expand=profile&other=1", reader, want{Allow, "crm-profile-expanded", ""}},
		// Parameter pollution: one accepted value must not select the route.
		{"expand=profile&expand=all", reader, want{Forbid, "crm-profile", "route crm-profile requires group crm-admins"}},
		{"expand=all&expand=profile", reader, want{Forbid, "crm-profile", ""}},
		{"expand=profile&Expand=all", reader, want{Forbid, "crm-profile", ""}},
		{"expand=", reader, want{Forbid, "crm-profile", ""}},
		{"", reader, want{Forbid, "crm-profile", ""}},
		{"", admin, want{Allow, "crm-profile", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			check(t, tb, req("GET", "/crm/customers/9/profile", tt.query, ""), tt.p, tt.want)
		})
	}
}

func TestDecideHeaderConditions(t *testing.T) {
	tb := compile(t, &config.Config{Routes: []config.Route{
		{Name: "tenant-acme", Match: config.Match{Methods: []string{"GET"}, Path: "/data",
			When: &config.When{Headers: map[string]config.Scalars{"x-tenant": str("acme", "acme-eu")}}},
			Upstream: "crm", Allow: groups("everyone")},
		{Name: "data-deny", Match: match("/data", "GET"), Deny: "tenant not served"},
	}})
	tests := []struct {
		name   string
		header []string
		want   want
	}{
		{"listed", []string{"X-Tenant", "acme"}, want{Allow, "tenant-acme", ""}},
		{"second listed", []string{"X-Tenant", "acme-eu"}, want{Allow, "tenant-acme", ""}},
		{"both listed", []string{"X-Tenant", "acme", "X-Tenant", "acme-eu"}, want{Allow, "tenant-acme", ""}},
		{"polluted", []string{"X-Tenant", "acme", "X-Tenant", "evil"}, want{Deny, "data-deny", "tenant not served"}},
		{"comma list is one value", []string{"X-Tenant", "acme, evil"}, want{Deny, "data-deny", ""}},
		{"underscore spelling counts", []string{"X-Tenant", "acme", "X_Tenant", "evil"}, want{Deny, "data-deny", ""}},
		{"case differs", []string{"X-Tenant", "ACME"}, want{Deny, "data-deny", ""}},
		{"absent", nil, want{Deny, "data-deny", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := req("GET", "/data", "", "")
			for i := 0; i+1 < len(tt.header); i += 2 {
				// Set keys verbatim: X_Tenant is not canonicalised into X-Tenant by net/http.
				r.Header[tt.header[i]] = append(r.Header[tt.header[i]], tt.header[i+1])
			}
			check(t, tb, r, reader, tt.want)
		})
	}
}

func TestDecideBodyConditions(t *testing.T) {
	tb := compile(t, &config.Config{Routes: []config.Route{
		{Name: "refund", Match: config.Match{Methods: []string{"POST"}, Path: "/orders",
			When: &config.When{Body: map[string]config.Scalars{
				"kind":           str("refund"),
				"order.amount":   {num("100"), num("2.5")},
				"order.express":  {boolean("false")},
				"order.coupon":   {null()},
				"items.0.sku":    str("A-1"),
				`meta.a\.b`:      str("dotted"),
				"order.currency": str("EUR", "USD"),
			}}},
			Upstream: "shop", Allow: groups("everyone")},
		{Name: "orders-deny", Match: match("/orders", "POST"), Deny: "only refunds"},
	}})
	const base = `"kind":"refund","items":[{"sku":"A-1"}],"meta":{"a.b":"dotted"}`
	tests := []struct {
		name string
		body string
		want Effect
	}{
		{"all hold", `{` + base + `,"order":{"amount":100,"express":false,"coupon":null,"currency":"EUR"}}`, Allow},
		{"number spelled differently", `{` + base + `,"order":{"amount":1e2,"express":false,"coupon":null,"currency":"USD"}}`, Allow},
		{"fractional number", `{` + base + `,"order":{"amount":2.50,"express":false,"coupon":null,"currency":"USD"}}`, Allow},
		{"escaped key matches", `{` + base + `,"order":{"\u0061mount":100,"express":false,"coupon":null,"currency":"EUR"}}`, Allow},
		{"number as string", `{` + base + `,"order":{"amount":"100","express":false,"coupon":null,"currency":"EUR"}}`, Deny},
		{"bool as string", `{` + base + `,"order":{"amount":100,"express":"false","coupon":null,"currency":"EUR"}}`, Deny},
		{"null absent", `{` + base + `,"order":{"amount":100,"express":false,"currency":"EUR"}}`, Deny},
		{"null as string", `{` + base + `,"order":{"amount":100,"express":false,"coupon":"null","currency":"EUR"}}`, Deny},
		{"array is not a scalar", `{` + base + `,"order":{"amount":[100],"express":false,"coupon":null,"currency":"EUR"}}`, Deny},
		{"unlisted value", `{` + base + `,"order":{"amount":100,"express":false,"coupon":null,"currency":"GBP"}}`, Deny},
		{"big integer is exact", `{` + base + `,"order":{"amount":100000000000000000001,"express":false,"coupon":null,"currency":"EUR"}}`, Deny},
		{"empty body", ``, Deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tb.Decide(req("POST", "/orders", "", tt.body), reader)
			if d.Effect != tt.want {
				t.Errorf("POST /orders %s = %v (%s), want %v", tt.body, d.Effect, d.Reason, tt.want)
			}
		})
	}
}

// mcpConfig routes MCP tool calls on one endpoint by JSON-RPC method and tool name.
func mcpConfig() *config.Config {
	return &config.Config{Routes: []config.Route{
		{Name: "mcp-lookup-customer", Match: config.Match{Methods: []string{"POST"}, Path: "/mcp",
			When: &config.When{Body: map[string]config.Scalars{"method": str("tools/call"), "params.name": str("lookup_customer")}}},
			Upstream: "mcp", Allow: &config.Allow{Scopes: []string{"mcp.tools"}}},
		{Name: "mcp-delete-customer", Match: config.Match{Methods: []string{"POST"}, Path: "/mcp",
			When: &config.When{Body: map[string]config.Scalars{"method": str("tools/call"), "params.name": str("delete_customer")}}},
			Upstream: "mcp", Allow: groups("crm-admins")},
		{Name: "mcp-session", Match: config.Match{Methods: []string{"POST"}, Path: "/mcp",
			When: &config.When{Body: map[string]config.Scalars{"method": str("initialize", "notifications/initialized", "tools/list", "ping")}}},
			Upstream: "mcp", Allow: &config.Allow{Scopes: []string{"mcp.tools"}}},
		{Name: "mcp-stream", Match: match("/mcp", "GET", "DELETE"), Upstream: "mcp", Allow: &config.Allow{Scopes: []string{"mcp.tools"}}},
		{Name: "mcp-other", Match: match("/mcp", "POST"), Deny: "this MCP call is not allowed"},
	}}
}

func TestDecideMCP(t *testing.T) {
	tb := compile(t, mcpConfig())
	call := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"id":"42"}}}`
	}
	tests := []struct {
		name string
		body string
		p    *identity.Principal
		want want
	}{
		{"allowed tool", call("lookup_customer"), oktaService, want{Allow, "mcp-lookup-customer", "allowed by route mcp-lookup-customer"}},
		{"tool needing a group", call("delete_customer"), oktaService, want{Forbid, "mcp-delete-customer", "route mcp-delete-customer requires group crm-admins"}},
		{"unlisted tool", call("drop_everything"), oktaService, want{Deny, "mcp-other", "this MCP call is not allowed"}},
		{"session method", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, oktaService, want{Allow, "mcp-session", ""}},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, oktaService, want{Allow, "mcp-session", ""}},
		{"no scope", call("lookup_customer"), writer, want{Forbid, "mcp-lookup-customer", "route mcp-lookup-customer requires scope mcp.tools"}},
		{"empty body", "", oktaService, want{Deny, "mcp-other", ""}},
		{"batch smuggling a second call", `[` + call("lookup_customer") + `,` + call("delete_customer") + `]`, oktaService,
			want{Invalid, "mcp-lookup-customer", "request body is a JSON array; one JSON object is required (JSON-RPC batches are not accepted)"}},
		{"duplicate name smuggling", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","name":"delete_customer"}}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body has duplicate key "name"`}},
		{"escaped duplicate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","n\u0061me":"delete_customer"}}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body has keys "name" and "n\u0061me" that name the same member`}},
		{"case variant duplicate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"tools/list","params":{"name":"lookup_customer"}}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body key "Method" differs only in letter case from "method", which a rule reads`}},
		{"keys differing in case in one object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":"42","ID":"43"}}}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body has keys "id" and "ID" that name the same member`}},
		{"lone case variant of a key a rule reads", `{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"delete_customer"}}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body key "Method" differs only in letter case from "method", which a rule reads`}},
		{"case variant of a key no rule reads", `{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"lookup_customer","Arguments":{"Name":"x"}}}`, oktaService,
			want{Allow, "mcp-lookup-customer", ""}},
		{"invalid JSON", `{"method":"tools/call",}`, oktaService,
			want{Invalid, "mcp-lookup-customer", `request body is not valid JSON: want an object key at offset 23`}},
		{"top-level scalar", `"tools/call"`, oktaService, want{Invalid, "mcp-lookup-customer", "request body is a JSON scalar; one JSON object is required"}},
		{"GET stream ignores body rules", "", oktaService, want{Allow, "mcp-stream", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(tt.name, "GET") {
				method = "GET"
			}
			check(t, tb, req(method, "/mcp", "", tt.body), tt.p, tt.want)
		})
	}
}

func TestDecideStrictBody(t *testing.T) {
	tb := compile(t, &config.Config{
		Guards: []config.Route{{Name: "no-delete-tool", Match: config.Match{Methods: []string{"POST"}, Path: "/rpc",
			When: &config.When{Body: map[string]config.Scalars{"params.name": str("delete")}}}, Deny: "no deletes"}},
		Routes: []config.Route{{Name: "rpc", Match: match("/rpc", "POST"), Upstream: "u", Allow: groups("everyone")}},
	})
	tests := []struct {
		name string
		body string
		want want
	}{
		{"clean", `{"params":{"name":"read"}}`, want{Allow, "rpc", ""}},
		{"guard holds", `{"params":{"name":"delete"}}`, want{Deny, "no-delete-tool", "no deletes"}},
		// gjson would read the first name and miss the delete; encoding/json reads the last.
		{"duplicate hides from guard", `{"params":{"name":"read","name":"delete"}}`, want{Invalid, "no-delete-tool", `request body has duplicate key "name"`}},
		{"nested duplicate", `{"params":{"args":{"x":{"k":1,"k":2}}}}`, want{Invalid, "no-delete-tool", `request body has duplicate key "k"`}},
		{"duplicate in array element", `{"list":[{"a":1},{"b":1,"b":2}]}`, want{Invalid, "no-delete-tool", `request body has duplicate key "b"`}},
		{"duplicate among many keys", `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"\u0065":10}`,
			want{Invalid, "no-delete-tool", `request body has keys "e" and "\u0065" that name the same member`}},
		{"same key in sibling objects", `{"a":{"k":1},"b":{"k":1}}`, want{Allow, "rpc", ""}},
		{"batch", `[{"params":{"name":"read"}},{"params":{"name":"delete"}}]`, want{Invalid, "no-delete-tool", ""}},
		{"number", `42`, want{Invalid, "no-delete-tool", "request body is a JSON scalar; one JSON object is required"}},
		{"trailing data", `{"a":1}{"params":{"name":"delete"}}`, want{Invalid, "no-delete-tool", "request body is not valid JSON: want the end of the body at offset 7"}},
		{"truncated", `{"params":{"name":"del`, want{Invalid, "no-delete-tool", ""}},
		{"lone surrogate key", `{"\ud800":1}`, want{Invalid, "no-delete-tool", "request body is not accepted: lone surrogate escape at offset 2"}},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", want{Invalid, "no-delete-tool", "request body is not valid UTF-8 at offset 6"}},
		{"byte order mark", "\xef\xbb\xbf{}", want{Invalid, "no-delete-tool", ""}},
		{"whitespace only", "  \n", want{Invalid, "no-delete-tool", "request body is not valid JSON: it holds only whitespace"}},
		{"empty body: conditions do not hold", "", want{Allow, "rpc", ""}},
		{"deep nesting", `{"a":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
			want{Invalid, "no-delete-tool", "request body nests deeper than 512 levels"}},
		{"NUL in key", `{"a\u0000":1}`, want{Invalid, "no-delete-tool", `request body has an object key holding NUL (\u0000)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tb, req("POST", "/rpc", "", tt.body), reader, tt.want)
		})
	}
}

func TestDecideAllow(t *testing.T) {
	claims := map[string]any{
		"tenant": "acme", "level": float64(3), "mfa": true, "deleted": nil,
		"roles": []any{"viewer", "editor"}, "count": "3", "big": float64(1 << 53),
		"jn": json.Number("42"), "i64": int64(7), "strs": []string{"x", "y"},
	}
	principal := &identity.Principal{Subject: "0oa1svc", Groups: []string{"g1", "g2"}, Scopes: []string{"s1"}, Claims: claims}
	tests := []struct {
		name  string
		allow config.Allow
		want  Effect
		why   string
	}{
		{"group", config.Allow{Groups: []string{"g2"}}, Allow, ""},
		{"one of groups", config.Allow{Groups: []string{"x", "g1"}}, Allow, ""},
		{"missing group", config.Allow{Groups: []string{"crm-writers"}}, Forbid, "route r requires group crm-writers"},
		{"missing groups", config.Allow{Groups: []string{"crm-writers", "crm-admins"}}, Forbid, "route r requires one of groups crm-writers, crm-admins"},
		{"scope", config.Allow{Scopes: []string{"s1"}}, Allow, ""},
		{"missing scope", config.Allow{Scopes: []string{"s2", "s3"}}, Forbid, "route r requires one of scopes s2, s3"},
		{"subject", config.Allow{Subjects: []string{"00u9", "0oa1svc"}}, Allow, ""},
		{"subject is not a group", config.Allow{Subjects: []string{"g1"}}, Forbid, "route r requires subject g1"},
		{"every key must hold", config.Allow{Groups: []string{"g1"}, Scopes: []string{"s9"}}, Forbid, "route r requires scope s9"},
		{"all keys hold", config.Allow{Groups: []string{"g1"}, Scopes: []string{"s1"}, Subjects: []string{"0oa1svc"},
			Claims: map[string]config.Scalars{"tenant": str("acme")}}, Allow, ""},
		{"string claim", config.Allow{Claims: map[string]config.Scalars{"tenant": str("acme")}}, Allow, ""},
		{"string claim differs", config.Allow{Claims: map[string]config.Scalars{"tenant": str("globex")}}, Forbid, `route r requires claim tenant = "globex"`},
		{"number claim", config.Allow{Claims: map[string]config.Scalars{"level": {num("3")}}}, Allow, ""},
		{"number claim as float", config.Allow{Claims: map[string]config.Scalars{"level": {num("3.0")}}}, Allow, ""},
		{"number is not a string claim", config.Allow{Claims: map[string]config.Scalars{"count": {num("3")}}}, Forbid, "route r requires claim count = 3"},
		{"string is not a number claim", config.Allow{Claims: map[string]config.Scalars{"level": str("3")}}, Forbid, `route r requires claim level = "3"`},
		{"big number claim", config.Allow{Claims: map[string]config.Scalars{"big": {num("9007199254740992")}}}, Allow, ""},
		{"bool claim", config.Allow{Claims: map[string]config.Scalars{"mfa": {boolean("true")}}}, Allow, ""},
		{"bool claim differs", config.Allow{Claims: map[string]config.Scalars{"mfa": {boolean("false")}}}, Forbid, "route r requires claim mfa = false"},
		{"bool is not a string claim", config.Allow{Claims: map[string]config.Scalars{"mfa": str("true")}}, Forbid, ""},
		{"null claim", config.Allow{Claims: map[string]config.Scalars{"deleted": {null()}}}, Allow, ""},
		{"null needs the claim present", config.Allow{Claims: map[string]config.Scalars{"absent": {null()}}}, Forbid, "route r requires claim absent = null"},
		{"array claim contains", config.Allow{Claims: map[string]config.Scalars{"roles": str("editor")}}, Allow, ""},
		{"array claim one of", config.Allow{Claims: map[string]config.Scalars{"roles": str("admin", "viewer")}}, Allow, ""},
		{"array claim lacks", config.Allow{Claims: map[string]config.Scalars{"roles": str("admin", "owner")}}, Forbid,
			`route r requires claim roles to be one of "admin", "owner"`},
		{"json.Number claim", config.Allow{Claims: map[string]config.Scalars{"jn": {num("42.0")}}}, Allow, ""},
		{"int64 claim", config.Allow{Claims: map[string]config.Scalars{"i64": {num("7")}}}, Allow, ""},
		{"[]string claim", config.Allow{Claims: map[string]config.Scalars{"strs": str("y")}}, Allow, ""},
		{"[]string claim lacks", config.Allow{Claims: map[string]config.Scalars{"strs": str("z")}}, Forbid, ""},
		{"missing claim", config.Allow{Claims: map[string]config.Scalars{"org": str("acme")}}, Forbid, `route r requires claim org = "acme"`},
		{"claims checked in name order", config.Allow{Claims: map[string]config.Scalars{"z": str("1"), "a": str("1")}}, Forbid, `route r requires claim a = "1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.allow
			tb := compile(t, &config.Config{Routes: []config.Route{{Name: "r", Match: match("/x", "GET"), Upstream: "u", Allow: &a}}})
			d := tb.Decide(req("GET", "/x", "", ""), principal)
			if d.Effect != tt.want || (tt.why != "" && d.Reason != tt.why) {
				t.Errorf("Decide = %v %q, want %v %q", d.Effect, d.Reason, tt.want, tt.why)
			}
		})
	}
}

func TestDecideApprovalOnly(t *testing.T) {
	ap := &config.Approval{Approvers: config.Allow{Groups: []string{"crm-admins"}}, MinApprovals: 1}
	tb := compile(t, &config.Config{Routes: []config.Route{
		{Name: "wipe", Match: match("/wipe", "POST"), Upstream: "u", Approval: ap},
	}})
	d := tb.Decide(req("POST", "/wipe", "", ""), oktaService)
	if d.Effect != Allow || d.Route.Approval != ap {
		t.Errorf("POST /wipe = %v, approval %v; want allow with the route's approval", d.Effect, d.Route.Approval)
	}
}

func TestForwardPath(t *testing.T) {
	tests := []struct {
		strip, add, path, want string
	}{
		{"/crm", "", "/crm/customers/1", "/customers/1"},
		{"/crm", "", "/crm", "/"},
		{"/crm", "", "/crm/", "/"},
		{"/crm", "/api/v2", "/crm/customers/1", "/api/v2/customers/1"},
		{"/crm", "/api", "/crm", "/api"},
		{"", "/api", "/customers", "/api/customers"},
		{"", "", "/customers", "/customers"},
		{"/crm/customers", "", "/crm/customers/7", "/7"},
		{"/crm", "", "/crmx/1", "/crmx/1"}, // not at a segment boundary: unchanged
	}
	for _, tt := range tests {
		r := &Route{StripPrefix: tt.strip, AddPrefix: tt.add}
		if got := r.ForwardPath(tt.path); got != tt.want {
			t.Errorf("strip %q add %q: ForwardPath(%q) = %q, want %q", tt.strip, tt.add, tt.path, got, tt.want)
		}
	}
	tb := compile(t, crmConfig())
	d := tb.Decide(req("GET", "/crm/customers/42", "", ""), reader)
	if got, want := d.Route.ForwardPath("/crm/customers/42"), "/customers/42"; got != want {
		t.Errorf("crm-read-customer ForwardPath = %q, want %q", got, want)
	}
}

func TestNeedsBody(t *testing.T) {
	cfg := mcpConfig()
	cfg.Routes = append(cfg.Routes,
		config.Route{Name: "plain", Match: match("/plain/{id}", "POST"), Upstream: "u", Allow: groups("g")},
		config.Route{Name: "upload", Match: config.Match{Methods: []string{"PUT"}, Path: "/files/*",
			When: &config.When{BodyRegex: "secret"}}, Deny: "no secrets"},
		config.Route{Name: "files", Match: match("/files/*", "PUT"), Upstream: "u", Allow: groups("g")},
	)
	cfg.Guards = []config.Route{{Name: "guard", Match: config.Match{Methods: []string{"PATCH"}, Path: "/plain/*",
		When: &config.When{BodyRegex: "x"}}, Deny: "no"}}
	tb := compile(t, cfg)
	tests := []struct {
		method, path string
		want         bool
	}{
		{"POST", "/mcp", true},
		{"GET", "/mcp", false},
		{"DELETE", "/mcp", false},
		{"POST", "/plain/1", false},
		{"PATCH", "/plain/1", true}, // the guard
		{"PUT", "/files/a/b", true},
		{"GET", "/files/a/b", false},
		{"POST", "/nowhere", false},
	}
	for _, tt := range tests {
		if got := tb.NeedsBody(tt.method, tt.path); got != tt.want {
			t.Errorf("NeedsBody(%s, %s) = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestRoutes(t *testing.T) {
	tb := compile(t, crmConfig())
	var got []string
	for _, r := range tb.Routes() {
		got = append(got, r.Name)
	}
	want := []string{"no-sql-drop", "no-admin", "crm-read-customer", "crm-search", "crm-delete-customer",
		"never-bulk-delete", "crm-customer-numeric", "crm-order-any", "crm-customers-any", "crm-any",
		"crm-write-any", "crm-profile-expanded", "crm-profile", "status", "head-only"}
	if !slices.Equal(got, want) {
		t.Errorf("Routes() = %v, want %v", got, want)
	}
	rs := tb.Routes()
	if !rs[0].Guard || rs[2].Guard || rs[2].Index != 0 || rs[2].Upstream != "crm" || rs[2].StripPrefix != "/crm" {
		t.Errorf("Routes()[0,2] = %+v, %+v", rs[0], rs[2])
	}
}

func TestEffectString(t *testing.T) {
	for e, want := range map[Effect]string{NoRoute: "no_route", Allow: "allow", Forbid: "forbidden", Deny: "denied", Invalid: "bad_request"} {
		if got := e.String(); got != want {
			t.Errorf("Effect(%d).String() = %q, want %q", e, got, want)
		}
	}
}

func TestDecideZeroTable(t *testing.T) {
	var tb *Table
	if d := tb.Decide(req("GET", "/", "", ""), reader); d.Effect != NoRoute {
		t.Errorf("nil table Decide = %v, want no_route", d.Effect)
	}
	if (&Table{}).NeedsBody("POST", "/") {
		t.Error("zero table NeedsBody = true")
	}
}

func TestDecideConcurrent(t *testing.T) {
	cfg := crmConfig()
	cfg.Routes = append(cfg.Routes, mcpConfig().Routes...)
	tb := compile(t, cfg)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r, want := req("GET", "/crm/customers/1", "expand=x", ""), Forbid
				if g%2 == 1 {
					nest := strings.Repeat("[", g+i%3) + strings.Repeat("]", g+i%3)
					r, want = req("POST", "/mcp", "", `{"method":"tools/call","params":{"name":"lookup_customer","n":`+nest+`}}`), Allow
				}
				if d := tb.Decide(r, oktaService); d.Effect != want {
					t.Errorf("goroutine %d: %s %s = %v (%s), want %v", g, r.Method, r.Path, d.Effect, d.Reason, want)
					return
				}
				// The no-sql-drop guard reads every body.
				if !tb.NeedsBody(r.Method, r.Path) {
					t.Errorf("goroutine %d: NeedsBody(%s, %s) = false, want true", g, r.Method, r.Path)
					return
				}
			}
		})
	}
	wg.Wait()
}
