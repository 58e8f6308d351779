// Package telemetry exports the gateway's OpenTelemetry traces over OTLP/HTTP. It holds
// the OpenTelemetry set-up and the span vocabulary (names, attributes, status) and no
// policy: the data plane says what happened, telemetry says it in the conventions.
//
// A nil *Tracer traces nothing, and the zero Span does nothing, at the cost of a nil check:
// with telemetry off the data plane calls the same methods and allocates nothing.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configure a Tracer (from config's telemetry.otlp).
type Options struct {
	// Endpoint is the collector's base URL; /v1/traces is appended to its path.
	Endpoint string
	// SampleRatio is the share of traces started here that are sampled, 0 to 1. A span
	// with a remote parent follows the parent's decision.
	SampleRatio float64
	// Headers are sent with every export request.
	Headers map[string]string
	// Timeout bounds one export request.
	Timeout time.Duration
	// Version is the service.version of the resource.
	Version string
	// Log, when not nil, receives failed exports as warnings. OpenTelemetry's error
	// handler is process-wide: the last Tracer made in a process owns it.
	Log *slog.Logger
}

// scope is the instrumentation scope of every span.
const scope = "github.com/keyholehq/keyhole"

// Tracer starts the spans of the gateway's requests and exports them in batches, in the
// background: an export that is slow or fails never delays a request, and spans beyond
// the queue are dropped. It is safe for concurrent use. A nil *Tracer traces nothing.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// New returns a Tracer exporting to o.Endpoint. It does not connect: a collector that is
// down shows as failed exports (reported to OpenTelemetry's error handler), not as an
// error here. Shutdown must be called to flush the spans still queued.
func New(ctx context.Context, o Options) (*Tracer, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil {
		// The endpoint may carry a token: not quoted.
		return nil, fmt.Errorf("telemetry: endpoint is not a URL")
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/traces"
	if o.Log != nil {
		log := o.Log
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("telemetry: traces not exported", "error", err.Error())
		}))
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(u.String()), otlptracehttp.WithTimeout(o.Timeout)}
	if len(o.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(o.Headers))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithSchemaURL(semconv.SchemaURL), resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName("keyhole"), semconv.ServiceVersion(o.Version)))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
	)
	return &Tracer{provider: tp, tracer: tp.Tracer(scope)}, nil
}

// Shutdown exports the spans still queued and stops the Tracer, waiting at most until
// ctx is done. Spans started afterwards are not exported.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// Attribute names of the gateway and of the MCP semantic conventions (not yet in the
// semconv package this build uses).
const (
	keyDecision   = attribute.Key("keyhole.decision")
	keyRoute      = attribute.Key("keyhole.route")
	keyExchangeID = attribute.Key("keyhole.exchange_id")
	keyError      = attribute.Key("keyhole.error")
	keyOutcome    = attribute.Key("keyhole.outcome")
	keyApprovalID = attribute.Key("keyhole.approval_id")
	keyUpstream   = attribute.Key("keyhole.upstream")
	keyMCPMethod  = attribute.Key("mcp.method.name")
	keyMCPSession = attribute.Key("mcp.session.id")
	keyTool       = attribute.Key("gen_ai.tool.name")
	keyOperation  = attribute.Key("gen_ai.operation.name")
)

// maxAttr bounds the client-chosen strings (Host, User-Agent, an unrecognised target)
// that go into a span.
const maxAttr = 256

// Start starts the server span of r, a child of the span its traceparent names (W3C
// Trace Context), and returns ctx with the span in it. id is the exchange id. Only r's
// method, scheme, Host, peer address and User-Agent are read: never its query, its other
// headers or its body.
func (t *Tracer) Start(ctx context.Context, r *http.Request, id string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	method := knownMethod(r.Method)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLScheme(scheme),
		keyExchangeID.String(id),
	}
	if host, port := hostPort(r.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(truncate(host)))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, semconv.ClientAddress(ip))
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(truncate(ua)))
	}
	ctx, s := t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return ctx, Span{t: t, s: s, method: method}
}

// Span is one span of a request. Its zero value does nothing. A Span is used by the
// request's own goroutine; End must be called once.
type Span struct {
	t      *Tracer
	s      trace.Span
	method string // of a server span: its http.request.method, for its name
}

// On reports whether s is a span (telemetry is on), sampled or not.
func (s Span) On() bool { return s.s != nil }

// TraceID returns the span's trace id as 32 hex digits when the trace is sampled, else "".
func (s Span) TraceID() string {
	if s.s == nil {
		return ""
	}
	if sc := s.s.SpanContext(); sc.IsSampled() {
		return sc.TraceID().String()
	}
	return ""
}

// Stage starts an internal child span of the span in ctx for one stage of the request
// (token verification, the recorder's write, an approval hold); s is the request's span.
func (s Span) Stage(ctx context.Context, name string) (context.Context, Span) {
	if s.s == nil {
		return ctx, Span{}
	}
	ctx, c := s.t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	return ctx, Span{t: s.t, s: c}
}

