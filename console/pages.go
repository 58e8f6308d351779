package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/approvals"
)

// parsePages parses every page with the layout.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{"ago": ago, "utc": utc, "utcp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return utc(*t)
	}, "ms": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" }}
	pages := map[string]*template.Template{}
	for _, name := range []string{"inbox", "detail", "message", "records", "exchange", "chain"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/partials.html",
			"templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// layout is what every page gets besides its own data.
type layout struct {
	Nav     string // the nav entry to mark current
	Who     *session
	CSRF    string
	Page    any
	Problem bool
	Refresh int // seconds after which the page reloads itself, 0 for never
}

// message is the data of a page that only tells something.
type message struct {
	Title, Text string
	Login       bool // offer to log in
}

// render writes page name with data for session s (nil: logged out).
func (h *Handler) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, data any) {
	h.write(w, s, status, name, layout{Who: s, Page: data, Nav: name})
}

// renderRefresh writes page name, which reloads itself every 2 seconds while refresh.
func (h *Handler) renderRefresh(w http.ResponseWriter, r *http.Request, s *session, name string, data any, refresh bool) {
	l := layout{Who: s, Page: data, Nav: name}
	if refresh {
		l.Refresh = 2
	}
	h.write(w, s, http.StatusOK, name, l)
}

func (h *Handler) write(w http.ResponseWriter, s *session, status int, name string, l layout) {
	if s != nil {
		l.CSRF = s.CSRF
	}
	var b bytes.Buffer
	if err := h.pages[name].Execute(&b, l); err != nil {
		h.o.Log.Error("console: render", "page", name, "error", err.Error())
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// problem renders a page that says what went wrong and what to do.
func (h *Handler) problem(w http.ResponseWriter, r *http.Request, s *session, status int, title, text string) {
	h.render(w, r, s, status, "message", message{Title: title, Text: text, Login: s == nil})
}

// row is an approval as the inbox lists it.
type row struct {
	*approvals.Approval
	Age, Left string
}

func (h *Handler) inbox(w http.ResponseWriter, r *http.Request, s *session) {
	p, roles := s.principal(), h.o.Roles()
	if ok, _ := admin.ReadsApprovals(roles, p); !ok {
		h.problem(w, r, s, http.StatusForbidden, "No approvals for you to see",
			"Reading approvals needs the approvers role or to be an approver of a route; you are "+s.Subject+".")
		return
	}
	now := h.o.Now()
	pending, err := h.o.Approvals.Approvals(r.Context(), approvals.Filter{State: approvals.Pending, Limit: 200})
	var recent []*approvals.Approval
	if err == nil {
		recent, err = h.o.Approvals.Approvals(r.Context(), approvals.Filter{Limit: 50})
	}
	if err != nil {
		h.o.Log.Error("console: list approvals", "error", err.Error())
		h.problem(w, r, s, http.StatusServiceUnavailable, "The approvals could not be read", "The store is unavailable; try again.")
		return
	}
	var data struct{ Pending, Recent []row }
	for _, ap := range slices.Backward(pending) { // oldest first: the next to expire on top
		if ap.ExpiresAt.After(now) && admin.MayRead(roles, p, ap) {
			data.Pending = append(data.Pending, row{ap, ago(now.Sub(ap.CreatedAt)), ago(ap.ExpiresAt.Sub(now))})
		}
	}
	for _, ap := range recent {
		if (ap.State != approvals.Pending || !ap.ExpiresAt.After(now)) && admin.MayRead(roles, p, ap) {
			data.Recent = append(data.Recent, row{ap, ago(now.Sub(ap.CreatedAt)), ""})
		}
	}
	h.render(w, r, s, http.StatusOK, "inbox", data)
}

// detailPage is the data of an approval's page.
type detailPage struct {
	*approvals.Approval
	Age, Left string
	Headers   []header
	Body      string // pretty-printed when JSON
	CanDecide bool
	ReadOnly  string // why the viewer may not decide, when it may not
	Done      string // the verdict just given, from the redirect after deciding
	Error     string // why the decision just tried was refused
	Comment   string
}

type header struct{ Name, Value string }

func (h *Handler) detail(w http.ResponseWriter, r *http.Request, s *session) {
	ap, ok := h.approval(w, r, s)
	if !ok {
		return
	}
	d := h.detailOf(ap, s)
	switch r.URL.Query().Get("done") {
	case "approve":
		d.Done = "You approved this request."
	case "deny":
		d.Done = "You denied this request."
	}
	h.render(w, r, s, http.StatusOK, "detail", d)
}

// approval reads the approval of r's path that s may read, answering as the API does:
// one the viewer may not read is not found.
func (h *Handler) approval(w http.ResponseWriter, r *http.Request, s *session) (*approvals.Approval, bool) {
	p, roles := s.principal(), h.o.Roles()
	if ok, _ := admin.ReadsApprovals(roles, p); !ok {
		h.problem(w, r, s, http.StatusForbidden, "No approvals for you to see",
			"Reading approvals needs the approvers role or to be an approver of a route.")
		return nil, false
	}
	id := r.PathValue("id")
	ap, err := h.o.Approvals.Approval(r.Context(), id)
	switch {
	case errors.Is(err, approvals.ErrNotFound) || err == nil && !admin.MayRead(roles, p, ap):
		h.problem(w, r, s, http.StatusNotFound, "No such approval", "There is no approval "+id+" that you may read.")
		return nil, false
	case err != nil:
		h.o.Log.Error("console: read approval", "error", err.Error())
		h.problem(w, r, s, http.StatusServiceUnavailable, "The approval could not be read", "The store is unavailable; try again.")
		return nil, false
	}
	return ap, true
}

func (h *Handler) detailOf(ap *approvals.Approval, s *session) detailPage {
	now := h.o.Now()
	d := detailPage{Approval: ap, Age: ago(now.Sub(ap.CreatedAt)), Body: pretty(ap.Body)}
	if ap.State == approvals.Pending && ap.ExpiresAt.After(now) {
		d.Left = ago(ap.ExpiresAt.Sub(now))
	}
	for _, k := range slices.Sorted(maps.Keys(ap.Headers)) {
		for _, v := range ap.Headers[k] {
			d.Headers = append(d.Headers, header{k, v})
		}
	}
	p := s.principal()
	what := "route " + ap.Route
	if ap.Tool != "" {
		what = "tool " + ap.Tool + " on " + what
	}
	decided := slices.ContainsFunc(ap.Decisions, func(x approvals.Decision) bool { return x.Approver.Subject == p.Subject })
	switch {
	case !admin.MayDecide(h.o.Roles(), p, ap):
		d.ReadOnly = "You may read this approval but not decide it: only an approver of " + what + " may."
	case approvals.IsRequester(admin.By(p), ap.Requester):
		d.ReadOnly = "You asked for this request, and a requester may not decide its own request."
	case d.Left == "":
		d.ReadOnly = "This approval is no longer pending: it is " + string(ap.State) + "."
		if ap.State == approvals.Pending {
			d.ReadOnly = "This approval expired before it was decided."
		}
	case decided:
		d.ReadOnly = "You have decided this approval already; it waits for other approvers."
	default:
		d.CanDecide = true
	}
	return d
}

func (h *Handler) decide(w http.ResponseWriter, r *http.Request, s *session) {
	ap, ok := h.approval(w, r, s)
	if !ok {
		return
	}
	var v approvals.Verdict
	switch r.PostForm.Get("verdict") {
	case "approve":
		v = approvals.Approve
	case "deny":
		v = approvals.Deny
	default:
		h.problem(w, r, s, http.StatusBadRequest, "Approve or deny?", "The form named no verdict. Go back and press Approve or Deny.")
		return
	}
	p := s.principal()
	comment := r.PostForm.Get("comment")
	refuse := func(status int, msg string) {
		d := h.detailOf(ap, s)
		d.Error, d.Comment = msg, comment
		h.render(w, r, s, status, "detail", d)
	}
	if !admin.MayDecide(h.o.Roles(), p, ap) {
		refuse(http.StatusForbidden, "Refused: you are not an approver of this request's route.")
		return
	}
	_, err := h.o.Approvals.Decide(r.Context(), ap.ID, admin.By(p), v, comment, approvals.ViaConsole)
	switch {
	case errors.Is(err, approvals.ErrSelfApproval):
		refuse(http.StatusForbidden, "Refused: a requester may not decide its own request.")
	case errors.Is(err, approvals.ErrNotPending):
		refuse(http.StatusConflict, "Refused: this approval is no longer pending.")
	case errors.Is(err, approvals.ErrAlreadyDecided):
		refuse(http.StatusConflict, "Refused: you have already decided this approval.")
	case err != nil:
		h.o.Log.Error("console: decide", "approval", ap.ID, "error", err.Error())
		refuse(http.StatusServiceUnavailable, "The decision could not be recorded; try again.")
	default:
		h.o.Log.Info("console: decision", "approval", ap.ID, "approver", p.Subject, "verdict", string(v))
		http.Redirect(w, r, "/ui/approvals/"+ap.ID+"?done="+string(v), http.StatusSeeOther)
	}
}

// utc writes t as the pages show times.
func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// pretty returns body indented when it is one JSON value, else as it is.
func pretty(body string) string {
	var b bytes.Buffer
	if json.Valid([]byte(body)) && json.Indent(&b, []byte(body), "", "  ") == nil {
		return b.String()
	}
	return body
}

// ago writes d for people: "45s", "3m 5s", "2h 10m", "3d 4h".
func ago(d time.Duration) string {
	d = max(d.Round(time.Second), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}
