// Package report builds the evidence report of a period: what the gateway decided, per
// route and decision; every class of refusal; every approval with who asked, who decided,
// what they said and when; the replays auditors made; the hash chain's verification; and
// the retention in force. It is what an auditor attaches to a SOC 2 control, as HTML (for
// a browser, and printed to PDF) or Markdown.
//
// It is pure: a Builder is fed exchanges and approvals one at a time, keeps counts and a
// bounded number of rows, and returns a Report, which writes itself. Reading the records
// is the caller's.
package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/recorder"
)

// DefaultMaxListed is how many refusals, and how many replays, a report lists one by one
// when Options.MaxListed is 0. Beyond it a report shows their counts, not every row.
const DefaultMaxListed = 200

// Exchange is what a report reads of an exchange: its metadata, never its bodies or
// headers. Its JSON names are recorder.Exchange's, so it decodes from a stored record
// (DecodeRecord) or from the admin API's exchange list, skipping the bodies.
type Exchange struct {
	ID         string    `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	Identity   *struct {
		Issuer   string `json:"issuer"`
		Subject  string `json:"subject"`
		ClientID string `json:"client_id"`
	} `json:"identity"`
	Route      string `json:"route"`
	Decision   string `json:"decision"`
	Reason     string `json:"reason"`
	ApprovalID string `json:"approval_id"`
	ReplayOf   string `json:"replay_of"`
	Target     string `json:"target"`
	MCP        *struct {
		Method string `json:"method"`
		Name   string `json:"name"`
	} `json:"mcp"`
	Request struct {
		Method string `json:"method"`
		Path   string `json:"path"`
	} `json:"request"`
	Response *struct {
		Status int `json:"status"`
	} `json:"response"`
	Error string `json:"error"`
}

// DecodeRecord returns the metadata of a stored exchange: its request entry, then its
// response entry when it has completed, as recorder.Decode reads them. Only each entry's
// record JSON is read, not the body bytes that may follow it.
func DecodeRecord(rec recorder.Record) (Exchange, error) {
	var x Exchange
	if err := json.NewDecoder(bytes.NewReader(rec.Request.Data)).Decode(&x); err != nil {
		return Exchange{}, fmt.Errorf("decode exchange %s: %w", rec.Request.ExchangeID, err)
	}
	if rec.Response != nil {
		if err := json.NewDecoder(bytes.NewReader(rec.Response.Data)).Decode(&x); err != nil {
			return Exchange{}, fmt.Errorf("decode exchange %s response: %w", rec.Request.ExchangeID, err)
		}
	}
	return x, nil
}

// Retention is the record retention in force, as far as the report's source tells it.
type Retention struct {
	// Known is false when the source does not say (a store, or the admin API, read
	// without the gateway's configuration); Keep is then meaningless.
	Known bool
	// Keep is recorder.retention: entries older than this are deleted; 0 keeps everything.
	Keep time.Duration
	// Routes are the routes whose own retention overrides Keep.
	Routes map[string]time.Duration
	// From names where Keep was read (a configuration file) or, when it is not known,
	// why not.
	From string
}

// Options describe the report to build.
type Options struct {
	// Since and Until bound the period: exchanges received, and approvals created, at
	// or after Since and before Until. A zero Since is the start of the records; a zero
	// Until is Generated.
	Since, Until time.Time
	// Generated is when the report was made; Version the keyhole version that made it;
	// Source what it was read from (an admin URL or a store, without any password).
	Generated time.Time
	Version   string
	Source    string
	Retention Retention
	// MaxListed bounds the refusals and the replays listed one by one (the most recent
	// are kept); 0 is DefaultMaxListed.
	MaxListed int
}

// Builder accumulates the exchanges and approvals of a period. Its memory is bounded by
// the number of distinct routes, decisions and error codes, by MaxListed and by the
// approvals of the period. It is not safe for concurrent use.
type Builder struct {
	o         Options
	total     int
	routes    map[[2]string]int
	decisions map[string]int
	classes   map[[2]string]*RefusalClass
	refusals  rows
	replays   rows
	approvals []Approval
}

// New returns a Builder for the period o describes.
func New(o Options) *Builder {
	if o.MaxListed <= 0 {
		o.MaxListed = DefaultMaxListed
	}
	if o.Until.IsZero() {
		o.Until = o.Generated
	}
	return &Builder{o: o, routes: map[[2]string]int{}, decisions: map[string]int{}, classes: map[[2]string]*RefusalClass{},
		refusals: rows{max: o.MaxListed}, replays: rows{max: o.MaxListed}}
}

// in reports whether t falls in the period.
func (b *Builder) in(t time.Time) bool {
	return !t.Before(b.o.Since) && t.Before(b.o.Until)
}

// passed are the decisions under which the gateway forwarded a request; every other
// decision is a refusal, or a failure the client was answered with.
var passed = map[string]bool{"allowed": true, "approved": true, "replay": true}

// AddExchange counts x, if it was received in the period.
func (b *Builder) AddExchange(x Exchange) {
	if !b.in(x.ReceivedAt) {
		return
	}
	b.total++
	b.routes[[2]string{x.Route, x.Decision}]++
	b.decisions[x.Decision]++
	if x.ReplayOf != "" {
		b.replays.add(rowOf(x))
	}
	if passed[x.Decision] {
		return
	}
	k := [2]string{x.Decision, x.Error}
	c := b.classes[k]
	if c == nil {
		c = &RefusalClass{Decision: x.Decision, Error: x.Error, First: x.ReceivedAt, Last: x.ReceivedAt}
		b.classes[k] = c
	}
	c.Count++
	if x.ReceivedAt.Before(c.First) {
		c.First = x.ReceivedAt
	}
	if x.ReceivedAt.After(c.Last) {
		c.Last = x.ReceivedAt
	}
	b.refusals.add(rowOf(x))
}

// AddApproval adds a, if it was created in the period. The report keeps what an auditor
// reads of it, never the request's body or headers.
func (b *Builder) AddApproval(a *approvals.Approval) {
	if !b.in(a.CreatedAt) {
		return
	}
	ap := Approval{ID: a.ID, Route: a.Route, Tool: a.Tool, Method: a.Method, Path: a.Path, Requester: who(a.Requester),
		Reason: a.Reason, Created: a.CreatedAt, Expires: a.ExpiresAt, MinApprovals: a.MinApprovals, State: string(a.State),
		DecidedAt: a.DecidedAt, UsedAt: a.UsedAt, UsedBy: a.UsedBy, Exchange: a.ExchangeID}
	for _, d := range a.Decisions {
		ap.Decisions = append(ap.Decisions, Decision{Approver: who(d.Approver), Verdict: string(d.Verdict), Comment: d.Comment, At: d.At, Via: string(d.Via)})
	}
	b.approvals = append(b.approvals, ap)
}

// who names an identity as a report shows it: subject, its client when it differs, and issuer.
func who(id approvals.Identity) string {
	s := id.Subject
	if id.ClientID != "" && id.ClientID != id.Subject {
		s += " (client " + id.ClientID + ")"
	}
	if id.Issuer != "" {
		s += " @ " + id.Issuer
	}
	return s
}

// Report returns the report of everything added, with chain, the verification of the
// record chain.
func (b *Builder) Report(chain recorder.Report) *Report {
	r := &Report{Since: b.o.Since, Until: b.o.Until, Generated: b.o.Generated, Version: b.o.Version, Source: b.o.Source,
		Retention: b.o.Retention, Exchanges: b.total, Chain: chain, MaxListed: b.o.MaxListed}
	for k, n := range b.routes {
		r.Routes = append(r.Routes, RouteCount{Route: k[0], Decision: k[1], Count: n})
	}
	slices.SortFunc(r.Routes, func(a, b RouteCount) int {
		return cmpOr(strings.Compare(a.Route, b.Route), strings.Compare(a.Decision, b.Decision))
	})
	for d, n := range b.decisions {
		r.Decisions = append(r.Decisions, Count{Name: d, Count: n})
		if !passed[d] {
			r.Refused += n
		}
	}
	slices.SortFunc(r.Decisions, func(a, b Count) int { return cmpOr(b.Count-a.Count, strings.Compare(a.Name, b.Name)) })
	for _, c := range b.classes {
		r.Classes = append(r.Classes, *c)
	}
	slices.SortFunc(r.Classes, func(a, b RefusalClass) int {
		return cmpOr(b.Count-a.Count, strings.Compare(a.Decision, b.Decision), strings.Compare(a.Error, b.Error))
	})
	r.Refusals, r.Replays = b.refusals.sorted(), b.replays.sorted()
	r.ReplayCount = b.replays.seen
	r.Approvals = slices.Clone(b.approvals)
	slices.SortFunc(r.Approvals, func(a, b Approval) int { return cmpOr(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID)) })
	states := map[string]int{}
	for _, a := range r.Approvals {
		states[a.State]++
	}
	for s, n := range states {
		r.ApprovalStates = append(r.ApprovalStates, Count{Name: s, Count: n})
	}
	slices.SortFunc(r.ApprovalStates, func(a, b Count) int { return strings.Compare(a.Name, b.Name) })
	return r
}

func cmpOr(cs ...int) int {
	for _, c := range cs {
		if c != 0 {
			return c
		}
	}
	return 0
}

// rows keeps the max most recent rows added, and counts them all.
type rows struct {
	max  int
	seen int
	rs   []Row
}

func (r *rows) add(x Row) {
	r.seen++
	r.rs = append(r.rs, x)
	if len(r.rs) >= 2*r.max {
		r.trim()
	}
}

// trim keeps the max most recent rows.
func (r *rows) trim() {
	slices.SortFunc(r.rs, func(a, b Row) int { return cmpOr(b.At.Compare(a.At), strings.Compare(b.ID, a.ID)) })
	if len(r.rs) > r.max {
		r.rs = slices.Delete(r.rs, r.max, len(r.rs))
	}
}

// sorted returns the rows kept, oldest first.
func (r *rows) sorted() []Row {
	r.trim()
	out := slices.Clone(r.rs)
	slices.Reverse(out)
	return out
}

func rowOf(x Exchange) Row {
	row := Row{ID: x.ID, At: x.ReceivedAt, Route: x.Route, Decision: x.Decision, Error: x.Error, Reason: x.Reason,
		Method: x.Request.Method, Path: x.Request.Path, ReplayOf: x.ReplayOf, Target: x.Target, Approval: x.ApprovalID}
	if x.Identity != nil {
		row.Subject = x.Identity.Subject
	}
	if x.Response != nil {
		row.Status = x.Response.Status
	}
	if x.MCP != nil && x.MCP.Method != "" {
		row.MCP = strings.TrimSpace(x.MCP.Method + " " + x.MCP.Name)
	}
	return row
}

// Report is the evidence of one period. Its writers (HTML, Markdown) escape every value.
type Report struct {
	Since, Until, Generated time.Time
	Version, Source         string
	Retention               Retention
	// Exchanges is how many exchanges were received in the period; Refused how many of
	// them were not forwarded (or failed: every decision but allowed, approved, replay).
	Exchanges, Refused int
	// Routes counts exchanges per route and decision ("" is no route), by route.
	Routes []RouteCount
	// Decisions counts exchanges per decision, most first.
	Decisions []Count
	// Classes are the refusals by decision and error code, most first.
	Classes []RefusalClass
	// Refusals are the most recent refused exchanges, at most MaxListed, oldest first.
	Refusals []Row
	// ReplayCount is how many replays were made; Replays the most recent of them, at
	// most MaxListed, oldest first.
	ReplayCount int
	Replays     []Row
	MaxListed   int
	// Approvals are the approvals created in the period, oldest first; ApprovalStates
	// counts them per state.
	Approvals      []Approval
	ApprovalStates []Count
	// Chain is the verification of the whole record chain, not only of the period.
	Chain recorder.Report
}

// RouteCount is the number of exchanges of one route with one decision.
type RouteCount struct {
	Route, Decision string
	Count           int
}

// Count is the number of things with one name.
type Count struct {
	Name  string
	Count int
}

// RefusalClass is one kind of refusal: a decision and the error code the client got.
type RefusalClass struct {
	Decision, Error string
	Count           int
	First, Last     time.Time
}

// Row is one exchange as a report lists it.
type Row struct {
	ID       string
	At       time.Time
	Route    string
	Subject  string
	Method   string
	Path     string
	MCP      string // "tools/call NAME" on an mcp route
	Status   int    // 0: no response
	Decision string
	Error    string
	Reason   string
	Approval string
	ReplayOf string
	Target   string
}

// Approval is one approval as a report shows it.
type Approval struct {
	ID, Route, Tool, Method, Path string
	Requester, Reason             string
	Created, Expires              time.Time
	MinApprovals                  int
	State                         string
	DecidedAt, UsedAt             *time.Time
	// UsedBy is the exchange the approval released; Exchange the one that asked for it.
	UsedBy, Exchange string
	Decisions        []Decision
}

// Decision is one approver's verdict.
type Decision struct {
	Approver, Verdict, Comment string
	At                         time.Time
	Via                        string
}
