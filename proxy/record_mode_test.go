package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/recorder"
)

// recordModeConfig has one route per record mode, and a guard in front of the exempted
// route: a refused request is recorded whatever its route's mode.
const recordModeConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm:
    url: ${CRM_URL}/api
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
guards:
  - name: no-sql-drop
    match: { methods: [POST], path: "/none/*", when: { body_regex: "(?i)drop table" } }
    deny: "destructive SQL is never forwarded"
routes:
  - { name: full, match: { methods: [POST], path: "/full/*" }, upstream: crm, allow: { scopes: [crm.write] } }
  - { name: meta, match: { methods: [POST], path: "/meta/*" }, upstream: crm, allow: { scopes: [crm.write] }, record: metadata, retention: 7d }
  - { name: none, match: { methods: [POST, GET], path: "/none/*" }, upstream: crm, allow: { scopes: [crm.write] }, record: none }
  - { name: none-read, match: { methods: [GET], path: "/none-read/*" }, upstream: crm, allow: { groups: [admins] }, record: none }
`

// TestRecordModes checks what each route's record mode keeps: full keeps both bodies;
// metadata keeps identity, decision, path, status and sizes but no body (and such an
// exchange cannot be replayed); none keeps nothing of a forwarded exchange, yet a
// guard's and an allow's refusal on it are recorded.
func TestRecordModes(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, recordModeConfig)
	tok := h.token(t, map[string]any{"sub": "agent-writer", "scp": []string{"crm.write"}})
	const body = `{"name":"Ada","note":"PLANTED-BODY-9f1"}`
	ids := map[string]string{}
	for _, c := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"full", "POST", "/full/1", body, 200},
		{"meta", "POST", "/meta/1", body, 200},
		{"none", "POST", "/none/1", body, 200},
		{"none guarded", "POST", "/none/2", `{"q":"DROP TABLE x"}`, 403},
		{"none forbidden", "GET", "/none-read/1", "", 403},
	} {
		resp, _ := h.do(t, c.method, c.path, tok, c.body, http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != c.want {
			t.Fatalf("%s %s = %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		ids[c.name] = resp.Header.Get("X-Request-Id")
	}
	h.flush(t)

	full := h.exchange(t, ids["full"])
	if full.Record != "" || full.Retention != "" || !strings.Contains(full.Request.Body.Text, "PLANTED-BODY") || full.Response.Body.Size == 0 || full.Response.Body.Text == "" {
		t.Errorf("full record: mode %q, request body %q, response body %d bytes %q", full.Record, full.Request.Body.Text, full.Response.Body.Size, full.Response.Body.Text)
	}

	meta := h.exchange(t, ids["meta"])
	switch {
	case meta.Record != "metadata" || meta.Retention != "7d":
		t.Errorf("metadata record says record %q, retention %q; want metadata, 7d (the route's)", meta.Record, meta.Retention)
	case meta.Request.Body.Text != "" || meta.Request.Body.Size != int64(len(body)) || !meta.Request.Body.Truncated:
		t.Errorf("metadata request body = %+v, want no text, size %d, truncated", meta.Request.Body, len(body))
	case meta.Response == nil || meta.Response.Status != 200 || meta.Response.Body.Text != "" || meta.Response.Body.Size == 0:
		t.Errorf("metadata response = %+v, want status 200, a size and no text", meta.Response)
	case meta.Identity == nil || meta.Identity.Subject != "agent-writer" || meta.Decision != "allowed" || meta.Request.Path != "/meta/1":
		t.Errorf("metadata record lost its metadata: %+v", meta)
	}
	if _, err := h.gw.Replay(context.Background(), &meta, "", nil, true); err == nil || !strings.Contains(err.Error(), "metadata only") {
		t.Errorf("replay of a metadata record = %v, want not_replayable: metadata only", err)
	}

	if _, err := h.store.Get(context.Background(), ids["none"]); err == nil {
		t.Error("an exchange on a record: none route was recorded")
	}
	for _, name := range []string{"none guarded", "none forbidden"} {
		x := h.exchange(t, ids[name])
		if x.Decision == "allowed" || x.Response == nil || x.Response.Status != 403 {
			t.Errorf("%s: record %+v, want the refusal", name, x)
		}
	}
	if n := len(h.crm.Requests()); n != 3 {
		t.Errorf("the upstream received %d requests, want 3", n)
	}
}
