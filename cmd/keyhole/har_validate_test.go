package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// harValidatorScript validates the HAR file argv[2] with the har-validator module at
// $KEYHOLE_HAR_VALIDATOR and prints what it rejects.
const harValidatorScript = `
const fs = require('fs');
const validator = require(process.env.KEYHOLE_HAR_VALIDATOR);
validator.har(JSON.parse(fs.readFileSync(process.argv[2], 'utf8')))
  .then(() => console.log('valid'))
  .catch((e) => { console.error(JSON.stringify(e.errors || e.message, null, 2)); process.exit(1); });
`

// TestHARExportValidates exports, as an auditor does, the HAR of a demo's traffic —
// allowed and masked reads, a forbidden, a denied, a guarded, an unrouted and an
// unauthenticated request, a delete held for approval, approved and then forwarded — and
// checks it with the har-validator npm package (v5) when KEYHOLE_HAR_VALIDATOR names its
// directory (CI installs it; KEYHOLE_REQUIRE_HAR_VALIDATOR=1 makes its absence a
// failure), and in any case the order, URLs and protocol HAR viewers read.
func TestHARExportValidates(t *testing.T) {
	validator := os.Getenv("KEYHOLE_HAR_VALIDATOR")
	node, nodeErr := exec.LookPath("node")
	d := startDemo(t)
	base := "http://" + d.data
	send := func(method, path, token, body string, hdr map[string]string) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	reader, writer := d.tokens["READER"], d.tokens["WRITER"]
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/crm/customers/1", reader, "", 200},                                          // allowed, masked
		{"GET", "/crm/customers", reader, "", 200},                                            // allowed, masked list
		{"DELETE", "/crm/customers/1", reader, "", 403},                                       // forbidden
		{"POST", "/crm/customers/bulk/delete", writer, "", 403},                               // denied
		{"POST", "/crm/customers", writer, `{"name":"x","note":"DROP TABLE customers"}`, 403}, // a guard
		{"GET", "/crm/admin", reader, "", 404},                                                // no route
		{"GET", "/crm/customers/1", "", "", 401},                                              // no token
	} {
		if resp := send(c.method, c.path, c.token, c.body, nil); resp.StatusCode != c.want {
			t.Fatalf("%s %s = %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	reason := map[string]string{"X-Keyhole-Reason": "customer asked to be forgotten"}
	held := send("DELETE", "/crm/customers/3", writer, "", reason)
	id := held.Header.Get("X-Keyhole-Approval")
	if held.StatusCode != 403 || id == "" {
		t.Fatalf("DELETE /crm/customers/3 = %d (approval %q), want 403 approval_pending", held.StatusCode, id)
	}
	approverEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": d.tokens["APPROVER"]}[k] }
	if _, errOut, err := runCmd(t, approverEnv, "approvals", "approve", id, "--server", "http://"+d.adm); err != nil {
		t.Fatalf("approvals approve %s = %v %s", id, err, errOut)
	}
	if resp := send("DELETE", "/crm/customers/3", writer, "", reason); resp.StatusCode != 204 {
		t.Fatalf("DELETE /crm/customers/3 once approved = %d, want 204", resp.StatusCode)
	}
	const sent = 9

	// Export as an auditor does, once every exchange is complete in the store.
	harFile := filepath.Join(t.TempDir(), "demo.har")
	auditorEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": d.tokens["KEYHOLE_TOKEN"]}[k] }
	type entry struct {
		StartedDateTime string
		Request         struct{ URL, HTTPVersion string }
		Response        struct{ Status int }
		Keyhole         struct{ Decision string } `json:"_keyhole"`
	}
	var doc struct{ Log struct{ Entries []entry } }
	waitFor(t, "every exchange in the HAR export", func() bool {
		if _, errOut, err := runCmd(t, auditorEnv, "records", "export", "--har", "--server", "http://"+d.adm, "-o", harFile); err != nil {
			t.Fatalf("records export --har = %v %s", err, errOut)
		}
		b, _ := os.ReadFile(harFile)
		doc.Log.Entries = nil
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("the export is not JSON: %v", err)
		}
		return len(doc.Log.Entries) == sent && !slices.ContainsFunc(doc.Log.Entries, func(e entry) bool { return e.Response.Status == 0 })
	})
	var decisions []string
	for i, e := range doc.Log.Entries {
		decisions = append(decisions, e.Keyhole.Decision)
		if !strings.HasPrefix(e.Request.URL, base+"/crm/") || e.Request.HTTPVersion != "HTTP/1.1" {
			t.Errorf("entries[%d]: url %s, httpVersion %q; want the gateway's %s and HTTP/1.1", i, e.Request.URL, e.Request.HTTPVersion, base)
		}
		if i > 0 && e.StartedDateTime < doc.Log.Entries[i-1].StartedDateTime {
			t.Errorf("entries[%d] started %s, before entries[%d] (%s): want oldest first", i, e.StartedDateTime, i-1, doc.Log.Entries[i-1].StartedDateTime)
		}
	}
	want := []string{"allowed", "allowed", "forbidden", "denied", "denied", "no_route", "unauthenticated", "approval_pending", "approved"}
	if !slices.Equal(decisions, want) {
		t.Errorf("decisions in the export %v, want %v (oldest first)", decisions, want)
	}

	switch {
	case validator == "" || nodeErr != nil:
		if os.Getenv("KEYHOLE_REQUIRE_HAR_VALIDATOR") == "1" {
			t.Fatalf("KEYHOLE_REQUIRE_HAR_VALIDATOR=1 but KEYHOLE_HAR_VALIDATOR is %q and node: %v (npm install --prefix DIR har-validator@5; KEYHOLE_HAR_VALIDATOR=DIR/node_modules/har-validator)", validator, nodeErr)
		}
		t.Skip("no har-validator (npm install --prefix DIR har-validator@5, then KEYHOLE_HAR_VALIDATOR=DIR/node_modules/har-validator); set KEYHOLE_REQUIRE_HAR_VALIDATOR=1 to fail instead")
	}
	script := filepath.Join(t.TempDir(), "validate.js")
	if err := os.WriteFile(script, []byte(harValidatorScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script, harFile)
	cmd.Env = append(os.Environ(), "KEYHOLE_HAR_VALIDATOR="+validator)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "valid" {
		b, _ := os.ReadFile(harFile)
		t.Errorf("har-validator rejects the export (%v):\n%s\nexport:\n%s", err, out, b)
	}
}
