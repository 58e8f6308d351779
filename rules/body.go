package rules

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// maxDepth bounds the nesting of a JSON body a body condition reads. gjson validates
// recursively; without a bound, a body of ten million '[' would exhaust the stack.
const maxDepth = 512

// checkBody returns why body cannot be judged by body conditions, or "" when it is one
// JSON object in the strict sense of I-JSON (RFC 7493): valid JSON in UTF-8, no lone
// surrogate escapes, and no two keys of one object that name the same member.
//
// Keys are compared after unescaping and Unicode case folding, because parsers disagree
// on duplicates (gjson reads the first, encoding/json and JavaScript the last) and Go's
// encoding/json matches struct fields case-insensitively: {"method":"tools/list",
// "Method":"tools/call"} would show a rule one call and the upstream another. For the
// same reason a key that differs only in case from a key a body condition reads is
// refused even when it is alone. A top-level array (a JSON-RPC batch) or scalar is
// refused: conditions would see none or only one of its calls.
func (t *Table) checkBody(body []byte) string {
	s, _ := t.scanners.Get().(*scanner)
	if s == nil {
		s = new(scanner)
	}
	why := s.check(body, t.keys)
	if cap(s.arena) <= 64<<10 && cap(s.buf) <= 64<<10 {
		t.scanners.Put(s)
	}
	if why != "" {
		return why
	}
	// Belt and braces: gjson reads the conditions, so gjson must agree the body is valid.
	if !gjson.ValidBytes(body) {
		return "request body is not valid JSON"
	}
	return ""
}

// keyNode is one level of the body-condition paths: folded key → the exact spellings
// used by conditions, and the next level.
type keyNode struct {
	next map[string]*keyEdge
}

type keyEdge struct {
	exact []string
	node  *keyNode
}

// add records the path of components (unescaped) under n.
func (n *keyNode) add(components []string) {
	for _, c := range components {
		folded := string(appendFold(nil, []byte(c)))
		if n.next == nil {
			n.next = make(map[string]*keyEdge)
		}
		e := n.next[folded]
		if e == nil {
			e = &keyEdge{node: &keyNode{}}
			n.next[folded] = e
		}
		if !slices.Contains(e.exact, c) {
			e.exact = append(e.exact, c)
		}
		n = e.node
	}
}

func (n *keyNode) edge(folded []byte) *keyEdge {
	if n == nil || n.next == nil {
		return nil
	}
	return n.next[string(folded)]
}

// scanner is a strict, iterative JSON checker. Its buffers are reused between bodies.
type scanner struct {
	buf    []byte // the current key, unescaped
	num    []byte // an array index as text
	arena  []byte // folded keys of the open objects
	keys   []keyRef
	frames []frame
}

// keyRef locates one key: folded in the arena, as written in the body.
type keyRef struct {
	off, end   int
	raw0, raw1 int
}

type frame struct {
	object bool
	keys   int // first keyRef of this object
	arena  int // arena length when the object opened
	node   *keyNode
	index  int // current array element
}

