package proxy_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/telemetry"
)

// newTracer returns a Tracer exporting to a fresh in-process OTLP receiver.
func newTracer(t *testing.T, ratio float64) (*telemetry.Tracer, *testkit.OTLPReceiver) {
	t.Helper()
	rcv := testkit.NewOTLPReceiver(t)
	tr, err := telemetry.New(context.Background(), telemetry.Options{Endpoint: rcv.URL, SampleRatio: ratio,
		Headers: map[string]string{"X-Collector-Key": "collector-key"}, Timeout: 5 * time.Second, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return tr, rcv
}

// shutdown flushes tr's spans to its receiver, as serve's shutdown does.
func shutdown(t *testing.T, tr *telemetry.Tracer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// attrs returns a span's attributes as strings by key.
func attrs(s *tracepb.Span) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes {
		out[kv.Key] = anyValue(kv.Value)
	}
	return out
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	}
	return v.String()
}

// TestTraces sends requests of every kind through a tracing gateway that records into
// SQLite, and reads back, from an OTLP/HTTP receiver, the server span of each, its
// children (token check, record, upstream call) and their attributes; the traceparent
// the upstream received; the trace id in the record; and that no span holds a token, a
// credential, a body or a query value.
func TestTraces(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	tr, rcv := newTracer(t, 1)
	h.gw.SetTracer(tr)
	reader := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	outsider := h.token(t, map[string]any{"sub": "eve", "scp": []string{"other"}})
	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
		bodySecret  = "PLANTED-BODY-VALUE-93d1"
		querySecret = "PLANTED-QUERY-TOKEN-5c2e"
	)
	cases := []struct {
		name, method, path, token, body string
		hdr                             http.Header
		status                          int
		route, decision                 string
		stages                          []string // child span names, upstream call as "client"
		serverError                     bool     // status Error on the server span
		parent                          string   // the client's span id, "" for a root
	}{
		{name: "allowed with the client's traceparent", method: "GET", path: "/crm/customers/42?fields=name", token: reader,
			hdr:    http.Header{"Traceparent": {"00-" + clientTrace + "-" + clientSpan + "-01"}, "User-Agent": {"agent/1.0"}},
			status: 200, route: "crm-read-customer", decision: "allowed", parent: clientSpan,
			stages: []string{"keyhole.verify_token", "keyhole.record", "client"}},
		{name: "allowed with a body", method: "POST", path: "/crm/customers", token: reader, body: `{"name":"` + bodySecret + `"}`,
			status: 200, route: "crm-create-customer", decision: "allowed",
			stages: []string{"keyhole.verify_token", "keyhole.record", "client"}},
		{name: "forbidden", method: "GET", path: "/crm/customers/42", token: outsider,
			status: 403, route: "crm-read-customer", decision: "forbidden", stages: []string{"keyhole.verify_token"}},
		{name: "bad token", method: "GET", path: "/crm/customers/42", token: "not-a-jwt",
			status: 401, decision: "unauthenticated", stages: []string{"keyhole.verify_token"}},
		{name: "query token", method: "GET", path: "/crm/customers/42?access_token=" + querySecret, token: reader,
			status: 400, decision: "error", stages: []string{"keyhole.verify_token"}},
		{name: "upstream down", method: "GET", path: "/down", token: reader,
			status: 502, route: "down", decision: "error", serverError: true,
			stages: []string{"keyhole.verify_token", "keyhole.record", "client"}},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		h.crm.Reset()
		resp, _ := h.do(t, c.method, c.path, c.token, c.body, c.hdr)
		if resp.StatusCode != c.status {
			t.Fatalf("%s: %s %s = %d, want %d", c.name, c.method, c.path, resp.StatusCode, c.status)
		}
		ids[i] = resp.Header.Get("X-Request-Id")
		if c.name == "allowed with the client's traceparent" {
			// The upstream is a child of the gateway's client span, in the client's trace.
			reqs := h.crm.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests", len(reqs))
			}
			tp := strings.Split(reqs[0].Header.Get("Traceparent"), "-")
			if len(tp) != 4 || tp[1] != clientTrace || tp[2] == clientSpan || tp[3] != "01" {
				t.Errorf("upstream traceparent = %q, want trace %s with the gateway's span as parent", reqs[0].Header.Get("Traceparent"), clientTrace)
			}
			defer func(upstreamParent string) {
				t.Run("upstream parent is the client span", func(t *testing.T) {
					for _, s := range rcv.Spans() {
						if hex.EncodeToString(s.SpanId) == upstreamParent {
							if s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
								t.Errorf("upstream's parent span %s is %v, want the client span", s.Name, s.Kind)
							}
							return
						}
					}
					t.Errorf("no span %s, the upstream's parent", upstreamParent)
				})
			}(tp[2])
		}
	}
	h.flush(t)
	shutdown(t, tr)
	spans := rcv.Spans()
	if hs := rcv.Headers(); len(hs) == 0 || hs[0].Get("X-Collector-Key") != "collector-key" {
		t.Errorf("export headers = %v, want X-Collector-Key", hs)
	}

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var server *tracepb.Span
			for _, s := range spans {
				if s.Kind == tracepb.Span_SPAN_KIND_SERVER && attrs(s)["keyhole.exchange_id"] == ids[i] {
					server = s
				}
			}
			if server == nil {
				t.Fatalf("no server span with keyhole.exchange_id %s among %d spans", ids[i], len(spans))
			}
			traceID := hex.EncodeToString(server.TraceId)
			if got := hex.EncodeToString(server.ParentSpanId); got != c.parent {
				t.Errorf("server span parent = %q, want %q", got, c.parent)
			}
			if c.parent != "" && traceID != clientTrace {
				t.Errorf("trace id = %s, want the client's %s", traceID, clientTrace)
			}
			a := attrs(server)
			path, _, _ := strings.Cut(c.path, "?")
			want := map[string]string{"http.request.method": c.method, "url.path": path, "http.response.status_code": strconv.Itoa(c.status),
				"keyhole.decision": c.decision, "http.route": c.route, "keyhole.route": c.route, "client.address": "127.0.0.1",
				"server.address": "127.0.0.1", "url.scheme": "http"}
			if c.route == "" {
				for _, k := range []string{"http.route", "keyhole.route"} {
					if v, ok := a[k]; ok {
						t.Errorf("server span %s = %q, want none: no route matched", k, v)
					}
					delete(want, k)
				}
			}
			if ua := c.hdr.Get("User-Agent"); ua != "" {
				want["user_agent.original"] = ua
			}
			for k, v := range want {
				if a[k] != v {
					t.Errorf("server span %s = %q, want %q", k, a[k], v)
				}
			}
			if isErr := server.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr != c.serverError {
				t.Errorf("server span status %v, want error %v", server.Status, c.serverError)
			}
			var stages []string
			for _, s := range spans {
				if hex.EncodeToString(s.TraceId) != traceID || s == server {
					continue
				}
				if !bytes.Equal(s.ParentSpanId, server.SpanId) {
					t.Errorf("span %s is not a child of the server span", s.Name)
				}
				name := s.Name
				if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
					name = "client"
					ca := attrs(s)
					if ca["http.request.method"] != c.method || ca["keyhole.upstream"] == "" || ca["server.address"] != "127.0.0.1" {
						t.Errorf("client span attributes %v", ca)
					}
					if c.serverError != (s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR) {
						t.Errorf("client span status %v, want error %v", s.Status, c.serverError)
					}
				}
				stages = append(stages, name)
			}
			if strings.Join(stages, ",") != strings.Join(c.stages, ",") {
				t.Errorf("child spans %v, want %v", stages, c.stages)
			}
			if x := h.exchange(t, ids[i]); x.TraceID != traceID {
				t.Errorf("record trace_id = %q, want %s", x.TraceID, traceID)
			}
		})
	}

	t.Run("no secret in any span", func(t *testing.T) {
		for _, s := range spans {
			texts := []string{s.Name, s.Status.GetMessage()}
			for _, kv := range s.Attributes {
				texts = append(texts, kv.Key+"="+anyValue(kv.Value))
			}
			for _, ev := range s.Events {
				texts = append(texts, ev.String())
			}
			for _, text := range texts {
				for _, secret := range []string{reader, outsider, "not-a-jwt", crmKey, bodySecret, querySecret, "fields=name"} {
					if strings.Contains(text, secret) {
						t.Errorf("span %s holds %q: %s", s.Name, secret, text)
					}
				}
			}
		}
	})
}

