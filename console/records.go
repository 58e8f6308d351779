package console

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/recorder"
)

// Bounds of the records list.
const (
	pageSize    = 50
	maxPageSize = 500
)

// filterKeys are the query parameters of the records list that select exchanges: the
// admin API's, which admin.ParseFilter reads.
var filterKeys = []string{"since", "until", "subject", "route", "decision", "status", "tool"}

// decisions are the decision labels a record carries, offered by the list's filter.
var decisions = []string{"allowed", "approved", "approval_pending", "denied", "forbidden", "no_route",
	"unauthenticated", "error", "replay"}

// recordsPage is the data of the records list.
type recordsPage struct {
	Filter    map[string]string // the filters as given, to fill the form and the links
	Limit     string
	Decisions []string
	Rows      []recordRow
	Error     string     // why the filters were refused
	Next      string     // the next page's URL, "" on the last
	First     string     // the first page's URL when this is a later one
	HAR       string     // the HAR download of the filtered set
	Chain     chainState // the last verification of the chain
}

// recordRow is an exchange as the list shows it.
type recordRow struct {
	recorder.Exchange
	Tool   string
	Status int
}

// readsRecords reports whether s may read records, answering with the forbidden page
// when it may not: the same rule as the admin API's (admin.ReadsRecords).
func (h *Handler) readsRecords(w http.ResponseWriter, r *http.Request, s *session) bool {
	if admin.ReadsRecords(h.o.Roles(), s.principal()) {
		return true
	}
	h.problem(w, r, s, http.StatusForbidden, "Records are for auditors",
		"Reading records needs the auditors role (admin.roles.auditors, admin.roles.admins or admin.allow), as the admin API does; you are "+
			s.Subject+" and hold none of them.")
	return false
}

// listFilter reads the filters of q, with the console's page size.
func listFilter(q url.Values) (recorder.Filter, error) {
	f, err := admin.ParseFilter(q)
	if err != nil {
		return f, err
	}
	if f.Limit == 0 {
		f.Limit = pageSize
	}
	f.Limit = min(f.Limit, maxPageSize)
	return f, nil
}

