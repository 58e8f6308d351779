// Package approvals holds risky requests for a human's decision. An approval covers one
// exact request (its binding), is decided by approvers other than its requester, is
// consumed at most once, and expires. Approvals live in a Store, so a gateway restart
// loses a held connection but not the approval: the client's retry finds it.
package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"maps"
	"net/http"
	"slices"
	"time"
)

// State is where an approval is in its life.
type State string

// States of an approval. Pending is the only state decisions change; Approved becomes
// Used when a request consumes it; Pending and Approved become Expired at ExpiresAt.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Denied   State = "denied"
	Expired  State = "expired"
	Used     State = "used"
)

// Verdict is one approver's decision.
type Verdict string

// Verdicts.
const (
	Approve Verdict = "approve"
	Deny    Verdict = "deny"
)

// Identity is who requested or decided.
type Identity struct {
	Issuer   string   `json:"issuer,omitempty"`
	Subject  string   `json:"subject,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// App is set when the token was one the app ClientID held for itself (a
	// client-credentials token; identity.Principal.App). IsRequester reads it of the
	// approver; stores need not keep it.
	App bool `json:"app,omitempty"`
}

// Approval is one request held for human decision.
type Approval struct {
	ID string `json:"id"`
	// Binding identifies the exact request the approval covers (Bind): the same
	// requester sending the same request again finds this approval.
	Binding string `json:"-"`
	Route   string `json:"route"`
	// Tool is the tool of a tools/call on an mcp route, "" for an HTTP request. The
	// approval then covers the requester, route, tool and the canonical arguments
	// (BindCall); Body shows the arguments, indented, and BodyHash is the SHA-256 of
	// their canonical form.
	Tool   string `json:"tool,omitempty"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query,omitempty"`
	// Headers are the request headers the approval covers (BoundHeaders), as approvers
	// see them: credentials redacted.
	Headers http.Header `json:"headers,omitempty"`
	// Body is the whole request body (at most MaxBody) as approvers see it: redacted of
	// credentials. BodyHash is the SHA-256 of the exact bytes, which is what the
	// approval covers.
	Body         string    `json:"body,omitempty"`
	BodySize     int64     `json:"body_size"`
	BodyHash     string    `json:"body_sha256"`
	Requester    Identity  `json:"requester"`
	Reason       string    `json:"reason,omitempty"` // the client's X-Keyhole-Reason
	ExchangeID   string    `json:"exchange_id"`      // the exchange that asked
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	MinApprovals int       `json:"min_approvals"`
	State        State     `json:"state"`
	// Closed is set once the binding is free again: the approval was used, or its
	// denial or expiry was reported after ExpiresAt. A new identical request then asks
	// for a new approval.
	Closed    bool       `json:"closed,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"` // the exchange that was forwarded on it
	Decisions []Decision `json:"decisions,omitempty"`
}

// Decision is one approver's verdict on an approval.
type Decision struct {
	Approver Identity  `json:"approver"`
	Verdict  Verdict   `json:"verdict"`
	Comment  string    `json:"comment,omitempty"`
	At       time.Time `json:"at"`
	// Via is how the approver decided; "" for decisions recorded before it was.
	Via Via `json:"via,omitempty"`
}

// Via is the way a decision reached Keyhole, kept with it for the audit.
type Via string

// Ways of deciding.
const (
	ViaAPI     Via = "api"     // the admin API (and keyhole approvals, which calls it)
	ViaConsole Via = "console" // the web console
)

// Filter selects approvals to list. Zero fields do not filter.
type Filter struct {
	State   State
	Route   string
	Subject string // the requester's
	Limit   int    // at most this many, newest first; the store bounds it
	Before  string // only approvals with an id less than this (paging)
}

// Errors of a Store.
var (
	ErrNotFound = errors.New("approval not found")
	// ErrNotPending is returned by Decide for an approval already decided or expired.
	ErrNotPending = errors.New("approval is no longer pending")
	// ErrAlreadyDecided is returned by Decide when the approver has decided this approval before.
	ErrAlreadyDecided = errors.New("approver has already decided this approval")
	// ErrOpen is returned by CreateApproval when another open approval holds the same binding.
	ErrOpen = errors.New("an open approval holds this binding")
	// ErrTooMany is returned by CreateApproval when the requester has too many pending approvals.
	ErrTooMany = errors.New("requester has too many pending approvals")
)

