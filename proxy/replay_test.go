package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
)

// replayConfig is testConfig with a masked route, and a replay target for crm. With
// masked false the masked route keeps its path but no longer masks; readers names the
// groups crm-read-customer allows.
func replayConfig(masked bool, readers string) string {
	mask := `    mask: [{ field: ssn, action: redact }, { field: customers.#.ssn, action: redact }]
    detect: [email]
`
	if !masked {
		mask = ""
	}
	c := strings.Replace(testConfig, "limits:\n", `  - name: masked
    match: { methods: [GET], path: "/masked/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
`+mask+`limits:
  max_response_body_masked: 4KiB
`, 1)
	c = strings.Replace(c, "allow: { groups: [crm-readers], scopes: [crm.read] }", "allow: { groups: ["+readers+"], scopes: [crm.read] }", 1)
	return strings.Replace(c, `credential: { header: X-Api-Key, value: "${CRM_KEY}" }`,
		`credential: { header: X-Api-Key, value: "${CRM_KEY}" }
    replay_targets: ["${CRM_URL}/staging"]`, 1)
}

// replayHarness is a recording gateway with the auditor API in front of its store and
// its Replay, as `keyhole serve` wires them.
type replayHarness struct {
	*recordingHarness
	api     *httptest.Server
	auditor string
}

