package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/mcp"
)

// Approvals admits requests on routes with an approval block (approvals.Service).
type Approvals interface {
	Admit(ctx context.Context, r approvals.Request) (approvals.Admission, error)
}

// Decision labels of approval outcomes.
const (
	labelApproved        = "approved"
	labelApprovalPending = "approval_pending"
	labelApprovalDenied  = "approval_denied"
	labelApprovalTimeout = "approval_timeout"
)

// retryAfterPending is the Retry-After of approval_pending: how soon a client should
// send the same request again to see whether it was approved.
const retryAfterPending = 10 * time.Second

// approve holds a request on a route with approval until a human decides, and lets it
// through only on an approval for exactly this request, consumed by it. It runs after
// the request is recorded, so the record of a held request exists while it waits.
func (g *Gateway) approve(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r.Context())
		if info.mcp != nil && info.mcp.approval != nil {
			g.approveMCP(w, r, next)
			return
		}
		ap := info.route.Approval
		if ap == nil {
			next.ServeHTTP(w, r)
			return
		}
		if g.ap == nil {
			g.refuse(w, info, &refusal{status: http.StatusServiceUnavailable, code: "approvals_unavailable",
				msg: "route " + info.route.Name + " needs an approval and this gateway cannot hold requests", decision: labelError})
			return
		}
		p := info.principal
		req := approvals.Request{
			Requester:    approvals.Identity{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Groups: p.Groups, Scopes: p.Scopes},
			Route:        info.route.Name,
			Method:       r.Method,
			Path:         info.path,
			Query:        r.URL.RawQuery,
			Header:       r.Header,
			Body:         info.rec.body,
			Reason:       info.clientReason,
			ExchangeID:   info.id,
			MinApprovals: ap.MinApprovals,
			Hold:         time.Duration(ap.Hold),
			TTL:          time.Duration(ap.TTL),
			MaxPending:   info.state.maxPending,
			Redact:       g.redactor(info),
		}
		actx, as := info.span.Stage(r.Context(), "keyhole.approval")
		adm, err := g.ap.Admit(actx, req)
		endApproval(as, adm, err)
		if err != nil {
			if r.Context().Err() != nil {
				// The client went away while held; the approval stays for its retry.
				info.decision, info.status = labelApprovalPending, 499
				return
			}
			g.refuse(w, info, &refusal{status: http.StatusServiceUnavailable, code: "approvals_unavailable",
				msg: "the approval of this request could not be checked", decision: labelError, cause: err})
			return
		}
		if a := adm.Approval; a != nil {
			info.approvalID = a.ID
		}
		hdr := http.Header{"X-Keyhole-Approval": {info.approvalID}}
		switch adm.Outcome {
		case approvals.AdmitForward:
			info.decision = labelApproved
			info.respHeader.Set("X-Keyhole-Approval", info.approvalID)
			next.ServeHTTP(w, r)
		case approvals.AdmitPending:
			hdr.Set("Retry-After", strconv.Itoa(int(retryAfterPending.Seconds())))
			rf := &refusal{status: http.StatusForbidden, code: "approval_pending", decision: labelApprovalPending, header: hdr,
				msg: fmt.Sprintf("request is waiting for approval %s; send the same request again once it is approved, before %s",
					info.approvalID, adm.Approval.ExpiresAt.UTC().Format(time.RFC3339))}
			if asked := prefersAsync(r.Header); asked || ap.PendingStatus == http.StatusAccepted {
				g.accepted(rf, info, adm.Approval, asked, ap)
			}
			g.refuse(w, info, rf)
		case approvals.AdmitDenied:
			msg := "request was denied by an approver"
			if c := lastComment(adm.Approval, approvals.Deny); c != "" {
				msg += ": " + c
			}
			g.refuse(w, info, &refusal{status: http.StatusForbidden, code: "approval_denied", decision: labelApprovalDenied, header: hdr, msg: msg})
		case approvals.AdmitTimedOut:
			g.refuse(w, info, &refusal{status: http.StatusForbidden, code: "approval_timeout", decision: labelApprovalTimeout, header: hdr,
				msg: fmt.Sprintf("approval %s expired before it was decided or used; send the request again to ask anew", info.approvalID)})
		case approvals.AdmitTooLarge:
			g.refuse(w, info, &refusal{status: http.StatusRequestEntityTooLarge, code: "body_too_large", decision: labelError,
				msg: fmt.Sprintf("a request that needs approval may carry at most %d bytes of body: approvers must see all of it", approvals.MaxBody)})
		default: // approvals.AdmitTooMany
			g.refuse(w, info, &refusal{status: http.StatusTooManyRequests, code: "too_many_approvals", decision: labelApprovalPending,
				header: http.Header{"Retry-After": {"60"}},
				msg:    fmt.Sprintf("too many requests of %s are waiting for approval; wait for them to be decided", p.Subject)})
		}
	})
}