// check validates b and returns why it is refused, or "".
func (s *scanner) check(b []byte, root *keyNode) string {
	s.arena, s.keys, s.frames = s.arena[:0], s.keys[:0], s.frames[:0]
	i := skipSpace(b, 0)
	if i == len(b) {
		return "request body is not valid JSON: it holds only whitespace"
	}
	top := b[i]
	node := root
	var why string
	for {
		// A value starts at i.
		i = skipSpace(b, i)
		if i == len(b) {
			return "request body is not valid JSON: unexpected end"
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			if len(s.frames) == maxDepth {
				return fmt.Sprintf("request body nests deeper than %d levels", maxDepth)
			}
			s.frames = append(s.frames, frame{object: c == '{', keys: len(s.keys), arena: len(s.arena), node: node})
			i = skipSpace(b, i+1)
			if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
				s.frames = s.frames[:len(s.frames)-1]
				i++
				break
			}
			if c == '{' {
				if i, node, why = s.key(b, i); why != "" {
					return why
				}
			} else {
				node = s.element(node, 0)
			}
			continue
		case c == '"':
			if i, why = s.str(b, i, false); why != "" {
				return why
			}
		case c == 't':
			if i, why = literal(b, i, "true"); why != "" {
				return why
			}
		case c == 'f':
			if i, why = literal(b, i, "false"); why != "" {
				return why
			}
		case c == 'n':
			if i, why = literal(b, i, "null"); why != "" {
				return why
			}
		case c == '-' || '0' <= c && c <= '9':
			if i, why = number(b, i); why != "" {
				return why
			}
		default:
			return syntax(b, i, "a value")
		}

		// A value ended at i: close containers, or move on to the next member or element.
	next:
		for {
			i = skipSpace(b, i)
			if len(s.frames) == 0 {
				if i != len(b) {
					return syntax(b, i, "the end of the body")
				}
				return topLevel(top)
			}
			if i == len(b) {
				return "request body is not valid JSON: unexpected end"
			}
			f := &s.frames[len(s.frames)-1]
			switch {
			case b[i] == ',':
				i = skipSpace(b, i+1)
				if f.object {
					if i, node, why = s.key(b, i); why != "" {
						return why
					}
				} else {
					f.index++
					node = s.element(f.node, f.index)
				}
				break next
			case f.object && b[i] == '}':
				if why = s.duplicates(b, f); why != "" {
					return why
				}
				s.keys, s.arena = s.keys[:f.keys], s.arena[:f.arena]
				s.frames = s.frames[:len(s.frames)-1]
				i++
			case !f.object && b[i] == ']':
				s.frames = s.frames[:len(s.frames)-1]
				i++
			case f.object:
				return syntax(b, i, `"," or "}"`)
			default:
				return syntax(b, i, `"," or "]"`)
			}
		}
	}
}

// key reads an object key and its colon at i and returns the position of the member's
// value and the condition-path node for it.
func (s *scanner) key(b []byte, i int) (int, *keyNode, string) {
	if i == len(b) || b[i] != '"' {
		return i, nil, syntax(b, i, "an object key")
	}
	raw0 := i + 1
	j, why := s.str(b, i, true)
	if why != "" {
		return j, nil, why
	}
	if bytes.IndexByte(s.buf, 0) >= 0 {
		return j, nil, "request body has an object key holding NUL (\\u0000)"
	}
	f := &s.frames[len(s.frames)-1]
	off := len(s.arena)
	s.arena = appendFold(s.arena, s.buf)
	s.keys = append(s.keys, keyRef{off: off, end: len(s.arena), raw0: raw0, raw1: j - 1})
	var node *keyNode
	if e := f.node.edge(s.arena[off:]); e != nil {
		if !slices.Contains(e.exact, string(s.buf)) {
			return j, nil, fmt.Sprintf("request body key %s differs only in letter case from %q, which a rule reads",
				quoteRaw(b[raw0:j-1]), e.exact[0])
		}
		node = e.node
	}
	j = skipSpace(b, j)
	if j == len(b) || b[j] != ':' {
		return j, nil, syntax(b, j, `":"`)
	}
	return j + 1, node, ""
}

// element returns the condition-path node for array element index under n.
func (s *scanner) element(n *keyNode, index int) *keyNode {
	if n == nil {
		return nil
	}
	s.num = strconv.AppendInt(s.num[:0], int64(index), 10)
	if e := n.edge(s.num); e != nil {
		return e.node
	}
	return nil
}

// duplicates returns why the object f has two keys naming one member, or "".
func (s *scanner) duplicates(b []byte, f *frame) string {
	keys := s.keys[f.keys:]
	key := func(k keyRef) []byte { return s.arena[k.off:k.end] }
	if len(keys) <= 8 {
		for x := 1; x < len(keys); x++ {
			for y := 0; y < x; y++ {
				if bytes.Equal(key(keys[x]), key(keys[y])) {
					return duplicate(b, keys[y], keys[x])
				}
			}
		}
		return ""
	}
	slices.SortFunc(keys, func(x, y keyRef) int { return bytes.Compare(key(x), key(y)) })
	for x := 1; x < len(keys); x++ {
		if bytes.Equal(key(keys[x]), key(keys[x-1])) {
			return duplicate(b, keys[x-1], keys[x])
		}
	}
	return ""
}