// TestTracesMCP calls a tool with the official MCP SDK through a tracing gateway and
// checks the MCP conventions on the call's server span, and that its arguments are not.
func TestTracesMCP(t *testing.T) {
	h := newHarness(t)
	tr, rcv := newTracer(t, 1)
	h.gw.SetTracer(tr)
	up := httptest.NewServer((&mcpServer{}).handler(true))
	t.Cleanup(up.Close)
	h.cfgEnv["MCP_URL"] = up.URL
	h.load(t, mcpConfig)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok := h.token(t, map[string]any{"sub": "agent-traced", "groups": []string{"agents"}})
	c := sdk.NewClient(&sdk.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: h.srv.URL + "/crm/mcp",
		HTTPClient: &http.Client{Transport: bearer{tok}}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const argSecret = "PLANTED-ARGUMENT-4e1b"
	if _, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"id": 1, "note": argSecret}}); err != nil {
		t.Fatal(err)
	}
	session := cs.ID()
	cs.Close()
	shutdown(t, tr)

	var call map[string]string
	for _, s := range rcv.Spans() {
		a := attrs(s)
		for k, v := range a {
			if strings.Contains(v, argSecret) || strings.Contains(v, tok) {
				t.Errorf("span %s attribute %s holds a secret: %s", s.Name, k, v)
			}
		}
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER && a["mcp.method.name"] == "tools/call" {
			call = a
			if s.Name != "tools/call lookup_customer" {
				t.Errorf("tools/call span name = %q, want %q", s.Name, "tools/call lookup_customer")
			}
		}
	}
	if call == nil {
		t.Fatal("no server span with mcp.method.name tools/call")
	}
	for k, want := range map[string]string{"gen_ai.tool.name": "lookup_customer", "gen_ai.operation.name": "execute_tool",
		"mcp.session.id": session, "keyhole.decision": "allowed", "http.request.method": "POST"} {
		if call[k] != want {
			t.Errorf("tools/call span %s = %q, want %q", k, call[k], want)
		}
	}
	if call["jsonrpc.request.id"] == "" || strings.Contains(call["jsonrpc.request.id"], `"`) {
		t.Errorf("jsonrpc.request.id = %q, want the call's id", call["jsonrpc.request.id"])
	}
}

