// Package scrub finds secret values, in the encodings a careless backend or log line may
// hold them in, and replaces them. The recorder uses it to keep credentials out of
// records, and the data plane to keep an upstream's credential, echoed back by the
// upstream, from reaching the client.
package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// MinLen is the length of the shortest value scrubbed: replacing every "abcd" in every
// text would destroy the text and protect nothing a guess would not find.
const MinLen = 8

// Scrubber replaces every form of a set of secret values (see Forms). A Scrubber is
// immutable and safe for concurrent use; a nil *Scrubber replaces nothing.
type Scrubber struct {
	forms    []string          // longest first
	replacer *strings.Replacer // nil when there are no forms
	filter   *Filter           // tells in one pass whether a text holds a form
}

// New returns a Scrubber for secrets that replaces each form f of them with replace(f).
func New(secrets []string, replace func(form string) string) *Scrubber {
	var forms []string
	for _, s := range secrets {
		forms = append(forms, Forms(s)...)
	}
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) }) // longest first
	forms = slices.Compact(forms)
	s := &Scrubber{forms: forms}
	if len(forms) > 0 {
		pairs := make([]string, 0, 2*len(forms))
		for _, f := range forms {
			pairs = append(pairs, f, replace(f))
		}
		s.replacer = strings.NewReplacer(pairs...)
	}
	s.filter = NewFilter(forms)
	return s
}

// Fixed returns a replace function for New that writes rep for every form.
func Fixed(rep string) func(string) string { return func(string) string { return rep } }

// SameLength is a replace function for New that writes "[REDACTED" padded with '*' and
// closed with ']' to the form's own length (all '*' for a form shorter than 10 bytes), so
// that a Content-Length or byte range stays true of the scrubbed body.
func SameLength(form string) string {
	if len(form) < len("[REDACTED]") {
		return strings.Repeat("*", len(form))
	}
	return "[REDACTED" + strings.Repeat("*", len(form)-len("[REDACTED]")) + "]"
}

// Filter returns the Filter of s's forms: With adds a text's own secrets to it, so that
// one pass tells whether the text holds any of them. A nil *Scrubber's holds none.
func (s *Scrubber) Filter() *Filter {
	if s == nil {
		return NewFilter(nil)
	}
	return s.filter
}

// Empty reports whether s has nothing to replace.
func (s *Scrubber) Empty() bool { return s == nil || s.replacer == nil }

// Forms returns the encodings of secret that a text may hold: secret itself and, for an
// authorization value such as "Bearer abc", the credential after the scheme (and for
// Basic, the decoded user:password and the password), each raw, base64 (standard and URL
// alphabets, padded or not), URL-encoded (query and path) and JSON-escaped (with and
// without escaped slashes). Values shorter than MinLen have no forms.
func Forms(secret string) []string {
	secret = strings.TrimSpace(secret)
	seeds := []string{secret}
	if scheme, cred, ok := strings.Cut(secret, " "); ok {
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
		if len(v) < MinLen {
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

// String returns text with every form replaced.
func (s *Scrubber) String(text string) string {
	if s.Empty() || !s.filter.Holds([]byte(text)) {
		return text
	}
	return s.replacer.Replace(text)
}

// Bytes returns p with every form replaced. It returns p itself when there is nothing to
// replace.
func (s *Scrubber) Bytes(p []byte) []byte {
	if s.Empty() || !s.filter.Holds(p) {
		return p
	}
	out := s.replacer.Replace(string(p))
	if len(out) == len(p) && out == string(p) {
		return p
	}
	return []byte(out)
}

// cut returns how many bytes of data can be scrubbed and passed on before the rest is
// known: none of the bytes after the cut may begin a form that later bytes complete, and
// no form found in data spans the cut. Holding back only the bytes that may begin a form
// is not enough: "…ZQ" may end one form while "Qm" begins another, and a cut between Z and
// Q would pass the first form on in two halves, neither of them a form (FuzzScrubber found
// it). Moving the cut back to the start of a spanning form keeps the hold under twice the
// longest form.
func (s *Scrubber) cut(data []byte) int {
	c := len(data) - s.partial(data)
	for moved := true; moved; {
		moved = false
		for _, f := range s.forms {
			for i := max(0, c-len(f)+1); i < c; i++ {
				if bytes.HasPrefix(data[i:], []byte(f)) {
					c, moved = i, true
					break
				}
			}
		}
	}
	return c
}

// partial returns the length of the longest suffix of p that is a proper prefix of a
// form: bytes that may be the start of a form the next bytes complete.
func (s *Scrubber) partial(p []byte) int {
	best := 0
	for _, f := range s.forms {
		for k := min(len(f)-1, len(p)); k > best; k-- {
			if string(p[len(p)-k:]) == f[:k] {
				best = k
				break
			}
		}
	}
	return best
}
