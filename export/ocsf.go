package export

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyholehq/keyhole/recorder"
)

// OCSFVersion is the OCSF schema version the events follow.
const OCSFVersion = "1.3.0"

// OCSF class and category identifiers.
const (
	ClassHTTPActivity = 4002
	ClassAPIActivity  = 6003
	categoryNetwork   = 4
	categoryApp       = 6
)

// Event is one OCSF event. Its fields are the OCSF attribute names; see docs/ocsf.md
// for how each is filled from an exchange.
type Event struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name"`
	// Time, StartTime and EndTime are milliseconds since the Unix epoch (timestamp_t).
	Time          int64         `json:"time"`
	StartTime     int64         `json:"start_time,omitempty"`
	EndTime       int64         `json:"end_time,omitempty"`
	Duration      int64         `json:"duration,omitempty"`
	SeverityID    int           `json:"severity_id"`
	Severity      string        `json:"severity"`
	StatusID      int           `json:"status_id"`
	Status        string        `json:"status"`
	StatusCode    string        `json:"status_code,omitempty"`
	StatusDetail  string        `json:"status_detail,omitempty"`
	Message       string        `json:"message,omitempty"`
	ActionID      int           `json:"action_id"`
	Action        string        `json:"action"`
	DispositionID int           `json:"disposition_id"`
	Disposition   string        `json:"disposition"`
	Actor         *Actor        `json:"actor,omitempty"`
	SrcEndpoint   *Endpoint     `json:"src_endpoint,omitempty"`
	DstEndpoint   *Endpoint     `json:"dst_endpoint,omitempty"`
	Proxy         *Endpoint     `json:"proxy,omitempty"`
	HTTPRequest   *HTTPRequest  `json:"http_request,omitempty"`
	HTTPResponse  *HTTPResponse `json:"http_response,omitempty"`
	HTTPStatus    int           `json:"http_status,omitempty"`
	API           *API          `json:"api,omitempty"`
	Resources     []Resource    `json:"resources,omitempty"`
	Policy        *Policy       `json:"policy,omitempty"`
	Enrichments   []Enrichment  `json:"enrichments,omitempty"`
	Metadata      Metadata      `json:"metadata"`
	Unmapped      Unmapped      `json:"unmapped"`
}

// Actor is who made the request.
type Actor struct {
	User    *User  `json:"user,omitempty"`
	AppName string `json:"app_name,omitempty"`
	AppUID  string `json:"app_uid,omitempty"`
	IDP     *IDP   `json:"idp,omitempty"`
}

// User is the token's subject.
type User struct {
	UID    string  `json:"uid"`
	Name   string  `json:"name,omitempty"`
	TypeID int     `json:"type_id"`
	Type   string  `json:"type"`
	Groups []Group `json:"groups,omitempty"`
}

// Group is one of the token's groups.
type Group struct {
	Name string `json:"name"`
}

