package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/oklog/ulid/v2"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/rules"
)

// ApprovalService lists approvals and takes approvers' decisions (approvals.Service).
type ApprovalService interface {
	Approval(ctx context.Context, id string) (*approvals.Approval, error)
	Approvals(ctx context.Context, f approvals.Filter) ([]*approvals.Approval, error)
	Decide(ctx context.Context, id string, by approvals.Identity, v approvals.Verdict, comment string, via approvals.Via) (*approvals.Approval, error)
}

// mountApprovals adds the approvers' endpoints. Listing and reading need the approvers
// role or to be an approver of the approval's route; deciding needs the latter.
func (a *API) mountApprovals(r chi.Router) {
	r.Get("/approvals", a.listApprovals)
	r.Post("/approvals/{id}/approve", a.decide(approvals.Approve))
	r.Post("/approvals/{id}/deny", a.decide(approvals.Deny))
}

// approvalView is an approval as the API shows it: with its age and time left.
type approvalView struct {
	*approvals.Approval
	AgeSeconds       float64 `json:"age_seconds"`
	ExpiresInSeconds float64 `json:"expires_in_seconds"`
}

func view(ap *approvals.Approval, now time.Time) approvalView {
	return approvalView{Approval: ap, AgeSeconds: now.Sub(ap.CreatedAt).Round(time.Second).Seconds(),
		ExpiresInSeconds: max(0, ap.ExpiresAt.Sub(now).Round(time.Second).Seconds())}
}

