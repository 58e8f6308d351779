package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
				r.Use(a.require(rules.RoleAuditors))
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

// require refuses callers without role.
func (a *API) require(role string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.Roles().HasRole(principal(r), role) {
				apiError(w, http.StatusForbidden, "forbidden", "this endpoint requires the "+role+" role")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func principal(r *http.Request) *identity.Principal {
	p, _ := r.Context().Value(principalKey{}).(*identity.Principal)
	return p
}

// filter reads the list filters of a request.
func filter(r *http.Request) (recorder.Filter, error) {
	q := r.URL.Query()
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
	f, err := filter(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	recs, next, err := a.Store.List(r.Context(), f)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := exchangeList{Exchanges: make([]recorder.Exchange, 0, len(recs)), NextCursor: next}
	for _, rec := range recs {
		x, err := recorder.Decode(rec)
		if err != nil {
			a.storeError(w, err)
			return
		}
		out.Exchanges = append(out.Exchanges, x)
	}
	writeJSON(w, http.StatusOK, out)
}

// exchange loads the exchange named in the URL, answering 404 when there is none.
func (a *API) exchange(w http.ResponseWriter, r *http.Request) (*recorder.Exchange, bool) {
	id := chi.URLParam(r, "id")
	rec, err := a.Store.Get(r.Context(), id)
	if errors.Is(err, recorder.ErrNotFound) {
		apiError(w, http.StatusNotFound, "not_found", "no exchange with this id")
		return nil, false
	}
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	x, err := recorder.Decode(rec)
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	return &x, true
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

// exportHAR streams every exchange matching the filters, newest first, as one HAR file.
func (a *API) exportHAR(w http.ResponseWriter, r *http.Request) {
	f, err := filter(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	limit := f.Limit
	if limit == 0 || limit > maxExport {
		limit = maxExport
	}
	// The first page is read before anything is written, so a store error is still a
	// clean JSON error rather than a cut-off file.
	f.Limit = min(limit, 1000)
	recs, next, err := a.Store.List(r.Context(), f)
	if err != nil {
		a.storeError(w, err)
		return
	}
	harHeaders(w, "exchanges")
	hw := recorder.NewHARWriter(w, a.Version)
	n := 0
	for {
		for _, rec := range recs {
			x, err := recorder.Decode(rec)
			if err == nil {
				err = hw.Add(x)
			}
			if err != nil {
				a.Log.Warn("admin: HAR export cut short", "error", err.Error())
				return
			}
			n++
		}
		if next == "" || n >= limit {
			break
		}
		f.Cursor, f.Limit = next, min(limit-n, 1000)
		if recs, next, err = a.Store.List(r.Context(), f); err != nil {
			// Headers are sent: end the document short rather than leave it broken.
			a.Log.Warn("admin: HAR export cut short", "error", err.Error())
			break
		}
	}
	if err := hw.Close(); err != nil {
		a.Log.Warn("admin: HAR export", "error", err.Error())
	}
}

func harHeaders(w http.ResponseWriter, name string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.har"`)
}

// replayRequest is the body of POST /api/v1/exchanges/{id}/replay.
type replayRequest struct {
	Target      string `json:"target"`
	DryRun      bool   `json:"dry_run"`
	AllowUnsafe bool   `json:"allow_unsafe"`
}

// replayAnswer is what a replay answers: the new exchange and how its response differs.
type replayAnswer struct {
	DryRun   bool   `json:"dry_run,omitempty"`
	Original string `json:"original"`
	// Replay is the replay's exchange; for a dry run, the request that would be sent.
	Replay *recorder.Exchange `json:"replay,omitempty"`
	Diff   *recorder.Changes  `json:"diff,omitempty"`
}

// safeMethods may be replayed without allow_unsafe: they change nothing (RFC 9110 9.2.1).
var safeMethods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodOptions: true}

func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	var req replayRequest
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
	// Whether it can be replayed at all comes first: allow_unsafe would not help.
	var re *recorder.ReplayError
	if err := recorder.Replayable(x); errors.As(err, &re) {
		apiError(w, re.Status, re.Code, re.Msg)
		return
	}
	if !safeMethods[x.Request.Method] && !req.AllowUnsafe {
		apiError(w, http.StatusBadRequest, "unsafe_method", x.Request.Method+" may change data upstream; set allow_unsafe to replay it")
		return
	}
	nx, err := a.Replayer.Replay(r.Context(), x, req.Target, principal(r), req.DryRun)
	if err != nil {
		var re *recorder.ReplayError
		if errors.As(err, &re) {
			apiError(w, re.Status, re.Code, re.Msg)
			return
		}
		a.Log.Error("admin: replay", "exchange", x.ID, "error", err.Error())
		apiError(w, http.StatusBadGateway, "replay_failed", "the replay could not be completed")
		return
	}
	if req.DryRun {
		writeJSON(w, http.StatusOK, replayAnswer{DryRun: true, Original: x.ID, Replay: nx})
		return
	}
	d := recorder.Diff(x.Response, nx.Response)
	writeJSON(w, http.StatusOK, replayAnswer{Original: x.ID, Replay: nx, Diff: &d})
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
