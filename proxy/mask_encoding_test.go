package proxy_test

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// TestMaskEncodedJSON: JSON with a BOM or in UTF-16/32 is JSON to its clients, so a
// pass_non_json route must mask it, not pass it on as "not JSON" (issue 11 item 7). It is
// sent masked as UTF-8, labelled charset=utf-8.
func TestMaskEncodedJSON(t *testing.T) {
	h := newHarness(t)
	h.load(t, maskConfig)
	bodies := map[string]string{
		"/utf8-bom":     "\ufeff" + customerJSON,
		"/utf16le-bom":  testkit.EncodeText(customerJSON, 2, false, true),
		"/utf16be":      testkit.EncodeText(customerJSON, 2, true, false),
		"/utf32le-bom":  testkit.EncodeText(customerJSON, 4, false, true),
		"/utf32be":      testkit.EncodeText(customerJSON, 4, true, false),
		"/utf16-plain":  testkit.EncodeText("plain words", 2, false, true),
		"/utf16-broken": testkit.EncodeText(`{"ssn":"`+plantedSSN, 2, false, true),
	}
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-16")
		io.WriteString(w, bodies[strings.TrimPrefix(r.URL.Path, "/pass")])
	}
	tok := h.token(t, map[string]any{"sub": "ada", "scp": []string{"crm.read"}})
	for _, path := range []string{"/utf8-bom", "/utf16le-bom", "/utf16be", "/utf32le-bom", "/utf32be"} {
		t.Run(path, func(t *testing.T) {
			resp, b := h.do(t, "GET", "/pass"+path, tok, "", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s, want 200", resp.StatusCode, b)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("body %q is not UTF-8 JSON: %v", b, err)
			}
			if doc["ssn"] != "[REDACTED]" || strings.Contains(string(b), plantedSSN) || strings.Contains(string(b), plantedEmail) {
				t.Errorf("body %s, want ssn redacted and no planted value", b)
			}
			_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if params["charset"] != "utf-8" {
				t.Errorf("Content-Type %q, want charset=utf-8", resp.Header.Get("Content-Type"))
			}
		})
	}
	t.Run("UTF-16 text that is not JSON passes as it was", func(t *testing.T) {
		resp, b := h.do(t, "GET", "/pass/utf16-plain", tok, "", nil)
		if resp.StatusCode != 200 || string(b) != bodies["/utf16-plain"] {
			t.Fatalf("status %d %q, want 200 and the body unchanged", resp.StatusCode, b)
		}
	})
	t.Run("truncated UTF-16 JSON is refused", func(t *testing.T) {
		resp, b := h.do(t, "GET", "/pass/utf16-broken", tok, "", nil)
		if e := decodeErr(t, resp, b); resp.StatusCode != 502 || e.Error != "mask_failed" {
			t.Fatalf("status %d %s, want 502 mask_failed", resp.StatusCode, b)
		}
	})
}
