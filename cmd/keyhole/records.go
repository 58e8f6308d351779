package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
)

// recordsSource is where `keyhole records` and `keyhole replay` read: a running gateway's
// admin API (--server, token from KEYHOLE_TOKEN) or a store file (--store).
type recordsSource struct {
	server, store string
	token         string
	filters       map[string]*string
}

// flags adds --server and --store to fs.
func (s *recordsSource) flags(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&s.server, "server", "", "admin URL of a running gateway, e.g. http://127.0.0.1:9090 (token from KEYHOLE_TOKEN)")
	fs.StringVar(&s.store, "store", "", "read a record store directly, e.g. sqlite://data/keyhole.db")
	s.token = getenv("KEYHOLE_TOKEN")
	s.filters = map[string]*string{}
}

// filterFlags adds the filters of the exchanges to read (--since, --route, ...) to fs.
func (s *recordsSource) filterFlags(fs *flag.FlagSet) {
	for _, f := range []struct{ name, help string }{
		{"since", "received at or after: RFC 3339 time or a duration ago (24h, 7d)"},
		{"until", "received before: RFC 3339 time or a duration ago"},
		{"subject", "only this subject"}, {"route", "only this route"},
		{"decision", "only this decision (allowed, forbidden, denied, no_route, unauthenticated, error, replay)"},
		{"status", "only this response status"}, {"limit", "at most this many"},
		{"tool", "only tools/call of this MCP tool (mcp routes)"},
	} {
		s.filters[f.name] = fs.String(f.name, "", f.help)
	}
}

func (s *recordsSource) check(stderr io.Writer, name string) error {
	if (s.server == "") == (s.store == "") {
		fmt.Fprintf(stderr, "keyhole %s: give exactly one of --server URL or --store DSN\n", name)
		return errUsage
	}
	return nil
}

// query returns the filters as an API query string.
func (s *recordsSource) query() url.Values {
	q := url.Values{}
	for k, v := range s.filters {
		if *v != "" {
			q.Set(k, *v)
		}
	}
	return q
}

// api calls the admin API and decodes its JSON answer into out. An API error is
// returned with its message.
func (s *recordsSource) api(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	resp, err := s.do(ctx, method, path, rd)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// do sends one admin API request and returns the response of a 2xx answer.
func (s *recordsSource) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(s.server, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if s.token == "" {
		return nil, errors.New("KEYHOLE_TOKEN is not set: put your bearer token (an auditor's or an approver's) in it")
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", s.server, err)
	}
	if resp.StatusCode/100 != 2 && !(resp.StatusCode == http.StatusConflict && strings.HasSuffix(path, "/audit/verify")) {
		defer resp.Body.Close()
		var e struct{ Error, Message string }
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("admin API: %s: %s", e.Error, e.Message)
		}
		return nil, fmt.Errorf("admin API answered %s", resp.Status)
	}
	return resp, nil
}

// adminClient talks to a gateway's admin API. Connecting and each answer's headers are
// bounded; a body is not, since an export of many records streams for as long as it takes
// (Ctrl-C, through ctx, ends it). The headers' bound is generous: verify answers once it
// has walked the whole chain.
var adminClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 10 * time.Minute,
}}

// openRecords opens the --store for reading.
func (s *recordsSource) openRecords(ctx context.Context) (recorder.Store, error) {
	return openStoreReadOnly(ctx, s.store)
}

// positional splits args into leading positional arguments and the flags after them, so
// that `records show ID --server URL` parses as users write it.
func positional(args []string, n int) (pos, rest []string) {
	for len(args) > 0 && len(pos) < n && !strings.HasPrefix(args[0], "-") && !isHelp(args[0]) {
		pos, args = append(pos, args[0]), args[1:]
	}
	return pos, args
}

// recordsUsage lists the records subcommands; each one's --help lists its flags. It is a
// format: its one verb is the command form the user ran.
const recordsUsage = `usage: keyhole records SUBCOMMAND [flags] (--server URL | --store DSN)

  list                           the newest exchanges, as a table (--json for JSON)
  show ID                        one exchange, whole
  export --format har|ocsf|jsonl [-o FILE]   every matching exchange
  tail [--after CURSOR] [--format ocsf|jsonl]   completed exchanges, backlog then live
  verify                         check the hash chain
  report [--since 30d] [--format html|md] [-o FILE]   the evidence report of a period

list, export and tail take filters: --since --until --subject --route --decision --status --tool --limit.
Run "%s records SUBCOMMAND --help" for its flags.
`

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

