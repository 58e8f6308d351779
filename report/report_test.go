package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/recorder"
)

var base = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// exchange returns an exchange received i minutes after base.
func exchange(i int, route, decision, code string, status int) Exchange {
	var x Exchange
	x.ID, x.ReceivedAt, x.Route, x.Decision, x.Error = fmt.Sprintf("X%03d", i), base.Add(time.Duration(i)*time.Minute), route, decision, code
	x.Request.Method, x.Request.Path = "GET", fmt.Sprintf("/customers/%d", i)
	x.Response = &struct {
		Status int `json:"status"`
	}{status}
	return x
}

func TestBuilderCounts(t *testing.T) {
	b := New(Options{Since: base, Until: base.Add(time.Hour), Generated: base.Add(2 * time.Hour), MaxListed: 2})
	for _, x := range []Exchange{
		exchange(-1, "read", "allowed", "", 200), // before the period
		exchange(0, "read", "allowed", "", 200),
		exchange(1, "read", "allowed", "", 200),
		exchange(2, "read", "forbidden", "forbidden", 403),
		exchange(3, "", "denied", "denied", 403),
		exchange(4, "read", "forbidden", "forbidden", 403),
		exchange(5, "delete", "approval_denied", "approval_denied", 403),
		exchange(6, "delete", "approved", "", 204),
		exchange(7, "read", "error", "upstream_timeout", 504),
		exchange(60, "read", "allowed", "", 200), // at Until: after the period
	} {
		b.AddExchange(x)
	}
	rp := exchange(8, "read", "replay", "", 200)
	rp.ReplayOf = "X000"
	b.AddExchange(rp)
	r := b.Report(recorder.Report{OK: true})

	if r.Exchanges != 9 || r.Refused != 5 || r.ReplayCount != 1 {
		t.Errorf("exchanges, refused, replays = %d, %d, %d, want 9, 5, 1", r.Exchanges, r.Refused, r.ReplayCount)
	}
	wantRoutes := []RouteCount{{"", "denied", 1}, {"delete", "approval_denied", 1}, {"delete", "approved", 1},
		{"read", "allowed", 2}, {"read", "error", 1}, {"read", "forbidden", 2}, {"read", "replay", 1}}
	if fmt.Sprint(r.Routes) != fmt.Sprint(wantRoutes) {
		t.Errorf("routes = %v, want %v", r.Routes, wantRoutes)
	}
	wantClasses := []string{"forbidden/forbidden 2 12:02-12:04", "approval_denied/approval_denied 1 12:05-12:05",
		"denied/denied 1 12:03-12:03", "error/upstream_timeout 1 12:07-12:07"}
	var got []string
	for _, c := range r.Classes {
		got = append(got, fmt.Sprintf("%s/%s %d %s-%s", c.Decision, c.Error, c.Count, c.First.Format("15:04"), c.Last.Format("15:04")))
	}
	if fmt.Sprint(got) != fmt.Sprint(wantClasses) {
		t.Errorf("refusal classes = %v, want %v", got, wantClasses)
	}
	if len(r.Refusals) != 2 || r.Refusals[0].ID != "X005" || r.Refusals[1].ID != "X007" {
		t.Errorf("refusals listed = %v, want the 2 most recent (X005, X007), oldest first", r.Refusals)
	}
	if s := r.RefusalsListed(); s != "the 2 most recent of 5" {
		t.Errorf("RefusalsListed = %q", s)
	}
	if len(r.Replays) != 1 || r.Replays[0].ReplayOf != "X000" {
		t.Errorf("replays = %v, want the replay of X000", r.Replays)
	}
}

func TestDecodeRecordReadsMetadataOfRecorderJSON(t *testing.T) {
	at := base.Add(time.Second)
	req := recorder.Exchange{ID: "01A", ReceivedAt: base, Identity: &recorder.Identity{Issuer: "https://idp", Subject: "ada", ClientID: "agent"},
		Route: "mcp", Decision: "allowed", ReplayOf: "00Z", Target: "http://staging", MCP: &recorder.MCP{Method: "tools/call", Name: "send"},
		Request: recorder.Request{Method: "POST", Path: "/mcp", Body: recorder.NewBody([]byte(`{"secret":"body"}`), 17)}}
	resp := req
	resp.Decision, resp.Error, resp.ApprovalID, resp.RespondedAt = "error", "upstream_timeout", "AP1", &at
	resp.Response = &recorder.Response{Status: 504}
	reqData, _ := json.Marshal(req)
	respData, _ := json.Marshal(resp)
	x, err := DecodeRecord(recorder.Record{Request: recorder.Entry{Data: reqData}, Response: &recorder.Entry{Data: respData}})
	if err != nil {
		t.Fatal(err)
	}
	row := rowOf(x)
	want := Row{ID: "01A", At: base, Route: "mcp", Subject: "ada", Method: "POST", Path: "/mcp", MCP: "tools/call send", Status: 504,
		Decision: "error", Error: "upstream_timeout", Approval: "AP1", ReplayOf: "00Z", Target: "http://staging"}
	if row != want {
		t.Errorf("row = %+v\nwant  %+v", row, want)
	}
	if _, err := DecodeRecord(recorder.Record{Request: recorder.Entry{ExchangeID: "bad", Data: []byte("{")}}); err == nil {
		t.Error("DecodeRecord of invalid JSON: no error")
	}
}

