package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/rules"
)

// listFlag is a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func cmdCheck(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	path := fs.String("config", defaultConfig, "config file")
	method := fs.String("method", "", "request method (default GET, POST with --mcp-*)")
	target := fs.String("path", "", "request path, optionally with ?query (required)")
	sub := fs.String("sub", "", "token subject")
	cid := fs.String("client-id", "", "token client id (cid)")
	groups := fs.String("groups", "", "comma-separated groups")
	scopes := fs.String("scopes", "", "comma-separated scopes")
	bodyFile := fs.String("body", "", "file holding the request body")
	mcpTool := fs.String("mcp-tool", "", "judge a tools/call of this tool on the mcp route the method and path select")
	mcpArgs := fs.String("mcp-args", "", "file holding the tool's (or prompt's) arguments, a JSON object; - for stdin (default {})")
	mcpMethod := fs.String("mcp-method", "", "judge this JSON-RPC method instead (resources/read, prompts/get, ...)")
	mcpName := fs.String("mcp-name", "", "what --mcp-method acts on: a resource's uri, a prompt's name")
	var headers, claims listFlag
	fs.Var(&headers, "header", "request header Name:value (repeatable)")
	fs.Var(&claims, "claim", "extra token claim name=value, a string (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *target == "" {
		fmt.Fprintln(stderr, "keyhole check: --path is required")
		return errUsage
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	cfg, table, err := source{path: *path, getenv: getenv, judgeOnly: true}.compile(data)
	if err != nil {
		return reportLoad(stderr, *path, err)
	}
	pol, err := newPolicy(cfg, table)
	if err != nil {
		return err
	}
	c := policyCase{Request: policyRequest{Method: *method, Path: *target, Headers: map[string]string{}},
		Identity: policyIdentity{Sub: *sub, ClientID: *cid, Groups: splitList(*groups), Scopes: splitList(*scopes), Claims: map[string]any{}}}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("--header %q: want Name:value", h)
		}
		c.Request.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, kv := range claims {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--claim %q: want name=value", kv)
		}
		c.Identity.Claims[k] = v
	}
	if *bodyFile != "" {
		b, err := os.ReadFile(*bodyFile)
		if err != nil {
			return err
		}
		c.Request.Body = string(b)
	}
	if *mcpTool != "" || *mcpMethod != "" || *mcpName != "" || *mcpArgs != "" {
		if *mcpTool == "" && *mcpMethod == "" {
			fmt.Fprintln(stderr, "keyhole check: --mcp-name and --mcp-args need --mcp-tool or --mcp-method")
			return errUsage
		}
		if c.MCP, err = mcpFlags(*mcpTool, *mcpMethod, *mcpName, *mcpArgs, stdin); err != nil {
			return err
		}
	}
	v, err := pol.evaluate(c)
	if err != nil {
		return err
	}
	p := c.Identity.principal()
	fmt.Fprintf(stdout, "request:   %s %s\n", v.method, c.Request.Path)
	fmt.Fprintf(stdout, "identity:  sub=%q client_id=%q groups=%v scopes=%v", p.Subject, p.ClientID, p.Groups, p.Scopes)
	if len(c.Identity.Claims) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(c.Identity.Claims)) {
			kv = append(kv, fmt.Sprintf("%s=%q", k, c.Identity.Claims[k]))
		}
		fmt.Fprintf(stdout, " claims={%s}", strings.Join(kv, " "))
	}
	fmt.Fprintln(stdout)
	if r := v.decision.Route; r != nil {
		kind := "route"
		if r.Guard {
			kind = "guard"
		}
		fmt.Fprintf(stdout, "%-10s %s (pattern %s", kind+":", r.Name, r.Pattern)
		if r.Upstream != "" {
			fmt.Fprintf(stdout, ", upstream %s, forwards %s", r.Upstream, r.ForwardPath(v.path))
		}
		fmt.Fprintln(stdout, ")")
		if r.Config != nil && !r.Guard {
			fmt.Fprintf(stdout, "record:    %s\n", recordSummary(r.Config, cfg.Recorder.Retention))
		}
	} else {
		fmt.Fprintln(stdout, "route:     none")
	}
	if mv := v.mcp; mv != nil {
		if m := mv.msg; m != nil {
			fmt.Fprintf(stdout, "mcp:       %s", m.Method)
			if m.Name != "" {
				fmt.Fprintf(stdout, " %s", m.Name)
			}
			if m.Arguments != nil {
				fmt.Fprintf(stdout, " arguments %s", m.Arguments)
			}
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "entry:     %s\n", mv.entry)
	}
	status := strconv.Itoa(v.status)
	if v.code != "" {
		status += " " + v.code
	}
	fmt.Fprintf(stdout, "decision:  %s (%s)\n", v.effect, status)
	if v.mcp != nil {
		fmt.Fprintf(stdout, "answer:    %s\n", v.mcp.answer)
	}
	fmt.Fprintf(stdout, "reason:    %s\n", v.reason)
	return nil
}