func cmdRecords(ctx context.Context, prog string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprintf(stderr, recordsUsage, prog)
		if len(args) > 0 {
			return flag.ErrHelp
		}
		return errUsage
	}
	sub, args := args[0], args[1:]
	if sub == "report" {
		return cmdRecordsReport(ctx, args, getenv, stdout, stderr)
	}
	want := 0
	switch sub {
	case "show":
		want = 1
	case "list", "export", "tail", "verify":
	default:
		fmt.Fprintf(stderr, "keyhole records: unknown subcommand %q\n", sub)
		fmt.Fprintf(stderr, recordsUsage, prog)
		return errUsage
	}
	fs := newFlags("records "+sub, stderr)
	if want > 0 {
		takesID(fs)
	}
	var src recordsSource
	src.flags(fs, getenv)
	var asJSON, har *bool
	var format, after, out *string
	switch sub {
	case "list":
		src.filterFlags(fs)
		asJSON = fs.Bool("json", false, "print JSON instead of a table")
	case "export":
		src.filterFlags(fs)
		format = fs.String("format", "", "har, ocsf or jsonl (required)")
		har = fs.Bool("har", false, "the same as --format har")
		out = fs.String("o", "", "write to this file instead of stdout")
	case "tail":
		src.filterFlags(fs)
		format = fs.String("format", "", "ocsf or jsonl (the default)")
		after = fs.String("after", "", "start after this cursor (the cursor of the last line you have)")
	}
	pos, rest := positional(args, want)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if len(pos) != want {
		fmt.Fprintf(stderr, "keyhole records %s: want %d argument(s)\n", sub, want)
		return errUsage
	}
	if err := src.check(stderr, "records "+sub); err != nil {
		return err
	}
	switch sub {
	case "list":
		return recordsList(ctx, &src, *asJSON, stdout)
	case "show":
		return recordsShow(ctx, &src, pos[0], stdout)
	case "tail":
		c, err := export.ParseCursor(*after)
		if err != nil {
			fmt.Fprintln(stderr, "keyhole records tail: --after:", err)
			return errUsage
		}
		f, err := export.ParseFormat(*format)
		if err != nil {
			fmt.Fprintln(stderr, "keyhole records tail: --format:", err)
			return errUsage
		}
		return recordsTail(ctx, &src, c, f, stdout)
	case "export":
		if *har {
			*format = "har"
		}
		if *format == "" {
			fmt.Fprintln(stderr, "keyhole records export: --format har|ocsf|jsonl is required (--har is --format har)")
			return errUsage
		}
		lines := ""
		if *format != "har" {
			f, err := export.ParseFormat(*format)
			if err != nil {
				fmt.Fprintln(stderr, "keyhole records export: --format:", err, "or har")
				return errUsage
			}
			lines = f
		}
		w := stdout
		if *out != "" {
			f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		if lines != "" {
			return recordsExportLines(ctx, &src, lines, w, stderr)
		}
		return recordsExport(ctx, &src, w, stderr)
	default: // verify
		return recordsVerify(ctx, &src, stdout, stderr)
	}
}

// exchanges lists one page from the source.
func (s *recordsSource) exchanges(ctx context.Context, cursor string, limit int) ([]recorder.Exchange, string, error) {
	if s.server != "" {
		q := s.query()
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		if limit > 0 {
			q.Set("limit", fmt.Sprint(limit))
		}
		var page struct {
			Exchanges  []recorder.Exchange `json:"exchanges"`
			NextCursor string              `json:"next_cursor"`
		}
		err := s.api(ctx, http.MethodGet, "/api/v1/exchanges?"+q.Encode(), nil, &page)
		return page.Exchanges, page.NextCursor, err
	}
	st, err := s.openRecords(ctx)
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	f, err := storeFilter(s.query())
	if err != nil {
		return nil, "", err
	}
	f.Cursor = cursor
	if limit > 0 {
		f.Limit = limit
	}
	recs, next, err := st.List(ctx, f)
	if err != nil {
		return nil, "", err
	}
	xs := make([]recorder.Exchange, 0, len(recs))
	for _, r := range recs {
		x, err := recorder.Decode(r)
		if err != nil {
			return nil, "", err
		}
		xs = append(xs, x)
	}
	return xs, next, nil
}

// storeFilter turns API-style filters into a recorder.Filter.
func storeFilter(q url.Values) (recorder.Filter, error) {
	f := recorder.Filter{Subject: q.Get("subject"), Route: q.Get("route"), Decision: q.Get("decision"), Tool: q.Get("tool")}
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.key); v != "" {
			if tm, err := time.Parse(time.RFC3339Nano, v); err == nil {
				*t.dst = tm
			} else if d, err := parseAgo(v); err == nil {
				*t.dst = time.Now().Add(-d)
			} else {
				return f, fmt.Errorf("--%s: want an RFC 3339 time or a duration such as 24h or 7d", t.key)
			}
		}
	}
	for _, n := range []struct {
		key string
		dst *int
	}{{"status", &f.Status}, {"limit", &f.Limit}} {
		if v := q.Get(n.key); v != "" {
			if _, err := fmt.Sscan(v, n.dst); err != nil {
				return f, fmt.Errorf("--%s: want a whole number", n.key)
			}
		}
	}
	return f, nil
}