func duplicate(b []byte, k1, k2 keyRef) string {
	r1, r2 := b[k1.raw0:k1.raw1], b[k2.raw0:k2.raw1]
	if bytes.Equal(r1, r2) {
		return "request body has duplicate key " + quoteRaw(r1)
	}
	return fmt.Sprintf("request body has keys %s and %s that name the same member", quoteRaw(r1), quoteRaw(r2))
}

// quoteRaw quotes a key as written in JSON (escapes kept), cut to a readable length.
func quoteRaw(raw []byte) string {
	const max = 64
	s := string(raw)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return `"` + s + `"`
}

// str checks the JSON string starting at b[i] == '"' and returns the position after it.
// With keep, the unescaped text is left in s.buf.
func (s *scanner) str(b []byte, i int, keep bool) (int, string) {
	start := i
	i++
	if keep {
		s.buf = s.buf[:0]
	}
	for {
		if i >= len(b) {
			return i, syntax(b, start, "a closed string")
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, ""
		case c == '\\':
			if i+1 >= len(b) {
				return i, syntax(b, start, "a closed string")
			}
			var r rune
			switch b[i+1] {
			case '"', '\\', '/':
				r = rune(b[i+1])
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			case 'u':
				r = hex4(b, i+2)
				if r < 0 {
					return i, syntax(b, i, "four hex digits after \\u")
				}
				if utf16.IsSurrogate(r) {
					// I-JSON: a surrogate escape must be a high one followed by a low one.
					lo := rune(-1)
					if r < 0xdc00 && i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						lo = hex4(b, i+8)
					}
					if lo < 0xdc00 || lo > 0xdfff {
						return i, fmt.Sprintf("request body is not accepted: lone surrogate escape at offset %d", i)
					}
					r = utf16.DecodeRune(r, lo)
					i += 6
				}
				i += 4
			default:
				return i, syntax(b, i, "a valid escape")
			}
			i += 2
			if keep {
				s.buf = utf8.AppendRune(s.buf, r)
			}
		case c < 0x20:
			return i, syntax(b, i, "no control character in a string")
		case c < utf8.RuneSelf:
			if keep {
				s.buf = append(s.buf, c)
			}
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				return i, fmt.Sprintf("request body is not valid UTF-8 at offset %d", i)
			}
			if keep {
				s.buf = append(s.buf, b[i:i+n]...)
			}
			i += n
		}
	}
}

// hex4 returns the value of four hex digits at b[i:], or -1.
func hex4(b []byte, i int) rune {
	if i+4 > len(b) {
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

// number checks the JSON number at b[i] (RFC 8259 §6).
func number(b []byte, i int) (int, string) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, syntax(b, start, "a number")
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, syntax(b, start, "a number")
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
			return j, syntax(b, start, "a number")
		}
		i = j
	}
	return i, ""
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

func literal(b []byte, i int, lit string) (int, string) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return i, syntax(b, i, "a value")
	}
	return i + len(lit), ""
}

func skipSpace(b []byte, i int) int {
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

func syntax(b []byte, i int, want string) string {
	if i >= len(b) {
		return "request body is not valid JSON: unexpected end"
	}
	return fmt.Sprintf("request body is not valid JSON: want %s at offset %d", want, i)
}

// topLevel returns why a valid JSON body whose first byte is top is refused, or "".
func topLevel(top byte) string {
	switch top {
	case '{':
		return ""
	case '[':
		return "request body is a JSON array; one JSON object is required (JSON-RPC batches are not accepted)"
	}
	return "request body is a JSON scalar; one JSON object is required"
}

// appendFold appends the canonical case fold of UTF-8 text s: every rune is replaced by
// the smallest rune of its simple-folding orbit, so two keys fold alike exactly when
// strings.EqualFold (and encoding/json's field matching) calls them equal.
func appendFold(dst, s []byte) []byte {
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