// hostile is a value that would be markup, a link or a table cell of its own if a
// writer did not escape it.
const hostile = "</td></tr><script>alert(1)</script><img src=x onerror=alert(2)>| [x](javascript:alert(3)) `*_#\n| injected |"

// hostileReport returns a report in which every free-text value is hostile.
func hostileReport() *Report {
	b := New(Options{Since: base, Until: base.Add(time.Hour), Generated: base, Version: hostile, Source: hostile,
		Retention: Retention{Known: true, From: hostile}})
	x := exchange(1, hostile, "denied", "denied", 403)
	x.Request.Path, x.Reason, x.ReplayOf = hostile, hostile, hostile
	b.AddExchange(x)
	at := base.Add(2 * time.Minute)
	b.AddApproval(&approvals.Approval{ID: "AP1", Route: hostile, Method: "DELETE", Path: hostile, Reason: hostile,
		Requester: approvals.Identity{Subject: hostile, Issuer: hostile}, CreatedAt: base.Add(time.Minute), State: approvals.Denied,
		Decisions: []approvals.Decision{{Approver: approvals.Identity{Subject: hostile}, Verdict: approvals.Deny, Comment: hostile, At: at}}})
	return b.Report(recorder.Report{OK: true, Entries: 3, First: 1, Last: 3, Head: hostile})
}

func TestHTMLEscapesEveryValue(t *testing.T) {
	var buf bytes.Buffer
	if err := hostileReport().HTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"<script", "<img", "</td></tr><", "javascript:alert(3)\""} {
		if strings.Contains(page, bad) {
			t.Errorf("the HTML holds %q unescaped", bad)
		}
	}
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the hostile value is not in the page, escaped")
	}
	// One row per exchange, approval and decision: no value opened a row of its own.
	if n := strings.Count(page, "<tr>"); n != 31 {
		t.Errorf("the page has %d rows, want 31", n)
	}
}

func TestMarkdownEscapesEveryValue(t *testing.T) {
	var buf bytes.Buffer
	if err := hostileReport().Markdown(&buf); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, bad := range []string{"<script", "<img", "| injected |"} {
		if strings.Contains(md, bad) {
			t.Errorf("the Markdown holds %q unescaped", bad)
		}
	}
	if regexp.MustCompile(`(^|[^\\])\]\(`).MatchString(md) {
		t.Error("the Markdown holds a link")
	}
	// Every row of a table has as many cells as its header: an unescaped | would add one.
	cell := regexp.MustCompile(`(^|[^\\])\|`)
	header := 0
	for i, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "|") {
			header = 0
			continue
		}
		n := len(cell.FindAllString(l, -1))
		if header == 0 {
			header = n
		} else if n != header {
			t.Errorf("line %d has %d cell borders, its table's header %d: %s", i+1, n, header, l)
		}
	}
	if !strings.Contains(md, `&lt;script&gt;alert(1)&lt;/script&gt;`) || !strings.Contains(md, `\[x\](javascript:alert(3))`) {
		t.Errorf("the hostile value is not in the Markdown, escaped:\n%s", md)
	}
}

func TestRetentionString(t *testing.T) {
	for _, c := range []struct {
		r    Retention
		want string
	}{
		{Retention{}, "not known"},
		{Retention{From: "no --config"}, "not known: no --config"},
		{Retention{Known: true, From: "k.yaml"}, "keep everything (recorder.retention not set), from k.yaml"},
		{Retention{Known: true, Keep: 90 * 24 * time.Hour, From: "k.yaml"}, "90d (recorder.retention), from k.yaml"},
		{Retention{Known: true, Keep: 36 * time.Hour, From: "k.yaml"}, "36h0m0s (recorder.retention), from k.yaml"},
	} {
		if got := c.r.String(); got != c.want {
			t.Errorf("%+v = %q, want %q", c.r, got, c.want)
		}
	}
}
