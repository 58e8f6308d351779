package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/mcp"
)

// mcpApproval is a tools/call on an mcp route whose tools entry needs a human's approval.
type mcpApproval struct {
	msg      *mcp.Message
	approval *config.Approval
}

// progressEvery is the longest time between two notifications/progress of a held call:
// shorter than any client timeout that resets on progress.
const progressEvery = 5 * time.Second

// progressInterval is how often a call held for hold hears of it: every progressEvery,
// and at least four times in a hold.
func progressInterval(hold time.Duration) time.Duration {
	return min(progressEvery, max(hold/4, 50*time.Millisecond))
}

// approvalError is Keyhole's error JSON of an approval refusal in _meta.keyhole, with
// what a program needs to retry: the approval id, who decides, and when to call again.
type approvalError struct {
	errorBody
	ApprovalID string `json:"approval_id,omitempty"`
	Approvers  string `json:"approvers,omitempty"`
	RetryAfter int    `json:"retry_after_seconds,omitempty"`
	ExpiresAt  string `json:"expires_at,omitempty"`
}

// approveMCP holds a tools/call that needs approval until a human decides, and forwards
// it only on an approval of this call (requester, route, tool, canonical arguments, and
// the headers, query and path of callScope), consumed by it. A client that sent a progressToken and accepts text/event-stream is
// answered with an event stream as soon as the hold begins: notifications/progress every
// few seconds, then the call's answer, so that a client that resets its timeout on
// progress waits the whole hold. Every refusal is a CallToolResult with isError (HTTP 200,
// the call's id); metrics and the record keep the true decision.
func (g *Gateway) approveMCP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	info := infoFrom(r.Context())
	m, ap := info.mcp.approval.msg, info.mcp.approval.approval
	approvers := mcp.Approvers(&ap.Approvers)
	if g.ap == nil {
		rf := &refusal{status: http.StatusServiceUnavailable, code: "approvals_unavailable", decision: labelError,
			msg: "tool " + m.Name + " needs an approval and this gateway cannot hold requests"}
		g.mcpRefuse(w, nil, info, m, rf, mcp.RefusalText(m, mcp.Decision{Reason: rf.msg}, info.id), approvalError{})
		return
	}
	args, err := m.ApprovalDocument(callScope(r, info))
	if err != nil {
		// A number beyond a float64 has no canonical form, a header that is not UTF-8 no
		// JSON that shows it: no approval could say which call it covers.
		rf := badRequest("the call of tool " + m.Name + " holds what no approval can cover (a number beyond the range of a float64, or a header that is not UTF-8)")
		g.answerMCP(w, info, rf, http.StatusBadRequest, mcp.ErrorMessage(m.ID, mcp.CodeInvalidParams, rf.msg, keyholeError(rf, info.id)))
		return
	}
	hold := time.Duration(ap.Hold)
	p := info.principal
	held := make(chan *approvals.Approval, 1)
	req := approvals.Request{
		Requester:    approvals.Identity{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Groups: p.Groups, Scopes: p.Scopes},
		Route:        info.route.Name,
		Method:       r.Method,
		Path:         info.path,
		Body:         info.rec.body,
		Tool:         m.Name,
		Arguments:    args,
		Reason:       info.clientReason,
		ExchangeID:   info.id,
		MinApprovals: ap.MinApprovals,
		Hold:         hold,
		TTL:          time.Duration(ap.TTL),
		MaxPending:   info.state.maxPending,
		Redact:       g.redactor(info),
		Held: func(a *approvals.Approval) {
			select {
			case held <- a:
			default:
			}
		},
	}
	type admitted struct {
		adm approvals.Admission
		err error
	}
	done := make(chan admitted, 1)
	actx, as := info.span.Stage(r.Context(), "keyhole.approval")
	go func() {
		adm, err := g.ap.Admit(actx, req)
		endApproval(as, adm, err)
		done <- admitted{adm, err}
	}()
	token := mcp.ProgressToken(info.rec.body)
	var st *mcpStream
	if token != nil && acceptsEventStream(r.Header) {
		st = &mcpStream{w: w, token: token}
	}
	var res admitted
	tick := time.NewTicker(progressInterval(hold))
	defer tick.Stop()
	var waitingOn *approvals.Approval
	var end time.Time
	for waiting := true; waiting; {
		select {
		case res = <-done:
			waiting = false
		case waitingOn = <-held:
			end = time.Now().Add(hold)
			if st != nil {
				st.begin(info)
				st.progress(waitingOn.ID, approvers, time.Until(end))
			}
		case <-tick.C:
			if st != nil && waitingOn != nil {
				st.progress(waitingOn.ID, approvers, max(0, time.Until(end)))
			}
		}
	}
	if !st.started() {
		st = nil
	}
	if res.err != nil {
		if r.Context().Err() != nil {
			// The client went away while held; the approval stays for its retry.
			info.decision, info.status = labelApprovalPending, 499
			return
		}
		rf := &refusal{status: http.StatusServiceUnavailable, code: "approvals_unavailable", decision: labelError,
			msg: "the approval of this call could not be checked", cause: res.err}
		g.mcpRefuse(w, st, info, m, rf, mcp.RefusalText(m, mcp.Decision{Reason: rf.msg}, info.id), approvalError{})
		return
	}
	adm := res.adm
	var ke approvalError
	if a := adm.Approval; a != nil {
		info.approvalID = a.ID
		if st == nil { // a stream's header is long sent
			info.respHeader.Set("X-Keyhole-Approval", a.ID)
		}
		ke = approvalError{ApprovalID: a.ID, Approvers: approvers, ExpiresAt: a.ExpiresAt.UTC().Format(time.RFC3339)}
	}
	switch adm.Outcome {
	case approvals.AdmitForward:
		info.decision = labelApproved
		if st == nil {
			next.ServeHTTP(w, r)
			return
		}
		relay := &sseRelay{w: w, header: http.Header{}, limit: info.state.maxMCPList}
		next.ServeHTTP(relay, r)
		relay.finish(info, m)
	case approvals.AdmitPending:
		ke.RetryAfter = int(retryAfterPending.Seconds())
		rf := &refusal{status: http.StatusForbidden, code: "approval_pending", decision: labelApprovalPending,
			msg: fmt.Sprintf("call of tool %s is waiting for approval %s by %s; make the same call again once it is approved, before %s",
				m.Name, info.approvalID, approvers, ke.ExpiresAt)}
		g.mcpRefuse(w, st, info, m, rf, mcp.ApprovalText(m, approvers, info.approvalID, info.id, retryAfterPending), ke)
	case approvals.AdmitDenied:
		comment := lastComment(adm.Approval, approvals.Deny)
		rf := &refusal{status: http.StatusForbidden, code: "approval_denied", decision: labelApprovalDenied,
			msg: "call of tool " + m.Name + " was denied by an approver"}
		if comment != "" {
			rf.msg += ": " + comment
		}
		g.mcpRefuse(w, st, info, m, rf, mcp.DeniedText(m, info.approvalID, comment, info.id, adm.Approval.ExpiresAt), ke)
	case approvals.AdmitTimedOut:
		rf := &refusal{status: http.StatusForbidden, code: "approval_timeout", decision: labelApprovalTimeout,
			msg: fmt.Sprintf("approval %s expired before it was decided or used; make the call again to ask anew", info.approvalID)}
		g.mcpRefuse(w, st, info, m, rf, mcp.ExpiredText(m, info.approvalID, info.id), ke)
	case approvals.AdmitTooLarge:
		rf := &refusal{status: http.StatusRequestEntityTooLarge, code: "body_too_large", decision: labelError,
			msg: fmt.Sprintf("a call that needs approval may carry at most %d bytes: approvers must see all of it", approvals.MaxBody)}
		g.mcpRefuse(w, st, info, m, rf, mcp.RefusalText(m, mcp.Decision{Reason: rf.msg}, info.id), ke)
	default: // approvals.AdmitTooMany
		ke.RetryAfter = 60
		rf := &refusal{status: http.StatusTooManyRequests, code: "too_many_approvals", decision: labelApprovalPending,
			msg: fmt.Sprintf("too many calls of %s are waiting for approval; wait for them to be decided", p.Subject)}
		g.mcpRefuse(w, st, info, m, rf, mcp.RefusalText(m, mcp.Decision{Reason: rf.msg}, info.id), ke)
	}
}