func newReplayHarness(t *testing.T) *replayHarness {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, replayConfig(true, "crm-readers"))
	roles, err := rules.Compile(&config.Config{Admin: config.Admin{Roles: map[string]*config.Allow{
		rules.RoleAuditors: {Groups: []string{"auditors"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(admin.New(admin.Options{Gatherer: prometheus.NewRegistry(), Ready: func() error { return nil },
		API: &admin.API{Verifier: func() admin.Verifier { return h.v }, Roles: func() admin.Roles { return roles },
			Store: h.store, Replayer: h.gw, Version: "test", Log: slog.New(slog.DiscardHandler)}}))
	t.Cleanup(api.Close)
	return &replayHarness{recordingHarness: h, api: api,
		auditor: h.token(t, map[string]any{"sub": "auditor@example.com", "groups": []string{"auditors"}})}
}

// recorded sends a request through the gateway and waits until its record is complete.
func (h *replayHarness) recorded(t *testing.T, method, path, token, body string, hdr http.Header) string {
	t.Helper()
	resp, _ := h.do(t, method, path, token, body, hdr)
	id := resp.Header.Get("X-Request-Id")
	h.complete(t, id)
	return id
}

// complete waits until the record of exchange id has both its entries, and returns it.
func (h *replayHarness) complete(t *testing.T, id string) recorder.Record {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if rec, err := h.store.Get(context.Background(), id); err == nil && rec.Response != nil {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("exchange %s was not recorded", id)
		}
	}
}

type replayAnswer struct {
	DryRun bool               `json:"dry_run"`
	Replay *recorder.Exchange `json:"replay"`
	Diff   *recorder.Changes  `json:"diff"`
	Error  string             `json:"error"`
	Msg    string             `json:"message"`
}

func (h *replayHarness) replay(t *testing.T, id, body string) (int, replayAnswer) {
	t.Helper()
	req, _ := http.NewRequest("POST", h.api.URL+"/api/v1/exchanges/"+id+"/replay", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.auditor)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a replayAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("replay answer %s: %v", raw, err)
	}
	return resp.StatusCode, a
}

// TestReplay drives replays through the auditor API against a recording gateway: what
// the upstream receives, the diff, the replay's own record, and every refusal.
func TestReplay(t *testing.T) {
	h := newReplayHarness(t)
	version, sse := "v1", "good"
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/masked/json"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, customerJSON)
		case strings.HasSuffix(r.URL.Path, "/masked/sse"):
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"ssn\":%q}\n\n", plantedSSN)
			if sse == "bad" {
				fmt.Fprintf(w, "data: not json %s\n\n", plantedSSN)
			}
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":42,"name":"Ada","plan":%q}`, version)
		}
	}
	reader := h.token(t, map[string]any{"sub": "agent", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	get := h.recorded(t, "GET", "/crm/customers/42?expand=1", reader, "", http.Header{"X-Trace": {"t-1"}, "Accept-Encoding": {"gzip"}})
	post := h.recorded(t, "POST", "/crm/customers", reader, `{"name":"Ada"}`, nil)
	long := h.recorded(t, "POST", "/crm/customers", reader, `{"name":"`+strings.Repeat("a", 600)+`"}`, nil)
	forbidden := h.recorded(t, "DELETE", "/crm/customers/42", reader, "", nil)
	keyInQuery := h.recorded(t, "GET", "/crm/customers/42?key="+crmKey, reader, "", nil)
	maskedJSON := h.recorded(t, "GET", "/masked/json", reader, "", nil)
	maskedSSE := h.recorded(t, "GET", "/masked/sse", reader, "", nil)
	keyInPath := h.recorded(t, "GET", "/crm/customers/"+crmKey, reader, "", nil)
	keyInHeader := h.recorded(t, "GET", "/crm/customers/42", reader, "", http.Header{"X-Trace": {"t-1", "k=" + crmKey}})
	longQuery := h.recorded(t, "GET", "/crm/customers/42?pad="+strings.Repeat("x", 9000)+"&last=1", reader, "", nil)
	version = "v2"

	t.Run("the upstream changed its answer", func(t *testing.T) {
		h.crm.Reset()
		status, a := h.replay(t, get, `{}`)
		if status != 200 || a.Replay == nil || a.Diff == nil {
			t.Fatalf("replay = %d %+v", status, a)
		}
		got := h.crm.Requests()
		if len(got) != 1 {
			t.Fatalf("upstream received %d requests, want 1", len(got))
		}
		r := got[0]
		if r.RequestURI != "/api/customers/42?expand=1" || r.Header.Get("X-Api-Key") != crmKey || r.Header.Get("X-Trace") != "t-1" ||
			r.Header.Get("Authorization") != "" || r.Header.Get("Accept-Encoding") != "" {
			t.Errorf("upstream received %s with headers %v", r.RequestURI, r.Header)
		}
		if a.Diff.Same || len(a.Diff.Body) != 1 || a.Diff.Body[0].Path != "plan" {
			t.Errorf("diff = %+v, want one change at plan", a.Diff)
		}
		nx := a.Replay
		if nx.ReplayOf != get || nx.Decision != "replay" || nx.Identity == nil || nx.Identity.Subject != "auditor@example.com" {
			t.Errorf("replay exchange = %+v", nx)
		}
		rec := h.complete(t, nx.ID)
		stored, _ := recorder.Decode(rec)
		if stored.ReplayOf != get || stored.Response == nil || !strings.Contains(stored.Response.Body.Text, "v2") ||
			strings.Contains(string(rec.Request.Data), crmKey) {
			t.Errorf("stored replay = %+v", stored)
		}
	})
	t.Run("dry run sends nothing", func(t *testing.T) {
		h.crm.Reset()
		status, a := h.replay(t, get, `{"dry_run":true}`)
		if status != 200 || !a.DryRun || a.Replay == nil || a.Replay.Request.ForwardPath != "/customers/42" || a.Replay.Response != nil {
			t.Fatalf("dry run = %d %+v", status, a)
		}
		if n := len(h.crm.Requests()); n != 0 {
			t.Errorf("dry run sent %d requests upstream", n)
		}
		if _, err := h.store.Get(context.Background(), a.Replay.ID); err == nil {
			t.Errorf("dry run was recorded")
		}
	})
	t.Run("unsafe method only when allowed", func(t *testing.T) {
		h.crm.Reset()
		if status, a := h.replay(t, post, `{}`); status != 400 || a.Error != "unsafe_method" || len(h.crm.Requests()) != 0 {
			t.Errorf("POST replay without allow_unsafe = %d %+v", status, a)
		}
		status, a := h.replay(t, post, `{"allow_unsafe":true}`)
		if got := h.crm.Requests(); status != 200 || len(got) != 1 || string(got[0].Body) != `{"name":"Ada"}` {
			t.Errorf("POST replay with allow_unsafe = %d %+v", status, a)
		}
	})
	t.Run("masked route: the replay is masked as the route masks", func(t *testing.T) {
		status, a := h.replay(t, maskedJSON, `{}`)
		if status != 200 || !strings.Contains(a.Replay.Response.Body.Text, `"ssn":"[REDACTED]"`) ||
			strings.Contains(a.Replay.Response.Body.Text, plantedSSN) || strings.Contains(a.Replay.Response.Body.Text, plantedEmail) {
			t.Errorf("masked replay = %d %+v", status, a.Replay.Response)
		}
		status, a = h.replay(t, maskedSSE, `{}`)
		if status != 200 || !strings.Contains(a.Replay.Response.Body.Text, `data: {"ssn":"[REDACTED]"}`) || strings.Contains(a.Replay.Response.Body.Text, plantedSSN) {
			t.Errorf("masked SSE replay = %d %+v", status, a.Replay.Response)
		}
	})
	t.Run("a stream that cannot be masked is not shown", func(t *testing.T) {
		sse = "bad"
		defer func() { sse = "good" }()
		status, a := h.replay(t, maskedSSE, `{}`)
		if status != 502 || a.Error != "mask_failed" || a.Replay != nil {
			t.Errorf("unmaskable SSE replay = %d %+v", status, a)
		}
	})

	refusals := []struct {
		name, id, body string
		wantStatus     int
		wantCode       string
	}{
		{"truncated body", long, `{"allow_unsafe":true}`, 409, "not_replayable"},
		{"never forwarded", forbidden, `{"allow_unsafe":true}`, 409, "not_replayable"},
		// allow_unsafe would not help: say so before asking for it (issue 15).
		{"never forwarded, unsafe, without allow_unsafe", forbidden, `{}`, 409, "not_replayable"},
		{"truncated body, without allow_unsafe", long, `{}`, 409, "not_replayable"},
		{"credential redacted from the query", keyInQuery, `{}`, 409, "not_replayable"},
		{"credential redacted from the path", keyInPath, `{}`, 409, "not_replayable"},
		{"credential redacted from one header value", keyInHeader, `{}`, 409, "not_replayable"},
		{"target nobody configured", get, `{"target":"http://attacker.example:8080"}`, 400, "bad_target"},
		{"unknown exchange", "01JD0000000000000000000000", `{}`, 404, "not_found"},
		{"not a JSON object", get, `[1]`, 400, "bad_request"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			status, a := h.replay(t, tt.id, tt.body)
			if status != tt.wantStatus || a.Error != tt.wantCode {
				t.Errorf("replay = %d %q (%s), want %d %q", status, a.Error, a.Msg, tt.wantStatus, tt.wantCode)
			}
			if n := len(h.crm.Requests()); n != 0 {
				t.Errorf("a refused replay sent %d requests upstream", n)
			}
		})
	}

	t.Run("a long query is replayed whole", func(t *testing.T) {
		h.crm.Reset()
		status, _ := h.replay(t, longQuery, `{}`)
		if got := h.crm.Requests(); status != 200 || len(got) != 1 || !strings.HasSuffix(got[0].RequestURI, "&last=1") {
			t.Errorf("replay of a 9 KB query = %d, upstream got %d", status, len(got))
		}
	})
	t.Run("a route judged on a claim", func(t *testing.T) {
		byClaim := strings.Replace(replayConfig(true, "crm-readers"), "allow: { groups: [crm-readers], scopes: [crm.read] }",
			"allow: { claims: { tenant: acme } }", 1)
		h.load(t, byClaim)
		defer h.load(t, replayConfig(true, "crm-readers"))
		tenant := h.token(t, map[string]any{"sub": "agent-t", "tenant": "acme"})
		id := h.recorded(t, "GET", "/crm/customers/7", tenant, "", nil)
		h.crm.Reset()
		if status, a := h.replay(t, id, `{}`); status != 200 || len(h.crm.Requests()) != 1 {
			t.Errorf("replay of a request allowed by its tenant claim = %d %+v, want it judged with the recorded claim", status, a)
		}
	})
	t.Run("a route that now needs approval", func(t *testing.T) {
		held := strings.Replace(replayConfig(true, "crm-readers"), "allow: { groups: [crm-readers], scopes: [crm.read] }",
			"allow: { groups: [crm-readers], scopes: [crm.read] }\n    approval: { approvers: { groups: [crm-admins] } }", 1)
		h.load(t, held)
		defer h.load(t, replayConfig(true, "crm-readers"))
		h.crm.Reset()
		if status, a := h.replay(t, get, `{}`); status != 409 || a.Error != "not_replayable" || !strings.Contains(a.Msg, "approval") || len(h.crm.Requests()) != 0 {
			t.Errorf("replay on a route that needs approval = %d %+v", status, a)
		}
	})
	t.Run("replay target from replay_targets", func(t *testing.T) {
		h.crm.Reset()
		status, a := h.replay(t, get, fmt.Sprintf(`{"target":%q}`, h.crm.URL+"/staging/"))
		if got := h.crm.Requests(); status != 200 || len(got) != 1 || got[0].RequestURI != "/staging/customers/42?expand=1" {
			t.Errorf("replay to staging = %d %+v, upstream got %d", status, a, len(got))
		}
	})
	t.Run("a replay is not replayed", func(t *testing.T) {
		_, a := h.replay(t, get, `{}`)
		status, b := h.replay(t, a.Replay.ID, `{}`)
		if status != 409 || b.Error != "not_replayable" || !strings.Contains(b.Msg, get) {
			t.Errorf("replay of a replay = %d %+v", status, b)
		}
	})
	t.Run("rules that no longer allow the caller", func(t *testing.T) {
		h.load(t, replayConfig(true, "crm-admins"))
		defer h.load(t, replayConfig(true, "crm-readers"))
		h.crm.Reset()
		if status, a := h.replay(t, get, `{}`); status != 409 || a.Error != "not_replayable" || len(h.crm.Requests()) != 0 {
			t.Errorf("replay the rules now forbid = %d %+v", status, a)
		}
	})
	t.Run("a route that no longer masks", func(t *testing.T) {
		h.load(t, replayConfig(false, "crm-readers"))
		defer h.load(t, replayConfig(true, "crm-readers"))
		h.crm.Reset()
		if status, a := h.replay(t, maskedJSON, `{}`); status != 409 || a.Error != "not_replayable" || len(h.crm.Requests()) != 0 {
			t.Errorf("replay of a masked record on an unmasked route = %d %+v", status, a)
		}
	})
}
