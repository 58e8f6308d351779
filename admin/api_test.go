package admin_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// apiHarness is the admin plane with the auditor API on a real store, verifying tokens
// of a real in-process issuer.
type apiHarness struct {
	srv       *httptest.Server
	iss       *testkit.Issuer
	verifier  *identity.Verifier
	store     *sqlite.Store
	approvals *approvals.Service
	file      string
}

func newAPIHarness(t *testing.T, exchanges int) *apiHarness {
	t.Helper()
	return newAPIHarnessFor(t, exchanges, config.Admin{Roles: map[string]*config.Allow{
		rules.RoleAuditors: {Groups: []string{"auditors"}},
	}})
}

// newAPIHarnessFor is newAPIHarness with the admin plane configured as adm.
func newAPIHarnessFor(t *testing.T, exchanges int, adm config.Admin) *apiHarness {
	t.Helper()
	return newAPIHarnessConfig(t, exchanges, &config.Config{Admin: adm})
}

// newAPIHarnessConfig is newAPIHarness with the roles and routes of cfg, and the
// approvers' endpoints on an approvals service over the same store.
func newAPIHarnessConfig(t *testing.T, exchanges int, cfg *config.Config) *apiHarness {
	t.Helper()
	iss := testkit.NewIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ic := iss.Config()
	ic.Audiences = []string{"api://keyhole"}
	v, err := identity.New(ctx, []config.Issuer{ic}, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := v.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "k.db")
	st, err := sqlite.Open(ctx, "sqlite://"+file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for i := range exchanges {
		x := &recorder.Exchange{ID: fmt.Sprintf("01JD000000000000000000%04d", i), ReceivedAt: base.Add(time.Duration(i) * time.Minute),
			Identity: &recorder.Identity{Subject: []string{"agent-a", "agent-b"}[i%2]}, Route: "crm-read", Decision: []string{"allowed", "forbidden"}[i%2],
			Request:  recorder.Request{Method: "GET", Path: fmt.Sprintf("/crm/customers/%d", i)},
			Response: &recorder.Response{Status: []int{200, 403}[i%2], Body: recorder.NewBody([]byte(`{"ok":true}`), 11)}}
		rec.Refused(x)
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	svc := approvals.New(st, approvals.Options{})
	srv := httptest.NewServer(admin.New(admin.Options{Gatherer: prometheus.NewRegistry(), Ready: func() error { return nil },
		API: &admin.API{
			Verifier:  func() admin.Verifier { return v },
			Roles:     func() admin.Roles { return table },
			Store:     st,
			Approvals: svc,
			Version:   "test",
			Log:       slog.New(slog.DiscardHandler),
		}}))
	t.Cleanup(srv.Close)
	return &apiHarness{srv: srv, iss: iss, verifier: v, store: st, approvals: svc, file: file}
}

func (h *apiHarness) get(t *testing.T, path, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", h.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestAuditorAPI checks the auditor endpoints end to end: authentication and roles,
// filters, paging, one exchange, HAR export, and chain verification before and after tampering.
func TestAuditorAPI(t *testing.T) {
	h := newAPIHarness(t, 25)
	auditor := h.iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "bob", "groups": []string{"auditors"}})
	agent := h.iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "agent-a", "groups": []string{"crm-readers"}})
	tests := []struct {
		name, path, token string
		want              int
		wantIDs           int // exchanges in a list answer, -1 when not a list
	}{
		{"no token", "/api/v1/exchanges", "", 401, -1},
		{"not an auditor", "/api/v1/exchanges", agent, 403, -1},
		{"forged token", "/api/v1/exchanges", auditor + "x", 401, -1},
		{"list", "/api/v1/exchanges", auditor, 200, 25},
		{"limit", "/api/v1/exchanges?limit=10", auditor, 200, 10},
		{"by subject", "/api/v1/exchanges?subject=agent-a", auditor, 200, 13},
		{"by decision and status", "/api/v1/exchanges?decision=forbidden&status=403", auditor, 200, 12},
		{"by time", "/api/v1/exchanges?since=2026-11-01T12:10:00Z&until=2026-11-01T12:20:00Z", auditor, 200, 10},
		{"bad time", "/api/v1/exchanges?since=yesterday", auditor, 400, -1},
		{"bad cursor", "/api/v1/exchanges?cursor=zzz", auditor, 400, -1},
		{"one", "/api/v1/exchanges/01JD0000000000000000000003", auditor, 200, -1},
		{"unknown", "/api/v1/exchanges/01JD0000000000000000009999", auditor, 404, -1},
		{"verify", "/api/v1/audit/verify", auditor, 200, -1},
		{"har", "/api/v1/exchanges/01JD0000000000000000000003/har", auditor, 200, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := h.get(t, tt.path, tt.token)
			if status != tt.want {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, status, body, tt.want)
			}
			if status >= 400 {
				var e struct {
					Error, Message string
					RequestID      string `json:"request_id"`
				}
				if json.Unmarshal(body, &e) != nil || e.Error == "" || e.RequestID == "" {
					t.Errorf("error body %s, want the spec's JSON error with a request id", body)
				}
			}
			if tt.wantIDs >= 0 {
				var page struct{ Exchanges []recorder.Exchange }
				if err := json.Unmarshal(body, &page); err != nil {
					t.Fatal(err)
				}
				if len(page.Exchanges) != tt.wantIDs {
					t.Errorf("GET %s listed %d exchanges, want %d", tt.path, len(page.Exchanges), tt.wantIDs)
				}
			}
		})
	}

	t.Run("paging newest first", func(t *testing.T) {
		var ids []string
		cursor := ""
		for range 10 {
			status, body := h.get(t, "/api/v1/exchanges?limit=7&cursor="+cursor, auditor)
			if status != 200 {
				t.Fatalf("page = %d %s", status, body)
			}
			var page struct {
				Exchanges  []recorder.Exchange
				NextCursor string `json:"next_cursor"`
			}
			json.Unmarshal(body, &page)
			for _, x := range page.Exchanges {
				ids = append(ids, x.ID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if len(ids) != 25 || ids[0] != "01JD0000000000000000000024" || ids[24] != "01JD0000000000000000000000" {
			t.Errorf("paged ids = %v", ids)
		}
	})

	t.Run("HAR export of a filtered set", func(t *testing.T) {
		status, body := h.get(t, "/api/v1/exchanges.har?subject=agent-b", auditor)
		var har struct {
			Log struct {
				Version string
				Entries []map[string]any
			}
		}
		if status != 200 || json.Unmarshal(body, &har) != nil || har.Log.Version != "1.2" || len(har.Log.Entries) != 12 {
			t.Errorf("HAR export = %d, version %q, %d entries; want 200, 1.2, 12", status, har.Log.Version, len(har.Log.Entries))
		}
	})

	t.Run("tampering shows in verify", func(t *testing.T) {
		db, err := sql.Open("sqlite", h.file)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`UPDATE entries SET data = replace(data, '"status":403', '"status":200') WHERE seq = 8`); err != nil {
			t.Fatal(err)
		}
		status, body := h.get(t, "/api/v1/audit/verify", auditor)
		var rep recorder.Report
		json.Unmarshal(body, &rep)
		if status != 409 || rep.OK || rep.Break == nil || rep.Break.Seq != 8 {
			t.Errorf("verify after an edit = %d %s, want 409 with a break at entry 8", status, body)
		}
	})
}

// TestAdminClients: with admin.clients set, the admin plane takes only tokens issued to
// those apps, whatever roles the token's holder has; without it, any client.
func TestAdminClients(t *testing.T) {
	roles := map[string]*config.Allow{rules.RoleAuditors: {Groups: []string{"auditors"}}}
	only := newAPIHarnessFor(t, 1, config.Admin{Roles: roles, Clients: []string{"0oaConsole", "0oaCli"}})
	anyClient := newAPIHarnessFor(t, 1, config.Admin{Roles: roles})
	for _, c := range []struct {
		name       string
		h          *apiHarness
		claims     map[string]any
		want       int
		wantReason string
	}{
		{"through the console app", only, map[string]any{"sub": "bob", "cid": "0oaConsole", "groups": []string{"auditors"}}, 200, ""},
		{"through the CLI app", only, map[string]any{"sub": "bob", "cid": "0oaCli", "groups": []string{"auditors"}}, 200, ""},
		{"through an agent's app", only, map[string]any{"sub": "bob", "cid": "0oaAgentApp", "groups": []string{"auditors"}}, 403, "admin.clients"},
		{"no client id", only, map[string]any{"sub": "bob", "groups": []string{"auditors"}}, 403, "admin.clients"},
		{"any client when unset", anyClient, map[string]any{"sub": "bob", "cid": "0oaAgentApp", "groups": []string{"auditors"}}, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.claims["aud"] = "api://keyhole"
			status, body := c.h.get(t, "/api/v1/exchanges", c.h.iss.Token(t, c.claims))
			if status != c.want || !strings.Contains(string(body), c.wantReason) {
				t.Errorf("GET /api/v1/exchanges = %d %s, want %d mentioning %q", status, body, c.want, c.wantReason)
			}
		})
	}
}

