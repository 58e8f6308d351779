package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/report"
)

// Page sizes of a report's reads. A store's page holds its records whole, bodies
// included (the report keeps only their metadata), so it is kept small; the admin API's
// answer is decoded one exchange at a time.
const (
	reportStorePage    = 100
	reportServerPage   = 1000
	reportApprovalPage = 500
)

// cmdRecordsReport is `keyhole records report`: the evidence report of a period.
func cmdRecordsReport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("records report", stderr)
	src := recordsSource{token: getenv("KEYHOLE_TOKEN")}
	fs.StringVar(&src.server, "server", "", "admin URL of a running gateway, e.g. http://127.0.0.1:9090 (token from KEYHOLE_TOKEN: auditors and approvers roles)")
	fs.StringVar(&src.store, "store", "", "read a record store directly, e.g. sqlite://data/keyhole.db")
	since := fs.String("since", "30d", "start of the period: RFC 3339 time or a duration ago (30d, 24h); \"\" for the first record")
	until := fs.String("until", "", "end of the period (exclusive): RFC 3339 time or a duration ago; default now")
	format := fs.String("format", "html", "html or md")
	out := fs.String("o", "", "write to this file (mode 0600) instead of stdout")
	cfgPath := fs.String("config", "", "the gateway's configuration, to state its recorder.retention (only that key is read)")
	maxListed := fs.Int("max-listed", report.DefaultMaxListed, "list at most this many refusals, and replays, one by one (the most recent); all are counted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := src.check(stderr, "records report"); err != nil {
		return err
	}
	if *format != "html" && *format != "md" {
		fmt.Fprintf(stderr, "keyhole records report: --format %q: want html or md\n", *format)
		return errUsage
	}
	if *maxListed < 1 {
		fmt.Fprintln(stderr, "keyhole records report: --max-listed: want 1 or more")
		return errUsage
	}
	now := time.Now()
	o := report.Options{Generated: now, Version: version(), MaxListed: *maxListed}
	for _, t := range []struct {
		name, v string
		dst     *time.Time
	}{{"since", *since, &o.Since}, {"until", *until, &o.Until}} {
		if t.v == "" {
			continue
		}
		tm, err := reportTime(t.v, now)
		if err != nil {
			fmt.Fprintf(stderr, "keyhole records report: --%s: %v\n", t.name, err)
			return errUsage
		}
		*t.dst = tm
	}
	if o.Until.IsZero() {
		o.Until = now
	}
	if !o.Until.After(o.Since) {
		fmt.Fprintln(stderr, "keyhole records report: --until must be after --since")
		return errUsage
	}
	o.Retention = report.Retention{From: "the source does not say; give the gateway's --config"}
	if *cfgPath != "" {
		t, err := configRetention(*cfgPath)
		if err != nil {
			return err
		}
		o.Retention = report.Retention{Known: true, Keep: t.Keep, Routes: t.Routes, From: *cfgPath}
	}
	o.Source = "admin API " + redactURL(src.server)
	if src.store != "" {
		o.Source = "store " + redactURL(src.store)
	}

	b := report.New(o)
	bar := newProgress(stderr, "report")
	chain, err := readReport(ctx, &src, o.Since, o.Until, b, bar)
	bar.done()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	r := b.Report(chain)
	if *format == "md" {
		err = r.Markdown(&buf)
	} else {
		err = r.HTML(&buf)
	}
	if err != nil {
		return err
	}
	if *out != "" {
		return os.WriteFile(*out, buf.Bytes(), 0o600)
	}
	_, err = buf.WriteTo(stdout)
	return err
}

