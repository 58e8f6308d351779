package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

const cutConfig = `
identity:
  issuers: [{ issuer: "${ISSUER}", audiences: [api://keyhole] }]
upstreams:
  cut: { url: "${CUT_URL}", timeout: 300ms }
routes:
  - name: plain
    match: { methods: [GET], path: "/plain/*" }
    upstream: cut
    allow: { scopes: [crm.read] }
  - name: masked
    match: { methods: [GET], path: "/masked/*" }
    upstream: cut
    allow: { scopes: [crm.read] }
    mask: [{ field: ssn, action: redact }]
`

// cutUpstream answers every request with head and then the part of a body, and then
// does what its path's last element says: "short" closes (the Content-Length is not
// met), "chunked" closes inside a chunked body, "reset" resets the connection, "stall"
// sends nothing more for two seconds, "slow" sends the rest after 400 ms.
func cutUpstream(t *testing.T) *httptest.Server {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		what := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		const part = `{"name":"Ada","notes":"`
		if what == "chunked" {
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
			buf.WriteString("17\r\n" + part + "\r\n")
		} else {
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + part)
		}
		buf.Flush()
		switch what {
		case "reset":
			time.Sleep(50 * time.Millisecond)
			conn.(*net.TCPConn).SetLinger(0)
		case "stall":
			select {
			case <-time.After(2 * time.Second):
			case <-done:
			}
		case "slow":
			time.Sleep(400 * time.Millisecond)
			buf.WriteString(strings.Repeat("x", 100-len(part)))
			buf.Flush()
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv
}

// TestUpstreamCutMidBody cuts or stalls upstream bodies after their headers. Before,
// each was recorded as the client leaving (499, no error code, not in
// keyhole_upstream_errors_total; a masked route's stall as mask_failed once the client
// gave up). Now: an upstream error with its own code and kind, and a record of what the
// client got, marked incomplete.
func TestUpstreamCutMidBody(t *testing.T) {
	for _, tc := range []struct {
		path       string
		wantStatus int // what the client sees
		wantCode   string
		wantKind   string
	}{
		{"/plain/short", 200, "upstream_truncated", "truncated"},
		{"/plain/chunked", 200, "upstream_truncated", "truncated"},
		{"/plain/reset", 200, "upstream_truncated", "truncated"},
		{"/plain/stall", 200, "upstream_timeout", "stalled"},
		{"/masked/short", 502, "upstream_truncated", "truncated"},
		{"/masked/chunked", 502, "upstream_truncated", "truncated"},
		{"/masked/reset", 502, "upstream_truncated", "truncated"},
		{"/masked/stall", 504, "upstream_timeout", "stalled"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			h := newRecordingHarness(t, recorder.Strict)
			h.cfgEnv["CUT_URL"] = cutUpstream(t).URL
			h.load(t, cutConfig)
			tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
			req, _ := http.NewRequest("GET", h.srv.URL+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			start := time.Now()
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if el := time.Since(start); el > 1500*time.Millisecond {
				t.Errorf("answered after %v, want about the upstream timeout (300ms)", el)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == 200 && rerr == nil {
				t.Errorf("client read the cut body without an error: %q", got)
			}
			if tc.wantStatus != 200 && !strings.Contains(string(got), `"error":"`+tc.wantCode+`"`) {
				t.Errorf("body = %s, want error %s", got, tc.wantCode)
			}
			h.flush(t)
			x := h.exchange(t, resp.Header.Get("X-Request-Id"))
			if x.Error != tc.wantCode {
				t.Errorf("recorded error = %q, want %q", x.Error, tc.wantCode)
			}
			if x.Response == nil || x.Response.Status != tc.wantStatus {
				t.Fatalf("recorded response = %+v, want status %d", x.Response, tc.wantStatus)
			}
			if tc.wantStatus == 200 {
				if !x.Response.Incomplete {
					t.Error("record does not say the response was incomplete")
				}
				if x.Response.Body.Text != string(got) {
					t.Errorf("recorded body %q, want what the client got: %q", x.Response.Body.Text, got)
				}
			}
			if n := counterValue(t, h.reg, "keyhole_upstream_errors_total", "upstream", "cut", "kind", tc.wantKind); n != 1 {
				t.Errorf("keyhole_upstream_errors_total{kind=%q} = %v, want 1", tc.wantKind, n)
			}
			if n := counterValue(t, h.reg, "keyhole_mask_failures_total", "route", "masked"); n != 0 {
				t.Errorf("keyhole_mask_failures_total = %v, want 0: the upstream failed, not the mask", n)
			}
		})
	}
}

// TestClientLeavesMidBody: a client that gives up while the upstream is still sending
// (slowly, but within its timeout) is still recorded as the client leaving.
func TestClientLeavesMidBody(t *testing.T) {
	for _, path := range []string{"/plain/slow", "/masked/slow"} {
		t.Run(path, func(t *testing.T) {
			h := newRecordingHarness(t, recorder.Strict)
			h.cfgEnv["CUT_URL"] = cutUpstream(t).URL
			h.load(t, cutConfig)
			tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			var id string
			if resp, err := h.srv.Client().Do(req); err == nil {
				id = resp.Header.Get("X-Request-Id")
				io.ReadAll(resp.Body)
				resp.Body.Close()
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			time.Sleep(600 * time.Millisecond) // the gateway finishes the exchange
			h.flush(t)
			recs, _, err := h.store.List(context.Background(), recorder.Filter{})
			if err != nil || len(recs) != 1 {
				t.Fatalf("List = %d records, %v; want 1", len(recs), err)
			}
			x, err := recorder.Decode(recs[0])
			if err != nil {
				t.Fatal(err)
			}
			if id != "" && x.ID != id {
				t.Errorf("record %s, want %s", x.ID, id)
			}
			if x.Error != "client_closed" || x.Response.Status != 499 {
				t.Errorf("recorded %q %d, want client_closed 499", x.Error, x.Response.Status)
			}
			if n := counterValue(t, h.reg, "keyhole_upstream_errors_total", "upstream", "cut", "kind", "truncated") +
				counterValue(t, h.reg, "keyhole_upstream_errors_total", "upstream", "cut", "kind", "stalled"); n != 0 {
				t.Errorf("upstream errors counted for a client that left: %v", n)
			}
		})
	}
}