// TestHARExportAllOrNothing: a record that cannot be read anywhere in the selected set
// fails the export with the JSON error before a byte of HAR is sent — an auditor never
// gets a file that looks whole but is not.
func TestHARExportAllOrNothing(t *testing.T) {
	h := newAPIHarness(t, 25)
	auditor := h.iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "bob", "groups": []string{"auditors"}})
	if status, body := h.get(t, "/api/v1/exchanges.har", auditor); status != 200 || !bytes.Contains(body, []byte(`"entries"`)) {
		t.Fatalf("HAR export of intact records = %d, want 200 and a HAR:\n%.200s", status, body)
	}
	db, err := sql.Open("sqlite", h.file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The oldest exchange's request: the last one a newest-first listing reaches.
	if _, err := db.Exec(`UPDATE entries SET data = CAST('{not json' AS BLOB) WHERE seq = (SELECT MIN(seq) FROM entries)`); err != nil {
		t.Fatal(err)
	}
	status, body := h.get(t, "/api/v1/exchanges.har", auditor)
	var e struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if status != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Error != "store_unavailable" ||
		e.RequestID == "" || bytes.Contains(body, []byte(`"entries"`)) {
		t.Errorf("HAR export with an unreadable record = %d %s, want 503 store_unavailable and no HAR", status, body)
	}
}