// recordSummary says what the recorder keeps of route r's exchanges and for how long,
// keep being recorder.retention.
func recordSummary(r *config.Route, keep config.Duration) string {
	mode := r.Record
	switch mode {
	case "", config.RecordFull:
		mode = "full"
	case config.RecordMetadata:
		mode = "metadata (no bodies)"
	case config.RecordNone:
		mode = "none (only refusals and errors)"
	}
	switch {
	case r.Retention > 0:
		return mode + ", kept " + r.Retention.String() + " (the route's retention)"
	case keep > 0:
		return mode + ", kept " + keep.String() + " (recorder.retention)"
	}
	return mode + ", kept until deleted (no retention set)"
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// verdict is what the gateway would do with one described request.
type verdict struct {
	method   string // the request's method, GET when the case names none
	path     string // canonical path, "" if refused before routing
	effect   string // the rules.Effect name, or "bad_request" for a refused path or query
	status   int
	code     string
	reason   string
	decision rules.Decision
	// mcp is the judgement of the case's JSON-RPC message (or why it was not judged: the
	// route refused the caller), nil when it has none or it was refused before any route.
	mcp *mcpVerdict
}

// evaluate judges c the way the data plane does after authentication: method, canonical
// path, header hygiene, query parsing, guards and route rules, then the JSON-RPC message
// of a case with mcp. It fails on a case it cannot judge: an MCP message that is not
// well described, or sent to a route that is not an mcp route.
func (pol *policy) evaluate(c policyCase) (verdict, error) {
	var mcpBody []byte
	if c.MCP != nil {
		if c.Request.Body != "" {
			return verdict{}, fmt.Errorf("mcp: the request body is the JSON-RPC message; give mcp or a body, not both")
		}
		if c.Request.Method != "" && c.Request.Method != http.MethodPost {
			return verdict{}, fmt.Errorf("mcp: an MCP message is a POST, not %s", c.Request.Method)
		}
		var err error
		if mcpBody, err = c.MCP.body(); err != nil {
			return verdict{}, fmt.Errorf("mcp: %w", err)
		}
		c.Request.Method, c.Request.Body = http.MethodPost, string(mcpBody)
	}
	if c.Request.Method == "" {
		c.Request.Method = http.MethodGet
	}
	v := pol.route(c)
	v.method = c.Request.Method
	if c.MCP == nil {
		return v, nil
	}
	return pol.judgeMCP(v, c, mcpBody)
}

// route judges c, whose method is set, up to the route decision.
func (pol *policy) route(c policyCase) verdict {
	method := c.Request.Method
	if !proxy.MethodAllowed(method) {
		return verdict{effect: "bad_request", status: http.StatusMethodNotAllowed, code: "method_not_allowed",
			reason: "method " + method + " is not accepted by the gateway"}
	}
	target := c.Request.Path
	if c.Request.Query != "" {
		target += "?" + c.Request.Query
	}
	p, err := proxy.CanonicalPath(target)
	if err != nil {
		return verdict{effect: "bad_request", status: http.StatusBadRequest, code: "bad_request", reason: err.Error()}
	}
	_, rawQuery, _ := strings.Cut(target, "?")
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return verdict{path: p, effect: "bad_request", status: http.StatusBadRequest, code: "bad_request", reason: "malformed query string"}
	}
	if len(proxy.AccessTokens(query)) > 0 {
		return verdict{path: p, effect: "bad_request", status: http.StatusBadRequest, code: "bad_request", reason: "access tokens are accepted only in the Authorization header"}
	}
	h := http.Header{}
	for k, v := range c.Request.Headers {
		h.Set(k, v)
	}
	proxy.PrepareHeaders(h)
	req := rules.Request{Method: method, Path: p, Query: query, Header: h}
	if c.Request.Body != "" {
		req.Body = []byte(c.Request.Body)
	}
	principal := c.Identity.principal()
	d := pol.table.Decide(&req, principal)
	status, code := proxy.Outcome(d)
	if d.Effect == rules.Allow && d.Route.Approval != nil {
		// Allowed to ask: the request is held until a route approver approves it.
		return verdict{path: p, effect: "approval", status: http.StatusForbidden, code: "approval_pending",
			reason: d.Reason + "; it is held until approved by " + approversText(d.Route.Approval), decision: d}
	}
	return verdict{path: p, effect: d.Effect.String(), status: status, code: code, reason: d.Reason, decision: d}
}

// principal builds the Principal a token with these claims would verify to.
func (id policyIdentity) principal() *identity.Principal {
	claims := map[string]any{}
	for k, v := range id.Claims {
		claims[k] = v
	}
	if id.Sub != "" {
		claims["sub"] = id.Sub
	}
	if id.ClientID != "" {
		claims["cid"] = id.ClientID
	}
	return &identity.Principal{Issuer: id.Issuer, Subject: id.Sub, ClientID: id.ClientID,
		Groups: id.Groups, Scopes: id.Scopes, Claims: claims}
}

// approversText describes who approves a route's requests.
func approversText(a *config.Approval) string {
	var who []string
	for _, l := range []struct {
		what string
		vs   []string
	}{{"group", a.Approvers.Groups}, {"scope", a.Approvers.Scopes}, {"subject", a.Approvers.Subjects}} {
		for _, v := range l.vs {
			who = append(who, l.what+" "+v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(a.Approvers.Claims)) {
		who = append(who, "claim "+k)
	}
	n := "1 approver"
	if a.MinApprovals > 1 {
		n = fmt.Sprintf("%d approvers", a.MinApprovals)
	}
	return n + " (" + strings.Join(who, " or ") + ")"
}
