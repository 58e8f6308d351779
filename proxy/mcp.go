package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/mcp"
	"github.com/keyholehq/keyhole/rules"
)

// mcpRoute is the compiled mcp block of one route: its policy and the allow of every
// entry, compiled once at load.
type mcpRoute struct {
	policy *mcp.Policy
	allows map[*config.Allow]*rules.Allower
	masks  *mcpMasks
}

// newMCPRoute compiles the mcp block of cfg.Routes[i].
func newMCPRoute(cfg *config.Config, i int) (*mcpRoute, error) {
	r := &cfg.Routes[i]
	p, err := mcp.Compile(r.Name, r.MCP)
	if err != nil {
		return nil, fmt.Errorf("route %q: mcp: %w", r.Name, err)
	}
	mr := &mcpRoute{policy: p, allows: map[*config.Allow]*rules.Allower{}}
	if mr.masks, err = compileMCPMasks(cfg, i); err != nil {
		return nil, err
	}
	add := func(field string, a *config.Allow) error {
		if a == nil {
			return nil
		}
		c, err := rules.CompileAllow(cfg, field, r.Name, a)
		if err != nil {
			return err
		}
		mr.allows[a] = c
		return nil
	}
	base := fmt.Sprintf("routes[%d].mcp", i)
	for j := range r.MCP.Tools {
		if err := add(fmt.Sprintf("%s.tools[%d].allow", base, j), r.MCP.Tools[j].Allow); err != nil {
			return nil, err
		}
	}
	for j := range r.MCP.Resources {
		if err := add(fmt.Sprintf("%s.resources[%d].allow", base, j), r.MCP.Resources[j].Allow); err != nil {
			return nil, err
		}
	}
	for j := range r.MCP.Prompts {
		if err := add(fmt.Sprintf("%s.prompts[%d].allow", base, j), r.MCP.Prompts[j].Allow); err != nil {
			return nil, err
		}
	}
	return mr, nil
}

// missing binds the route's compiled allows to principal p for mcp.Policy.
func (mr *mcpRoute) missing(p *identity.Principal) mcp.Missing {
	return func(a *config.Allow) string {
		c := mr.allows[a]
		if c == nil {
			return "the gateway has no compiled allow for this entry" // fail closed
		}
		return c.Missing(p)
	}
}

// mcpRoute returns the compiled mcp block of the route d allows, nil when d does not
// allow or the route is not an mcp route.
func (s *State) mcpRoute(d rules.Decision) *mcpRoute {
	if d.Effect != rules.Allow || d.Route == nil {
		return nil
	}
	return s.mcp[d.Route.Name]
}

// mcpClientClosed marks a request of an mcp route whose client went away as allowed
// with a client_closed mark: closing an SSE stream is how MCP clients end it, not an
// error of the gateway or the server.
func mcpClientClosed(r *http.Request, info *reqInfo) {
	if info.mcp == nil || r.Context().Err() == nil || info.decision != labelError || info.refusal != nil && info.refusal.code != "client_closed" {
		return
	}
	info.decision = labelAllowed
	if info.refusal == nil {
		info.refusal = &refusal{code: "client_closed", msg: "client closed the stream", decision: labelAllowed}
	}
}

// mcpState is what the data plane knows of an mcp request while it is served.
type mcpState struct {
	method string // JSON-RPC method of a POST, "" for GET and DELETE and responses
	name   string
	id     json.RawMessage // JSON-RPC id of a POST, nil for a notification
	tool   string          // the tool label of keyhole_mcp_requests_total
	// approval is set when a tools/call needs a human's approval (mcp_approve.go).
	approval *mcpApproval
}

