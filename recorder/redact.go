package recorder

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
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
	filter  *prefixFilter     // tells at once that a text holds no secret value; nil: always replace
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
		r.filter = newPrefixFilter(forms)
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

// hides reports whether the values of the header named name are recorded as Redacted
// whole (the values of other headers have their secret values replaced).
func (r *Redactor) hides(name string) bool {
	return r.headers[http.CanonicalHeaderKey(name)]
}

// String returns s with every secret value replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r.values == nil || r.filter != nil && !r.filter.mayHold([]byte(s)) {
		return s
	}
	return r.values.Replace(s)
}

// Bytes returns p with every secret value replaced by Redacted. It returns p itself
// when there is nothing to replace.
func (r *Redactor) Bytes(p []byte) []byte {
	if r.values == nil || r.filter != nil && !r.filter.mayHold(p) {
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

// prefixFilter answers, in one pass at about a nanosecond a byte, whether a text may
// hold one of a set of strings: it looks up the first w bytes at every position of the
// text in a bit set of the strings' first w bytes (w, at most 8, the shortest string's
// length), then confirms a hit exactly. It never answers false for a text that holds
// one; the Replacer then does the (rare) replacing. Most records hold no secret, and
// strings.Replacer with dozens of strings costs some 7 ns a byte to find that out.
type prefixFilter struct {
	w     int
	mask  uint64
	bits  [1 << 16 / 64]uint64 // hashed prefixes
	exact map[uint64]bool      // the prefixes themselves
}

// newPrefixFilter returns the filter for forms, or nil when one is shorter than 4 bytes
// (too short a prefix to filter on; the caller then always replaces).
func newPrefixFilter(forms []string) *prefixFilter {
	w := 8
	for _, f := range forms {
		w = min(w, len(f))
	}
	if w < 4 {
		return nil
	}
	f := &prefixFilter{w: w, mask: ^uint64(0) >> (64 - 8*w), exact: map[uint64]bool{}}
	for _, s := range forms {
		k := f.key([]byte(s))
		f.exact[k] = true
		h := hashPrefix(k)
		f.bits[h/64] |= 1 << (h % 64)
	}
	return f
}

// key is the first w bytes of p (len(p) >= w), little-endian in a word.
func (f *prefixFilter) key(p []byte) uint64 {
	var buf [8]byte
	copy(buf[:], p[:f.w])
	return binary.LittleEndian.Uint64(buf[:])
}

func hashPrefix(k uint64) uint64 { return (k * 0x9E3779B97F4A7C15) >> 48 }

// mayHold reports whether p may hold one of the filter's strings.
func (f *prefixFilter) mayHold(p []byte) bool {
	n := len(p) - f.w
	i := 0
	// Whole 8-byte loads while they stay inside p; the tail goes through key.
	for ; i <= len(p)-8 && i <= n; i++ {
		k := binary.LittleEndian.Uint64(p[i:]) & f.mask
		h := hashPrefix(k)
		if f.bits[h/64]&(1<<(h%64)) != 0 && f.exact[k] {
			return true
		}
	}
	for ; i <= n; i++ {
		if f.exact[f.key(p[i:])] {
			return true
		}
	}
	return false
}
