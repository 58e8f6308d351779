package recorder

import (
	"bytes"
	"net/http"
	"slices"

	"github.com/keyholehq/keyhole/scrub"
)

// Redacted replaces every redacted header value and secret value in a record.
const Redacted = "[REDACTED]"

// AlwaysRedactedHeaders are redacted from every record whatever the configuration says.
var AlwaysRedactedHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"}

// minSecretLen is the shortest value redacted by value (see scrub.MinLen).
const minSecretLen = scrub.MinLen

// Redactor removes credentials from records: the values of sensitive headers, and every
// occurrence of a configured secret value, raw or base64-, URL- or JSON-encoded, wherever
// it appears (a backend that echoes its API key in an error body must not put the key in
// the audit log). A Redactor is immutable and safe for concurrent use.
type Redactor struct {
	headers map[string]bool
	values  *scrub.Scrubber
}

// NewRedactor returns a Redactor for the header names (in any letter case; the
// AlwaysRedactedHeaders are added) and the secret values, in each of their scrub.Forms.
func NewRedactor(headers []string, secrets []string) *Redactor {
	r := &Redactor{headers: map[string]bool{}, values: scrub.New(secrets, scrub.Fixed(Redacted))}
	for _, h := range slices.Concat(AlwaysRedactedHeaders, headers) {
		r.headers[http.CanonicalHeaderKey(h)] = true
	}
	return r
}

// hides reports whether the values of the header named name are recorded as Redacted
// whole (the values of other headers have their secret values replaced).
func (r *Redactor) hides(name string) bool {
	return r.headers[http.CanonicalHeaderKey(name)]
}

// String returns s with every secret value replaced by Redacted.
func (r *Redactor) String(s string) string { return r.values.String(s) }

// Bytes returns p with every secret value replaced by Redacted. It returns p itself
// when there is nothing to replace.
func (r *Redactor) Bytes(p []byte) []byte { return r.values.Bytes(p) }

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
