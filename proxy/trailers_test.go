package proxy_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestRequestTrailersDropped checks that a client's request trailers never reach an
// upstream: they arrive after the body, past the header hygiene and when.headers, so a
// chunked request could otherwise carry a credential, a spoofed X-Forwarded-For or a
// tenant the rules never saw (issue 11, item 4).
const guardBlock = `guards:
  - name: no-sql-drop
    match: { methods: ["*"], path: "/*", when: { body_regex: "(?i)\\bdrop\\s+table\\b" } }
    deny: "destructive SQL is never forwarded"
`

func TestRequestTrailersDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	trailers := []string{"Authorization", "Cookie", "X-Api-Key", "X-Forwarded-For", "X-Tenant", "X-Keyhole-Approval"}
	var tr strings.Builder
	for _, k := range trailers {
		fmt.Fprintf(&tr, "%s: evil-%s\r\n", k, strings.ToLower(k))
	}
	// Without the body guard the route streams the body: the trailers arrive as the
	// upstream reads it, after every check ran.
	streamed := strings.Replace(testConfig, guardBlock, "", 1)
	if streamed == testConfig {
		t.Fatal("test config has no body guard to remove")
	}
	for _, tc := range []struct {
		name, config string
	}{{"streamed", streamed}, {"buffered for a body guard", testConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			h.load(t, tc.config)
			size := 5
			h.crm.Reset()
			body := strings.Repeat("a", size)
			req := "POST /crm/customers HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + tok + "\r\n" +
				"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: " + strings.Join(trailers, ", ") + "\r\n\r\n" +
				fmt.Sprintf("%x\r\n%s\r\n0\r\n", len(body), body) + tr.String() + "\r\n"
			status, b := h.raw(t, req)
			if status != 200 {
				t.Fatalf("POST = %d %s, want 200", status, b)
			}
			reqs := h.crm.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if len(got.Trailer) != 0 {
				t.Errorf("upstream got trailers %v, want none", got.Trailer)
			}
			if v := got.Header.Values("Trailer"); len(v) != 0 {
				t.Errorf("upstream got Trailer header %q, want none", v)
			}
			if got.Body != body {
				t.Errorf("upstream body %d bytes, want %d", len(got.Body), len(body))
			}
		})
	}
}