// callScope is what an approval of the tools/call r covers besides its tool and arguments,
// as a plain route's approval covers them: the headers an approval binds on any route
// (approvals.BoundHeaders), less the MCP transport's own (mcp.TransportHeader); the
// query; and the path, when the route's pattern matches more than one. Without them a
// retry with another tenant header or query would consume an approval given for another.
func callScope(r *http.Request, info *reqInfo) mcp.CallScope {
	h := approvals.BoundHeaders(r.Header)
	for k := range h {
		if mcp.TransportHeader(k) {
			delete(h, k)
		}
	}
	s := mcp.CallScope{Header: h, Query: r.URL.RawQuery}
	if info.path != info.route.Pattern {
		s.Path = info.path
	}
	return s
}

// mcpRefuse answers the held call m with a CallToolResult with isError: text for the
// model, rf as Keyhole's error JSON (with ke's approval fields) in _meta.keyhole. On a
// started stream it is the stream's last event; otherwise a JSON answer at HTTP 200.
func (g *Gateway) mcpRefuse(w http.ResponseWriter, st *mcpStream, info *reqInfo, m *mcp.Message, rf *refusal, text string, ke approvalError) {
	ke.errorBody = errorBody{Error: rf.code, Message: rf.msg, RequestID: info.id}
	kh, _ := json.Marshal(ke)
	body := mcp.ToolRefusal(m.ID, text, kh)
	if st == nil {
		g.answerMCP(w, info, rf, http.StatusOK, body)
		return
	}
	info.refusal, info.decision = rf, rf.decision
	st.send(body)
}

