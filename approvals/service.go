package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyholehq/keyhole/jsonscan"
)

// Outcome is what becomes of a request on an approval route.
type Outcome int

// Outcomes of Admit.
const (
	// AdmitForward: an approval for exactly this request was consumed by it; forward it.
	AdmitForward Outcome = iota
	// AdmitPending: nobody decided within the hold; the client may retry the same request.
	AdmitPending
	// AdmitDenied: an approver denied this request.
	AdmitDenied
	// AdmitTimedOut: the approval for this request expired before it was decided or used.
	AdmitTimedOut
	// AdmitTooMany: the requester has too many pending approvals already.
	AdmitTooMany
	// AdmitTooLarge: the body is longer than approvers can be shown (MaxBody); an
	// approval must never cover bytes nobody saw.
	AdmitTooLarge
)

// MaxBody is the longest request body an approval covers: approvers are shown all of it.
const MaxBody = 64 << 10

// Request is a request on an approval route, as Admit needs it.
type Request struct {
	Requester Identity
	Route     string
	Method    string
	Path      string      // canonical
	Query     string      // raw
	Header    http.Header // the headers that will be forwarded; BoundHeaders of them are bound
	Body      []byte      // the exact bytes that will be forwarded
	// Tool, set for a tools/call on an mcp route, is the tool's name and Arguments the
	// canonical document of the call (the RFC 8785 form of its arguments, with the bound
	// headers, query and path when there are any: see mcp/canonical.go ApprovalDocument): the approval
	// then binds them (BindCall) instead of the method, path, query, headers and body,
	// and approvers are shown the document indented instead of the JSON-RPC envelope.
	Tool      string
	Arguments []byte
	Reason    string // the client's X-Keyhole-Reason
	// ExchangeID is the request's exchange: the approval links to it, and a consumed
	// approval names it as used by.
	ExchangeID   string
	MinApprovals int
	Hold, TTL    time.Duration
	MaxPending   int // per requester subject; 0 means no limit
	// Redact returns s without credentials; what approvers see passes through it.
	// Nil shows s as it is.
	Redact func(s string) string
	// Held, when not nil, is called once the request begins to wait for a decision on
	// a, from Admit's goroutine; it must not block. (The data plane tells an MCP client
	// which approval it waits for while it waits.)
	Held func(a *Approval)
}

// Admission is Admit's answer: the outcome, and the approval it concerns (nil for
// AdmitTooMany and AdmitTooLarge).
type Admission struct {
	Outcome  Outcome
	Approval *Approval
}

// Metrics are the approvals' instruments. Nil fields are not updated.
type Metrics struct {
	Pending prometheus.Gauge
	Total   *prometheus.CounterVec // labels route, outcome
	Wait    prometheus.Observer    // seconds from request to decision
}

// Options configure a Service. Zero values take the defaults.
type Options struct {
	// Now is the clock; time.Now by default. Tests inject one to expire approvals
	// without waiting.
	Now func() time.Time
	// Poll is how often a held request looks at the store for a decision made
	// elsewhere (another replica); decisions made through this Service wake it at
	// once. Default 1s.
	Poll time.Duration
	// Sweep is how often expired approvals are swept and the pending gauge is set.
	// Default 10s.
	Sweep   time.Duration
	Notify  func(a *Approval) // called, once, for every new approval; must not block
	Metrics Metrics
	Log     *slog.Logger
}

// Service runs approvals on a Store: it admits requests on approval routes, holds them
// for a decision, takes approvers' decisions, and sweeps expired approvals. It is safe
// for concurrent use.
type Service struct {
	store Store
	opts  Options

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // approval id → held requests to wake
	holding map[string]int                        // binding or "subject:"+subject → requests held now
	closing chan struct{}                         // closed by Close: held requests answer at once
	once    sync.Once
}

// ErrSelfApproval is returned by Decide when the approver is the requester (see
// IsRequester).
var ErrSelfApproval = errors.New("a requester may not decide its own approval")

// New returns a Service on s. Run sweeps; call it once.
func New(s Store, o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Sweep <= 0 {
		o.Sweep = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: s, opts: o, waiters: map[string]map[chan struct{}]struct{}{}, holding: map[string]int{},
		closing: make(chan struct{})}
}

// Close ends every hold, now and later, with AdmitPending: a gateway shutting down
// answers its held requests instead of keeping them open. Their approvals stay in the
// store for the clients' retries.
func (s *Service) Close() {
	s.once.Do(func() { close(s.closing) })
}