// approvalList is the answer of GET /api/v1/approvals.
type approvalList struct {
	Approvals  []approvalView `json:"approvals"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// approvalStates are the values of the state filter; "all" lists every state.
var approvalStates = map[string]approvals.State{"pending": approvals.Pending, "approved": approvals.Approved,
	"denied": approvals.Denied, "expired": approvals.Expired, "used": approvals.Used, "all": ""}

// ReadsApprovals reports whether p may read approvals at all (any) and whether it may
// read every approval (all: the approvers role) rather than only those it decides
// (MayDecide). The API and the console both ask it.
func ReadsApprovals(roles Roles, p *identity.Principal) (any, all bool) {
	all = roles.HasRole(p, rules.RoleApprovers)
	return all || roles.Approves(p, ""), all
}

// MayRead reports whether p may read approval ap.
func MayRead(roles Roles, p *identity.Principal, ap *approvals.Approval) bool {
	_, all := ReadsApprovals(roles, p)
	return all || MayDecide(roles, p, ap)
}

func (a *API) listApprovals(w http.ResponseWriter, r *http.Request) {
	p, roles := principal(r), a.Roles()
	anyOK, all := ReadsApprovals(roles, p)
	if !anyOK {
		apiError(w, http.StatusForbidden, "forbidden", "listing approvals requires the approvers role or to be an approver of a route")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "pending"
	}
	st, ok := approvalStates[state]
	if !ok {
		apiError(w, http.StatusBadRequest, "bad_request", "state: want pending, approved, denied, expired, used or all")
		return
	}
	f := approvals.Filter{State: st, Route: q.Get("route"), Subject: q.Get("subject"), Before: q.Get("cursor"), Limit: 50}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusBadRequest, "bad_request", "limit: want a whole number")
			return
		}
		f.Limit = min(n, 500)
	}
	if f.Before != "" {
		if _, err := ulid.ParseStrict(f.Before); err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", "cursor: not a cursor this API returned")
			return
		}
	}
	list, err := a.Approvals.Approvals(r.Context(), f)
	if err != nil {
		a.storeError(w, err)
		return
	}
	now := time.Now()
	out := approvalList{Approvals: make([]approvalView, 0, len(list))}
	for _, ap := range list {
		if all || MayDecide(roles, p, ap) {
			out.Approvals = append(out.Approvals, view(ap, now))
		}
	}
	if len(list) == f.Limit {
		out.NextCursor = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// approval reads the approval of the request and checks that the caller may see it. A
// caller who may read no approval at all is refused before the store is asked, and an
// approval the caller may not see answers exactly as an unknown id does: neither answer
// tells whether the id exists or which route it is for.
func (a *API) approval(w http.ResponseWriter, r *http.Request) (*approvals.Approval, bool) {
	p, roles := principal(r), a.Roles()
	if anyOK, _ := ReadsApprovals(roles, p); !anyOK {
		apiError(w, http.StatusForbidden, "forbidden", "reading approvals requires the approvers role or to be an approver of a route")
		return nil, false
	}
	id := chi.URLParam(r, "id")
	ap, err := a.Approvals.Approval(r.Context(), id)
	switch {
	case errors.Is(err, approvals.ErrNotFound) || err == nil && !MayRead(roles, p, ap):
		apiError(w, http.StatusNotFound, "not_found", "no approval "+id+" that you may read")
		return nil, false
	case err != nil:
		a.storeError(w, err)
		return nil, false
	}
	return ap, true
}

// showApproval answers GET /api/v1/approvals/{id}: the whole approval for those who may
// read approvals (through a client admin.clients accepts), its status for its requester
// (any client: the agent polls with its own token), and for anyone else exactly what an
// unknown id answers.
func (a *API) showApproval(w http.ResponseWriter, r *http.Request) {
	p, roles := principal(r), a.Roles()
	if roles.AdminClient(p) && (roles.HasRole(p, rules.RoleApprovers) || roles.Approves(p, "")) {
		if ap, ok := a.approval(w, r); ok {
			writeJSON(w, http.StatusOK, view(ap, time.Now()))
		}
		return
	}
	id := chi.URLParam(r, "id")
	ap, err := a.Approvals.Approval(r.Context(), id)
	switch {
	case errors.Is(err, approvals.ErrNotFound) || err == nil && !ownApproval(p, ap):
		apiError(w, http.StatusNotFound, "not_found", "no approval "+id+" that you may read")
	case err != nil:
		a.storeError(w, err)
	default:
		writeJSON(w, http.StatusOK, statusOf(ap, time.Now()))
	}
}

// ownApproval reports whether p requested ap: the same issuer and subject.
func ownApproval(p *identity.Principal, ap *approvals.Approval) bool {
	return p.Issuer == ap.Requester.Issuer && p.Subject == ap.Requester.Subject
}

// approvalStatus is what a requester reads of its own approval: where it stands and what
// to do, not who decided or what approvers saw.
type approvalStatus struct {
	ID                string           `json:"id"`
	State             approvals.State  `json:"state"`
	Next              string           `json:"next"`
	Route             string           `json:"route"`
	Tool              string           `json:"tool,omitempty"`
	Method            string           `json:"method"`
	Path              string           `json:"path"`
	CreatedAt         time.Time        `json:"created_at"`
	ExpiresAt         time.Time        `json:"expires_at"`
	ExpiresInSeconds  float64          `json:"expires_in_seconds"`
	RetryAfterSeconds int              `json:"retry_after_seconds,omitempty"`
	Decisions         []statusDecision `json:"decisions,omitempty"`
}

// statusDecision is one decision as its requester reads it.
type statusDecision struct {
	Verdict approvals.Verdict `json:"verdict"`
	Comment string            `json:"comment,omitempty"`
	At      time.Time         `json:"at"`
}

// requesterRetry is how soon a requester should look again at a pending approval: the
// data plane's Retry-After of approval_pending.
const requesterRetry = 10

func statusOf(ap *approvals.Approval, now time.Time) approvalStatus {
	st := approvalStatus{ID: ap.ID, State: ap.State, Route: ap.Route, Tool: ap.Tool, Method: ap.Method, Path: ap.Path,
		CreatedAt: ap.CreatedAt, ExpiresAt: ap.ExpiresAt, ExpiresInSeconds: max(0, ap.ExpiresAt.Sub(now).Round(time.Second).Seconds())}
	for _, d := range ap.Decisions {
		st.Decisions = append(st.Decisions, statusDecision{Verdict: d.Verdict, Comment: d.Comment, At: d.At})
	}
	switch {
	case ap.State == approvals.Pending && now.Before(ap.ExpiresAt):
		st.RetryAfterSeconds = requesterRetry
		st.Next = "Nothing was done yet: wait for the approvers, look again in " + strconv.Itoa(requesterRetry) + " seconds or more"
	case ap.State == approvals.Approved && now.Before(ap.ExpiresAt):
		st.Next = "Approved: send the same request again, unchanged, before expires_at; it runs once"
	case ap.State == approvals.Denied:
		st.Next = "Denied by an approver: nothing was done; do not send it again"
	case ap.State == approvals.Used:
		st.Next = "Done: the approved request was forwarded once; a further one asks anew"
	default:
		st.State = approvals.Expired
		st.Next = "Expired before it was decided or used: nothing was done; sending the request again asks anew"
	}
	return st
}

// decisionRequest is the body of POST /api/v1/approvals/{id}/approve and /deny.
type decisionRequest struct {
	Comment string `json:"comment"`
}

func (a *API) decide(v approvals.Verdict) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req decisionRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			apiError(w, http.StatusBadRequest, "bad_request", `body must be a JSON object: {"comment": "..."}`)
			return
		}
		ap, ok := a.approval(w, r)
		if !ok {
			return
		}
		p := principal(r)
		if !MayDecide(a.Roles(), p, ap) {
			what := "route " + ap.Route
			if ap.Tool != "" {
				what = "tool " + ap.Tool + " on " + what
			}
			apiError(w, http.StatusForbidden, "forbidden", "only an approver of "+what+" may decide this approval")
			return
		}
		out, err := a.Approvals.Decide(r.Context(), ap.ID, By(p), v, req.Comment, approvals.ViaAPI)
		switch {
		case errors.Is(err, approvals.ErrSelfApproval):
			apiError(w, http.StatusForbidden, "self_approval", "a requester may not decide its own request")
		case errors.Is(err, approvals.ErrNotPending):
			apiError(w, http.StatusConflict, "not_pending", "approval "+ap.ID+" is no longer pending")
		case errors.Is(err, approvals.ErrAlreadyDecided):
			apiError(w, http.StatusConflict, "already_decided", "you have already decided approval "+ap.ID)
		case errors.Is(err, approvals.ErrNotFound):
			apiError(w, http.StatusNotFound, "not_found", "no approval "+ap.ID)
		case err != nil:
			a.storeError(w, err)
		default:
			writeJSON(w, http.StatusOK, view(out, time.Now()))
		}
	}
}

// MayDecide reports whether p may decide ap: an approver of its route or, for a tool
// call on an mcp route, of its tool. (Whether p is ap's requester is Decide's to check.)
func MayDecide(roles Roles, p *identity.Principal, ap *approvals.Approval) bool {
	if ap.Tool != "" {
		return roles.ApprovesTool(p, ap.Route, ap.Tool)
	}
	return roles.Approves(p, ap.Route)
}

// By is p as the approver of a decision.
func By(p *identity.Principal) approvals.Identity {
	return approvals.Identity{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, App: p.App}
}