// pendingBody is the body of a 202 approval_pending answer: its first words say that
// nothing was done and what to do, for clients that show a model only the text.
type pendingBody struct {
	Message           string `json:"message"`
	Error             string `json:"error"`
	RequestID         string `json:"request_id"`
	ApprovalID        string `json:"approval_id"`
	Approvers         string `json:"approvers"`
	StatusURL         string `json:"status_url,omitempty"`
	RetryAfterSeconds int    `json:"retry_after_seconds"`
	ExpiresAt         string `json:"expires_at"`
}

// accepted turns the approval_pending refusal rf into a 202 Accepted answer (RFC 7240
// respond-async): Location names the approval's status on the admin plane when
// approvals.public_url is set, and Preference-Applied says the request's Prefer was
// honoured (asked). Metrics and the record keep the decision approval_pending.
func (g *Gateway) accepted(rf *refusal, info *reqInfo, a *approvals.Approval, asked bool, ap *config.Approval) {
	by := mcp.Approvers(&ap.Approvers)
	body := pendingBody{Error: rf.code, RequestID: info.id, ApprovalID: a.ID, Approvers: by,
		RetryAfterSeconds: int(retryAfterPending.Seconds()), ExpiresAt: a.ExpiresAt.UTC().Format(time.RFC3339),
		Message: fmt.Sprintf("Nothing was done yet: this request waits for approval %s by %s. Send the same request again "+
			"in %d seconds or more, once it is approved, before %s. Do not change it: a changed request asks anew.",
			a.ID, by, int(retryAfterPending.Seconds()), a.ExpiresAt.UTC().Format(time.RFC3339))}
	if base := info.state.approvalsURL; base != "" {
		body.StatusURL = base + "/api/v1/approvals/" + a.ID
		rf.header.Set("Location", body.StatusURL)
	}
	if asked {
		rf.header.Set("Preference-Applied", "respond-async")
	}
	rf.header.Add("Vary", "Prefer")
	rf.status, rf.body = http.StatusAccepted, body
}

// prefersAsync reports whether a Prefer header (RFC 7240) asks for respond-async.
func prefersAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			tok, _, _ := strings.Cut(p, ";")
			tok, _, _ = strings.Cut(tok, "=")
			if strings.EqualFold(strings.TrimSpace(tok), "respond-async") {
				return true
			}
		}
	}
	return false
}

// lastComment returns the comment of a's last decision with verdict v, or "".
func lastComment(a *approvals.Approval, v approvals.Verdict) string {
	for i := len(a.Decisions) - 1; i >= 0; i-- {
		if a.Decisions[i].Verdict == v {
			return a.Decisions[i].Comment
		}
	}
	return ""
}

// redactor returns what removes credentials from what approvers see: the recorder's
// redaction, with the request's own secrets (the client's token). Without a recorder,
// nothing is removed.
func (g *Gateway) redactor(info *reqInfo) func(string) string {
	if g.rec == nil {
		return nil
	}
	return func(s string) string { return g.rec.RedactString(s, info.rec.secrets...) }
}