// Admit decides what becomes of request r on an approval route. An approval for
// exactly r (Bind) that is approved is consumed and r is forwarded; one still pending
// holds r up to r.Hold for a decision; without one, a new approval is created and r
// is held. An error means the store failed or ctx ended: the request must be refused.
func (s *Service) Admit(ctx context.Context, r Request) (Admission, error) {
	if len(r.Body) > MaxBody {
		return Admission{Outcome: AdmitTooLarge}, nil
	}
	var binding string
	if r.Tool != "" {
		binding = BindCall(r.Requester, r.Route, r.Tool, BodyHash(r.Arguments))
		r.Header = nil
	} else {
		bound := BoundHeaders(r.Header)
		binding = Bind(r.Requester, r.Route, r.Method, r.Path, r.Query, HeadersHash(bound), BodyHash(r.Body))
		r.Header = bound
	}
	// A loop, because the approval found may change under us: consumed or closed by a
	// concurrent identical request, which then leaves the binding to a new approval.
	// A request is held at most once, however often it loops.
	held := false
	for range 8 {
		a, err := s.store.OpenApproval(ctx, binding)
		if errors.Is(err, ErrNotFound) {
			a, err = s.create(ctx, r, binding)
			switch {
			case errors.Is(err, ErrOpen):
				continue
			case errors.Is(err, ErrTooMany):
				s.count(r.Route, "limited")
				return Admission{Outcome: AdmitTooMany}, nil
			case err != nil:
				return Admission{}, err
			}
		} else if err != nil {
			return Admission{}, fmt.Errorf("approvals: find approval: %w", err)
		}
		adm, again, err := s.settle(ctx, a, r, binding, &held)
		if !again {
			return adm, err
		}
	}
	return Admission{}, errors.New("approvals: the approval of this request kept changing")
}

// create makes a new pending approval for r: ErrTooMany when r's requester has too
// many pending already, ErrOpen when a concurrent identical request made one.
func (s *Service) create(ctx context.Context, r Request, binding string) (*Approval, error) {
	now := s.opts.Now()
	redact := r.Redact
	if redact == nil {
		redact = func(s string) string { return s }
	}
	var shown http.Header
	if len(r.Header) > 0 {
		shown = make(http.Header, len(r.Header))
		for k, vs := range r.Header {
			for _, v := range vs {
				shown[k] = append(shown[k], redact(v))
			}
		}
	}
	body, hash := ShownBody(r.Body), BodyHash(r.Body)
	if r.Tool != "" {
		body, hash = ShownArguments(r.Arguments), BodyHash(r.Arguments)
	}
	a := &Approval{ID: ulid.Make().String(), Binding: binding, Route: r.Route, Tool: r.Tool, Method: r.Method,
		Path: redact(r.Path), Query: redact(r.Query), Headers: shown, Body: redact(body),
		BodySize: int64(len(r.Body)), BodyHash: hash,
		Requester: r.Requester, Reason: redact(CleanText(r.Reason, maxReason)), ExchangeID: r.ExchangeID,
		CreatedAt: now, ExpiresAt: now.Add(r.TTL), MinApprovals: max(1, r.MinApprovals), State: Pending}
	if err := s.store.CreateApproval(ctx, a, r.MaxPending); err != nil {
		if errors.Is(err, ErrOpen) || errors.Is(err, ErrTooMany) {
			return nil, err
		}
		return nil, fmt.Errorf("approvals: create approval: %w", err)
	}
	s.count(r.Route, "requested")
	s.opts.Log.Info("approval requested", "approval", a.ID, "route", a.Route, "subject", a.Requester.Subject, "exchange", a.ExchangeID)
	if s.opts.Notify != nil {
		s.opts.Notify(a)
	}
	return a, nil
}

// Limits on the text people write.
const (
	maxReason  = 500
	maxComment = 1000
)

// maxHoldsPerBinding bounds how many identical requests are held open at once; more
// are answered AdmitPending at once (each holds a goroutine and its body).
const maxHoldsPerBinding = 4

