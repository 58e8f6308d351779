package jsonscan

import (
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Encoding is the character encoding of a JSON text (RFC 4627 §3, RFC 8259 §8.1).
type Encoding uint8

// The encodings Detect tells apart.
const (
	UTF8 Encoding = iota
	UTF16LE
	UTF16BE
	UTF32LE
	UTF32BE
)

func (e Encoding) String() string {
	switch e {
	case UTF16LE:
		return "utf-16le"
	case UTF16BE:
		return "utf-16be"
	case UTF32LE:
		return "utf-32le"
	case UTF32BE:
		return "utf-32be"
	}
	return "utf-8"
}

// ErrEncoding is a text that is not valid in the encoding it is in: an odd length of
// UTF-16, a lone surrogate, a code point beyond U+10FFFF.
var ErrEncoding = errors.New("jsonscan: text is not valid in its encoding")

// Detect returns the encoding of b and the length of its byte order mark (0 without).
// A BOM decides; without one, the pattern of NUL bytes in the first four (RFC 4627 §3:
// a JSON text starts with two ASCII characters) does: 00 00 00 xx is UTF-32BE,
// xx 00 00 00 UTF-32LE, 00 xx UTF-16BE, xx 00 UTF-16LE. Anything else is UTF-8.
func Detect(b []byte) (Encoding, int) {
	switch {
	case len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0xfe && b[3] == 0xff:
		return UTF32BE, 4
	case len(b) >= 4 && b[0] == 0xff && b[1] == 0xfe && b[2] == 0 && b[3] == 0:
		return UTF32LE, 4
	case len(b) >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf:
		return UTF8, 3
	case len(b) >= 2 && b[0] == 0xfe && b[1] == 0xff:
		return UTF16BE, 2
	case len(b) >= 2 && b[0] == 0xff && b[1] == 0xfe:
		return UTF16LE, 2
	case len(b) >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] != 0:
		return UTF32BE, 0
	case len(b) >= 4 && b[0] != 0 && b[1] == 0 && b[2] == 0 && b[3] == 0:
		return UTF32LE, 0
	case len(b) >= 2 && b[0] == 0 && b[1] != 0:
		return UTF16BE, 0
	case len(b) >= 2 && b[0] != 0 && b[1] == 0:
		return UTF16LE, 0
	}
	return UTF8, 0
}

// EncodingOf returns the encoding a Content-Type charset label names, and false for a
// label that is none of them (the caller cannot read that text). "" is UTF-8.
func EncodingOf(charset string) (Encoding, bool) {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return UTF8, true
	case "utf-16le":
		return UTF16LE, true
	case "utf-16be", "utf-16": // unmarked UTF-16 is big-endian (RFC 2781 §4.3)
		return UTF16BE, true
	case "utf-32le":
		return UTF32LE, true
	case "utf-32be", "utf-32":
		return UTF32BE, true
	}
	return UTF8, false
}

// ToUTF8 returns b as UTF-8 without a byte order mark, with the encoding Detect found.
// A UTF-8 text is returned as b (without its BOM) and not checked; any other is
// transcoded, appended to dst, and refused with ErrEncoding when it is not valid.
func ToUTF8(dst, b []byte) ([]byte, Encoding, error) {
	enc, bom := Detect(b)
	if enc == UTF8 {
		return b[bom:], UTF8, nil
	}
	out, err := Transcode(dst, b[bom:], enc, false)
	return out, enc, err
}

// Transcode appends the text b in enc to dst as UTF-8. With lossy, invalid units become
// U+FFFD and a trailing partial unit is dropped; otherwise they are ErrEncoding.
func Transcode(dst, b []byte, enc Encoding, lossy bool) ([]byte, error) {
	switch enc {
	case UTF8:
		if !lossy && !utf8.Valid(b) {
			return dst, ErrEncoding
		}
		return append(dst, b...), nil
	case UTF16LE, UTF16BE:
		if len(b)%2 != 0 && !lossy {
			return dst, ErrEncoding
		}
		unit := func(i int) rune {
			if enc == UTF16LE {
				return rune(b[i]) | rune(b[i+1])<<8
			}
			return rune(b[i])<<8 | rune(b[i+1])
		}
		for i := 0; i+1 < len(b); i += 2 {
			r := unit(i)
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+3 < len(b) {
					if lo := unit(i + 2); 0xdc00 <= lo && lo <= 0xdfff {
						dst = utf8.AppendRune(dst, utf16.DecodeRune(r, lo))
						i += 2
						continue
					}
				}
				if !lossy {
					return dst, ErrEncoding
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		}
		return dst, nil
	default:
		if len(b)%4 != 0 && !lossy {
			return dst, ErrEncoding
		}
		for i := 0; i+3 < len(b); i += 4 {
			var r rune
			if enc == UTF32LE {
				r = rune(uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24)
			} else {
				r = rune(uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3]))
			}
			if !utf8.ValidRune(r) {
				if !lossy {
					return dst, ErrEncoding
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		}
		return dst, nil
	}
}
