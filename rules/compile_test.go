package rules

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/keyholehq/keyhole/config"
)

func TestCompileErrors(t *testing.T) {
	ok := groups("g")
	route := func(name, path string, when *config.When) config.Route {
		return config.Route{Name: name, Match: config.Match{Methods: []string{"GET"}, Path: path, When: when}, Upstream: "u", Allow: ok}
	}
	body := func(path string) *config.When {
		return &config.When{Body: map[string]config.Scalars{path: str("v")}}
	}
	tests := []struct {
		name string
		cfg  config.Config
		want []string
	}{
		{"unclosed param", config.Config{Routes: []config.Route{route("r", "/a/{id", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "/a/{id": route param closing delimiter '}' is missing`}},
		{"no leading slash", config.Config{Routes: []config.Route{route("r", "a/b", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "a/b": routing pattern must begin with '/' in 'a/b'`}},
		{"empty path", config.Config{Routes: []config.Route{route("r", "", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "": routing pattern must begin with '/' in ''`}},
		{"wildcard not last", config.Config{Routes: []config.Route{route("r", "/a/*/b", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "/a/*/b": wildcard '*' must be the last value in a route. trim trailing text or use a '{param}' instead`}},
		{"bad param regexp", config.Config{Routes: []config.Route{route("r", "/a/{id:[}", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "/a/{id:[}": invalid regexp pattern '^[$' in route param`}},
		{"duplicate param", config.Config{Routes: []config.Route{route("r", "/a/{id}/{id}", nil)}},
			[]string{`routes[0].match.path: invalid path pattern "/a/{id}/{id}": routing pattern '/a/{id}/{id}' contains duplicate param key, 'id'`}},
		{"bad guard pattern", config.Config{Guards: []config.Route{{Name: "g", Match: match("/x/{", "*"), Deny: "no"}}},
			[]string{`guards[0].match.path: invalid path pattern "/x/{": route param closing delimiter '}' is missing`}},
		{"gjson wildcard", config.Config{Routes: []config.Route{route("r", "/a", body("params.na*e"))}},
			[]string{`routes[0].match.when.body["params.na*e"]: unsupported gjson path "params.na*e": wildcards match whichever key comes first`}},
		{"gjson #", config.Config{Routes: []config.Route{route("r", "/a", body("params.#.name"))}},
			[]string{`routes[0].match.when.body["params.#.name"]: unsupported gjson path "params.#.name": '#' (array length, map or query) does not name one value`}},
		{"gjson query", config.Config{Routes: []config.Route{route("r", "/a", body(`items.#(sku=="x").n`))}},
			[]string{`routes[0].match.when.body["items.#(sku==\"x\").n"]: unsupported gjson path "items.#(sku==\"x\").n": '#' (array length, map or query) does not name one value`}},
		{"gjson modifier", config.Config{Routes: []config.Route{route("r", "/a", body("@reverse.0"))}},
			[]string{`routes[0].match.when.body["@reverse.0"]: unsupported gjson path "@reverse.0": modifiers are not supported`}},
		{"gjson pipe", config.Config{Routes: []config.Route{route("r", "/a", body("a|b"))}},
			[]string{`routes[0].match.when.body["a|b"]: unsupported gjson path "a|b": pipes are not supported`}},
		{"gjson multipath", config.Config{Routes: []config.Route{route("r", "/a", body("[a,b]"))}},
			[]string{`routes[0].match.when.body["[a,b]"]: unsupported gjson path "[a,b]": multipaths are not supported`}},
		{"gjson literal", config.Config{Routes: []config.Route{route("r", "/a", body("!true"))}},
			[]string{`routes[0].match.when.body["!true"]: unsupported gjson path "!true": literals are not supported`}},
		{"gjson JSON lines", config.Config{Routes: []config.Route{route("r", "/a", body("..a"))}},
			[]string{`routes[0].match.when.body["..a"]: unsupported gjson path "..a": empty key; escape a literal dot as \.`}},
		{"gjson trailing escape", config.Config{Routes: []config.Route{route("r", "/a", body(`a\`))}},
			[]string{`routes[0].match.when.body["a\\"]: unsupported gjson path "a\\": it ends in a lone escape`}},
		{"bad regex", config.Config{Routes: []config.Route{route("r", "/a", &config.When{BodyRegex: "(a"})}},
			[]string{"routes[0].match.when.body_regex: invalid RE2 expression: error parsing regexp: missing closing ): `(a`"}},
		{"Perl-only regex", config.Config{Guards: []config.Route{{Name: "g", Match: config.Match{Methods: []string{"*"}, Path: "/*",
			When: &config.When{BodyRegex: `(?<=x)y`}}, Deny: "no"}}},
			[]string{"guards[0].match.when.body_regex: invalid RE2 expression: error parsing regexp: invalid named capture: `(?<=x)y`"}},
		{"strip prefix not a prefix", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/customers/{id}", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{StripPrefix: "/cr"}}}},
			[]string{`routes[0].rewrite.strip_prefix: "/cr" is not a prefix of path pattern "/crm/customers/{id}" at a segment boundary`}},
		{"strip prefix beyond the literal", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/{id}", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{StripPrefix: "/crm/x"}}}},
			[]string{`routes[0].rewrite.strip_prefix: "/crm/x" is not a prefix of path pattern "/crm/{id}" at a segment boundary`}},
		{"strip prefix with slash", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/*", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{StripPrefix: "/crm/"}}}},
			[]string{`routes[0].rewrite.strip_prefix: "/crm/" must start with "/" and not end with "/"`}},
		{"strip prefix with param", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/{id}", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{StripPrefix: "/crm/{id}"}}}},
			[]string{`routes[0].rewrite.strip_prefix: "/crm/{id}" must be literal text, without parameters or wildcards`}},
		{"add prefix dot segment", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/*", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{AddPrefix: "/api/../admin"}}}},
			[]string{`routes[0].rewrite.add_prefix: "/api/../admin" must not hold empty, "." or ".." segments`}},
		{"add prefix query", config.Config{Routes: []config.Route{{Name: "r", Match: match("/crm/*", "GET"),
			Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{AddPrefix: "/api?x=1"}}}},
			[]string{`routes[0].rewrite.add_prefix: "/api?x=1" must not hold control characters, '?', '#' or '\'`}},
		{"unknown method", config.Config{Routes: []config.Route{{Name: "r", Match: match("/a", "GET", "TRACE"), Upstream: "u", Allow: ok}}},
			[]string{`routes[0].match.methods[1]: unknown method "TRACE": want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or "*"`}},
		{"empty allow", config.Config{Routes: []config.Route{{Name: "r", Match: match("/a", "GET"), Upstream: "u", Allow: &config.Allow{}}}},
			[]string{`routes[0].allow: allow names no groups, scopes, subjects or claims; it would allow every caller`}},
		{"empty allow list", config.Config{Routes: []config.Route{{Name: "r", Match: match("/a", "GET"), Upstream: "u", Allow: &config.Allow{Groups: []string{}}}}},
			[]string{`routes[0].allow.groups: empty list; name at least one group or leave groups out`}},
		{"nothing allowed", config.Config{Routes: []config.Route{{Name: "r", Match: match("/a", "GET"), Upstream: "u"}}},
			[]string{`routes[0]: route "r" has neither allow, deny nor approval; nothing would be allowed`}},
		{"guard without message", config.Config{Guards: []config.Route{{Name: "g", Match: match("/*", "*")}}},
			[]string{`guards[0].deny: a guard needs a deny message`}},
		{"infinite number", config.Config{Routes: []config.Route{route("r", "/a", &config.When{Body: map[string]config.Scalars{"n": {num("1"), num(".inf")}}})}},
			[]string{`routes[0].match.when.body.n[1]: ".inf" is not a finite number`}},
		{"null query value", config.Config{Routes: []config.Route{route("r", "/a", &config.When{Query: map[string]config.Scalars{"q": {null()}}})}},
			[]string{`routes[0].match.when.query.q: null never matches a query parameter or header; quote "null" to match that text`}},
		{"shadowed route", config.Config{Routes: []config.Route{
			{Name: "any", Match: match("/a/{id}", "*"), Upstream: "u", Allow: ok},
			{Name: "never", Match: match("/a/{name}", "DELETE"), Deny: "no deletes"},
		}}, []string{`routes[1].match: route "never" is never selected: routes[0] (any) has the same path pattern, accepts all its methods and has no when conditions`}},
		{"every error at once", config.Config{
			Guards: []config.Route{{Name: "g", Match: config.Match{Methods: []string{"*"}, Path: "/*", When: &config.When{BodyRegex: "["}}, Deny: "no"}},
			Routes: []config.Route{
				route("a", "/a/{", nil),
				route("b", "/b", body("x.*")),
				{Name: "c", Match: match("/c/*", "GET"), Upstream: "u", Allow: ok, Rewrite: &config.Rewrite{StripPrefix: "/d"}},
			}},
			[]string{
				"guards[0].match.when.body_regex: invalid RE2 expression: error parsing regexp: missing closing ]: `[`",
				`routes[0].match.path: invalid path pattern "/a/{": route param closing delimiter '}' is missing`,
				`routes[1].match.when.body["x.*"]: unsupported gjson path "x.*": wildcards match whichever key comes first`,
				`routes[2].rewrite.strip_prefix: "/d" is not a prefix of path pattern "/c/*" at a segment boundary`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := Compile(&tt.cfg)
			if err == nil {
				t.Fatalf("Compile = %v, nil; want errors %q", tb, tt.want)
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("error %v is %T, want *config.FieldError", e, e)
				}
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Compile errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestCompileAcceptsPaths(t *testing.T) {
	for _, p := range []string{"method", "params.name", "params.arguments.0.id", `a\.b`, `a\*b`, `x\#`, `k\@y`, "héllo.wörld", "a b", "-1"} {
		_, why := splitPath(p)
		if why != "" {
			t.Errorf("splitPath(%q) refused: %s", p, why)
		}
	}
}

// TestBodyPathsMatchGjson checks that accepted paths read, through gjson, exactly the
// value their unescaped components name.
func TestBodyPathsMatchGjson(t *testing.T) {
	body := `{"a.b":"dotted","a":{"b":"nested"},"x*y":"star","k@y":"at","list":[{"id":"first"},{"id":"second"}],"0":"zero-key"}`
	tests := []struct{ path, want string }{
		{`a\.b`, "dotted"},
		{"a.b", "nested"},
		{`x\*y`, "star"},
		{`k\@y`, "at"},
		{"list.1.id", "second"},
		{"0", "zero-key"},
	}
	for _, tt := range tests {
		tb := compile(t, &config.Config{Routes: []config.Route{{Name: "r",
			Match:    config.Match{Methods: []string{"POST"}, Path: "/", When: &config.When{Body: map[string]config.Scalars{tt.path: str(tt.want)}}},
			Upstream: "u", Allow: groups("everyone")}}})
		if d := tb.Decide(req("POST", "/", "", body), reader); d.Effect != Allow {
			t.Errorf("body[%q] == %q: Decide = %v (%s), want allow", tt.path, tt.want, d.Effect, d.Reason)
		}
	}
}

// TestPatternShape checks that patterns get the same shape exactly when chi puts them
// on the same tree node.
func TestPatternShape(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"/a/{id}", "/a/{name}", true},
		{"/a/{id}/b", "/a/{x}/b", true},
		{"/a/{id:[0-9]+}", "/a/{n:^[0-9]+$}", true},
		{"/a/{id:[0-9]+}", "/a/{id}", false},
		{"/a/{id}", "/a/{id}/", false},
		{"/a/{id}.json", "/a/{id}", false},
		{"/a/*", "/a/{id}", false},
		{"/a/{id:\\d{3}}", "/a/{x:\\d{3}}", true},
		{"/a/{id}/*", "/a/{x}/*", true},
	}
	for _, tt := range tests {
		if got := patternShape(tt.a) == patternShape(tt.b); got != tt.same {
			t.Errorf("same shape(%q, %q) = %v (%q, %q), want %v", tt.a, tt.b, got, patternShape(tt.a), patternShape(tt.b), tt.same)
		}
		// chi: registering b after a keeps one pattern exactly when they share a node.
		mux := chi.NewMux()
		mux.Method("GET", tt.a, http.NotFoundHandler())
		mux.Method("GET", tt.b, http.NotFoundHandler())
		if got := len(mux.Routes()) == 1; got != tt.same {
			t.Errorf("chi keeps one of %q, %q = %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
}

// TestCompileYAMLLines checks that errors found at Compile carry the YAML line the
// loader recorded for their field path.
func TestCompileYAMLLines(t *testing.T) {
	const yaml = `identity:
  issuers:
    - issuer: https://acme.okta.com/oauth2/default
      audiences: [api://default]
upstreams:
  mcp: { url: http://mcp.internal:8080 }
routes:
  - name: mcp-tools
    match:
      methods: [POST]
      path: /mcp
      when:
        body: { method: tools/call, "params.#.name": lookup_customer }
    upstream: mcp
    allow: { scopes: [mcp.tools] }
  - name: files
    match: { methods: [GET], path: "/files/{id" }
    upstream: mcp
    allow: { groups: [g] }
`
	cfg, err := config.Parse([]byte(yaml), "", nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	_, err = Compile(cfg)
	want := `line 13: routes[0].match.when.body["params.#.name"]: unsupported gjson path "params.#.name": '#' (array length, map or query) does not name one value` + "\n" +
		`line 17: routes[1].match.path: invalid path pattern "/files/{id": route param closing delimiter '}' is missing`
	if err == nil || err.Error() != want {
		t.Errorf("Compile error:\n%v\nwant:\n%s", err, want)
	}
}
