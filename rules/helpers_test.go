package rules

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// str, num, boolean and null build typed condition values.
func str(vs ...string) config.Scalars {
	out := make(config.Scalars, len(vs))
	for i, v := range vs {
		out[i] = config.Scalar{Value: v, Kind: config.String}
	}
	return out
}

func num(v string) config.Scalar     { return config.Scalar{Value: v, Kind: config.Number} }
func boolean(v string) config.Scalar { return config.Scalar{Value: v, Kind: config.Bool} }
func null() config.Scalar            { return config.Scalar{Value: "null", Kind: config.Null} }

func match(path string, methods ...string) config.Match {
	return config.Match{Methods: methods, Path: path}
}

func groups(gs ...string) *config.Allow { return &config.Allow{Groups: gs} }

func compile(t testing.TB, cfg *config.Config) *Table {
	t.Helper()
	tb, err := Compile(cfg)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tb
}

// req builds a Request; rawQuery is parsed as a query string.
func req(method, path, rawQuery string, body string, header ...string) *Request {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	return &Request{Method: method, Path: path, Query: q, Header: h, Body: b}
}

var (
	reader = &identity.Principal{Subject: "00u1reader", Groups: []string{"everyone", "crm-readers"}, Scopes: []string{"crm.read"}}
	writer = &identity.Principal{Subject: "00u2writer", Groups: []string{"crm-writers"}, Scopes: []string{"crm.read", "crm.write"}}
	admin  = &identity.Principal{Subject: "00u3admin", Groups: []string{"crm-admins", "crm-readers"}}
	// oktaService is a client-credentials token: sub == cid, scopes, no groups.
	oktaService = &identity.Principal{
		Issuer:   "https://acme.okta.com/oauth2/default",
		Subject:  "0oa1svc",
		ClientID: "0oa1svc",
		Scopes:   []string{"crm.read", "mcp.tools"},
		Claims: map[string]any{
			"cid": "0oa1svc", "sub": "0oa1svc", "scp": []any{"crm.read", "mcp.tools"},
			"ver": float64(1), "tenant": "acme",
		},
	}
)

// want is an expected decision: effect, the name of the deciding route ("" for none), reason.
type want struct {
	effect Effect
	route  string
	reason string
}

func check(t *testing.T, tb *Table, r *Request, p *identity.Principal, w want) {
	t.Helper()
	d := tb.Decide(r, p)
	name := ""
	if d.Route != nil {
		name = d.Route.Name
	}
	if d.Effect != w.effect || name != w.route || (w.reason != "" && d.Reason != w.reason) {
		t.Errorf("%s %s?%s = {%v %q %q}, want {%v %q %q}",
			r.Method, r.Path, r.Query.Encode(), d.Effect, name, d.Reason, w.effect, w.route, w.reason)
	}
	if d.Reason == "" {
		t.Errorf("%s %s: empty reason", r.Method, r.Path)
	}
}
