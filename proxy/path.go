package proxy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// allowedMethods are the methods the gateway forwards. TRACE reflects headers back (cross-site
// tracing) and CONNECT opens a tunnel nobody inspects, so both are refused with the rest.
var allowedMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true,
}

// lookalikes are characters some backends normalise (NFKC) into '/', '\' or '.', which
// would give them a path the rules never judged.
var lookalikes = map[rune]bool{
	'\uFF0E': true, '\uFF0F': true, '\uFF3C': true, '\u2215': true, '\u2216': true, '\u2044': true,
	'\u29F8': true, '\u29F9': true, '\uFE68': true, '\u2024': true, '\uFE52': true,
}

const allowHeader = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// CanonicalPath returns the one canonical, percent-decoded form of the path in a raw
// request target (r.RequestURI, as sent on the wire), or an error saying why the target is
// ambiguous. The gateway matches routes on this form and forwards exactly this form,
// re-escaped by forwardedPath, so that no backend can read a path the rules did not judge.
//
// Refused: anything but origin-form ("/..."); control characters (raw or encoded); '#';
// ';' path parameters (raw or encoded: Tomcat and Spring read /admin;x=y as /admin);
// raw '\' and encoded '/', '\', '.', '%' (each lets a backend decode a second path:
// /a%2f..%2fadmin, %252e, /..%5cadmin); bad or double percent-encoding; invalid UTF-8,
// which also refuses overlong forms such as %c0%ae; empty segments ("//"); "." and ".."
// segments. A trailing slash is kept: it is not ambiguous, only a different path.
func CanonicalPath(target string) (string, error) {
	if target == "*" {
		return "", errors.New("asterisk-form request target is not accepted")
	}
	if strings.IndexByte(target, '#') >= 0 {
		// Go keeps a '#' of the query in RawQuery and forwards it; a backend may cut there.
		return "", errors.New("fragment (#) in request target")
	}
	raw, _, _ := strings.Cut(target, "?")
	if !strings.HasPrefix(raw, "/") {
		if strings.Contains(raw, "://") {
			return "", errors.New("absolute-form request target is not accepted; send the path only")
		}
		return "", errors.New("request target must start with /")
	}
	var (
		b       strings.Builder
		decoded = false
	)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", errors.New("control character in path")
		case c == '#':
			return "", errors.New("fragment (#) in request target")
		case c == ';':
			return "", errors.New("path parameters (;) are not accepted")
		case c == '\\':
			return "", errors.New("backslash in path")
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", errors.New("malformed percent-encoding in path")
			}
			v := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			switch {
			case v == '/' || v == '\\' || v == '.' || v == '%' || v == ';':
				return "", errors.New("encoded '/', '\\', '.', '%' or ';' in path")
			case v < 0x20 || v == 0x7f:
				return "", errors.New("encoded control character in path")
			}
			if !decoded {
				b.Grow(len(raw))
				b.WriteString(raw[:i])
				decoded = true
			}
			b.WriteByte(v)
			i += 2
		default:
			if decoded {
				b.WriteByte(c)
			}
		}
	}
	p := raw
	if decoded {
		p = b.String()
	}
	if !utf8.ValidString(p) {
		return "", errors.New("path is not valid UTF-8")
	}
	if hasNonASCII(p) {
		for _, r := range p {
			if r >= 0x80 && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || lookalikes[r]) {
				return "", fmt.Errorf("character %U in path is refused (control, invisible or a slash/dot lookalike)", r)
			}
		}
	}
	// Segments: p starts with '/', so the first element of the split is always "".
	rest := p[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		switch {
		case seg == "" && more:
			return "", errors.New("empty path segment (//)")
		case seg == "." || seg == "..":
			return "", errors.New("dot segment in path")
		}
		rest = tail
	}
	return p, nil
}

// forwardedPath returns the escaped form of a canonical path as sent upstream.
func forwardedPath(canonical string) string {
	return (&url.URL{Path: canonical}).EscapedPath()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
