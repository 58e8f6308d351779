package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/keyholehq/keyhole/internal/demomcp"
)

// The harness re-runs its own binary in these roles, so that each party of a
// measurement is a process of its own whose CPU and memory /proc can tell.
const (
	roleBackend    = "backend"
	roleMCPBackend = "mcpbackend"
	roleGoProxy    = "goproxy"
)

// runRole runs the role named by args[0] until it is killed.
func runRole(args []string) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	upstream := fs.String("upstream", "", "goproxy: backend URL")
	issuer := fs.String("issuer", "", "goproxy: verify an RS256 bearer token of this issuer on every request")
	jwks := fs.String("jwks", "", "goproxy: the issuer's JWKS URL")
	audience := fs.String("audience", "", "goproxy: the token audience")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var h http.Handler
	switch args[0] {
	case roleBackend:
		h = backend()
	case roleMCPBackend:
		// The demo's MCP server, stateless: every tools/call stands alone, as wrk sends it.
		h = demomcp.New(benchAPIKey, demomcp.Options{Stateless: true}).Handler()
	case roleGoProxy:
		var err error
		if h, err = goProxy(*upstream, *issuer, *jwks, *audience); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown role %q", args[0])
	}
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

// backend is the small JSON API every target fronts: /small (~300 B), /1kb (~1 KB),
// /big (~100 KB list of customers with personal data) and /huge (~1 MB of the same).
func backend() http.Handler {
	small := []byte(`{"id":42,"name":"Ada Lovelace","plan":"enterprise","status":"active","region":"eu-west-1",` +
		`"created_at":"2026-01-02T15:04:05Z","owner":"team-crm","tags":["priority","analytics","beta"],` +
		`"limits":{"requests_per_minute":600,"seats":25},"links":{"self":"/customers/42","invoices":"/customers/42/invoices"}}`)
	kb, big, huge := customers(1<<10), customers(100<<10), customers(1<<20)
	mux := http.NewServeMux()
	serve := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}
	}
	mux.HandleFunc("GET /small", serve(small))
	mux.HandleFunc("GET /1kb", serve(kb))
	mux.HandleFunc("GET /big", serve(big))
	mux.HandleFunc("GET /huge", serve(huge))
	return mux
}

// customers returns a JSON document {"customers": [...]} of about size bytes.
func customers(size int) []byte {
	type customer struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		Email string `json:"email"`
		SSN   string `json:"ssn"`
		Card  string `json:"card"`
		Phone string `json:"phone"`
		Notes string `json:"notes"`
	}
	var list []customer
	n := 0
	for i := 0; n < size; i++ {
		c := customer{ID: i, Name: fmt.Sprintf("Customer %d", i), Email: fmt.Sprintf("customer%d@example.com", i),
			SSN: "078-05-1120", Card: "4242424242424242", Phone: "+1 415 555 0100",
			Notes: "prefers email; renewal due in Q3; account managed by the EMEA team"}
		list = append(list, c)
		n += 230
	}
	b, _ := json.Marshal(map[string]any{"customers": list})
	return b
}

// goProxy is the baseline a Go engineer writes first: httputil.ReverseProxy injecting the
// API key, with idle connections sized to the load, and, when issuer is set, go-oidc
// verifying the RS256 bearer token on every request (no cache).
func goProxy(upstream, issuer, jwks, audience string) (http.Handler, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 512
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Set("X-Api-Key", benchAPIKey)
		},
	}
	if issuer == "" {
		return rp, nil
	}
	ctx := oidc.InsecureIssuerURLContext(context.Background(), issuer)
	v := oidc.NewVerifier(issuer, oidc.NewRemoteKeySet(ctx, jwks), &oidc.Config{ClientID: audience})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		if _, err := v.Verify(r.Context(), raw); err != nil {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	}), nil
}
