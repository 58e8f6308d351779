package mcp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, body, version string
		kind                Kind
		method, target      string
		args                string
		code                int // 0: parses
	}{
		{name: "tool call", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"lookup","arguments":{"id":1},"_meta":{"progressToken":3}}}`,
			kind: Request, method: "tools/call", target: "lookup", args: `{"id":1}`},
		{name: "string id", body: `{"jsonrpc":"2.0","id":"a","method":"ping"}`, kind: Request, method: "ping"},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, kind: Notification, method: "notifications/initialized"},
		{name: "response", body: `{"jsonrpc":"2.0","id":0,"result":{"action":"accept"}}`, kind: Response},
		{name: "error response", body: `{"jsonrpc":"2.0","id":"s1","error":{"code":-1,"message":"no"}}`, kind: Response},
		{name: "resource read", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://customers/1"}}`,
			kind: Request, method: "resources/read", target: "crm://customers/1"},
		{name: "prompt", body: `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}`,
			kind: Request, method: "prompts/get", target: "p", args: `{"a":"b"}`},
		{name: "invalid json", body: `{"jsonrpc":"2.0",`, code: CodeParseError},
		{name: "trailing value", body: `{"jsonrpc":"2.0","method":"ping","id":1} {}`, code: CodeParseError},
		{name: "not utf-8", body: "{\"jsonrpc\":\"2.0\",\"method\":\"p\xffing\",\"id\":1}", code: CodeParseError},
		{name: "duplicate key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, code: CodeParseError},
		{name: "case variant key", body: `{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}`, code: CodeParseError},
		{name: "nested duplicate", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"hard":false,"HARD":true}}}`, code: CodeParseError},
		{name: "case variant arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Arguments":{"hard":true}}}`, code: CodeInvalidRequest},
		{name: "case variant name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"drop_all","name":"a"}}`, code: CodeParseError},
		{name: "folded variant arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","argumentſ":{"hard":true}}}`, code: CodeInvalidRequest},
		{name: "case variant uri", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://a","URI":"crm://secret"}}`, code: CodeParseError},
		{name: "duplicate name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"drop_all"}}`, code: CodeParseError},
		{name: "batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, version: "2025-06-18", code: CodeInvalidRequest},
		{name: "batch old version", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, version: "2025-03-26", code: CodeInvalidRequest},
		{name: "invalid batch", body: `[{"jsonrpc":"2.0",]`, code: CodeParseError},
		{name: "not an object", body: `"ping"`, code: CodeParseError},
		{name: "unknown member", body: `{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}`, code: CodeInvalidRequest},
		{name: "wrong version", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "null id", body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "object id", body: `{"jsonrpc":"2.0","id":{},"method":"ping"}`, code: CodeInvalidRequest},
		{name: "method and result", body: `{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}`, code: CodeInvalidRequest},
		{name: "result and error", body: `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, code: CodeInvalidRequest},
		{name: "response without id", body: `{"jsonrpc":"2.0","result":{}}`, code: CodeInvalidRequest},
		{name: "array params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}`, code: CodeInvalidRequest},
		{name: "call without name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, code: CodeInvalidRequest},
		{name: "call without params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, code: CodeInvalidRequest},
		{name: "numeric name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`, code: CodeInvalidRequest},
		{name: "array arguments", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}`, code: CodeInvalidRequest},
		{name: "too deep", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}}}`, code: CodeParseError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.body), tt.version)
			if tt.code != 0 {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Code != tt.code {
					t.Fatalf("got %v, want a ParseError of code %d", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want a message", err)
			}
			if m.Kind != tt.kind || m.Method != tt.method || m.Name != tt.target || string(m.Arguments) != tt.args {
				t.Errorf("got %s %q %q %s, want %s %q %q %s", m.Kind, m.Method, m.Name, m.Arguments, tt.kind, tt.method, tt.target, tt.args)
			}
		})
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{` { "a" : [ 1 , true , null , "x" ] } `, `{"a":[1,true,null,"x"]}`},
		// RFC 8785 §3.2.3: keys sorted by UTF-16 code units.
		{`{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
			"{\"\\r\":2,\"1\":4,\"\u0080\":6,\"\u00f6\":7,\"\u20ac\":1,\"\U0001F600\":5,\"\ufb33\":3}"},
		{`"\u0041\u000f\/\""`, `"A\u000f/\""`},
		// RFC 8785 Appendix B number samples.
		{`[0, -0, 1e0, 1.0, 100, 1e21, 1e20, 123456789012345680000, 0.000001, 1e-7, -1.5e-10, 9007199254740993, 333333333.33333329, 1E30, 4.50, 2e-3, 0.000001234]`,
			`[0,0,1,1,100,1e+21,100000000000000000000,123456789012345680000,0.000001,1e-7,-1.5e-10,9007199254740992,333333333.3333333,1e+30,4.5,0.002,0.000001234]`},
		{`1.7976931348623157e308`, `1.7976931348623157e+308`},
		{`5e-324`, `5e-324`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Canonical([]byte(tt.in))
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := Canonical([]byte(`1e400`)); err == nil {
		t.Error("got no error for 1e400, want out of range")
	}
}

func TestCanonicalArgumentsIgnoreEnvelope(t *testing.T) {
	a, _ := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"d","arguments":{"id":42,"hard":false}}}`), "")
	b, _ := Parse([]byte(`{"jsonrpc":"2.0","id":"other","method":"tools/call","params":{"_meta":{"progressToken":"p9"},"arguments":{"hard":false,"id":42.0},"name":"d"}}`), "")
	c, _ := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"d","arguments":{"id":43,"hard":false}}}`), "")
	ca, _ := a.CanonicalArguments()
	cb, _ := b.CanonicalArguments()
	cc, _ := c.CanonicalArguments()
	if string(ca) != string(cb) {
		t.Errorf("got %s and %s for the same call with another id and _meta, want equal", ca, cb)
	}
	if string(ca) == string(cc) {
		t.Errorf("got %s for different arguments, want different", cc)
	}
}

// caller is a principal holding groups, for Missing.
func caller(groups ...string) Missing {
	return func(a *config.Allow) string {
		for _, g := range a.Groups {
			for _, h := range groups {
				if g == h {
					return ""
				}
			}
		}
		return "requires group " + strings.Join(a.Groups, ",")
	}
}

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	p, err := Compile("crm-mcp", &config.MCP{
		Tools: []config.MCPTool{
			{Name: "lookup_customer"},
			{Name: "delete_customer", When: &config.MCPWhen{Arguments: map[string]config.Scalars{"hard": {{Value: "false", Kind: config.Bool}}}},
				Allow: &config.Allow{Groups: []string{"crm-writers"}}},
			{Name: "delete_customer", Deny: "hard deletes never go through the gateway"},
			{Name: "export_*", Allow: &config.Allow{Groups: []string{"exporters"}}},
			{Name: "drop_*", Deny: "schema changes never go through the gateway"},
			{Name: "refund", Approval: &config.Approval{Approvers: config.Allow{Groups: []string{"admins"}}}},
		},
		Resources: []config.MCPResource{{URI: "crm://customers/*"}},
		Prompts:   []config.MCPPrompt{{Name: "summary_*", Allow: &config.Allow{Groups: []string{"agents"}}}},
		Methods:   []string{"completion/complete", "logging/*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJudge(t *testing.T) {
	p := testPolicy(t)
	call := func(name, args string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `","arguments":` + args + `}}`
	}
	tests := []struct {
		name, body string
		groups     []string
		want       Effect
	}{
		{"initialize", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, nil, Allow},
		{"ping", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil, Allow},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}`, nil, Allow},
		{"response", `{"jsonrpc":"2.0","id":3,"result":{}}`, nil, Allow},
		{"tools/list", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil, Allow},
		{"listed tool, route allow", call("lookup_customer", `{"id":1}`), nil, Allow},
		{"when holds, allowed", call("delete_customer", `{"id":1,"hard":false}`), []string{"crm-writers"}, Allow},
		{"when holds, forbidden", call("delete_customer", `{"id":1,"hard":false}`), []string{"agents"}, Forbid},
		{"when fails, next entry denies", call("delete_customer", `{"id":1,"hard":true}`), []string{"crm-writers"}, Deny},
		{"when on a string false", call("delete_customer", `{"id":1,"hard":"false"}`), []string{"crm-writers"}, Deny},
		{"when key absent", call("delete_customer", `{"id":1}`), []string{"crm-writers"}, Deny},
		{"when key in another case", call("delete_customer", `{"id":1,"Hard":false}`), []string{"crm-writers"}, Deny},
		{"when key folded", call("delete_customer", `{"id":1,"hardſ":false,"ſ":1}`), []string{"crm-writers"}, Deny},
		{"glob allowed", call("export_all", `{}`), []string{"exporters"}, Allow},
		{"glob forbidden", call("export_all", `{}`), nil, Forbid},
		{"glob deny", call("drop_table", `{}`), nil, Deny},
		{"approval", call("refund", `{"amount":5}`), nil, Approval},
		{"unlisted tool", call("wipe", `{}`), []string{"crm-writers"}, Hidden},
		{"glob does not cross slash", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://customers/1/secret"}}`, nil, Hidden},
		{"resource", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://customers/1"}}`, nil, Allow},
		{"resource subscribe", `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///etc/passwd"}}`, nil, Hidden},
		{"prompt allowed", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary_week"}}`, []string{"agents"}, Allow},
		{"prompt forbidden", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary_week"}}`, nil, Forbid},
		{"prompt unlisted", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"other"}}`, []string{"agents"}, Hidden},
		{"enabled method", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}`, nil, Allow},
		{"enabled method glob", `{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"info"}}`, nil, Allow},
		{"other method", `{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}`, nil, Hidden},
		{"method sent as notification", `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"wipe"}}`, nil, Hidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.body), "")
			if err != nil {
				t.Fatal(err)
			}
			d := p.Judge(m, caller(tt.groups...))
			if d.Effect != tt.want {
				t.Errorf("got %s (%s), want %s", d.Effect, d.Reason, tt.want)
			}
			if d.Reason == "" {
				t.Error("got no reason")
			}
		})
	}
}

