package masking

import (
	"unicode/utf8"

	"github.com/keyholehq/keyhole/jsonscan"
)

// mapToRaw converts findings made on the unescaped text of the JSON string body raw
// into offsets in raw. fs is sorted and without overlaps. A bound that falls inside
// an escape widens to the whole escape.
func mapToRaw(raw []byte, fs []finding) {
	k := 0 // the next bound: fs[k/2].start when k is even, fs[k/2].end when odd
	ri, ti := 0, 0
	for k < 2*len(fs) && ri < len(raw) {
		rl, tl := 1, 1
		if raw[ri] == '\\' {
			r, n, ok := jsonscan.EscapeUnit(raw, ri)
			rl, tl = n, utf8.RuneLen(r)
			if !ok || tl < 0 {
				tl = min(n, len(raw)-ri) // as jsonscan.Unescape copies it
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