// TestTracesApproval checks the approval hold's span: a held request's span says pending
// and names the approval; the retry after an approval says approved and reaches the
// upstream with its client span.
func TestTracesApproval(t *testing.T) {
	h := newApprovalHarness(t, &testClock{t: time.Now()}, testkit.NewUpstream(t))
	tr, rcv := newTracer(t, 1)
	h.gw.SetTracer(tr)
	agent := h.agent(t, "agent-traced")
	status, _, id := h.send(t, "POST", "/crm/customers/1/purge", agent, `{"why":"gdpr"}`, nil)
	if status != 403 || id == "" {
		t.Fatalf("held request = %d approval %q, want 403 with an approval", status, id)
	}
	if s, _ := h.decide(t, h.approver, id, "approve", "ok"); s != 200 {
		t.Fatalf("approve = %d", s)
	}
	if s, _, _ := h.send(t, "POST", "/crm/customers/1/purge", agent, `{"why":"gdpr"}`, nil); s != 200 {
		t.Fatalf("retry after approval = %d, want 200", s)
	}
	shutdown(t, tr)
	var outcomes []string
	clients := 0
	for _, s := range rcv.Spans() {
		a := attrs(s)
		if s.Name == "keyhole.approval" {
			if a["keyhole.approval_id"] != id {
				t.Errorf("approval span keyhole.approval_id = %q, want %s", a["keyhole.approval_id"], id)
			}
			outcomes = append(outcomes, a["keyhole.outcome"])
		}
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			clients++
		}
	}
	if strings.Join(outcomes, ",") != "pending,approved" || clients != 1 {
		t.Errorf("approval spans %v and %d upstream calls, want pending then approved, and one call", outcomes, clients)
	}
}
