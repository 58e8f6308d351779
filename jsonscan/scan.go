package jsonscan

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Fault is what makes a span of bytes not valid JSON, as the primitives report it.
type Fault uint8

// The faults of the primitives.
const (
	NoFault      Fault = iota
	Unterminated       // a string without its closing quote
	BadEscape          // a backslash not followed by a valid escape letter
	BadHex             // \u not followed by four hex digits
	ControlChar        // a control character (below U+0020) in a string
	BadUTF8            // bytes that are not UTF-8
	BadNumber          // a malformed number
)

var faultText = [...]string{
	NoFault:      "no fault",
	Unterminated: "unterminated string",
	BadEscape:    "invalid escape",
	BadHex:       `invalid \u escape`,
	ControlChar:  "control character in a string",
	BadUTF8:      "invalid UTF-8",
	BadNumber:    "invalid number",
}

func (f Fault) String() string {
	if int(f) < len(faultText) {
		return faultText[f]
	}
	return "unknown fault"
}

// SkipSpace returns the index of the first byte at or after i that is not JSON whitespace.
func SkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// ScanString checks the JSON string at b[i] == '"' and returns the index after its
// closing quote and whether it holds an escape. On a fault, end is the offset of the
// fault (len(b) for Unterminated) and f says what it is. Lone surrogate escapes are
// accepted here (encoding/json reads them as U+FFFD); see LoneSurrogate.
func ScanString(b []byte, i int) (end int, esc bool, f Fault) {
	i++
	for {
		// Eight plain ASCII bytes at a time: no '"', no '\\', no control, no high bit.
		for i+8 <= len(b) && !special(load8(b, i)) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			return len(b), esc, Unterminated
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, NoFault
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return len(b), esc, Unterminated
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if Hex4(b, i+2) < 0 {
					return i, esc, BadHex
				}
				i += 6
			default:
				return i, esc, BadEscape
			}
		case c < 0x20:
			return i, esc, ControlChar
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				return i, esc, BadUTF8
			}
			i += n
		}
	}
}

// LoneSurrogate returns the offset in raw (the inside of a valid JSON string) of the
// first \u escape of a surrogate that is not a high one followed by a low one, or -1.
// I-JSON (RFC 7493) refuses them; parsers disagree on what they decode to.
func LoneSurrogate(raw []byte) int {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+1 < len(raw) && raw[i+1] == 'u' {
			r := Hex4(raw, i+2)
			if utf16.IsSurrogate(r) {
				lo := rune(-1)
				if r < 0xdc00 && i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
					lo = Hex4(raw, i+8)
				}
				if lo < 0xdc00 || lo > 0xdfff {
					return i
				}
				i += 6
			}
			i += 4
		}
		i++
	}
	return -1
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// load8 returns the eight bytes at b[i:], little-endian. The compiler makes it one load.
func load8(b []byte, i int) uint64 {
	b = b[i : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// special reports whether one of the eight bytes of x is not plain: '"', '\\', a
// control character or a byte of a multi-byte UTF-8 sequence.
func special(x uint64) bool {
	quote := x ^ (lsb * '"')
	slash := x ^ (lsb * '\\')
	return ((quote-lsb)&^quote|(slash-lsb)&^slash|(x-lsb*0x20)|x)&msb != 0
}

// plain marks the bytes a JSON string holds as they are: printable ASCII but '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// ScanNumber checks the JSON number at b[i] (RFC 8259 §6) and returns the index after
// it, or i and BadNumber.
func ScanNumber(b []byte, i int) (int, Fault) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return start, BadNumber
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return start, BadNumber
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return start, BadNumber
		}
		i = j
	}
	return i, NoFault
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// Hex4 returns the value of the four hex digits at b[i:], or -1.
func Hex4(b []byte, i int) rune { return hexDigits(b, i, 4) }

// hexDigits returns the value of the n hex digits at b[i:], or -1.
func hexDigits(b []byte, i, n int) rune {
	if i < 0 || i+n > len(b) {
		return -1
	}
	var r rune
	for _, c := range b[i : i+n] {
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

// EscapeUnit decodes the escape at raw[i] == '\\' and returns the rune it stands for
// and its length in raw. A surrogate pair of \u escapes is one rune; a lone surrogate
// decodes to U+FFFD, as in encoding/json. ok is false for an invalid escape.
func EscapeUnit(raw []byte, i int) (r rune, n int, ok bool) {
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
		r := Hex4(raw, i+2)
		if r < 0 {
			return 0, 2, false
		}
		if !utf16.IsSurrogate(r) {
			return r, 6, true
		}
		if r < 0xdc00 && i+11 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
			if lo := Hex4(raw, i+8); 0xdc00 <= lo && lo <= 0xdfff {
				return utf16.DecodeRune(r, lo), 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	return 0, 2, false
}

// Unescape appends the text of the JSON string body raw (without its quotes) to dst,
// as encoding/json decodes it. Invalid escapes are copied as written.
func Unescape(dst, raw []byte) []byte {
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
		r, n, ok := EscapeUnit(raw, i)
		if !ok {
			dst = append(dst, raw[i:min(i+n, len(raw))]...)
		} else {
			dst = utf8.AppendRune(dst, r)
		}
		i += n
	}
	return dst
}

// ValidEscapes reports whether every escape in the JSON string body raw is valid.
func ValidEscapes(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] == '\\' {
			_, n, ok := EscapeUnit(raw, i)
			if !ok {
				return false
			}
			i += n - 1
		}
	}
	return true
}

// AppendFold appends the canonical case fold of UTF-8 text s: every rune is replaced by
// the smallest rune of its simple-folding orbit, so two keys fold alike exactly when
// strings.EqualFold (and encoding/json's field matching) calls them equal.
func AppendFold(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

func foldRune(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < m {
			m = f
		}
	}
	return m
}