func TestFilterList(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name, method, in, want string
		groups                 []string
	}{
		{"tools", "tools/list",
			`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_customer"},{"name":"wipe"},{"name":"drop_table"},{"name":"export_all"},{"name":"refund"},{"name":"delete_customer"}],"nextCursor":"c2"}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"nextCursor":"c2","tools":[{"name":"lookup_customer"},{"name":"refund"}]}}`, nil},
		{"tools for writers", "tools/list",
			`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_customer"},{"name":"export_all"}]}}`,
			`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_customer"},{"name":"export_all"}]}}`, []string{"crm-writers", "exporters"}},
		{"all removed is an empty list", "tools/list",
			`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"wipe"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"tools":[]}}`, nil},
		{"null list", "tools/list", `{"jsonrpc":"2.0","id":2,"result":{"tools":null}}`, `{"id":2,"jsonrpc":"2.0","result":{"tools":[]}}`, nil},
		{"prompts", "prompts/list", `{"jsonrpc":"2.0","id":2,"result":{"prompts":[{"name":"summary_x"},{"name":"leak"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"prompts":[{"name":"summary_x"}]}}`, []string{"agents"}},
		{"resources", "resources/list", `{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"crm://customers/1","name":"a"},{"uri":"file:///etc/passwd","name":"b"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"resources":[{"uri":"crm://customers/1","name":"a"}]}}`, nil},
		{"templates", "resources/templates/list", `{"jsonrpc":"2.0","id":2,"result":{"resourceTemplates":[{"uriTemplate":"crm://customers/{id}"},{"uriTemplate":"crm://admin/{x}"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"resourceTemplates":[{"uriTemplate":"crm://customers/{id}"}]}}`, nil},
		{"error answer untouched", "tools/list", `{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"x"}}`, `{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"x"}}`, nil},
		{"notification untouched", "tools/list", `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`, `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`, nil},
		{"other method untouched", "tools/call", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"wipe"}]}}`, `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"wipe"}]}}`, nil},
		// encoding/json reads a lone case variant as the member: it is filtered as the member.
		{"Result", "tools/list", `{"jsonrpc":"2.0","id":2,"Result":{"tools":[{"name":"lookup_customer"},{"name":"wipe"}]}}`,
			`{"Result":{"tools":[{"name":"lookup_customer"}]},"id":2,"jsonrpc":"2.0"}`, nil},
		{"Tools", "tools/list", `{"jsonrpc":"2.0","id":2,"result":{"Tools":[{"name":"lookup_customer"},{"name":"wipe"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"Tools":[{"name":"lookup_customer"}]}}`, nil},
		{"Name", "tools/list", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"Name":"lookup_customer"},{"NAME":"wipe"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"tools":[{"Name":"lookup_customer"}]}}`, nil},
		{"URI", "resources/list", `{"jsonrpc":"2.0","id":2,"result":{"Resources":[{"URI":"crm://customers/1"},{"Uri":"file:///etc/passwd"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"Resources":[{"URI":"crm://customers/1"}]}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := p.FilterList(tt.method, []byte(tt.in), caller(tt.groups...))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	for _, bad := range []string{`{"jsonrpc":"2.0","id":2,"result":{"tools":[{"title":"no name"}]}}`, `{"jsonrpc":"2.0","id":2,"result":{"tools":[1]}}`,
		`{"jsonrpc":"2.0","id":2,"result":{"tools":{}}}`, `{"jsonrpc":"2.0","id":2,"result":{"tools":[],"Tools":[{"name":"wipe"}]}}`, `{"result":`} {
		if _, _, err := p.FilterList("tools/list", []byte(bad), caller()); err == nil {
			t.Errorf("got no error for %s, want one: an answer the gateway cannot filter must not pass", bad)
		}
	}
}

// FilterAnyList filters a list answer wherever it is seen, by the list its result holds.
func TestFilterAnyList(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name, in, want string
		fails          bool
	}{
		{"tools", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_customer"},{"name":"wipe"}],"nextCursor":"c"}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"nextCursor":"c","tools":[{"name":"lookup_customer"}]}}`, false},
		{"prompts, folded", `{"jsonrpc":"2.0","id":2,"RESULT":{"Prompts":[{"name":"leak"}]}}`,
			`{"RESULT":{"Prompts":[]},"id":2,"jsonrpc":"2.0"}`, false},
		{"templates", `{"jsonrpc":"2.0","id":2,"result":{"resourceTemplates":[{"uriTemplate":"crm://admin/{x}"}]}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"resourceTemplates":[]}}`, false},
		{"a tool result untouched", `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x"}]}}`,
			`{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x"}]}}`, false},
		{"a notification untouched", `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`,
			`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`, false},
		{"a result that is no object untouched", `{"jsonrpc":"2.0","id":2,"result":7}`, `{"jsonrpc":"2.0","id":2,"result":7}`, false},
		{"not JSON", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"wipe"}]`, "", true},
		{"a folded duplicate", `{"jsonrpc":"2.0","id":2,"result":{"tools":[],"TOOLS":[{"name":"wipe"}]}}`, "", true},
		{"an element without its name", `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"title":"wipe"}]}}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := p.FilterAnyList([]byte(tt.in), caller())
			if tt.fails {
				if err == nil {
					t.Fatalf("got %s, want an error: what the gateway cannot filter must not pass", got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("got %s, %v, want %s", got, err, tt.want)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	m, _ := Parse([]byte(`{"jsonrpc":"2.0","id":"r-9","method":"tools/call","params":{"name":"drop_table"}}`), "")
	d := testPolicy(t).Judge(m, caller())
	text := RefusalText(m, d, "01REQ")
	kh := json.RawMessage(`{"error":"denied","message":"schema changes never go through the gateway","request_id":"01REQ"}`)
	var got struct {
		ID     json.RawMessage
		Result struct {
			Content []struct{ Type, Text string }
			IsError bool
			Meta    struct{ Keyhole json.RawMessage } `json:"_meta"`
		}
	}
	if err := json.Unmarshal(ToolRefusal(m.ID, text, kh), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.ID) != `"r-9"` || !got.Result.IsError || len(got.Result.Content) != 1 || got.Result.Content[0].Type != "text" {
		t.Errorf("got %+v, want an isError CallToolResult with id \"r-9\"", got)
	}
	for _, want := range []string{"tools/call drop_table", "schema changes never go through the gateway", "Nothing was done", "01REQ"} {
		if !strings.Contains(got.Result.Content[0].Text, want) {
			t.Errorf("got text %q, want it to say %q", got.Result.Content[0].Text, want)
		}
	}
	if string(got.Result.Meta.Keyhole) != string(kh) {
		t.Errorf("got _meta.keyhole %s, want %s", got.Result.Meta.Keyhole, kh)
	}
	e := ErrorMessage(json.RawMessage(`5`), CodeRefused, "refused", kh)
	if want := `{"jsonrpc":"2.0","id":5,"error":{"code":-32003,"message":"refused","data":` + string(kh) + `}}`; string(e) != want {
		t.Errorf("got %s, want %s", e, want)
	}
	at := ApprovalText(m, "group admins", "01APP", "01REQ", 0)
	for _, want := range []string{"group admins", "01APP", "same call again", "Nothing was done"} {
		if !strings.Contains(at, want) {
			t.Errorf("got %q, want it to say %q", at, want)
		}
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		method string
		effect Effect
		want   int
	}{
		{"resources/read", Hidden, CodeResourceNotFound},
		{"prompts/get", Hidden, CodeInvalidParams},
		{"sampling/x", Hidden, CodeMethodNotFound},
		{"prompts/get", Forbid, CodeRefused},
		{"resources/read", Deny, CodeRefused},
		{"tools/call", Approval, CodeApprovalRequired},
	}
	for _, tt := range tests {
		if got := ErrorCode(&Message{Method: tt.method}, Decision{Effect: tt.effect}); got != tt.want {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.effect, got, tt.want)
		}
	}
}

func TestCheckHeaders(t *testing.T) {
	m, _ := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup"}}`), "")
	r, _ := Parse([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`), "")
	tests := []struct {
		name string
		m    *Message
		h    http.Header
		ok   bool
	}{
		{"none", m, http.Header{}, true},
		{"matching", m, http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"lookup"}}, true},
		{"other method", m, http.Header{"Mcp-Method": {"tools/list"}}, false},
		{"other name", m, http.Header{"Mcp-Name": {"drop_table"}}, false},
		{"two values", m, http.Header{"Mcp-Name": {"lookup", "lookup"}}, false},
		{"method on a response", r, http.Header{"Mcp-Method": {"ping"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHeaders(tt.h, tt.m)
			var pe *ParseError
			if tt.ok != (err == nil) || (err != nil && (!errors.As(err, &pe) || pe.Code != CodeHeaderMismatch)) {
				t.Errorf("got %v, want ok=%v (else code %d)", err, tt.ok, CodeHeaderMismatch)
			}
		})
	}
}

func TestCompileRefusesBadGlobs(t *testing.T) {
	for _, c := range []*config.MCP{
		{Tools: []config.MCPTool{{Name: "a[", Deny: "x"}}},
		{Resources: []config.MCPResource{{URI: ""}}},
		{Prompts: []config.MCPPrompt{{Name: "[z-a"}}},
		{Methods: []string{"["}},
		{Tools: []config.MCPTool{{Name: "a", When: &config.MCPWhen{Arguments: map[string]config.Scalars{"a.*": nil}}}}},
	} {
		if _, err := Compile("r", c); err == nil {
			t.Errorf("got no error for %+v", c)
		}
	}
}

func TestApprovalDocument(t *testing.T) {
	call := func(args string) *Message {
		t.Helper()
		m, err := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":`+args+`}}`), "")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tenant := http.Header{"X-Tenant": {"acme"}}
	tests := []struct {
		name, args string
		scope      CallScope
		want       string
	}{
		{"arguments alone", `{"b":1,"a":"x"}`, CallScope{}, `{"a":"x","b":1}`},
		{"headers", `{"b":1,"a":"x"}`, CallScope{Header: tenant}, `{"arguments":{"a":"x","b":1},"headers":{"X-Tenant":["acme"]}}`},
		{"path and query", `{}`, CallScope{Path: "/t/acme/mcp", Query: "x=1"}, `{"arguments":{},"path":"/t/acme/mcp","query":"x=1"}`},
		// Arguments shaped like a scoped document are wrapped: they must not bind like
		// {"a":1} sent with the X-Tenant header.
		{"scope-shaped arguments", `{"arguments":{"a":1},"headers":{"X-Tenant":["acme"]}}`, CallScope{},
			`{"arguments":{"arguments":{"a":1},"headers":{"X-Tenant":["acme"]}}}`},
		{"other arguments named arguments", `{"arguments":1,"more":2}`, CallScope{}, `{"arguments":1,"more":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := call(tt.args).ApprovalDocument(tt.scope)
			if err != nil || string(got) != tt.want {
				t.Errorf("got %s, %v, want %s", got, err, tt.want)
			}
		})
	}
	if _, err := call(`{}`).ApprovalDocument(CallScope{Header: http.Header{"X-Tenant": {"\xff"}}}); err == nil {
		t.Error("a header that is not UTF-8: got no error, want one (JSON cannot show it apart from another)")
	}
	for name, want := range map[string]bool{"mcp-session-id": true, "MCP-Protocol-Version": true, "Last-Event-ID": true,
		"Mcp-Method": true, "Mcp-Name": true, "Content-Type": true, "X-Tenant": false, "Prefer": false, "Idempotency-Key": false} {
		if got := TransportHeader(name); got != want {
			t.Errorf("TransportHeader(%q) = %v, want %v", name, got, want)
		}
	}
}