// query returns the list's URL for the filters of q, with extra parameters set.
func query(path string, q url.Values, keys []string, extra ...string) string {
	v := url.Values{}
	for _, k := range keys {
		if s := q.Get(k); s != "" {
			v.Set(k, s)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

func (h *Handler) records(w http.ResponseWriter, r *http.Request, s *session) {
	if !h.readsRecords(w, r, s) {
		return
	}
	q := r.URL.Query()
	d := recordsPage{Filter: map[string]string{}, Limit: q.Get("limit"), Decisions: decisions, Chain: h.verify.state(),
		HAR: query("/ui/records.har", q, filterKeys)}
	for _, k := range filterKeys {
		d.Filter[k] = q.Get(k)
	}
	f, err := listFilter(q)
	if err != nil {
		d.Error = "The filters were not understood: " + err.Error() + "."
		h.render(w, r, s, http.StatusBadRequest, "records", d)
		return
	}
	xs, next, err := admin.ListExchanges(r.Context(), h.o.Store, f)
	if err != nil {
		h.o.Log.Error("console: list records", "error", err.Error())
		h.problem(w, r, s, http.StatusServiceUnavailable, "The records could not be read", "The record store is unavailable; try again.")
		return
	}
	for _, x := range xs {
		row := recordRow{Exchange: x, Tool: x.MCP.Tool()}
		if x.Response != nil {
			row.Status = x.Response.Status
		}
		d.Rows = append(d.Rows, row)
	}
	keys := append(slices.Clone(filterKeys), "limit")
	if next != "" {
		d.Next = query("/ui/records", q, keys, "cursor", next)
	}
	if q.Get("cursor") != "" {
		d.First = query("/ui/records", q, keys)
	}
	h.render(w, r, s, http.StatusOK, "records", d)
}

// exportHAR downloads every exchange the filters select as one HAR file.
func (h *Handler) exportHAR(w http.ResponseWriter, r *http.Request, s *session) {
	if !h.readsRecords(w, r, s) {
		return
	}
	f, err := admin.ParseFilter(r.URL.Query())
	if err != nil {
		h.problem(w, r, s, http.StatusBadRequest, "The filters were not understood", err.Error()+".")
		return
	}
	h.o.Log.Info("console: HAR export", "subject", s.Subject)
	if err := admin.ExportHAR(r.Context(), w, h.o.Store, f, h.o.Version, h.o.Log); errors.Is(err, recorder.ErrHARTooLarge) {
		h.problem(w, r, s, http.StatusBadRequest, "This export is too large", "Select fewer exchanges, for example a shorter time range, and download again.")
	} else if err != nil {
		h.o.Log.Error("console: HAR export", "error", err.Error())
		h.problem(w, r, s, http.StatusServiceUnavailable, "The records could not be read", "The record store is unavailable; try again.")
	}
}

// exchangePage is the data of an exchange's page.
type exchangePage struct {
	X          *recorder.Exchange
	Tool       string
	Request    partView
	Response   *partView
	Replayable string // why the exchange cannot be replayed, "" when it can
	Unsafe     bool   // its method may change data: a live replay needs a confirmation
	Target     string
	Replay     *replayView
	Error      string // why the replay just asked for was refused
}

// partView is a request or response as the exchange page shows it.
type partView struct {
	Headers []header
	Body    bodyView
}

// bodyView is a recorded body as the page shows it.
type bodyView struct {
	Text      string // pretty-printed when JSON
	Base64    bool
	Size      int64
	Kept      int // bytes recorded
	Truncated bool
	Coding    string
	Metadata  bool // the route records no bodies
}

// replayView is the result of a replay as the page shows it.
type replayView struct {
	DryRun  bool
	X       *recorder.Exchange
	Request partView
	Resp    *partView
	Diff    *recorder.Changes
}

func viewBody(b recorder.Body, metadata bool) bodyView {
	v := bodyView{Size: b.Size, Truncated: b.Truncated, Coding: b.Coding, Base64: b.Encoding == "base64", Metadata: metadata,
		Kept: len(b.Bytes())}
	v.Text = b.Text
	if !v.Base64 && !b.Truncated {
		v.Text = pretty(b.Text)
	}
	return v
}

func viewHeaders(hd http.Header) []header {
	var out []header
	for _, k := range slices.Sorted(maps.Keys(hd)) {
		for _, v := range hd[k] {
			out = append(out, header{k, v})
		}
	}
	return out
}

func viewRequest(x *recorder.Exchange) partView {
	return partView{Headers: viewHeaders(x.Request.Header), Body: viewBody(x.Request.Body, x.Record == recorder.RecordMetadata)}
}

func viewResponse(x *recorder.Exchange) *partView {
	if x.Response == nil {
		return nil
	}
	return &partView{Headers: viewHeaders(x.Response.Header), Body: viewBody(x.Response.Body, x.Record == recorder.RecordMetadata)}
}

// record reads the exchange of r's path, answering with a page when it cannot.
func (h *Handler) record(w http.ResponseWriter, r *http.Request, s *session) (*recorder.Exchange, bool) {
	if !h.readsRecords(w, r, s) {
		return nil, false
	}
	id := r.PathValue("id")
	x, err := admin.Exchange(r.Context(), h.o.Store, id)
	switch {
	case errors.Is(err, recorder.ErrNotFound):
		h.problem(w, r, s, http.StatusNotFound, "No such exchange", "There is no exchange "+id+" in the records (retention may have removed it).")
		return nil, false
	case err != nil:
		h.o.Log.Error("console: read record", "error", err.Error())
		h.problem(w, r, s, http.StatusServiceUnavailable, "The exchange could not be read", "The record store is unavailable; try again.")
		return nil, false
	}
	return x, true
}

func (h *Handler) exchangeOf(x *recorder.Exchange) exchangePage {
	d := exchangePage{X: x, Tool: x.MCP.Tool(), Request: viewRequest(x), Response: viewResponse(x), Unsafe: !admin.SafeMethod(x.Request.Method)}
	var re *recorder.ReplayError
	if err := recorder.Replayable(x); errors.As(err, &re) {
		d.Replayable = re.Msg
	}
	return d
}

func (h *Handler) showExchange(w http.ResponseWriter, r *http.Request, s *session) {
	if x, ok := h.record(w, r, s); ok {
		h.render(w, r, s, http.StatusOK, "exchange", h.exchangeOf(x))
	}
}

// replay replays the exchange as the form asks: a dry run unless mode is "live", and a
// live replay of an unsafe method only with the confirm box ticked.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request, s *session) {
	x, ok := h.record(w, r, s)
	if !ok {
		return
	}
	d := h.exchangeOf(x)
	live := r.PostForm.Get("mode") == "live"
	d.Target = r.PostForm.Get("target")
	if live && d.Unsafe && r.PostForm.Get("confirm") != "yes" {
		d.Error = "Not replayed: " + x.Request.Method + " may change data upstream. Tick the box to confirm the live replay, or run a dry run."
		h.render(w, r, s, http.StatusBadRequest, "exchange", d)
		return
	}
	// A dry run sends nothing, so it needs no confirmation whatever the method.
	req := admin.ReplayRequest{Target: d.Target, DryRun: !live, AllowUnsafe: !live || r.PostForm.Get("confirm") == "yes"}
	p := s.principal()
	ans, err := admin.Replay(r.Context(), h.o.Replayer, x, req, p)
	var re *recorder.ReplayError
	switch {
	case errors.As(err, &re):
		d.Error = "Not replayed (" + re.Code + "): " + re.Msg
		h.render(w, r, s, re.Status, "exchange", d)
		return
	case err != nil:
		h.o.Log.Error("console: replay", "exchange", x.ID, "error", err.Error())
		d.Error = "The replay could not be completed; the log says why."
		h.render(w, r, s, http.StatusBadGateway, "exchange", d)
		return
	}
	h.o.Log.Info("console: replay", "exchange", x.ID, "replay", ans.Replay.ID, "auditor", p.Subject, "dry_run", ans.DryRun)
	d.Replay = &replayView{DryRun: ans.DryRun, X: ans.Replay, Request: viewRequest(ans.Replay), Resp: viewResponse(ans.Replay), Diff: ans.Diff}
	h.render(w, r, s, http.StatusOK, "exchange", d)
}

// chainPage is the data of the chain's page.
type chainPage struct {
	Chain chainState
	Head  string // the hash of the newest entry now, unverified; "" when unknown
}

func (h *Handler) chain(w http.ResponseWriter, r *http.Request, s *session) {
	if !h.readsRecords(w, r, s) {
		return
	}
	d := chainPage{Chain: h.verify.state(), Head: currentHead(r.Context(), h.o.Store)}
	h.renderRefresh(w, r, s, "chain", d, d.Chain.Running)
}

// startVerify starts verifying the chain in the background, unless it is running.
func (h *Handler) startVerify(w http.ResponseWriter, r *http.Request, s *session) {
	if !h.readsRecords(w, r, s) {
		return
	}
	if h.verify.start(h.o.Context, h.o.Store, s.Subject, h.o.Now, h.o.Log) {
		h.o.Log.Info("console: verify chain", "auditor", s.Subject)
	}
	http.Redirect(w, r, "/ui/chain", http.StatusSeeOther)
}

// currentHead returns the hash of the newest entry of st, "" when it cannot tell. It
// is found in steps that double and then halve, each one indexed read of the entry at
// or after a sequence number: O(log n) small reads, where counting the entries would
// scan them all on every load of a page that reloads itself.
func currentHead(ctx context.Context, st recorder.Store) string {
	es, err := st.Entries(ctx, 0, 1)
	if err != nil || len(es) == 0 {
		return ""
	}
	last := es[0]
	// at returns the first entry whose sequence number is last's plus step or more.
	at := func(step int64) (*recorder.Entry, error) {
		es, err := st.Entries(ctx, last.Seq+step-1, 1)
		if err != nil || len(es) == 0 {
			return nil, err
		}
		return &es[0], nil
	}
	step := int64(1)
	for ; ; step *= 2 {
		e, err := at(step)
		if err != nil {
			return ""
		}
		if e == nil {
			break
		}
		last = *e
	}
	// Now no entry is step or more after last.
	for step /= 2; step >= 1; step /= 2 {
		e, err := at(step)
		if err != nil {
			return ""
		}
		if e != nil {
			last = *e
		}
	}
	return last.Hash
}

// chainState is what a replica knows of the chain's verification: the one running, and
// the last result.
type chainState struct {
	Running     bool
	Done, Total int64
	StartedBy   string
	Started     time.Time
	Last        *verifyResult
}

// verifyResult is a finished verification.
type verifyResult struct {
	Report   recorder.Report
	Err      string // why it could not finish
	By       string
	Finished time.Time
	Took     string
}

// verifier runs one verification of the chain at a time, in the background, and keeps
// the last result in memory (per replica). It is safe for concurrent use.
type verifier struct {
	mu sync.Mutex
	st chainState
}

func (v *verifier) state() chainState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st
}

// start begins verifying st under ctx (the process's, not a request's: it outlives the
// request that asked) and reports whether it did; it does not while one runs.
func (v *verifier) start(ctx context.Context, st recorder.Store, by string, now func() time.Time, log *slog.Logger) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.st.Running {
		return false
	}
	v.st.Running, v.st.Done, v.st.Total, v.st.StartedBy, v.st.Started = true, 0, 0, by, now()
	go func() {
		rep, err := recorder.Verify(ctx, st, func(done, total int64) {
			v.mu.Lock()
			v.st.Done, v.st.Total = done, total
			v.mu.Unlock()
		})
		res := &verifyResult{Report: rep, By: by, Finished: now()}
		if err != nil {
			log.Error("console: verify chain", "error", err.Error())
			res.Err = "the record store could not be read to the end"
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		res.Took = strconv.FormatFloat(res.Finished.Sub(v.st.Started).Seconds(), 'f', 1, 64) + "s"
		v.st.Running, v.st.Last = false, res
	}()
	return true
}