// End ends a stage span. outcome, when not "", is its keyhole.outcome; code, when not
// "", marks it failed, with code (a bounded label, never an error's text) as error.type.
func (s Span) End(outcome, code string) {
	if s.s == nil {
		return
	}
	if outcome != "" {
		s.s.SetAttributes(keyOutcome.String(outcome))
	}
	if code != "" {
		s.s.SetAttributes(semconv.ErrorTypeKey.String(code))
		s.s.SetStatus(codes.Error, code)
	}
	s.s.End()
}

// SetApproval puts the id of the approval the request waited on on the span.
func (s Span) SetApproval(id string) {
	if s.s != nil && id != "" {
		s.s.SetAttributes(keyApprovalID.String(id))
	}
}

// Call is an upstream call: the upstream's config name, the method, and the URL it is
// sent to, without user info or query (BasePath is the upstream's, Path the request's).
type Call struct {
	Upstream, Method, Scheme, Host, BasePath, Path string
}

// Upstream starts the client span of call c as a child of the span in ctx.
func (s Span) Upstream(ctx context.Context, c Call) (context.Context, Span) {
	if s.s == nil {
		return ctx, Span{}
	}
	method := knownMethod(c.Method)
	full := url.URL{Scheme: c.Scheme, Host: c.Host, Path: c.BasePath + c.Path}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLFull(full.String()),
		keyUpstream.String(c.Upstream),
	}
	if host, port := hostPort(c.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	ctx, cs := s.t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx, Span{t: s.t, s: cs}
}

// Inject sets h's traceparent (and tracestate) to name s as the parent, so that the
// upstream's spans join the trace.
func (s Span) Inject(h http.Header) {
	if s.s == nil {
		return
	}
	s.t.prop.Inject(trace.ContextWithSpan(context.Background(), s.s), propagation.HeaderCarrier(h))
}

// EndUpstream ends a client span with the upstream's status (0: no response) and, when
// the call failed, the gateway's error code for it. A status of 400 or more is an error
// for a client span.
func (s Span) EndUpstream(status int, code string) {
	if s.s == nil {
		return
	}
	if status > 0 {
		s.s.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	switch {
	case code != "":
		s.s.SetAttributes(semconv.ErrorTypeKey.String(code))
		s.s.SetStatus(codes.Error, code)
	case status >= 400:
		s.s.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		s.s.SetStatus(codes.Error, "")
	}
	s.s.End()
}

// Outcome is what the data plane knows of a request once it is answered.
type Outcome struct {
	Status   int
	Path     string // the canonical path, or the target without its query when refused before
	Route    string // the route's config name, "" when none matched
	Decision string
	Error    string // the error code the client got, "" for none
	MCP      *MCP   // nil off mcp routes
}

// MCP is what an mcp route read of the JSON-RPC message.
type MCP struct {
	Method  string
	Tool    string // the tool of a tools/call
	ID      string // the JSON-RPC id as its JSON text (7, or "req-7" with its quotes)
	Session string // the Mcp-Session-Id
}

// EndRequest ends the server span with o. A 5xx status is an error (a 4xx is the
// client's, per the HTTP conventions for server spans).
func (s Span) EndRequest(o Outcome) {
	if s.s == nil {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 10)
	attrs = append(attrs, semconv.HTTPResponseStatusCode(o.Status), semconv.URLPath(truncate(o.Path)),
		keyDecision.String(o.Decision))
	if o.Route != "" {
		attrs = append(attrs, semconv.HTTPRoute(o.Route), keyRoute.String(o.Route))
	}
	if o.Error != "" {
		attrs = append(attrs, keyError.String(o.Error))
	}
	name := ""
	if m := o.MCP; m != nil {
		if m.Method != "" {
			attrs = append(attrs, keyMCPMethod.String(m.Method))
			name = m.Method
		}
		if m.Tool != "" {
			attrs = append(attrs, keyTool.String(m.Tool), keyOperation.String("execute_tool"))
			name += " " + m.Tool
		}
		if m.ID != "" {
			attrs = append(attrs, semconv.JSONRPCRequestID(strings.Trim(m.ID, `"`)))
		}
		if m.Session != "" {
			attrs = append(attrs, keyMCPSession.String(m.Session))
		}
	}
	if name == "" && o.Route != "" {
		// {method} {http.route}, as the HTTP conventions name a server span.
		name = s.method + " " + o.Route
	}
	if name != "" {
		s.s.SetName(name)
	}
	if o.Status >= 500 {
		code := o.Error
		if code == "" {
			code = strconv.Itoa(o.Status)
		}
		attrs = append(attrs, semconv.ErrorTypeKey.String(code))
		s.s.SetStatus(codes.Error, code)
	}
	s.s.SetAttributes(attrs...)
	s.s.End()
}

// knownMethod is method when it is one of HTTP's, else _OTHER: a client cannot choose
// span names or grow their set.
func knownMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "_OTHER"
}

// hostPort splits a Host (or URL host) into its name and port (0 when none).
func hostPort(hp string) (string, int) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.Trim(hp, "[]"), 0
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return host, 0
	}
	return host, port
}

func truncate(s string) string {
	if len(s) > maxAttr {
		return s[:maxAttr]
	}
	return s
}