// settle answers r with open approval a; again means a changed under us and the caller
// should look again.
func (s *Service) settle(ctx context.Context, a *Approval, r Request, binding string, held *bool) (adm Admission, again bool, err error) {
	now := s.opts.Now()
	switch {
	case a.State == Denied && !now.Before(a.ExpiresAt):
		// The denial stood for its ttl; the same request may now ask again.
		if _, err := s.store.CloseApproval(ctx, a.ID); err != nil {
			return Admission{}, false, fmt.Errorf("approvals: close approval: %w", err)
		}
		return Admission{}, true, nil
	case a.State == Denied:
		return Admission{Outcome: AdmitDenied, Approval: a}, false, nil
	case a.State == Expired || !now.Before(a.ExpiresAt):
		// Expired before it was decided or used: tell the requester once, and free
		// the binding for a new approval.
		closed, err := s.store.CloseApproval(ctx, a.ID)
		if err != nil {
			return Admission{}, false, fmt.Errorf("approvals: close approval: %w", err)
		}
		if !closed {
			return Admission{}, true, nil
		}
		if a.State != Expired {
			s.count(a.Route, "expired")
		}
		a.State, a.Closed = Expired, true
		return Admission{Outcome: AdmitTimedOut, Approval: a}, false, nil
	case a.State == Approved:
		ok, err := s.store.ConsumeApproval(ctx, a.ID, r.ExchangeID, now)
		if err != nil {
			return Admission{}, false, fmt.Errorf("approvals: consume approval: %w", err)
		}
		if !ok {
			// Consumed by a concurrent identical request: this one needs its own.
			return Admission{}, true, nil
		}
		s.count(a.Route, "used")
		a.State, a.Closed, a.UsedBy = Used, true, r.ExchangeID
		return Admission{Outcome: AdmitForward, Approval: a}, false, nil
	case a.State == Pending:
		if *held {
			return Admission{Outcome: AdmitPending, Approval: a}, false, nil
		}
		*held = true
		return s.hold(ctx, a, r, binding)
	}
	return Admission{}, false, fmt.Errorf("approvals: approval %s in unexpected state %q", a.ID, a.State)
}

// hold waits up to r.Hold (and never past a's expiry) for a decision on pending a.
// Beyond maxHoldsPerBinding identical requests, or r.MaxPending requests of one
// requester, held at once, it answers AdmitPending without waiting.
func (s *Service) hold(ctx context.Context, a *Approval, r Request, binding string) (Admission, bool, error) {
	wait := min(r.Hold, a.ExpiresAt.Sub(s.opts.Now()))
	if wait <= 0 || !s.acquire(binding, r.Requester.Subject, r.MaxPending) {
		return Admission{Outcome: AdmitPending, Approval: a}, false, nil
	}
	defer s.release(binding, r.Requester.Subject)
	wake := s.subscribe(a.ID)
	defer s.unsubscribe(a.ID, wake)
	if r.Held != nil {
		r.Held(a)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(s.opts.Poll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return Admission{}, false, ctx.Err()
		case <-deadline.C:
			return Admission{Outcome: AdmitPending, Approval: a}, false, nil
		case <-s.closing:
			return Admission{Outcome: AdmitPending, Approval: a}, false, nil
		case <-wake:
		case <-poll.C:
		}
		cur, err := s.store.Approval(ctx, a.ID)
		if err != nil {
			return Admission{}, false, fmt.Errorf("approvals: read approval: %w", err)
		}
		if cur.State != Pending || cur.Closed {
			if cur.Closed {
				return Admission{}, true, nil
			}
			held := true
			return s.settle(ctx, cur, r, binding, &held)
		}
	}
}

// acquire counts a hold of binding by subject, unless either is at its limit.
func (s *Service) acquire(binding, subject string, perSubject int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := "subject:" + subject
	if s.holding[binding] >= maxHoldsPerBinding || perSubject > 0 && s.holding[key] >= perSubject {
		return false
	}
	s.holding[binding]++
	s.holding[key]++
	return true
}

func (s *Service) release(binding, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{binding, "subject:" + subject} {
		if s.holding[k]--; s.holding[k] <= 0 {
			delete(s.holding, k)
		}
	}
}

func (s *Service) subscribe(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiters[id] == nil {
		s.waiters[id] = map[chan struct{}]struct{}{}
	}
	s.waiters[id][ch] = struct{}{}
	return ch
}

func (s *Service) unsubscribe(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiters[id], ch)
	if len(s.waiters[id]) == 0 {
		delete(s.waiters, id)
	}
}

