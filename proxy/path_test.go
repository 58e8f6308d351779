package proxy

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		target string
		want   string // "" means refused
	}{
		{"/", "/"},
		{"/crm/customers/42", "/crm/customers/42"},
		{"/crm/customers/42?expand=profile", "/crm/customers/42"},
		{"/crm/customers/", "/crm/customers/"},
		{"/api/%61dmin", "/api/admin"},
		{"/crm/customers/J%C3%B6rg", "/crm/customers/Jörg"},
		{"/crm/customers/Jörg", "/crm/customers/Jörg"},
		{"/a%20b", "/a b"},
		{"/a..b/c.d", "/a..b/c.d"},
		{"/.well-known/x", "/.well-known/x"},
		// refused
		{"/crm/../admin", ""},
		{"/crm/./admin", ""},
		{"/crm/..", ""},
		{"/..", ""},
		{"/crm//admin", ""},
		{"//admin", ""},
		{"/crm/%2e%2e/admin", ""},
		{"/crm/%2E%2E/admin", ""},
		{"/crm/.%2e/admin", ""},
		{"/crm%2fadmin", ""},
		{"/crm%2Fadmin", ""},
		{"/crm%5cadmin", ""},
		{"/crm\\admin", ""},
		{"/crm/%252e%252e/admin", ""},
		{"/crm/%25", ""},
		{"/admin;jsessionid=1", ""},
		{"/admin%3bx", ""},
		{"/admin#frag", ""},
		{"/admin%00", ""},
		{"/admin\x00", ""},
		{"/admin%0d%0aX-Injected:1", ""},
		{"/admin\x7f", ""},
		{"/admin%7F", ""},
		{"/%c0%ae%c0%ae/admin", ""},
		{"/%ff", ""},
		{"/%zz", ""},
		{"/%2", ""},
		{"http://evil.example/admin", ""},
		{"evil.example:443", ""},
		{"*", ""},
		{"/a?x#/../admin", ""},
		{"/a%C2%85b", ""},
		{"/a%E2%80%AEb", ""},
		{"/a\u202eb", ""},
		{"/%EF%BB%BFadmin", ""},
		{"/%EF%BC%8F..%EF%BC%8Fadmin", ""},
		{"/a\uff0fb", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := CanonicalPath(tt.target)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CanonicalPath(%q) = %q, want refusal", tt.target, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", tt.target, got, err, tt.want)
		}
	}
}

func TestForwardedPathRoundTrips(t *testing.T) {
	for _, p := range []string{"/a b", "/crm/customers/Jörg", "/x?y", "/x#y", "/a+b", "/~user/@me"} {
		fwd := forwardedPath(p)
		back, err := CanonicalPath(fwd)
		if err != nil || back != p {
			t.Errorf("CanonicalPath(forwardedPath(%q)=%q) = %q, %v; want %q", p, fwd, back, err, p)
		}
	}
}

// FuzzCanonicalPath checks that an accepted path is unambiguous: it has no dot or empty
// segments, no control characters, is valid UTF-8, and what is forwarded canonicalises
// back to exactly what was matched.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/a/../b", "/%2e", "/a%2fb", "/a;b", "/J%C3%B6rg", "//x", "/a?b=c", "/%c0%ae"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		p, err := CanonicalPath(target)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || !utf8.ValidString(p) {
			t.Fatalf("CanonicalPath(%q) = %q: not an absolute UTF-8 path", target, p)
		}
		for _, seg := range strings.Split(p[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CanonicalPath(%q) = %q: dot segment", target, p)
			}
		}
		if strings.Contains(p, "//") || strings.ContainsAny(p, "\\;\x00\r\n") {
			t.Fatalf("CanonicalPath(%q) = %q: ambiguous byte", target, p)
		}
		back, err := CanonicalPath(forwardedPath(p))
		if err != nil || back != p {
			t.Fatalf("forwarded %q canonicalises to %q, %v; matched %q", forwardedPath(p), back, err, p)
		}
	})
}
