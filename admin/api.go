package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/oklog/ulid/v2"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
)

// Verifier verifies an admin-plane bearer token (the same issuers as the data plane).
type Verifier interface {
	Verify(ctx context.Context, raw string) (*identity.Principal, error)
}

// Roles tells who holds which admin role, and who approves which route (rules.Table
// implements it).
type Roles interface {
	// AdminClient reports whether p's token was issued to a client the admin plane accepts.
	AdminClient(p *identity.Principal) bool
	HasRole(p *identity.Principal, role string) bool
	Approves(p *identity.Principal, route string) bool
	// ApprovesTool reports whether p may decide approvals of calls to tool on mcp route route.
	ApprovesTool(p *identity.Principal, route, tool string) bool
}

// Replayer sends a recorded request again, with a fresh credential, to its upstream or
// to target, records the replay as an exchange of its own made by the auditor by, and
// returns that exchange as recorded (redacted, masked as the route masks).
type Replayer interface {
	Replay(ctx context.Context, x *recorder.Exchange, target string, by *identity.Principal, dryRun bool) (*recorder.Exchange, error)
}

// API configures the /api/v1 endpoints. Every field is required but Approvals: without
// it the approvals endpoints are not served.
type API struct {
	// Verifier and Roles return the current ones: they change on reload.
	Verifier  func() Verifier
	Roles     func() Roles
	Store     recorder.Store
	Replayer  Replayer
	Approvals ApprovalService
	Version   string
	Log       *slog.Logger
	// StreamPoll is how often a live export looks for new records; 0 is export.DefaultPoll.
	StreamPoll time.Duration

	streamsMu sync.Mutex
	done      chan struct{} // closed by CloseStreams
}

type principalKey struct{}

// requestID gives every API response an X-Request-Id, also used in its errors.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", ulid.Make().String())
		next.ServeHTTP(w, r)
	})
}

// mountAPI adds the auditor endpoints to r.
func (a *API) mount(r chi.Router) {
	r.Route("/api/v1", func(r chi.Router) {
		r.Use(requestID, a.authenticate)
		if a.Approvals != nil {
			// Its requester may read an approval with any client's token (an agent's).
			r.Get("/approvals/{id}", a.showApproval)
		}
		r.Group(func(r chi.Router) {
			r.Use(a.adminClients)
			r.Group(func(r chi.Router) {
				r.Use(a.auditors)
				r.Get("/exchanges", a.list)
				r.Get("/exchanges.har", a.exportHAR)
				r.Get("/exchanges.ndjson", a.exportLines)
				r.Get("/exchanges/stream", a.stream)
				r.Get("/exchanges/{id}", a.show)
				r.Get("/exchanges/{id}/har", a.showHAR)
				r.Post("/exchanges/{id}/replay", a.replay)
				r.Get("/audit/verify", a.verify)
			})
			if a.Approvals != nil {
				a.mountApprovals(r)
			}
		})
	})
}

