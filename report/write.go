package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// String says what the retention is: "90d", "keep everything", or that it is not known,
// then the routes' own.
func (r Retention) String() string {
	var s string
	switch {
	case !r.Known && r.From == "":
		return "not known"
	case !r.Known:
		return "not known: " + r.From
	case r.Keep == 0:
		s = "keep everything (recorder.retention not set)"
	default:
		s = days(r.Keep) + " (recorder.retention)"
	}
	for _, route := range slices.Sorted(maps.Keys(r.Routes)) {
		s += "; route " + route + ": " + days(r.Routes[route])
	}
	return s + ", from " + r.From
}

// days writes d as "90d" when it is whole days.
func days(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// when formats t as reports show times: UTC, to the second.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// whenPtr is when for an optional time.
func whenPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return when(*t)
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Period says which exchanges and approvals the report covers.
func (r *Report) Period() string {
	from := "the first record"
	if !r.Since.IsZero() {
		from = when(r.Since)
	}
	return from + " to " + when(r.Until) + " (received at or after the first, before the second)"
}

// ChainSummary says in one line whether the chain verifies, and its head.
func (r *Report) ChainSummary() string {
	c := r.Chain
	if !c.OK {
		if c.Break != nil {
			return fmt.Sprintf("BROKEN at entry %d: %s", c.Break.Seq, c.Break.Reason)
		}
		return "BROKEN"
	}
	if c.Entries == 0 {
		return "verified: the chain is empty"
	}
	s := fmt.Sprintf("verified: %d entries (sequence %d to %d), head %s", c.Entries, c.First, c.Last, c.Head)
	if c.Pruned > 0 {
		s += fmt.Sprintf("; %d older entries deleted by retention, vouched for by a checkpoint", c.Pruned)
	}
	if c.Expired > 0 {
		s += fmt.Sprintf("; %d entries are stubs whose content a route's retention removed, vouched for by expiry entries", c.Expired)
	}
	return s
}

// listed says how many of n rows a list shows.
func (r *Report) listed(shown, n int) string {
	if shown == n {
		return fmt.Sprintf("all %d", n)
	}
	return fmt.Sprintf("the %d most recent of %d", shown, n)
}

// RefusalsListed says how many refusals the report lists.
func (r *Report) RefusalsListed() string { return r.listed(len(r.Refusals), r.Refused) }

// ReplaysListed says how many replays the report lists.
func (r *Report) ReplaysListed() string { return r.listed(len(r.Replays), r.ReplayCount) }

// Request is the method and path of a row, with the MCP method and name on an mcp route.
func (x Row) Request() string {
	s := x.Method + " " + x.Path
	if x.MCP != "" {
		s += " (" + x.MCP + ")"
	}
	return s
}

// StatusText is the response status, "-" for none.
func (x Row) StatusText() string {
	if x.Status == 0 {
		return "-"
	}
	return strconv.Itoa(x.Status)
}

// Request is the request an approval covers.
func (a Approval) Request() string {
	if a.Tool != "" {
		return "tools/call " + a.Tool + " (" + a.Method + " " + a.Path + ")"
	}
	return a.Method + " " + a.Path
}

//go:embed report.html.tmpl
var htmlSource string

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"when": when, "whenPtr": whenPtr, "dash": orDash,
}).Parse(htmlSource))

// HTML writes r as one self-contained HTML page, readable in a browser and printable to
// PDF (each section on a new page, table headers repeated, no row cut in two). Every
// value is escaped by html/template.
func (r *Report) HTML(w io.Writer) error {
	return htmlTemplate.Execute(w, r)
}

