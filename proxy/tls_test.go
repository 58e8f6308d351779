package proxy_test

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyholehq/keyhole/scrub"
)

func TestUpstreamTLSWithCAFile(t *testing.T) {
	h := newHarness(t)
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Api-Key"))
	}))
	t.Cleanup(backend.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: backend.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cfgEnv["TLS_URL"] = backend.URL
	h.load(t, fmt.Sprintf(`
identity:
  issuers: [{ issuer: "${ISSUER}", audiences: [api://keyhole] }]
upstreams:
  trusted:
    url: ${TLS_URL}
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
    tls: { ca_file: %q }
  untrusted:
    url: ${TLS_URL}
routes:
  - { name: trusted, match: { methods: [GET], path: /trusted }, upstream: trusted, allow: { scopes: [s] } }
  - { name: untrusted, match: { methods: [GET], path: /untrusted }, upstream: untrusted, allow: { scopes: [s] } }
`, ca))
	tok := h.token(t, map[string]any{"sub": "x", "scp": []string{"s"}})
	if resp, b := h.do(t, "GET", "/trusted", tok, "", nil); resp.StatusCode != 200 || string(b) != scrub.SameLength(crmKey) {
		t.Errorf("GET /trusted = %d %q, want 200 with the injected key echoed (and scrubbed)", resp.StatusCode, b)
	}
	if resp, b := h.do(t, "GET", "/untrusted", tok, "", nil); resp.StatusCode != 502 {
		t.Errorf("GET /untrusted (unknown CA) = %d %s, want 502", resp.StatusCode, b)
	}
}