// authenticate verifies the bearer token of an API request.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p *identity.Principal
		var err error
		// BearerToken returns a *identity.Error: keep a nil one out of the error interface.
		if raw, berr := identity.BearerToken(r.Header); berr != nil {
			err = berr
		} else {
			p, err = a.Verifier().Verify(r.Context(), raw)
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyhole-admin", error="invalid_token"`)
			apiError(w, http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// adminClients refuses tokens of clients admin.clients does not list.
func (a *API) adminClients(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.Roles().AdminClient(principal(r)) {
			apiError(w, http.StatusForbidden, "forbidden", "the admin plane does not accept tokens of this client (admin.clients)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// auditors refuses callers who may not read records (ReadsRecords).
func (a *API) auditors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ReadsRecords(a.Roles(), principal(r)) {
			apiError(w, http.StatusForbidden, "forbidden", "this endpoint requires the "+rules.RoleAuditors+" role")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ReadsRecords reports whether p may read the records: list, show, export, stream,
// verify and replay exchanges (the auditors role, admin.roles.admins or admin.allow).
// The API and the console both ask it.
func ReadsRecords(roles Roles, p *identity.Principal) bool {
	return roles.HasRole(p, rules.RoleAuditors)
}

func principal(r *http.Request) *identity.Principal {
	p, _ := r.Context().Value(principalKey{}).(*identity.Principal)
	return p
}

// ParseFilter reads the list filters of a query: since and until (RFC 3339 or a
// duration ago: 24h, 7d), subject, route, decision, status, tool, limit and cursor (a
// next_cursor this API or the console returned). Its errors name the parameter and say
// what it wants; they are safe to show.
func ParseFilter(q url.Values) (recorder.Filter, error) {
	f := recorder.Filter{Subject: q.Get("subject"), Route: q.Get("route"), Decision: q.Get("decision"), Cursor: q.Get("cursor"),
		Tool: q.Get("tool")}
	var err error
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.key); v != "" {
			if *t.dst, err = parseTime(v); err != nil {
				return f, fmt.Errorf("%s: want RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (24h)", t.key)
			}
		}
	}
	for _, n := range []struct {
		key string
		dst *int
	}{{"status", &f.Status}, {"limit", &f.Limit}} {
		if v := q.Get(n.key); v != "" {
			if *n.dst, err = strconv.Atoi(v); err != nil || *n.dst < 0 {
				return f, fmt.Errorf("%s: want a whole number", n.key)
			}
		}
	}
	if f.Cursor != "" {
		if _, err := ulid.ParseStrict(f.Cursor); err != nil {
			return f, errors.New("cursor: not a cursor this API returned")
		}
	}
	return f, nil
}

// parseTime reads an RFC 3339 time or a duration before now ("24h", "7d").
func parseTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := parseAgo(v); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, errors.New("bad time")
}

func parseAgo(v string) (time.Duration, error) {
	if n, ok := cutDays(v); ok {
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

func cutDays(v string) (int, bool) {
	if len(v) < 2 || v[len(v)-1] != 'd' {
		return 0, false
	}
	n, err := strconv.Atoi(v[:len(v)-1])
	return n, err == nil && n >= 0
}

// exchangeList is the answer of GET /api/v1/exchanges.
type exchangeList struct {
	Exchanges  []recorder.Exchange `json:"exchanges"`
	NextCursor string              `json:"next_cursor,omitempty"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	xs, next, err := ListExchanges(r.Context(), a.Store, f)
	if err != nil {
		a.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, exchangeList{Exchanges: xs, NextCursor: next})
}

// ListExchanges returns the exchanges of s that f selects, newest first, and the cursor
// of the next page ("" when there is none). Its errors are the store's.
func ListExchanges(ctx context.Context, s recorder.Store, f recorder.Filter) ([]recorder.Exchange, string, error) {
	recs, next, err := s.List(ctx, f)
	if err != nil {
		return nil, "", err
	}
	out := make([]recorder.Exchange, 0, len(recs))
	for _, rec := range recs {
		x, err := recorder.Decode(rec)
		if err != nil {
			return nil, "", err
		}
		out = append(out, x)
	}
	return out, next, nil
}

// exchange loads the exchange named in the URL, answering 404 when there is none.
func (a *API) exchange(w http.ResponseWriter, r *http.Request) (*recorder.Exchange, bool) {
	x, err := Exchange(r.Context(), a.Store, chi.URLParam(r, "id"))
	if errors.Is(err, recorder.ErrNotFound) {
		apiError(w, http.StatusNotFound, "not_found", "no exchange with this id")
		return nil, false
	}
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	return x, true
}

// Exchange returns the exchange id of s, or an error wrapping recorder.ErrNotFound when
// s holds none.
func Exchange(ctx context.Context, s recorder.Store, id string) (*recorder.Exchange, error) {
	rec, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	x, err := recorder.Decode(rec)
	if err != nil {
		return nil, err
	}
	return &x, nil
}

func (a *API) show(w http.ResponseWriter, r *http.Request) {
	if x, ok := a.exchange(w, r); ok {
		writeJSON(w, http.StatusOK, x)
	}
}

func (a *API) showHAR(w http.ResponseWriter, r *http.Request) {
	x, ok := a.exchange(w, r)
	if !ok {
		return
	}
	harHeaders(w, x.ID)
	if err := recorder.WriteHAR(w, []recorder.Exchange{*x}, a.Version); err != nil {
		a.Log.Warn("admin: write HAR", "error", err.Error())
	}
}

// maxExport bounds one HAR export: page through with since/until for more.
const maxExport = 100_000

// exportHAR sends every exchange matching the filters, oldest first, as one HAR file.
func (a *API) exportHAR(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := ExportHAR(r.Context(), w, a.Store, f, a.Version, a.Log); errors.Is(err, recorder.ErrHARTooLarge) {
		apiError(w, http.StatusBadRequest, "export_too_large", err.Error())
	} else if err != nil {
		a.storeError(w, err)
	}
}

// ExportHAR writes every exchange of s that f selects (at most f.Limit, or 100000) to w
// as one HAR file, oldest first, an attachment named exchanges.har, generator version
// version. Every page is read before the first byte is written (recorder.HARWriter
// keeps the entries until Close), so a store that cannot be read, a record that cannot
// be decoded, or an export past recorder.HARSpoolLimit (recorder.ErrHARTooLarge) is an
// error returned with nothing written, never a file cut short. A failure to write the file (a client gone away) is logged to log.
func ExportHAR(ctx context.Context, w http.ResponseWriter, s recorder.Store, f recorder.Filter, version string, log *slog.Logger) error {
	limit := f.Limit
	if limit == 0 || limit > maxExport {
		limit = maxExport
	}
	hw := recorder.NewHARWriter(w, version)
	defer hw.Discard()
	for n := 0; n < limit; {
		f.Limit = min(limit-n, 1000)
		recs, next, err := s.List(ctx, f)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			x, err := recorder.Decode(rec)
			if err == nil {
				err = hw.Add(x)
			}
			if err != nil {
				return fmt.Errorf("HAR export: %w", err)
			}
			n++
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	harHeaders(w, "exchanges")
	if err := hw.Close(); err != nil {
		log.Warn("admin: HAR export", "error", err.Error())
	}
	return nil
}

func harHeaders(w http.ResponseWriter, name string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.har"`)
}

// ReplayRequest is what an auditor asks of a replay: the body of POST
// /api/v1/exchanges/{id}/replay, and the console's replay form.
type ReplayRequest struct {
	// Target is the origin to send to instead of the upstream's ("" for the upstream).
	Target string `json:"target"`
	// DryRun asks for the request that would be sent, sending nothing.
	DryRun bool `json:"dry_run"`
	// AllowUnsafe confirms the replay of a method that may change data (SafeMethod).
	AllowUnsafe bool `json:"allow_unsafe"`
}

// ReplayAnswer is what a replay answers: the new exchange and how its response differs.
type ReplayAnswer struct {
	DryRun   bool   `json:"dry_run,omitempty"`
	Original string `json:"original"`
	// Replay is the replay's exchange; for a dry run, the request that would be sent.
	Replay *recorder.Exchange `json:"replay,omitempty"`
	// Diff is how the replay's response differs from the recorded one; nil for a dry run.
	Diff *recorder.Changes `json:"diff,omitempty"`
}

// SafeMethod reports whether method may be replayed without AllowUnsafe: GET, HEAD and
// OPTIONS change nothing (RFC 9110 9.2.1).
func SafeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		apiError(w, http.StatusBadRequest, "bad_request", "body must be a JSON object with target, dry_run, allow_unsafe")
		return
	}
	x, ok := a.exchange(w, r)
	if !ok {
		return
	}
	ans, err := Replay(r.Context(), a.Replayer, x, req, principal(r))
	var re *recorder.ReplayError
	switch {
	case errors.As(err, &re):
		apiError(w, re.Status, re.Code, re.Msg)
	case err != nil:
		a.Log.Error("admin: replay", "exchange", x.ID, "error", err.Error())
		apiError(w, http.StatusBadGateway, "replay_failed", "the replay could not be completed")
	default:
		writeJSON(w, http.StatusOK, ans)
	}
}

// Replay replays x with rp as auditor by asks in req, and returns the replay and, unless
// it was a dry run, how its response differs from the recorded one. A replay refused for
// a reason the auditor can act on is a *recorder.ReplayError: x cannot be replayed at
// all (recorder.Replayable, checked first: AllowUnsafe would not help), its method is not
// SafeMethod and req does not AllowUnsafe (400 unsafe_method), or rp refuses it. Any
// other error means the replay could not be completed.
func Replay(ctx context.Context, rp Replayer, x *recorder.Exchange, req ReplayRequest, by *identity.Principal) (*ReplayAnswer, error) {
	if err := recorder.Replayable(x); err != nil {
		return nil, err
	}
	if !SafeMethod(x.Request.Method) && !req.AllowUnsafe {
		return nil, &recorder.ReplayError{Status: http.StatusBadRequest, Code: "unsafe_method",
			Msg: x.Request.Method + " may change data upstream; set allow_unsafe to replay it"}
	}
	nx, err := rp.Replay(ctx, x, req.Target, by, req.DryRun)
	if err != nil {
		return nil, err
	}
	if req.DryRun {
		return &ReplayAnswer{DryRun: true, Original: x.ID, Replay: nx}, nil
	}
	d := recorder.Diff(x.Response, nx.Response)
	return &ReplayAnswer{Original: x.ID, Replay: nx, Diff: &d}, nil
}

func (a *API) verify(w http.ResponseWriter, r *http.Request) {
	rep, err := recorder.Verify(r.Context(), a.Store, nil)
	if err != nil {
		a.storeError(w, err)
		return
	}
	status := http.StatusOK
	if !rep.OK {
		status = http.StatusConflict
	}
	writeJSON(w, status, rep)
}

func (a *API) storeError(w http.ResponseWriter, err error) {
	a.Log.Error("admin: record store", "error", err.Error())
	apiError(w, http.StatusServiceUnavailable, "store_unavailable", "the record store could not be read")
}

// apiError writes the spec's JSON error shape.
func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": code, "message": msg, "request_id": w.Header().Get("X-Request-Id")})
}
