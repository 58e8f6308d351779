package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/telemetry"
)

// endSpan ends the request's server span with its outcome: what the access-log line says,
// and on mcp routes what the JSON-RPC message named. Never a query, a header value or a body.
func endSpan(r *http.Request, info *reqInfo, status int) {
	if !info.span.On() {
		return
	}
	o := telemetry.Outcome{Status: status, Path: info.path, Decision: info.decision}
	if o.Path == "" {
		o.Path, _, _ = strings.Cut(r.RequestURI, "?")
	}
	if info.route != nil {
		o.Route = info.route.Name
	}
	if rf := info.refusal; rf != nil {
		o.Error = rf.code
	}
	if m := mcpRecord(r, info); m != nil {
		o.MCP = &telemetry.MCP{Method: m.Method, Tool: m.Tool(), ID: m.ID, Session: m.Session}
	}
	info.span.EndRequest(o)
}

// verifyCode is the error.type of a failed token verification: its bounded reason.
func verifyCode(err error) string {
	if err == nil {
		return ""
	}
	var ie *identity.Error
	if errors.As(err, &ie) {
		return string(ie.Reason)
	}
	return "invalid_token"
}

// errCode is code when err is not nil, else "".
func errCode(err error, code string) string {
	if err == nil {
		return ""
	}
	return code
}

// admitOutcomes name what Admit decided, for the approval span.
var admitOutcomes = map[approvals.Outcome]string{
	approvals.AdmitForward:  "approved",
	approvals.AdmitPending:  "pending",
	approvals.AdmitDenied:   "denied",
	approvals.AdmitTimedOut: "expired",
	approvals.AdmitTooMany:  "too_many",
	approvals.AdmitTooLarge: "too_large",
}

// endApproval ends the span of an approval hold with what Admit returned.
func endApproval(sp telemetry.Span, adm approvals.Admission, err error) {
	if err != nil {
		sp.End("", "approvals_unavailable")
		return
	}
	if a := adm.Approval; a != nil {
		sp.SetApproval(a.ID)
	}
	sp.End(admitOutcomes[adm.Outcome], "")
}
