package recorder

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Redacted replaces every redacted header value and secret value in a record.
const Redacted = "[REDACTED]"

// AlwaysRedactedHeaders are redacted from every record whatever the configuration says.
var AlwaysRedactedHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"}

// minSecretLen is the shortest value redacted by value: replacing every "abcd" in every
// record would destroy the records and protect nothing a guess would not find.
const minSecretLen = 8

// Redactor removes credentials from records: the values of sensitive headers, and every
// occurrence of a configured secret value, raw or base64-, URL- or JSON-encoded, wherever
// it appears (a backend that echoes its API key in an error body must not put the key in
// the audit log). A Redactor is immutable and safe for concurrent use.
type Redactor struct {
	headers map[string]bool
	values  *strings.Replacer // nil when there are no secret values
}

// NewRedactor returns a Redactor for the header names (in any letter case; the
// AlwaysRedactedHeaders are added) and the secret values.
func NewRedactor(headers []string, secrets []string) *Redactor {
	r := &Redactor{headers: map[string]bool{}}
	for _, h := range slices.Concat(AlwaysRedactedHeaders, headers) {
		r.headers[http.CanonicalHeaderKey(h)] = true
	}
	var forms []string
	for _, s := range secrets {
		forms = append(forms, secretForms(s)...)
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) }) // longest first
	forms = slices.Compact(forms)
	if len(forms) > 0 {
		pairs := make([]string, 0, 2*len(forms))
		for _, f := range forms {
			pairs = append(pairs, f, Redacted)
		}
		r.values = strings.NewReplacer(pairs...)
	}
	return r
}

// secretForms returns the encodings of s that a record may hold: s itself and, for an
// authorization value such as "Bearer abc", the credential after the scheme (and for
// Basic, the decoded user:password and the password), each raw, base64 (standard and
// URL alphabets, padded or not), URL-encoded (query and path) and JSON-escaped (with and without escaped slashes).
func secretForms(s string) []string {
	s = strings.TrimSpace(s)
	seeds := []string{s}
	if scheme, cred, ok := strings.Cut(s, " "); ok {
		cred = strings.TrimSpace(cred)
		seeds = append(seeds, cred)
		if strings.EqualFold(scheme, "Basic") {
			if dec, err := base64.StdEncoding.DecodeString(cred); err == nil {
				seeds = append(seeds, string(dec))
				if _, pass, ok := strings.Cut(string(dec), ":"); ok {
					seeds = append(seeds, pass)
				}
			}
		}
	}
	var out []string
	for _, v := range seeds {
		if len(v) < minSecretLen {
			continue
		}
		js, _ := json.Marshal(v)
		out = append(out, v,
			base64.StdEncoding.EncodeToString([]byte(v)),
			base64.RawStdEncoding.EncodeToString([]byte(v)),
			base64.URLEncoding.EncodeToString([]byte(v)),
			base64.RawURLEncoding.EncodeToString([]byte(v)),
			url.QueryEscape(v),
			url.PathEscape(v),
			string(js[1:len(js)-1]),
			// Some JSON encoders (PHP's, Java's older ones) escape '/' as well.
			strings.ReplaceAll(string(js[1:len(js)-1]), "/", `\/`),
		)
	}
	return out
}

// Header returns a copy of h with the values of redacted headers replaced by Redacted
// and secret values replaced wherever they appear in the others.
func (r *Redactor) Header(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		red := r.headers[http.CanonicalHeaderKey(k)]
		cp := make([]string, len(vs))
		for i, v := range vs {
			if red {
				cp[i] = Redacted
			} else {
				cp[i] = r.String(v)
			}
		}
		out[k] = cp
	}
	return out
}

// String returns s with every secret value replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r.values == nil {
		return s
	}
	return r.values.Replace(s)
}

// Bytes returns p with every secret value replaced by Redacted. It returns p itself
// when there is nothing to replace.
func (r *Redactor) Bytes(p []byte) []byte {
	if r.values == nil {
		return p
	}
	s := r.values.Replace(string(p))
	if len(s) == len(p) && s == string(p) {
		return p
	}
	return []byte(s)
}

// without returns s with each of extra (per-request secrets such as the client's own
// token) replaced by Redacted.
func without(p []byte, extra []string) []byte {
	for _, x := range extra {
		if len(x) >= minSecretLen && bytes.Contains(p, []byte(x)) {
			p = bytes.ReplaceAll(p, []byte(x), []byte(Redacted))
		}
	}
	return p
}