// Store keeps approvals. Every method is atomic: concurrent callers, in one process or
// in several sharing the store, see each change whole and in one order.
type Store interface {
	// CreateApproval inserts a (state Pending, not closed) unless an open (not closed)
	// approval with a.Binding exists (ErrOpen) or, when maxPending > 0, a's requester
	// subject has maxPending open Pending approvals unexpired at a.CreatedAt
	// (ErrTooMany); then it inserts nothing. Check and insert are atomic together.
	CreateApproval(ctx context.Context, a *Approval, maxPending int) error
	// OpenApproval returns the open approval with binding, or ErrNotFound.
	OpenApproval(ctx context.Context, binding string) (*Approval, error)
	// Approval returns the approval with id, with its decisions in order, or ErrNotFound.
	Approval(ctx context.Context, id string) (*Approval, error)
	// Approvals lists approvals matching f, newest (greatest id) first, with their decisions.
	Approvals(ctx context.Context, f Filter) ([]*Approval, error)
	// DecideApproval adds d to approval id if it is Pending and now is before its
	// ExpiresAt, and returns the approval as it then is: Denied on a Deny verdict,
	// Approved once MinApprovals distinct approvers (by issuer and subject) approved,
	// else still Pending. DecidedAt is set when the state changes. It returns
	// ErrNotFound, ErrNotPending, or ErrAlreadyDecided when d's approver decided before.
	DecideApproval(ctx context.Context, id string, d Decision, now time.Time) (*Approval, error)
	// ConsumeApproval marks approval id Used by exchange, and closed, if it is
	// Approved, open, and now is before its ExpiresAt. It reports whether this call did:
	// of many concurrent callers, exactly one gets true.
	ConsumeApproval(ctx context.Context, id, exchange string, now time.Time) (bool, error)
	// CloseApproval closes approval id if it is open, setting its state to Expired
	// when it was Pending or Approved (a Denied one stays Denied). It reports whether
	// this call closed it.
	CloseApproval(ctx context.Context, id string) (bool, error)
	// ExpireApprovals sets every open Pending or Approved approval whose ExpiresAt is
	// not after now to Expired (leaving it open, so the requester's next retry learns of
	// the expiry), and returns them.
	ExpireApprovals(ctx context.Context, now time.Time) ([]*Approval, error)
	// PendingApprovals counts open Pending approvals requested by subject (every
	// subject when "") that expire after now.
	PendingApprovals(ctx context.Context, subject string, now time.Time) (int, error)
}

// Watcher is a Store shared by several processes that tells each of them about
// approvals another one changed, so that a request held on one replica is released as
// soon as an approver decides through another. WatchApprovals runs until ctx ends,
// calling changed with the id of each approval another process decided, closed or
// expired, and missed whenever it may have missed some (it reconnected); neither may
// block. A Service polls the store all the same, so a lost notification delays a
// release but never loses it.
type Watcher interface {
	WatchApprovals(ctx context.Context, changed func(id string), missed func())
}

// Bind returns the binding of a request: a hash over everything an approval covers —
// the requester (issuer, subject, client id), the route, the method, the canonical path,
// the raw query, the bound headers (HeadersHash) and the hash of the exact body bytes.
// Any difference is a new approval.
func Bind(requester Identity, route, method, path, query, headersHash, bodyHash string) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range []string{requester.Issuer, requester.Subject, requester.ClientID, route, method, path, query, headersHash, bodyHash} {
		// Length-prefixed, so that no two field lists hash alike.
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// BindCall returns the binding of a tool call on an mcp route: a hash over the requester
// (issuer, subject, client id), the route, the tool and the hash of the canonical (RFC
// 8785) arguments. The JSON-RPC id, _meta (progressToken), the session and the protocol
// headers are not covered: every MCP client sends a new id with each call and a new
// session after a reconnect, so binding them would leave no retry able to use an
// approval. Its fields are tagged, so no call binds like an HTTP request (Bind).
func BindCall(requester Identity, route, tool, argumentsHash string) string {
	return Bind(requester, route, "mcp tools/call", tool, "", "", argumentsHash)
}

// unboundHeaders are request headers an approval does not cover: they describe the
// client or the connection (User-Agent, content negotiation, tracing), not what the
// request does. Every other header forwarded is bound: tenant selectors, Prefer,
// If-Match, idempotency keys and the like change what an upstream does.
var unboundHeaders = map[string]bool{"User-Agent": true, "Accept": true, "Accept-Encoding": true,
	"Accept-Language": true, "Traceparent": true, "Tracestate": true, "Baggage": true, "X-Request-Id": true,
	"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Keep-Alive": true, "Te": true,
	"Host": true, "Via": true}

// BoundHeaders returns the headers of h an approval covers: all but unboundHeaders.
func BoundHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		if k = http.CanonicalHeaderKey(k); !unboundHeaders[k] {
			out[k] = append(out[k], vs...)
		}
	}
	return out
}

// HeadersHash returns the hex SHA-256 of a canonical encoding of h (names in order,
// each value length-prefixed, in the order received).
func HeadersHash(h http.Header) string {
	sum := sha256.New()
	var n [8]byte
	write := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		sum.Write(n[:])
		sum.Write([]byte(s))
	}
	for _, k := range slices.Sorted(maps.Keys(h)) {
		write(k)
		binary.BigEndian.PutUint64(n[:], uint64(len(h[k])))
		sum.Write(n[:])
		for _, v := range h[k] {
			write(v)
		}
	}
	return hex.EncodeToString(sum.Sum(nil))
}

// BodyHash returns the hex SHA-256 of body.
func BodyHash(body []byte) string {
	s := sha256.Sum256(body)
	return hex.EncodeToString(s[:])
}
