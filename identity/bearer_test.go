package identity_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/identity"
)

func TestBearerToken(t *testing.T) {
	const tok = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_~+/=="
	tests := []struct {
		name   string
		values []string // Authorization header values; nil: no header
		want   string
		reason identity.Reason
	}{
		{name: "bearer", values: []string{"Bearer " + tok}, want: tok},
		{name: "lower-case scheme", values: []string{"bearer " + tok}, want: tok},
		{name: "upper-case scheme", values: []string{"BEARER " + tok}, want: tok},
		{name: "no header", reason: identity.ReasonMissing},
		{name: "empty header", values: []string{""}, reason: identity.ReasonMissing},
		{name: "two headers", values: []string{"Bearer " + tok, "Bearer " + tok}, reason: identity.ReasonMissing},
		{name: "basic", values: []string{"Basic dXNlcjpwYXNz"}, reason: identity.ReasonMissing},
		{name: "scheme glued to token", values: []string{"Bearer" + tok}, reason: identity.ReasonMissing},
		{name: "token only", values: []string{tok}, reason: identity.ReasonMissing},
		{name: "bearer without token", values: []string{"Bearer"}, reason: identity.ReasonMalformed},
		{name: "bearer and a space", values: []string{"Bearer "}, reason: identity.ReasonMalformed},
		{name: "two parts", values: []string{"Bearer a b"}, reason: identity.ReasonMalformed},
		{name: "two spaces", values: []string{"Bearer  " + tok}, reason: identity.ReasonMalformed},
		{name: "tab", values: []string{"Bearer\t" + tok}, reason: identity.ReasonMissing},
		{name: "tab inside", values: []string{"Bearer a\tb"}, reason: identity.ReasonMalformed},
		// Characters are Verify's to judge (strict base64url): these pass through.
		{name: "comma", values: []string{"Bearer a,b"}, want: "a,b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("Authorization", v)
			}
			got, e := identity.BearerToken(h)
			if tt.reason == "" {
				if e != nil || got != tt.want {
					t.Fatalf("BearerToken = %q, %v; want %q", got, e, tt.want)
				}
				return
			}
			if e == nil {
				t.Fatalf("BearerToken = %q, nil; want reason %s", got, tt.reason)
			}
			if e.Reason != tt.reason {
				t.Errorf("BearerToken reason = %s (%q), want %s", e.Reason, e.Msg, tt.reason)
			}
			if got != "" {
				t.Errorf("BearerToken returned %q with an error", got)
			}
			for _, v := range tt.values {
				if _, cred, ok := strings.Cut(v, " "); ok && len(cred) > 3 && strings.Contains(e.Error(), cred) {
					t.Errorf("error %q contains the credential", e.Error())
				}
			}
		})
	}
}