// wake tells the requests held on approval id to look at it again.
func (s *Service) wake(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.waiters[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wakeAll tells every held request to look at its approval again.
func (s *Service) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, chs := range s.waiters {
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// IsRequester reports whether by, deciding an approval, is the requester req:
//   - both share a subject, whichever issuer signed them;
//   - by's subject is req's client id (Okta's and RFC 9068's client-credentials token of
//     the app req's token was issued to);
//   - by is an app's own token (Identity.App: a client-credentials token, however its
//     provider marks it) of req's client id: the app approving what was asked through
//     it, for a person or with its own token. On Entra ID, Auth0 and Keycloak an app's
//     subject is not its client id (a service principal's object id, "<id>@clients", a
//     service-account user), so only the client id says it is the same app. Client ids
//     are compared across issuers, as subjects are: one app registered with two
//     tenants is still one app.
//
// Two people who logged in through one interactive app share its client id (Okta puts
// the app's cid in every person's token) but are not the same requester.
func IsRequester(by, req Identity) bool {
	return by.Subject == req.Subject ||
		req.ClientID != "" && (by.Subject == req.ClientID || by.App && by.ClientID == req.ClientID)
}

// Decide records approver by's verdict on approval id, with comment, made through via,
// and returns the approval as it then is. The requester may not decide its own approval
// (ErrSelfApproval); whether by may approve the approval's route at all is the
// caller's to check first. See Store.DecideApproval for the other errors.
func (s *Service) Decide(ctx context.Context, id string, by Identity, v Verdict, comment string, via Via) (*Approval, error) {
	a, err := s.store.Approval(ctx, id)
	if err != nil {
		return nil, err
	}
	if IsRequester(by, a.Requester) {
		return nil, ErrSelfApproval
	}
	now := s.opts.Now()
	d := Decision{Approver: Identity{Issuer: by.Issuer, Subject: by.Subject, ClientID: by.ClientID},
		Verdict: v, Comment: CleanText(comment, maxComment), At: now, Via: via}
	out, err := s.store.DecideApproval(ctx, id, d, now)
	if err != nil {
		return nil, err
	}
	if out.State != Pending {
		s.count(out.Route, string(map[State]string{Approved: "approved", Denied: "denied"}[out.State]))
		if w := s.opts.Metrics.Wait; w != nil {
			w.Observe(now.Sub(out.CreatedAt).Seconds())
		}
		s.wake(id)
	}
	s.opts.Log.Info("approval decided", "approval", id, "route", out.Route, "approver", by.Subject, "verdict", string(v), "via", string(via), "state", string(out.State))
	return out, nil
}

// Approval returns approval id.
func (s *Service) Approval(ctx context.Context, id string) (*Approval, error) {
	return s.store.Approval(ctx, id)
}

// Approvals lists approvals matching f, newest first.
func (s *Service) Approvals(ctx context.Context, f Filter) ([]*Approval, error) {
	return s.store.Approvals(ctx, f)
}

// Run sweeps expired approvals and sets the pending gauge every Options.Sweep, and,
// on a store that is a Watcher, wakes the requests held here on approvals other
// processes change, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	if w, ok := s.store.(Watcher); ok {
		go w.WatchApprovals(ctx, s.wake, s.wakeAll)
	}
	t := time.NewTicker(s.opts.Sweep)
	defer t.Stop()
	for {
		s.Sweep(ctx)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Sweep expires every approval past its ttl and sets the pending gauge, once.
func (s *Service) Sweep(ctx context.Context) {
	now := s.opts.Now()
	expired, err := s.store.ExpireApprovals(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			s.opts.Log.Error("approvals: sweep expired approvals", "error", err.Error())
		}
		return
	}
	for _, a := range expired {
		s.count(a.Route, "expired")
		s.wake(a.ID)
	}
	if g := s.opts.Metrics.Pending; g != nil {
		if n, err := s.store.PendingApprovals(ctx, "", now); err == nil {
			g.Set(float64(n))
		}
	}
}

func (s *Service) count(route, outcome string) {
	if c := s.opts.Metrics.Total; c != nil && outcome != "" {
		c.WithLabelValues(route, outcome).Inc()
	}
}

// ShownBody returns body as approvers read it: what a backend decodes, not the bytes. A
// body in UTF-16 or UTF-32 (by its BOM or its null bytes) is shown transcoded, after a
// line naming its encoding; invalid UTF-8 and control characters other than tab and line
// breaks are shown as U+FFFD, so a page cannot cut the body short at a NUL while the
// backend reads on (issue 11). The approval is still bound to the exact bytes.
func ShownBody(body []byte) string {
	text, enc := body, jsonscan.UTF8
	if u, e, err := jsonscan.ToUTF8(nil, body); err == nil {
		text, enc = u, e
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(string(text), "\uFFFD"))
	if enc != jsonscan.UTF8 {
		s = "[" + enc.String() + " body, shown as UTF-8]\n" + s
	}
	return s
}

// ShownArguments returns a tool call's arguments as approvers read them: indented JSON,
// one member a line, shown as ShownBody shows a body.
func ShownArguments(args []byte) string {
	var b bytes.Buffer
	if err := json.Indent(&b, args, "", "  "); err != nil {
		return ShownBody(args)
	}
	return ShownBody(b.Bytes())
}

// CleanText returns s as one line a person can read safely: control and format
// characters (newlines, bidi overrides) replaced by spaces, invalid UTF-8 replaced,
// trimmed, at most max bytes.
func CleanText(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}