// reportTime reads an RFC 3339 time or a duration before now ("30d", "24h").
func reportTime(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := parseAgo(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, errors.New("want an RFC 3339 time or a duration such as 30d or 24h")
}

// configRetention reads recorder.retention and the routes' retention of the
// configuration at path. It reads those keys alone, so an auditor needs neither the
// credentials the file refers to nor a configuration this build would accept whole.
func configRetention(path string) (recorder.Retention, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return recorder.Retention{}, fmt.Errorf("--config: %w", err)
	}
	var c struct {
		Recorder struct {
			Retention config.Duration `yaml:"retention"`
		} `yaml:"recorder"`
		Routes []struct {
			Name      string          `yaml:"name"`
			Retention config.Duration `yaml:"retention"`
		} `yaml:"routes"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return recorder.Retention{}, fmt.Errorf("--config %s: retention: %w", path, err)
	}
	t := recorder.Retention{Keep: time.Duration(c.Recorder.Retention)}
	for _, r := range c.Routes {
		addRouteRetention(&t, r.Name, r.Retention)
	}
	return t, nil
}

// redactURL returns u with any password replaced, as a report may show it.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	return p.Redacted()
}

// readReport feeds b the exchanges and approvals of [since, until) from src and returns
// the verification of its chain.
func readReport(ctx context.Context, src *recordsSource, since, until time.Time, b *report.Builder, bar *progress) (recorder.Report, error) {
	if src.server != "" {
		return readReportServer(ctx, src, since, until, b, bar)
	}
	st, err := src.openRecords(ctx)
	if err != nil {
		return recorder.Report{}, err
	}
	defer st.Close()
	as, ok := st.(approvals.Store)
	if !ok {
		return recorder.Report{}, errors.New("--store: this store holds no approvals")
	}
	n := int64(0)
	for cursor := ""; ; {
		recs, next, err := st.List(ctx, recorder.Filter{Since: since, Until: until, Cursor: cursor, Limit: reportStorePage})
		if err != nil {
			return recorder.Report{}, fmt.Errorf("list exchanges: %w", err)
		}
		for _, rec := range recs {
			x, err := report.DecodeRecord(rec)
			if err != nil {
				return recorder.Report{}, err
			}
			b.AddExchange(x)
		}
		n += int64(len(recs))
		bar.count(n, 0)
		if next == "" {
			break
		}
		cursor = next
	}
	for before := ""; ; {
		list, err := as.Approvals(ctx, approvals.Filter{Before: before, Limit: reportApprovalPage})
		if err != nil {
			return recorder.Report{}, fmt.Errorf("list approvals: %w", err)
		}
		if !addApprovals(b, list, since) || len(list) < reportApprovalPage {
			break
		}
		before = list[len(list)-1].ID
	}
	chain, err := recorder.Verify(ctx, st, bar.count)
	if err != nil {
		return recorder.Report{}, fmt.Errorf("verify the chain: %w", err)
	}
	return chain, nil
}

// addApprovals adds a page of approvals, newest first, to b and reports whether older
// ones may still be in the period: approval ids grow with their creation time.
func addApprovals(b *report.Builder, list []*approvals.Approval, since time.Time) bool {
	for _, a := range list {
		if a.CreatedAt.Before(since) {
			return false
		}
		b.AddApproval(a)
	}
	return true
}

// readReportServer is readReport through a gateway's admin API.
func readReportServer(ctx context.Context, src *recordsSource, since, until time.Time, b *report.Builder, bar *progress) (recorder.Report, error) {
	n := int64(0)
	for cursor := ""; ; {
		q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}, "until": {until.UTC().Format(time.RFC3339Nano)},
			"limit": {fmt.Sprint(reportServerPage)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		next, err := apiList(ctx, src, "/api/v1/exchanges?"+q.Encode(), "exchanges", func(dec *json.Decoder) error {
			var x report.Exchange
			if err := dec.Decode(&x); err != nil {
				return err
			}
			b.AddExchange(x)
			n++
			return nil
		})
		if err != nil {
			return recorder.Report{}, fmt.Errorf("list exchanges: %w", err)
		}
		bar.count(n, 0)
		if next == "" {
			break
		}
		cursor = next
	}
	for cursor := ""; ; {
		q := url.Values{"state": {"all"}, "limit": {fmt.Sprint(reportApprovalPage)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page []*approvals.Approval
		next, err := apiList(ctx, src, "/api/v1/approvals?"+q.Encode(), "approvals", func(dec *json.Decoder) error {
			var a approvals.Approval
			if err := dec.Decode(&a); err != nil {
				return err
			}
			a.Body, a.Headers = "", nil
			page = append(page, &a)
			return nil
		})
		if err != nil {
			return recorder.Report{}, fmt.Errorf("list approvals (the token needs the approvers role as well as auditors): %w", err)
		}
		if !addApprovals(b, page, since) || next == "" {
			break
		}
		cursor = next
	}
	var chain recorder.Report
	if err := src.api(ctx, http.MethodGet, "/api/v1/audit/verify", nil, &chain); err != nil {
		return recorder.Report{}, fmt.Errorf("verify the chain: %w", err)
	}
	return chain, nil
}

// apiList reads one page of an admin API list, {"<key>": [...], "next_cursor": "..."},
// calling item with the decoder positioned at each element of the list, so that a page
// is never held whole. It returns the next cursor, "" for the last page.
func apiList(ctx context.Context, src *recordsSource, path, key string, item func(*json.Decoder) error) (string, error) {
	resp, err := src.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	bad := fmt.Errorf("the admin API's answer is not a %s list", key)
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", bad
	}
	next := ""
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", bad
		}
		switch t {
		case key:
			if t, err := dec.Token(); err != nil || t != json.Delim('[') {
				return "", bad
			}
			for dec.More() {
				if err := item(dec); err != nil {
					return "", fmt.Errorf("decode %s: %w", key, err)
				}
			}
			if _, err := dec.Token(); err != nil {
				return "", bad
			}
		case "next_cursor":
			if err := dec.Decode(&next); err != nil {
				return "", bad
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", bad
			}
		}
	}
	return next, nil
}