// Markdown writes r as Markdown. Every value, in a table cell or not, is escaped so that
// it is read as text: no markup, link or table cell of its own.
func (r *Report) Markdown(w io.Writer) error {
	m := &mdWriter{}
	m.line("# Keyhole evidence report")
	m.line("")
	m.table([]string{"", ""}, [][]string{
		{"Period", r.Period()},
		{"Generated", when(r.Generated) + " by keyhole " + r.Version},
		{"Source", r.Source},
		{"Exchanges", fmt.Sprintf("%d received, %d refused or failed", r.Exchanges, r.Refused)},
		{"Approvals", strconv.Itoa(len(r.Approvals))},
		{"Replays", strconv.Itoa(r.ReplayCount)},
		{"Record chain", r.ChainSummary()},
		{"Retention", r.Retention.String()},
	})

	m.line("## 1. Exchanges per route and decision")
	m.line("")
	var rows [][]string
	for _, c := range r.Routes {
		rows = append(rows, []string{orDash(c.Route), c.Decision, strconv.Itoa(c.Count)})
	}
	m.table([]string{"Route", "Decision", "Exchanges"}, rows)
	rows = nil
	for _, c := range r.Decisions {
		rows = append(rows, []string{c.Name, strconv.Itoa(c.Count)})
	}
	rows = append(rows, []string{"all", strconv.Itoa(r.Exchanges)})
	m.table([]string{"Decision", "Exchanges"}, rows)

	m.line("## 2. Refusals")
	m.line("")
	m.text("Every exchange the gateway did not forward, or answered with an error, by decision and error code.")
	rows = nil
	for _, c := range r.Classes {
		rows = append(rows, []string{c.Decision, orDash(c.Error), strconv.Itoa(c.Count), when(c.First), when(c.Last)})
	}
	m.table([]string{"Decision", "Error code", "Exchanges", "First", "Last"}, rows)
	m.text("Refused exchanges: " + r.RefusalsListed() + ".")
	rows = nil
	for _, x := range r.Refusals {
		rows = append(rows, []string{when(x.At), x.ID, orDash(x.Route), orDash(x.Subject), x.Request(), x.StatusText(), x.Decision, orDash(x.Error), orDash(x.Reason)})
	}
	m.table([]string{"Received", "Exchange", "Route", "Subject", "Request", "Status", "Decision", "Error code", "Reason"}, rows)

	m.line("## 3. Approvals")
	m.line("")
	rows = nil
	for _, c := range r.ApprovalStates {
		rows = append(rows, []string{c.Name, strconv.Itoa(c.Count)})
	}
	rows = append(rows, []string{"all", strconv.Itoa(len(r.Approvals))})
	m.table([]string{"State", "Approvals"}, rows)
	rows = nil
	for _, a := range r.Approvals {
		rows = append(rows, []string{a.ID, a.Route, a.Request(), a.Requester, orDash(a.Reason), when(a.Created), a.State,
			strconv.Itoa(a.MinApprovals), whenPtr(a.DecidedAt), whenPtr(a.UsedAt), orDash(a.Exchange), orDash(a.UsedBy)})
	}
	m.table([]string{"Approval", "Route", "Request", "Requester", "Requester's reason", "Created", "State", "Approvals needed",
		"Decided", "Used", "Asked by exchange", "Released exchange"}, rows)
	m.text("Decisions of approvers:")
	rows = nil
	for _, a := range r.Approvals {
		for _, d := range a.Decisions {
			rows = append(rows, []string{a.ID, d.Approver, d.Verdict, orDash(d.Comment), when(d.At), orDash(d.Via)})
		}
	}
	m.table([]string{"Approval", "Approver", "Verdict", "Comment", "At", "Via"}, rows)

	m.line("## 4. Replays")
	m.line("")
	m.text("Recorded requests sent again by auditors: " + r.ReplaysListed() + ".")
	rows = nil
	for _, x := range r.Replays {
		rows = append(rows, []string{when(x.At), x.ID, x.ReplayOf, orDash(x.Subject), orDash(x.Route), x.Request(), orDash(x.Target), x.StatusText(), orDash(x.Error)})
	}
	m.table([]string{"At", "Replay", "Replay of", "By", "Route", "Request", "Target", "Status", "Error code"}, rows)

	m.line("## 5. Record chain and retention")
	m.line("")
	m.text(r.ChainSummary())
	m.text("The verification covers the whole chain held, not only the period. Keep the head hash elsewhere: a later report whose chain no longer contains it shows that records were cut off.")

	m.line("### Retention")
	m.line("")
	m.text(r.Retention.String())
	_, err := io.WriteString(w, m.b.String())
	return err
}

// mdWriter builds Markdown in which every value is escaped.
type mdWriter struct{ b strings.Builder }

// line writes markup of the writer's own, unescaped.
func (m *mdWriter) line(s string) { m.b.WriteString(s + "\n") }

// text writes a paragraph of escaped text.
func (m *mdWriter) text(s string) { m.line(mdEscape(s)); m.line("") }

// table writes a table of escaped cells; with no rows, a line saying so.
func (m *mdWriter) table(head []string, rows [][]string) {
	if len(rows) == 0 {
		m.text("None.")
		return
	}
	cells := func(cs []string) {
		m.b.WriteString("|")
		for _, c := range cs {
			m.b.WriteString(" " + mdEscape(c) + " |")
		}
		m.b.WriteString("\n")
	}
	cells(head)
	m.b.WriteString(strings.Repeat("|---", len(head)) + "|\n")
	for _, r := range rows {
		cells(r)
	}
	m.line("")
}

// mdEscaper makes a value plain Markdown text that stays within its table cell: HTML is
// written as entities, Markdown's punctuation is backslash-escaped, and a line break
// (which would end the row) becomes a space.
var mdEscaper = strings.NewReplacer(
	"&", "&amp;", "<", "&lt;", ">", "&gt;",
	`\`, `\\`, "|", `\|`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "#", `\#`, "~", `\~`, "!", `\!`,
	"\r\n", " ", "\n", " ", "\r", " ",
)

func mdEscape(s string) string { return mdEscaper.Replace(s) }
