package jsonscan

import (
	"unicode/utf8"
)

// Strings calls fn with the decoded text of every string-like span of b, in order,
// until fn returns true, and reports whether it did. It never fails: b need not parse.
// decoded says whether the text differs from the span as written (it held an escape):
// a caller that has matched the raw bytes already may skip the others.
//
// A span opens at a double or single quote that is not inside another span and runs to the next
// unescaped same quote, or to the end of b; its text is decoded with UnescapeLenient.
// Last, when b holds a backslash, fn gets the whole of b decoded as one span, so that a
// parser that pairs quotes differently (or reads unquoted keys) still has its strings
// inside some text fn saw. Structure is not looked at: NaN, trailing data or commas,
// any depth, single quotes all leave the strings where a lenient parser (Python's json,
// Go's json.Decoder, JSON5) finds them. A guard that matches fn's texts and the raw
// bytes sees what such parsers read; it must transcode UTF-16/32 first (ToUTF8).
func Strings(b []byte, fn func(text []byte, decoded bool) bool) bool {
	var buf []byte
	backslash := false
	for i := 0; i < len(b); i++ {
		q := b[i]
		if q == '\\' {
			backslash = true
		}
		if q != '"' && q != '\'' {
			continue
		}
		j := i + 1
		esc := false
		for j < len(b) && b[j] != q {
			if b[j] == '\\' {
				esc, backslash = true, true
				j++
			}
			j++
		}
		raw := b[i+1 : min(j, len(b))]
		text := raw
		if esc {
			buf = UnescapeLenient(buf[:0], raw)
			text = buf
		}
		if fn(text, esc) {
			return true
		}
		i = j
	}
	if backslash {
		buf = UnescapeLenient(buf[:0], b)
		return fn(buf, true)
	}
	return false
}

// UnescapeLenient appends raw to dst with the escapes any common JSON-ish parser decodes
// replaced by what they stand for: JSON's (a lone surrogate becomes U+FFFD), JSON5's and
// JavaScript's \' \v \0 \xHH and line continuations, and for any other escaped
// character the character itself (JavaScript drops an unknown escape's backslash).
func UnescapeLenient(dst, raw []byte) []byte {
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
		if r, n, ok := EscapeUnit(raw, i); ok {
			dst = utf8.AppendRune(dst, r)
			i += n
			continue
		}
		if i+1 >= len(raw) {
			return append(dst, '\\')
		}
		switch e := raw[i+1]; e {
		case 'v':
			dst = append(dst, '\v')
		case '0':
			dst = append(dst, 0)
		case '\n':
		case '\r':
			if i+2 < len(raw) && raw[i+2] == '\n' {
				i++
			}
		case 'x':
			if h := hex2(raw, i+2); h >= 0 {
				dst = utf8.AppendRune(dst, h)
				i += 4
				continue
			}
			dst = append(dst, 'x')
		default:
			// Any other character, a multi-byte one included, stands for itself.
			_, n := utf8.DecodeRune(raw[i+1:])
			dst = append(dst, raw[i+1:i+1+n]...)
			i += 1 + n
			continue
		}
		i += 2
	}
	return dst
}

// hex2 returns the value of the two hex digits at b[i:], or -1.
func hex2(b []byte, i int) rune { return hexDigits(b, i, 2) }