// parseAgo reads "24h" or "7d".
func parseAgo(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		if _, err := fmt.Sscan(days, &n); err != nil || n < 0 {
			return 0, fmt.Errorf("bad duration %q", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

func recordsList(ctx context.Context, src *recordsSource, asJSON bool, stdout io.Writer) error {
	xs, next, err := src.exchanges(ctx, "", 0)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"exchanges": xs, "next_cursor": next})
	}
	// A tabwriter, not fixed widths: a decision such as approval_pending is longer than
	// most, and every column must stay aligned.
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tMETHOD\tPATH\tSTATUS\tDECISION\tROUTE\tSUBJECT")
	for _, x := range xs {
		status, subject := "-", "-"
		if x.Response != nil {
			status = fmt.Sprint(x.Response.Status)
		}
		if x.Identity != nil && x.Identity.Subject != "" {
			subject = x.Identity.Subject
		}
		route := x.Route
		if route == "" {
			route = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.ReceivedAt.UTC().Format("2006-01-02 15:04:05Z"),
			x.Request.Method, oneLine(clip(x.Request.Path, 48), 48), status, x.Decision, oneLine(clip(route, 32), 32), oneLine(subject, 64))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(stdout, "(more: newest %d shown; narrow with --since/--until or raise --limit)\n", len(xs))
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func recordsShow(ctx context.Context, src *recordsSource, id string, stdout io.Writer) error {
	var x recorder.Exchange
	if src.server != "" {
		if err := src.api(ctx, http.MethodGet, "/api/v1/exchanges/"+url.PathEscape(id), nil, &x); err != nil {
			return err
		}
	} else {
		st, err := src.openRecords(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		rec, err := st.Get(ctx, id)
		if err != nil {
			return err
		}
		if x, err = recorder.Decode(rec); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(x)
}

// recordsExport writes every matching exchange as one HAR file, showing progress on a terminal.
func recordsExport(ctx context.Context, src *recordsSource, w, stderr io.Writer) error {
	bar := newProgress(stderr, "export")
	defer bar.done()
	if src.server != "" {
		resp, err := src.do(ctx, http.MethodGet, "/api/v1/exchanges.har?"+src.query().Encode(), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(w, io.TeeReader(resp.Body, bar.bytesWriter()))
		return err
	}
	hw := recorder.NewHARWriter(w, version())
	limit := 0
	if v := *src.filters["limit"]; v != "" {
		fmt.Sscan(v, &limit)
	}
	n, cursor := 0, ""
	for {
		page := 1000
		if limit > 0 {
			page = min(page, limit-n)
		}
		xs, next, err := src.exchanges(ctx, cursor, page)
		if err != nil {
			return err
		}
		for _, x := range xs {
			if err := hw.Add(x); err != nil {
				return err
			}
			n++
		}
		bar.count(int64(n), 0)
		if next == "" || limit > 0 && n >= limit {
			break
		}
		cursor = next
	}
	return hw.Close()
}

// recordsVerify checks the hash chain and prints the report; a broken chain exits 1.
func recordsVerify(ctx context.Context, src *recordsSource, stdout, stderr io.Writer) error {
	var rep recorder.Report
	if src.server != "" {
		if err := src.api(ctx, http.MethodGet, "/api/v1/audit/verify", nil, &rep); err != nil {
			return err
		}
	} else {
		st, err := src.openRecords(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		bar := newProgress(stderr, "verify")
		rep, err = recorder.Verify(ctx, st, bar.count)
		bar.done()
		if err != nil {
			return err
		}
	}
	if rep.OK {
		fmt.Fprintf(stdout, "ok: %d entries verify (sequence %d to %d); head %s\n", rep.Entries, rep.First, rep.Last, rep.Head)
		if rep.Pruned > 0 {
			fmt.Fprintf(stdout, "%d older entries were deleted by retention; a checkpoint vouches for them\n", rep.Pruned)
		}
		if rep.Expired > 0 {
			fmt.Fprintf(stdout, "%d entries are stubs: a route's retention removed their content; expiry entries vouch for them\n", rep.Expired)
		}
		return nil
	}
	fmt.Fprintf(stdout, "BROKEN at entry %d: %s\n", rep.Break.Seq, rep.Break.Reason)
	return errReported
}

func cmdReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", stderr)
	takesID(fs)
	src := recordsSource{token: getenv("KEYHOLE_TOKEN")}
	fs.StringVar(&src.server, "server", "", "admin URL of the running gateway, e.g. http://127.0.0.1:9090 (token from KEYHOLE_TOKEN); required")
	target := fs.String("target", "", "send to this origin instead of the upstream (must be one of the upstream's replay_targets)")
	unsafe := fs.Bool("allow-unsafe", false, "replay a method that may change data (POST, PUT, PATCH, DELETE)")
	dry := fs.Bool("dry-run", false, "show the request that would be sent, send nothing")
	pos, rest := positional(args, 1)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: keyhole replay ID --server URL [--target URL] [--allow-unsafe] [--dry-run]")
		return errUsage
	}
	if src.server == "" {
		fmt.Fprintln(stderr, "keyhole replay: --server is required: only the running gateway holds the upstream credentials")
		return errUsage
	}
	var answer json.RawMessage
	err := src.api(ctx, http.MethodPost, "/api/v1/exchanges/"+url.PathEscape(pos[0])+"/replay",
		map[string]any{"target": *target, "allow_unsafe": *unsafe, "dry_run": *dry}, &answer)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	_ = json.Indent(&pretty, answer, "", "  ")
	pretty.WriteByte('\n')
	_, err = pretty.WriteTo(stdout)
	return err
}