// judgeMCP decides an allowed request on an mcp route by its JSON-RPC message. It
// answers the request itself and returns false when the message is refused; true lets
// it go on, with w replaced by the listFilter it returns (except for DELETE, which has no
// answer to filter); finishList must be called with it after the response was written.
func (g *Gateway) judgeMCP(w http.ResponseWriter, r *http.Request, info *reqInfo, mr *mcpRoute, req *rules.Request) (http.ResponseWriter, *listFilter, bool) {
	info.mcp = &mcpState{}
	// Every stream is filtered: a server may answer a list request on another stream (the
	// GET stream replays earlier answers after a reconnection with Last-Event-ID), and
	// the list the client reads there must be as narrow as on the request's own.
	filtered := func(w http.ResponseWriter, missing mcp.Missing) *listFilter {
		return &listFilter{ResponseWriter: w, policy: mr.policy, missing: missing, limit: info.state.maxMCPList}
	}
	if r.Method != http.MethodPost {
		g.maskMCP(w, r, info, mr, nil, mcp.Decision{})
		if r.Method == http.MethodGet {
			f := filtered(w, mr.missing(info.principal))
			return f, f, true
		}
		return w, nil, true // DELETE: the route's allow decided
	}
	if req.Body == nil {
		if rf := readBody(r, req); rf != nil {
			info.rec.body = req.Body
			g.refuse(w, info, rf)
			return nil, nil, false
		}
		info.rec.body = req.Body
	}
	m, missing, d, err := mr.judge(req.Body, r.Header, info.principal)
	if err != nil {
		pe := err.(*mcp.ParseError)
		rf := badRequest(pe.Msg)
		var id json.RawMessage
		if m != nil {
			id = m.ID
		}
		g.answerMCP(w, info, rf, http.StatusBadRequest, mcp.ErrorMessage(id, pe.Code, pe.Msg, keyholeError(rf, info.id)))
		return nil, nil, false
	}
	info.mcp.method, info.mcp.name, info.mcp.id = m.Method, m.Name, m.ID
	info.reason, info.mcp.tool = d.Reason, toolLabel(m, d)
	if d.Effect == mcp.Forbid {
		mr.stepUp(w.Header(), m, info.principal)
	}
	if d.Effect == mcp.Allow {
		g.maskMCP(w, r, info, mr, m, d)
		f := filtered(w, missing)
		if mcp.IsList(m.Method) {
			f.method = m.Method
		}
		return f, f, true
	}
	if d.Effect == mcp.Approval && m.Kind == mcp.Request && m.Method == mcp.MethodToolsCall {
		// Recorded as held until it is forwarded on an approval (approveMCP).
		info.mcp.approval = &mcpApproval{msg: m, approval: d.Approval}
		info.decision = labelApprovalPending
		f := filtered(w, missing)
		return f, f, true
	}
	rf := &refusal{status: http.StatusForbidden, code: "denied", msg: d.Reason, decision: labelDenied}
	if d.Effect == mcp.Forbid {
		rf.code, rf.decision = "forbidden", labelForbidden
	}
	if m.Kind == mcp.Notification {
		// Nothing to answer with a JSON-RPC message: a plain refusal.
		g.refuse(w, info, rf)
		return nil, nil, false
	}
	kh := keyholeError(rf, info.id)
	var body []byte
	if m.Method == mcp.MethodToolsCall {
		body = mcp.ToolRefusal(m.ID, mcp.RefusalText(m, d, info.id), kh)
	} else {
		body = mcp.ErrorMessage(m.ID, mcp.ErrorCode(m, d), mcp.RefusalText(m, d, info.id), kh)
	}
	// HTTP 200: MCP clients throw a 4xx as a transport error the model never reads.
	g.answerMCP(w, info, rf, http.StatusOK, body)
	return nil, nil, false
}

// keyholeError is Keyhole's error JSON for rf, as writeRefusal sends it.
func keyholeError(rf *refusal, requestID string) json.RawMessage {
	b, _ := json.Marshal(errorBody{Error: rf.code, Message: rf.msg, RequestID: requestID})
	return b
}

