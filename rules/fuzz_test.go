package rules

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

func fuzzConfig() *config.Config {
	cfg := crmConfig()
	cfg.Guards = append(cfg.Guards, config.Route{Name: "no-delete-tool",
		Match: config.Match{Methods: []string{"POST"}, Path: "/mcp",
			When: &config.When{Body: map[string]config.Scalars{"params.arguments.mode": str("purge")}}},
		Deny: "purge is never forwarded"})
	cfg.Routes = append(cfg.Routes, mcpConfig().Routes...)
	cfg.Routes = append(cfg.Routes, config.Route{Name: "claims", Match: match("/claims/{x}", "GET", "POST"), Upstream: "u",
		Allow: &config.Allow{Subjects: []string{"0oa1svc"}, Claims: map[string]config.Scalars{"tenant": str("acme"), "ver": {num("1")}}}})
	return cfg
}

func FuzzDecide(f *testing.F) {
	seeds := []struct{ method, path, body, query string }{
		{"GET", "/crm/customers/42", "", ""},
		{"HEAD", "/crm/customers/search", "", ""},
		{"GET", "/crm/customers/9/profile", "", "expand=profile&expand=all"},
		{"DELETE", "/crm/customers/bulk/x", "", ""},
		{"POST", "/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer"}}`, ""},
		{"POST", "/mcp", `[{"method":"tools/call"},{"method":"tools/call"}]`, ""},
		{"POST", "/mcp", `{"params":{"name":"a","n\u0061me":"b"}}`, ""},
		{"POST", "/mcp", `{"params":{"arguments":{"mode":"purge"}}}`, ""},
		{"PUT", "/crm/x", "DROP TABLE x", ""},
		{"GET", "/claims/1", "", ""},
		{"PROPFIND", "/status", "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.body, s.query)
	}
	cfg := fuzzConfig()
	tb := compile(f, cfg)
	principals := []*identity.Principal{nil, reader, writer, admin, oktaService}

	f.Fuzz(func(t *testing.T, method, path, body, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery)
		r := &Request{Method: method, Path: path, Query: q, Header: http.Header{"X-Tenant": {"acme"}}, Body: []byte(body)}
		needs := tb.NeedsBody(method, path)
		for _, p := range principals {
			d := tb.Decide(r, p)
			if d.Reason == "" {
				t.Errorf("%s %s: %v with an empty reason", method, path, d.Effect)
			}
			rt := d.Route
			switch d.Effect {
			case NoRoute:
				if rt != nil {
					t.Errorf("%s %s: no_route with route %s", method, path, rt.Name)
				}
			case Allow, Forbid:
				if rt == nil || rt.Guard || rt.Deny != "" {
					t.Fatalf("%s %s: %v with route %+v", method, path, d.Effect, rt)
				}
				if got := refAllows(rt.Config.Allow, p); got != (d.Effect == Allow) {
					t.Errorf("%s %s as %v: %v by %s, but its allow holds = %v", method, path, p, d.Effect, rt.Name, got)
				}
				if !refMatches(rt, method, path) {
					t.Errorf("%s %s: %v by %s, whose method or pattern does not match", method, path, d.Effect, rt.Name)
				}
			case Deny:
				if rt == nil || rt.Deny == "" || d.Reason != rt.Deny {
					t.Errorf("%s %s: denied (%q) by %+v", method, path, d.Reason, rt)
				}
			case Invalid:
				if body == "" || !needs || rt == nil || rt.when == nil || len(rt.when.body) == 0 && rt.when.bodyRegex == nil {
					t.Errorf("%s %s: bad_request (%s) without body conditions to consider (NeedsBody %v)", method, path, d.Reason, needs)
				}
			default:
				t.Errorf("%s %s: unknown effect %d", method, path, d.Effect)
			}
		}
	})
}

// refAllows is a plain reading of the allow contract, independent of the compiled form.
func refAllows(a *config.Allow, p *identity.Principal) bool {
	if a == nil {
		return true // approval-only route
	}
	if p == nil {
		p = &identity.Principal{}
	}
	anyOf := func(want, have []string) bool {
		return slices.ContainsFunc(want, func(w string) bool { return slices.Contains(have, w) })
	}
	if a.Groups != nil && !anyOf(a.Groups, p.Groups) {
		return false
	}
	if a.Scopes != nil && !anyOf(a.Scopes, p.Scopes) {
		return false
	}
	if a.Subjects != nil && !slices.Contains(a.Subjects, p.Subject) {
		return false
	}
	for name, vs := range a.Claims {
		got, ok := p.Claims[name]
		if !ok {
			return false
		}
		elems := []any{got}
		if arr, isArr := got.([]any); isArr {
			elems = arr
		}
		if !slices.ContainsFunc(vs, func(s config.Scalar) bool {
			return slices.ContainsFunc(elems, func(e any) bool { return refEqual(s, e) })
		}) {
			return false
		}
	}
	return true
}

func refEqual(s config.Scalar, e any) bool {
	switch s.Kind {
	case config.String:
		return e == any(s.Value)
	case config.Number:
		f, err := strconv.ParseFloat(s.Value, 64)
		n, ok := e.(float64)
		return err == nil && ok && f == n
	case config.Bool:
		return e == any(s.Value == "true")
	case config.Null:
		return e == nil
	}
	return false
}

// refMatches reports whether rt's methods accept method and its pattern alone matches path.
func refMatches(rt *Route, method, path string) bool {
	okMethod := slices.ContainsFunc(rt.Methods, func(m string) bool {
		return m == "*" || m == method || m == "GET" && method == "HEAD"
	})
	mux := chi.NewMux()
	mux.Method("GET", rt.Pattern, http.NotFoundHandler())
	return okMethod && mux.Find(chi.NewRouteContext(), "GET", path) != ""
}
