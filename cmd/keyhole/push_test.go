package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// pushConfig is a gateway whose route masks ssn and injects a credential, recording into
// a store shared by the gateways of a test, and pushing to a SIEM.
const pushConfig = `
listen: "%s"
admin: { listen: "%s" }
identity:
  issuers:
    - { issuer: "%s", audiences: [api://keyhole] }
upstreams:
  crm:
    url: "%s"
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
routes:
  - name: read
    match: { methods: [GET], path: "/customers/{id}" }
    upstream: crm
    allow: { groups: [readers] }
    mask: [{ field: ssn, action: redact }]
recorder:
  store: "sqlite://%s"
  export:
    webhook: "${SIEM_URL}"
    format: jsonl
    batch: 2
    interval: 100ms
    headers: { Authorization: "Splunk ${SIEM_TOKEN}" }
`

// TestPushExport runs gateways that push to an httptest SIEM: each exchange arrives once
// across a restart, masked values stay masked and credentials redacted in what is pushed,
// and the SIEM's token is in no log line.
func TestPushExport(t *testing.T) {
	const (
		crmKey    = "push-crm-key-0001"
		siemToken = "push-siem-token-0002"
		ssn       = "123-45-6789"
	)
	var mu sync.Mutex
	var ids []string
	var raw bytes.Buffer
	siem := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != siemToken || r.Header.Get("Authorization") != "Splunk "+siemToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		mu.Lock()
		defer mu.Unlock()
		raw.Write(body.Bytes())
		sc := bufio.NewScanner(&body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line struct {
				ID string `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &line)
			ids = append(ids, line.ID)
		}
	}))
	t.Cleanup(siem.Close)
	received := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ids)
	}

	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	up.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"Ada","ssn":%q,"debug_key":%q}`, ssn, r.Header.Get("X-Api-Key"))
	}
	store := filepath.Join(t.TempDir(), "records.db")
	env := []string{"CRM_KEY=" + crmKey, "SIEM_TOKEN=" + siemToken, "SIEM_URL=" + siem.URL + "/services/collector/raw?token=" + siemToken}
	cfg := func(data, adm string) string {
		return fmt.Sprintf(pushConfig, data, adm, iss.Config().Issuer, up.URL, store)
	}
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})

	var logs strings.Builder
	for gw, n := range []int{4, 3} {
		p := startFault(t, cfg, env...)
		before := len(received())
		for i := range n {
			if s, body := get(fmt.Sprintf("http://%s/customers/%d-%d", p.Data, gw, i), tok); s != http.StatusOK || strings.Contains(body, ssn) {
				t.Fatalf("GET = %d %s, want 200 and the ssn masked", s, body)
			}
		}
		waitFor(t, fmt.Sprintf("gateway %d's exchanges at the SIEM", gw), func() bool { return len(received()) >= before+n })
		waitFor(t, "lag 0", func() bool { return p.metric("keyhole_export_lag_seconds") == 0 })
		if got := p.metric("keyhole_export_delivered_total"); got != float64(n) {
			t.Errorf("gateway %d: keyhole_export_delivered_total = %v, want %d", gw, got, n)
		}
		if got := p.metric("keyhole_export_active"); got != 1 {
			t.Errorf("gateway %d: keyhole_export_active = %v, want 1", gw, got)
		}
		// A clean stop releases the lease: the next gateway pushes at once.
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-p.exited
		logs.WriteString(p.Stderr.String())
	}

	got := received()
	want := slices.Sorted(func(yield func(string) bool) {
		for id := range completedIDs(t, store) {
			if !yield(id) {
				return
			}
		}
	})
	if len(got) != 7 || !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("SIEM received %d exchanges %v, want the store's 7, each once: %v", len(got), got, want)
	}
	mu.Lock()
	pushed := raw.String()
	mu.Unlock()
	for _, secret := range []string{ssn, crmKey, siemToken} {
		if strings.Contains(pushed, secret) {
			t.Errorf("the SIEM received %q", secret)
		}
	}
	if !strings.Contains(pushed, "[REDACTED]") {
		t.Errorf("what was pushed shows no masked value:\n%s", pushed)
	}
	if strings.Contains(logs.String(), siemToken) || strings.Contains(logs.String(), "/services/collector") {
		t.Errorf("the gateways' logs hold the webhook's token or URL:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "cannot release") {
		t.Errorf("a gateway could not release the lease at shutdown:\n%s", logs.String())
	}
}