// acceptsEventStream reports whether the request's Accept header takes text/event-stream.
func acceptsEventStream(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && (mt == "text/event-stream" || mt == "text/*" || mt == "*/*") && params["q"] != "0" {
				return true
			}
		}
	}
	return false
}

// mcpStream is the event stream that answers a held call whose client asked for
// progress. Only the handler's goroutine writes to it.
type mcpStream struct {
	w     http.ResponseWriter
	token json.RawMessage
	n     int  // progress notifications sent
	begun bool // the header was written
	gone  bool // a write failed: the client is gone
}

func (s *mcpStream) started() bool { return s != nil && s.begun }

// begin writes the stream's header, once.
func (s *mcpStream) begin(info *reqInfo) {
	if s.begun {
		return
	}
	s.begun = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy in front would hold progress back
	s.w.WriteHeader(http.StatusOK)
	info.decision = labelApprovalPending
}

func (s *mcpStream) progress(approvalID, approvers string, left time.Duration) {
	s.n++
	s.send(mcp.Progress(s.token, s.n, mcp.WaitingText(approvalID, approvers, left)))
}

// send writes msg as one event and flushes it.
func (s *mcpStream) send(msg []byte) {
	if s.gone {
		return
	}
	if _, err := s.w.Write(mcp.SSEEvent(msg)); err != nil {
		s.gone = true
		return
	}
	if err := http.NewResponseController(s.w).Flush(); err != nil {
		s.gone = true
	}
}

// sseRelay relays the upstream's answer to an approved call onto the event stream the
// hold began: an event stream passes as it comes; a JSON answer (up to limit) becomes
// one event; anything else (an error status, the gateway's own refusal) becomes a
// JSON-RPC error event, since the client's HTTP status was 200 long ago. Its header is
// its own: the client's was sent with the stream.
type sseRelay struct {
	w      http.ResponseWriter
	header http.Header
	limit  int64
	mode   int
	status int
	buf    bytes.Buffer
	failed bool
}

// Modes of sseRelay, after the upstream's header.
const (
	relaySSE = iota + 1
	relayJSON
	relayOther
)

func (s *sseRelay) Header() http.Header { return s.header }

func (s *sseRelay) WriteHeader(code int) {
	if code < 200 || s.mode != 0 {
		return // 1xx: nothing to relay on a stream already begun
	}
	s.status = code
	ct, _, _ := mime.ParseMediaType(s.header.Get("Content-Type"))
	switch {
	case code == http.StatusOK && ct == "text/event-stream":
		s.mode = relaySSE
	case code == http.StatusOK && ct == "application/json":
		s.mode = relayJSON
	default:
		s.mode = relayOther
	}
}

func (s *sseRelay) Write(b []byte) (int, error) {
	if s.mode == 0 {
		s.WriteHeader(http.StatusOK)
	}
	if s.mode == relaySSE {
		return s.w.Write(b)
	}
	if int64(s.buf.Len()+len(b)) > s.limit {
		s.failed = true
		return 0, errRelayTooLarge
	}
	return s.buf.Write(b)
}

var errRelayTooLarge = fmt.Errorf("mcp answer is larger than the gateway relays onto a stream")

// FlushError flushes a relayed event stream; a JSON answer waits for finish.
func (s *sseRelay) FlushError() error {
	if s.mode != relaySSE {
		return nil
	}
	return http.NewResponseController(s.w).Flush()
}

// finish writes a buffered answer as the stream's last event.
func (s *sseRelay) finish(info *reqInfo, m *mcp.Message) {
	var msg []byte
	switch {
	case s.mode == relaySSE:
		return
	case s.mode == relayJSON && !s.failed && json.Valid(s.buf.Bytes()):
		msg = s.buf.Bytes()
	case info.refusal != nil:
		// The gateway refused the answer (upstream unreachable, a mask failed): say so.
		msg = mcp.ErrorMessage(m.ID, -32603, info.refusal.msg, keyholeError(info.refusal, info.id))
	default:
		rf := &refusal{status: http.StatusBadGateway, code: "upstream_error", decision: labelError,
			msg: fmt.Sprintf("the MCP server's answer (HTTP %d) could not be relayed as an event", s.status)}
		info.refusal, info.decision = rf, rf.decision
		msg = mcp.ErrorMessage(m.ID, -32603, rf.msg, keyholeError(rf, info.id))
	}
	_, _ = s.w.Write(mcp.SSEEvent(msg))
	_ = http.NewResponseController(s.w).Flush()
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (s *sseRelay) Unwrap() http.ResponseWriter { return s.w }
