package testkit

import "unicode/utf16"

// EncodeText returns s in UTF-16 (size 2) or UTF-32 (size 4), big- or little-endian, with
// a byte order mark first when bom is set: the bodies lenient parsers read as JSON and a
// byte-matching guard does not.
func EncodeText(s string, size int, big, bom bool) string {
	if bom {
		s = "\ufeff" + s
	}
	var out []byte
	put := func(u uint32) {
		for k := range size {
			shift := 8 * k
			if big {
				shift = 8 * (size - 1 - k)
			}
			out = append(out, byte(u>>shift))
		}
	}
	for _, r := range s {
		if size == 2 {
			for _, u := range utf16.Encode([]rune{r}) {
				put(uint32(u))
			}
		} else {
			put(uint32(r))
		}
	}
	return string(out)
}
