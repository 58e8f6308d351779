package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// TestGuardLenientBodiesEndToEnd posts bodies a lenient backend parser reads as DROP TABLE
// (issue 11 item 3): each must be denied by the guard and never reach the upstream.
func TestGuardLenientBodiesEndToEnd(t *testing.T) {
	h := newHarness(t)
	h.load(t, strings.Replace(testConfig, "max_request_body: 1KiB", "max_request_body: 64KiB", 1))
	tok := h.token(t, map[string]any{"sub": "ada", "scp": []string{"crm.write"}})
	const doc = `{"q":"DROP\u0020TABLE users"}`
	const plainDoc = `{"q":"DROP TABLE users"}`
	tests := []struct {
		name, body, contentType string
	}{
		{"NaN", `{"q":"DROP\u0020TABLE users","n":NaN}`, "application/json"},
		{"trailing data", doc + ` x`, "application/json"},
		{"513 nested arrays", strings.Repeat("[", 513) + doc + strings.Repeat("]", 513), "application/json"},
		{"trailing comma", `{"q":"DROP\u0020TABLE users",}`, "application/json"},
		{"UTF-16LE BOM", testkit.EncodeText(plainDoc, 2, false, true), "application/json"},
		{"UTF-16BE BOM", testkit.EncodeText(plainDoc, 2, true, true), "application/json"},
		{"UTF-32LE BOM", testkit.EncodeText(plainDoc, 4, false, true), "application/json"},
		{"UTF-32BE BOM", testkit.EncodeText(plainDoc, 4, true, true), "application/json"},
		{"UTF-16LE", testkit.EncodeText(plainDoc, 2, false, false), "application/json"},
		{"UTF-16BE", testkit.EncodeText(plainDoc, 2, true, false), "application/json"},
		{"UTF-32LE", testkit.EncodeText(plainDoc, 4, false, false), "application/json"},
		{"UTF-32BE", testkit.EncodeText(plainDoc, 4, true, false), "application/json"},
		{"undecodable charset", `{"q":"+AEQ-ROP TABLE users"}`, "application/json; charset=utf-7"},
		{"invalid UTF-16", testkit.EncodeText(`{"q":"x"}`, 2, false, true) + "!", "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			resp, b := h.do(t, "POST", "/crm/customers", tok, tt.body, http.Header{"Content-Type": {tt.contentType}})
			if e := decodeErr(t, resp, b); resp.StatusCode != 403 || e.Error != "denied" {
				t.Fatalf("status %d %s, want 403 denied", resp.StatusCode, b)
			}
			if n := len(h.crm.Requests()); n != 0 {
				t.Errorf("upstream received %d requests, want 0", n)
			}
		})
	}
	t.Run("harmless lenient body passes", func(t *testing.T) {
		h.crm.Reset()
		resp, b := h.do(t, "POST", "/crm/customers", tok, testkit.EncodeText(`{"q":"select 1"}`, 2, false, true), nil)
		if resp.StatusCode != 200 || len(h.crm.Requests()) != 1 {
			t.Fatalf("status %d %s, %d upstream requests; want 200 and 1", resp.StatusCode, b, len(h.crm.Requests()))
		}
	})
}