// IDP is the token's issuer.
type IDP struct {
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

// Endpoint is a network endpoint (src_endpoint, dst_endpoint) or the proxy.
type Endpoint struct {
	Name     string `json:"name,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	SvcName  string `json:"svc_name,omitempty"`
	IP       string `json:"ip,omitempty"`
}

// HTTPRequest is the client's request.
type HTTPRequest struct {
	HTTPMethod    string       `json:"http_method"`
	URL           URL          `json:"url"`
	HTTPHeaders   []HTTPHeader `json:"http_headers,omitempty"`
	UserAgent     string       `json:"user_agent,omitempty"`
	Referrer      string       `json:"referrer,omitempty"`
	XForwardedFor []string     `json:"x_forwarded_for,omitempty"`
	Length        int64        `json:"length"`
	UID           string       `json:"uid"`
}

// URL is the request's URL as the client sent it to the gateway.
type URL struct {
	URLString   string `json:"url_string"`
	Path        string `json:"path"`
	QueryString string `json:"query_string,omitempty"`
	Hostname    string `json:"hostname,omitempty"`
}

// HTTPHeader is one header field value.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPResponse is the response as the client received it.
type HTTPResponse struct {
	Code        int          `json:"code"`
	Status      string       `json:"status,omitempty"`
	ContentType string       `json:"content_type,omitempty"`
	HTTPHeaders []HTTPHeader `json:"http_headers,omitempty"`
	Length      int64        `json:"length"`
	Message     string       `json:"message,omitempty"`
}

// API is the MCP call of an API Activity event.
type API struct {
	Operation string       `json:"operation"`
	Service   *APIService  `json:"service,omitempty"`
	Request   *APIRequest  `json:"request,omitempty"`
	Response  *APIResponse `json:"response,omitempty"`
}

// APIService is the mcp route the call went through.
type APIService struct {
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

// APIRequest identifies the JSON-RPC request.
type APIRequest struct {
	UID string `json:"uid"`
}

// APIResponse is how the call ended.
type APIResponse struct {
	Code  int    `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// Resource is what an MCP call acts on: a tool, a resource URI or a prompt.
type Resource struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Policy is the route and the reason of Keyhole's decision.
type Policy struct {
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	Desc      string `json:"desc,omitempty"`
	IsApplied bool   `json:"is_applied"`
}

// Enrichment is an approval or a replay linked to the exchange.
type Enrichment struct {
	Name     string            `json:"name"`
	Value    string            `json:"value"`
	Type     string            `json:"type"`
	Provider string            `json:"provider"`
	Data     map[string]string `json:"data"`
}

// Metadata describes the event and the product that made it.
type Metadata struct {
	Version        string      `json:"version"`
	Product        ProductInfo `json:"product"`
	UID            string      `json:"uid"`
	CorrelationUID string      `json:"correlation_uid"`
	LogName        string      `json:"log_name"`
	LogProvider    string      `json:"log_provider"`
	Sequence       int64       `json:"sequence"`
	Profiles       []string    `json:"profiles"`
}

// ProductInfo is OCSF's product object.
type ProductInfo struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
}

// Unmapped holds what OCSF has no attribute for, under "keyhole".
type Unmapped struct {
	Keyhole Chain `json:"keyhole"`
}

// Chain is the exchange's place in Keyhole's hash chain, and Keyhole's own labels.
type Chain struct {
	// Cursor is the Item's cursor: resume a stream after it.
	Cursor      string   `json:"cursor"`
	ChainHash   string   `json:"chain_hash"`
	RequestHash string   `json:"request_hash,omitempty"`
	Decision    string   `json:"decision"`
	Route       string   `json:"route,omitempty"`
	Upstream    string   `json:"upstream,omitempty"`
	Error       string   `json:"error,omitempty"`
	Masked      bool     `json:"masked,omitempty"`
	Incomplete  bool     `json:"incomplete,omitempty"`
	Scopes      []string `json:"scopes,omitempty"`
	MCPSession  string   `json:"mcp_session_id,omitempty"`
}

// Events returns the OCSF events of it: an HTTP Activity event, and for an exchange on
// an mcp route an API Activity event after it.
func Events(it Item, p Product) []Event {
	base := common(it, p)
	h := base
	h.ClassUID, h.ClassName, h.CategoryUID, h.CategoryName = ClassHTTPActivity, "HTTP Activity", categoryNetwork, "Network Activity"
	h.ActivityID, h.ActivityName = httpActivity(it.Exchange.Request.Method)
	h.TypeUID, h.TypeName = typeOf(h.ClassUID, h.ActivityID, h.ClassName, h.ActivityName)
	evs := []Event{h}
	if m := it.Exchange.MCP; m != nil {
		a := base
		a.ClassUID, a.ClassName, a.CategoryUID, a.CategoryName = ClassAPIActivity, "API Activity", categoryApp, "Application Activity"
		a.ActivityID, a.ActivityName = apiActivity(m.Method)
		a.TypeUID, a.TypeName = typeOf(a.ClassUID, a.ActivityID, a.ClassName, a.ActivityName)
		a.HTTPStatus = 0 // an HTTP Activity attribute
		op := m.Tool()
		if op == "" {
			op = m.Method
		}
		if op == "" {
			op = it.Exchange.Request.Method
		}
		a.API = &API{Operation: op, Service: &APIService{Name: it.Exchange.Route, UID: it.Exchange.Upstream}}
		if m.ID != "" {
			a.API.Request = &APIRequest{UID: m.ID}
		}
		if r := it.Exchange.Response; r != nil || it.Exchange.Error != "" {
			a.API.Response = &APIResponse{Error: it.Exchange.Error}
			if r != nil {
				a.API.Response.Code = r.Status
			}
		}
		if m.Name != "" {
			a.Resources = []Resource{{Name: m.Name, Type: mcpResourceType(m.Method)}}
		}
		if a.SrcEndpoint == nil {
			// API Activity requires src_endpoint; the record does not hold the peer's
			// address, so the calling client names it.
			a.SrcEndpoint = &Endpoint{Name: clientName(it.Exchange.Identity)}
		}
		evs = append(evs, a)
	}
	return evs
}

// common fills the attributes both classes share.
func common(it Item, p Product) Event {
	x := &it.Exchange
	ev := Event{
		Time:      ms(x.ReceivedAt.UnixNano()),
		StartTime: ms(x.ReceivedAt.UnixNano()),
		Duration:  int64(x.Durations.TotalMS),
		Message:   message(x),
		Metadata: Metadata{Version: OCSFVersion, Product: ProductInfo{Name: "Keyhole", VendorName: "Keyhole", Version: p.Version},
			UID: x.ID, CorrelationUID: x.ID, LogName: "exchanges", LogProvider: "keyhole", Sequence: it.Cursor,
			Profiles: []string{"security_control"}},
		Unmapped: Unmapped{Keyhole: Chain{Cursor: FormatCursor(it.Cursor), ChainHash: it.Hash, RequestHash: it.RequestHash,
			Decision: x.Decision, Route: x.Route, Upstream: x.Upstream, Error: x.Error, Masked: x.Masked}},
		StatusCode:   x.Error,
		StatusDetail: x.Reason,
	}
	if x.RespondedAt != nil {
		ev.EndTime = ms(x.RespondedAt.UnixNano())
	}
	ev.ActionID, ev.Action, ev.DispositionID, ev.Disposition, ev.SeverityID = decide(x)
	ev.Severity = severityNames[ev.SeverityID]
	ev.StatusID, ev.Status = outcome(x)
	if x.MCP != nil {
		ev.Unmapped.Keyhole.MCPSession = x.MCP.Session
	}
	if id := x.Identity; id != nil {
		ev.Actor = actorOf(id)
		ev.Unmapped.Keyhole.Scopes = id.Scopes
	}
	ev.HTTPRequest = requestOf(x)
	if fwd := ev.HTTPRequest.XForwardedFor; len(fwd) > 0 {
		// The first address the client's own X-Forwarded-For names: what the record
		// holds of where the request came from (the peer address is not recorded).
		ev.SrcEndpoint = &Endpoint{IP: fwd[0]}
	}
	if r := x.Response; r != nil {
		ev.HTTPResponse = &HTTPResponse{Code: r.Status, Status: http.StatusText(r.Status), ContentType: first(r.Header, "Content-Type"),
			HTTPHeaders: headersOf(r.Header), Length: r.Body.Size, Message: x.Error}
		ev.HTTPStatus = r.Status
		ev.Unmapped.Keyhole.Incomplete = r.Incomplete
	}
	// The destination is the upstream the request went to; a request refused before
	// any upstream was answered by the gateway itself.
	switch {
	case x.Target != "":
		ev.DstEndpoint = &Endpoint{Name: x.Upstream, Hostname: hostOf(x.Target), SvcName: x.Upstream}
	case x.Upstream != "":
		ev.DstEndpoint = &Endpoint{Name: x.Upstream, SvcName: x.Upstream}
	default:
		ev.DstEndpoint = &Endpoint{Name: "keyhole", Hostname: p.Hostname, SvcName: "keyhole"}
	}
	ev.Proxy = &Endpoint{Name: "keyhole", Hostname: p.Hostname, SvcName: "keyhole"}
	if x.Route != "" || x.Reason != "" {
		name := x.Route
		if name == "" {
			name = "gateway"
		}
		ev.Policy = &Policy{Name: name, UID: x.Route, Desc: x.Reason, IsApplied: true}
	}
	if x.ApprovalID != "" {
		ev.Enrichments = append(ev.Enrichments, Enrichment{Name: "approval_id", Value: x.ApprovalID, Type: "approval", Provider: "keyhole",
			Data: map[string]string{"approval_id": x.ApprovalID, "decision": x.Decision}})
	}
	if x.ReplayOf != "" {
		ev.Enrichments = append(ev.Enrichments, Enrichment{Name: "replay_of", Value: x.ReplayOf, Type: "replay", Provider: "keyhole",
			Data: map[string]string{"replay_of": x.ReplayOf, "target": x.Target}})
	}
	return ev
}

func ms(ns int64) int64 { return ns / 1e6 }

func typeOf(class, activity int, className, activityName string) (int, string) {
	return class*100 + activity, className + ": " + activityName
}

// httpActivity maps a method to HTTP Activity's activity_id (1.3.0 has no Patch).
func httpActivity(method string) (int, string) {
	switch method {
	case http.MethodConnect:
		return 1, "Connect"
	case http.MethodDelete:
		return 2, "Delete"
	case http.MethodGet:
		return 3, "Get"
	case http.MethodHead:
		return 4, "Head"
	case http.MethodOptions:
		return 5, "Options"
	case http.MethodPost:
		return 6, "Post"
	case http.MethodPut:
		return 7, "Put"
	case http.MethodTrace:
		return 8, "Trace"
	case "":
		return 0, "Unknown"
	}
	return 99, method
}

// apiActivity maps a JSON-RPC method to API Activity's activity_id: listing and reading
// are Read; a tool call, a prompt and everything else are Other, named by the method.
func apiActivity(method string) (int, string) {
	switch method {
	case "tools/list", "resources/list", "resources/templates/list", "prompts/list", "resources/read":
		return 2, "Read"
	case "":
		return 99, "Other"
	}
	return 99, method
}

func mcpResourceType(method string) string {
	switch {
	case strings.HasPrefix(method, "tools/"):
		return "mcp.tool"
	case strings.HasPrefix(method, "resources/"):
		return "mcp.resource"
	case strings.HasPrefix(method, "prompts/"):
		return "mcp.prompt"
	}
	return "mcp"
}

var severityNames = map[int]string{0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium"}

// decide maps Keyhole's decision to action_id, action, disposition_id, disposition and
// severity_id (the table in docs/ocsf.md).
func decide(x *recorder.Exchange) (int, string, int, string, int) {
	switch x.Decision {
	case "allowed", "approved", "replay":
		return 1, "Allowed", 1, "Allowed", 1
	case "denied":
		return 2, "Denied", 2, "Blocked", 3
	case "forbidden", "no_route":
		return 2, "Denied", 2, "Blocked", 2
	case "unauthenticated":
		return 2, "Denied", 26, "Unauthorized", 2
	case "approval_pending":
		return 2, "Denied", 14, "Delayed", 1
	case "approval_denied":
		return 2, "Denied", 25, "Rejected", 2
	case "approval_timeout":
		return 2, "Denied", 2, "Blocked", 2
	case "error":
		if x.ForwardedAt != nil {
			return 1, "Allowed", 27, "Error", 2
		}
		return 2, "Denied", 27, "Error", 2
	}
	return 0, "Unknown", 0, "Unknown", 0
}

// outcome is status_id and status: Success when the client got a response below 400
// with no error, Failure otherwise.
func outcome(x *recorder.Exchange) (int, string) {
	if x.Response == nil && x.Error == "" {
		return 0, "Unknown"
	}
	if x.Response != nil && x.Response.Status < 400 && x.Error == "" && !x.Response.Incomplete {
		return 1, "Success"
	}
	return 2, "Failure"
}

func message(x *recorder.Exchange) string {
	s := x.Decision + " " + x.Request.Method + " " + x.Request.Path
	if x.Route != "" {
		s += " (route " + x.Route + ")"
	}
	if x.Reason != "" {
		s += ": " + x.Reason
	}
	return s
}

// actorOf maps the token's identity: a token whose subject is its client id is a
// service's (client credentials); any other names a user.
func actorOf(id *recorder.Identity) *Actor {
	a := &Actor{AppName: id.ClientID, AppUID: id.ClientID}
	if id.Issuer != "" {
		a.IDP = &IDP{Name: id.Issuer, UID: id.Issuer}
	}
	if id.Subject != "" {
		u := &User{UID: id.Subject, Name: id.Subject, TypeID: 1, Type: "User"}
		if id.ClientID != "" && id.Subject == id.ClientID {
			u.TypeID, u.Type = 99, "Service"
		}
		for _, g := range id.Groups {
			u.Groups = append(u.Groups, Group{Name: g})
		}
		a.User = u
	}
	return a
}

func clientName(id *recorder.Identity) string {
	switch {
	case id == nil:
		return "unknown"
	case id.ClientID != "":
		return id.ClientID
	case id.Subject != "":
		return id.Subject
	}
	return "unknown"
}

func requestOf(x *recorder.Exchange) *HTTPRequest {
	r := &x.Request
	u := URL{URLString: r.Path, Path: r.Path, QueryString: r.Query, Hostname: first(r.Header, "Host")}
	if r.Query != "" {
		u.URLString += "?" + r.Query
	}
	req := &HTTPRequest{HTTPMethod: r.Method, URL: u, HTTPHeaders: headersOf(r.Header), UserAgent: first(r.Header, "User-Agent"),
		Referrer: first(r.Header, "Referer"), Length: r.Body.Size, UID: x.ID}
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, ip := range strings.Split(v, ",") {
			if ip = strings.TrimSpace(ip); ip != "" {
				req.XForwardedFor = append(req.XForwardedFor, ip)
			}
		}
	}
	return req
}

// headersOf lists h's fields in name order, values as recorded (redacted).
func headersOf(h http.Header) []HTTPHeader {
	if len(h) == 0 {
		return nil
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	var out []HTTPHeader
	for _, k := range names {
		for _, v := range h[k] {
			out = append(out, HTTPHeader{Name: k, Value: v})
		}
	}
	return out
}

func first(h http.Header, name string) string {
	if vs := h.Values(name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func hostOf(origin string) string {
	u, err := url.Parse(origin)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
