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

// redaction is a Redactor with the secrets of one request added, such as the client's
// own token. It tells in one pass over a text whether the text holds any form of the
// Redactor's secrets or any of the request's (issue 17: one bytes.Index pass per request
// secret, after the pass for the forms, cost more than encoding the record), and only
// then replaces them, exactly as without(r.Bytes(p), extra) does. It is safe for
// concurrent use.
type redaction struct {
	red    *Redactor
	extra  []string // the request's secrets redacted by value: those of minSecretLen or more
	filter *scrub.Filter
}

// with returns the redaction of r and extra.
func (r *Redactor) with(extra []string) *redaction {
	var long []string
	for _, x := range extra {
		if len(x) >= minSecretLen {
			long = append(long, x)
		}
	}
	return &redaction{red: r, extra: long, filter: r.values.Filter().With(long)}
}

// bytes returns p with every secret value and every extra replaced by Redacted. It
// returns p itself when there is nothing to replace.
func (x *redaction) bytes(p []byte) []byte {
	if !x.filter.Holds(p) {
		return p
	}
	return without(x.red.Bytes(p), x.extra)
}

// string returns s with every secret value and every extra replaced by Redacted.
func (x *redaction) string(s string) string {
	if !x.filter.Holds([]byte(s)) {
		return s
	}
	return string(without(x.red.Bytes([]byte(s)), x.extra))
}

// without returns p with each of extra replaced by Redacted, one after the other.
func without(p []byte, extra []string) []byte {
	for _, x := range extra {
		if len(x) >= minSecretLen && bytes.Contains(p, []byte(x)) {
			p = bytes.ReplaceAll(p, []byte(x), []byte(Redacted))
		}
	}
	return p
}