// answerMCP answers the request with a JSON-RPC message the gateway built, keeping rf as
// the true decision for metrics, the log and the record.
func (g *Gateway) answerMCP(w http.ResponseWriter, info *reqInfo, rf *refusal, status int, body []byte) {
	info.refusal, info.decision = rf, rf.decision
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// listFilter narrows the list answers of one response on an mcp route. The answer to a
// list method request (method set) is filtered as that method's: a JSON body is buffered
// (up to limit) and filtered whole, a text/event-stream event by event as it passes. On
// every other stream (method "": the GET stream, the stream of any other request) each
// event's message is filtered by the list its result holds (mcp.Policy.FilterAnyList);
// a JSON body there answers its own request and passes. An event without data, or with
// blank data (a priming event that only carries an id for resumption), passes as it is.
// Anything else the filter cannot read is not passed: the client gets a JSON-RPC error
// instead (JSON), or the stream ends (SSE).
type listFilter struct {
	http.ResponseWriter
	policy  *mcp.Policy
	method  string // the list method answered, "" when unknown
	missing mcp.Missing
	limit   int64

	mode   int // 0 until the header, then modeJSON, modeSSE or modePass
	status int
	buf    bytes.Buffer
	failed bool
}

const (
	modeJSON = iota + 1
	modeSSE
	modePass // an error status or another type: not a list answer
)

func (f *listFilter) WriteHeader(code int) {
	if f.mode != 0 || code < 200 {
		if code < 200 {
			f.ResponseWriter.WriteHeader(code)
		}
		return
	}
	f.status = code
	ct, _, _ := mime.ParseMediaType(f.Header().Get("Content-Type"))
	switch {
	case code != http.StatusOK:
		f.mode = modePass
	case ct == "application/json" && f.method != "":
		f.mode = modeJSON
		f.Header().Del("Content-Length")
		return // written by finish
	case ct == "text/event-stream":
		f.mode = modeSSE
		f.Header().Del("Content-Length")
	default:
		f.mode = modePass
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *listFilter) Write(b []byte) (int, error) {
	if f.mode == 0 {
		f.WriteHeader(http.StatusOK)
	}
	switch f.mode {
	case modePass:
		return f.ResponseWriter.Write(b)
	case modeJSON:
		if int64(f.buf.Len()+len(b)) > f.limit {
			f.failed = true
			return 0, errListTooLarge
		}
		return f.buf.Write(b)
	}
	if f.failed {
		return 0, errListFilter
	}
	f.buf.Write(b)
	for {
		ev, rest, ok := cutEvent(f.buf.Bytes())
		if !ok {
			break
		}
		out, err := f.filterEvent(ev)
		if err != nil {
			f.failed = true
			return 0, err
		}
		if _, err := f.ResponseWriter.Write(out); err != nil {
			return 0, err
		}
		n := copy(f.buf.Bytes(), rest)
		f.buf.Truncate(n)
	}
	if int64(f.buf.Len()) > f.limit {
		f.failed = true
		return 0, errListTooLarge
	}
	return len(b), nil
}

// FlushError flushes what the filter has passed; a buffered JSON answer waits for finish.
func (f *listFilter) FlushError() error {
	if f.mode == modeJSON {
		return nil
	}
	return http.NewResponseController(f.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (f *listFilter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

var (
	errListTooLarge = fmt.Errorf("mcp list answer is larger than the gateway filters")
	errListFilter   = fmt.Errorf("mcp list answer could not be filtered")
)

// finish writes a buffered JSON answer, filtered, after the upstream's body ended.
func (g *Gateway) finishList(f *listFilter, info *reqInfo) {
	if f.mode != modeJSON {
		return
	}
	out, _, err := f.policy.FilterList(f.method, f.buf.Bytes(), f.missing)
	if f.failed || err != nil {
		// The header was not sent: answer an error the client can read, not the list.
		rf := &refusal{status: http.StatusBadGateway, code: "upstream_error",
			msg: "the MCP server's " + f.method + " answer could not be filtered", decision: labelError, cause: err}
		g.answerMCP(f.ResponseWriter, info, rf, http.StatusBadGateway, mcp.ErrorMessage(nil, -32603, rf.msg, keyholeError(rf, info.id)))
		return
	}
	f.ResponseWriter.WriteHeader(f.status)
	_, _ = f.ResponseWriter.Write(out)
}

// cutEvent splits the first complete SSE event (through the blank line that ends it,
// in any of the three line-ending forms) off b.
func cutEvent(b []byte) (ev, rest []byte, ok bool) {
	end := -1
	for _, sep := range []string{"\n\n", "\r\n\r\n", "\r\r", "\n\r\n", "\r\n\n"} {
		if i := bytes.Index(b, []byte(sep)); i >= 0 && (end < 0 || i+len(sep) < end) {
			end = i + len(sep)
		}
	}
	if end < 0 {
		return nil, b, false
	}
	return b[:end], b[end:], true
}

// filterEvent filters the JSON-RPC message in one SSE event's data lines and rewrites
// the event with the result as one data line, keeping its other fields (id, event).
func (f *listFilter) filterEvent(ev []byte) ([]byte, error) {
	lines := bytes.FieldsFunc(ev, func(r rune) bool { return r == '\n' || r == '\r' })
	var data [][]byte
	var other [][]byte
	for _, l := range lines {
		if d, ok := bytes.CutPrefix(l, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(d, []byte(" ")))
		} else {
			other = append(other, l)
		}
	}
	msg := bytes.Join(data, []byte("\n"))
	if len(bytes.TrimSpace(msg)) == 0 {
		return ev, nil // no message: a priming event, or a keep-alive
	}
	var out []byte
	var changed bool
	var err error
	if f.method != "" {
		out, changed, err = f.policy.FilterList(f.method, msg, f.missing)
	} else {
		out, changed, err = f.policy.FilterAnyList(msg, f.missing)
	}
	if err != nil {
		return nil, err
	}
	if !changed {
		return ev, nil
	}
	var b bytes.Buffer
	for _, l := range other {
		b.Write(l)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(out)
	b.WriteString("\n\n")
	return b.Bytes(), nil
}
