package masking

import (
	"unicode/utf16"
	"unicode/utf8"
)

// escapeUnit decodes the escape at raw[i] == '\\' and returns the rune it stands for
// and its length in raw. A surrogate pair of \u escapes is one rune; a lone surrogate
// decodes to U+FFFD, as in encoding/json. ok is false for an invalid escape.
func escapeUnit(raw []byte, i int) (r rune, n int, ok bool) {
	if i+1 >= len(raw) {
		return 0, 1, false
	}
	switch raw[i+1] {
	case '"', '\\', '/':
		return rune(raw[i+1]), 2, true
	case 'b':
		return '\b', 2, true
	case 'f':
		return '\f', 2, true
	case 'n':
		return '\n', 2, true
	case 'r':
		return '\r', 2, true
	case 't':
		return '\t', 2, true
	case 'u':
		r := hex4(raw, i+2)
		if r < 0 {
			return 0, 2, false
		}
		if !utf16.IsSurrogate(r) {
			return r, 6, true
		}
		if r < 0xdc00 && i+11 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
			if lo := hex4(raw, i+8); 0xdc00 <= lo && lo <= 0xdfff {
				return utf16.DecodeRune(r, lo), 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	return 0, 2, false
}

// unescapeString appends the text of the JSON string body raw (without its quotes) to
// dst. Invalid escapes, which the walker has already refused, are copied as written.
func unescapeString(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		r, n, ok := escapeUnit(raw, i)
		if !ok {
			dst = append(dst, raw[i:min(i+n, len(raw))]...)
		} else {
			dst = utf8.AppendRune(dst, r)
		}
		i += n
	}
	return dst
}

// validEscapes reports whether every escape in the JSON string body raw is valid.
func validEscapes(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' {
			_, n, ok := escapeUnit(raw, i)
			if !ok {
				return false
			}
			i += n - 1
		}
	}
	return true
}

// mapToRaw converts findings made on the unescaped text of the JSON string body raw
// into offsets in raw. fs is sorted and without overlaps. A bound that falls inside
// an escape widens to the whole escape.
func mapToRaw(raw []byte, fs []finding) {
	k := 0 // the next bound: fs[k/2].start when k is even, fs[k/2].end when odd
	ri, ti := 0, 0
	for k < 2*len(fs) && ri < len(raw) {
		rl, tl := 1, 1
		if raw[ri] == '\\' {
			r, n, ok := escapeUnit(raw, ri)
			rl, tl = n, utf8.RuneLen(r)
			if !ok || tl < 0 {
				tl = min(n, len(raw)-ri) // as unescapeString copies it
			}
		}
		for k < 2*len(fs) {
			f := &fs[k/2]
			if k%2 == 0 {
				if f.start >= ti+tl {
					break
				}
				f.start = ri
			} else {
				if f.end > ti+tl {
					break
				}
				f.end = ri + rl
			}
			k++
		}
		ri += rl
		ti += tl
	}
	for ; k < 2*len(fs); k++ {
		if k%2 == 0 {
			fs[k/2].start = len(raw)
		} else {
			fs[k/2].end = len(raw)
		}
	}
}

// hex4 returns the value of the four hex digits at b[i:], or -1.
func hex4(b []byte, i int) rune {
	if i < 0 || i+4 > len(b) {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendJSONString appends s as a JSON string, quotes included.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendEscaped appends s escaped for the inside of a JSON string: '"', '\\' and control
// characters are escaped, invalid UTF-8 becomes U+FFFD.
func appendEscaped(dst, s []byte) []byte {
	const hexdigits = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
			continue
		}
		i++
	}
	return dst
}
