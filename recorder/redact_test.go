package recorder

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestRedactor checks that a secret is found in every encoding a record may hold it in.
func TestRedactor(t *testing.T) {
	const key = "sk_live_PLANTED/key+42="
	r := NewRedactor([]string{"x-api-key"}, []string{key, "Bearer tok-PLANTED-9f8e", "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:pw-PLANTED-77"))})
	tests := []struct {
		name, in string
	}{
		{"raw", "echo " + key},
		{"base64", base64.StdEncoding.EncodeToString([]byte(key))},
		{"base64url unpadded", base64.RawURLEncoding.EncodeToString([]byte(key))},
		{"query escaped", "k=" + url.QueryEscape(key)},
		{"path escaped", "/x/" + url.PathEscape(key)},
		{"json escaped", `{"k":"sk_live_PLANTED\/key+42="}`},
		{"bearer credential alone", "token tok-PLANTED-9f8e here"},
		{"basic password alone", "password was pw-PLANTED-77"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.String(tt.in)
			if strings.Contains(got, "PLANTED") || !strings.Contains(got, Redacted) {
				t.Errorf("String(%q) = %q, want the secret replaced", tt.in, got)
			}
		})
	}
	h := r.Header(http.Header{"X-Api-Key": {"whatever"}, "Cookie": {"a=b"}, "X-Other": {"has " + key}, "Accept": {"json"}})
	for k, want := range map[string]string{"X-Api-Key": Redacted, "Cookie": Redacted, "X-Other": "has " + Redacted, "Accept": "json"} {
		if got := h.Get(k); got != want {
			t.Errorf("Header %s = %q, want %q", k, got, want)
		}
	}
	if got := NewRedactor(nil, []string{"short"}).String("a short word"); got != "a short word" {
		t.Errorf("a value shorter than %d bytes was redacted: %q", minSecretLen, got)
	}
}
