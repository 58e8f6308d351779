package masking

import (
	"bytes"
	"strconv"

	"github.com/keyholehq/keyhole/jsonscan"
)

// Conditions of '#(...)#' filters are decided before the walker enters the element, by
// a second, light reading of the element: it follows only the condition's path and
// skips everything else without validating (the walker validates the element next,
// and an invalid body is refused whatever a condition said).
//
// gjson reads one value for a condition's path (the first of duplicate keys, the first
// key a wildcard matches). Here the condition holds when it holds for any value the path
// reaches, so that a masking decision never depends on which duplicate a client's parser
// keeps: {"role":"user","role":"admin"} is an admin for #(role=="admin")#, and a user for
// #(role=="user")#. Likewise "a.#.b" in a condition reaches every element's b (gjson
// would compare the array of them and never match). "a.#" at the end of a condition's
// path is the array's length, as in gjson.

// jtype is the type of a value a condition compares. The zero value, jNull, is also
// what a missing value reads as for the '~' conversions, as in gjson.
type jtype uint8

const (
	jNull jtype = iota
	jFalse
	jTrue
	jNumber
	jString
	jJSON // an object or array
)

// jvalue is a value a condition compares; the zero jvalue is a missing one.
type jvalue struct {
	typ    jtype
	exists bool
	str    []byte
	num    float64
}

// cond reports whether q holds for the array element at b[i].
func (w *walker) cond(q *query, i int) bool {
	b := w.b
	i = skipSpace(b, i)
	if i >= len(b) {
		return false
	}
	container := b[i] == '{' || b[i] == '['
	switch {
	case !container && len(q.path) > 0:
		return false // gjson: a scalar element has no sub-path
	case !container:
		return q.matches(w.jvalueAt(i))
	case len(q.path) == 0:
		return q.matches(jvalue{}) // gjson reads nothing at an empty path of an object
	}
	hit, found := w.any(i, q.path, q)
	return hit || !found && q.matches(jvalue{})
}

// any reports whether q holds for a value that path reaches from the value at b[i],
// and whether path reaches any value.
func (w *walker) any(i int, path []comp, q *query) (hit, found bool) {
	b := w.b
	i = skipSpace(b, i)
	if i >= len(b) {
		return false, false
	}
	if len(path) == 0 {
		return q.matches(w.jvalueAt(i)), true
	}
	c := &path[0]
	switch b[i] {
	case '{':
		i = skipSpace(b, i+1)
		for i < len(b) && b[i] == '"' {
			kend, kesc, ok := skipString(b, i)
			if !ok {
				return false, found
			}
			key := b[i+1 : kend-1]
			if kesc {
				w.key = jsonscan.Unescape(w.key[:0], key)
				key = w.key
			}
			i = skipSpace(b, kend)
			if i >= len(b) || b[i] != ':' {
				return false, found
			}
			i = skipSpace(b, i+1)
			if c.matchKey(key) {
				h, f := w.any(i, path[1:], q)
				found = found || f
				if h {
					return true, true
				}
			}
			i = skipSpace(b, skipValue(b, i))
			if i >= len(b) || b[i] != ',' {
				break
			}
			i = skipSpace(b, i+1)
		}
	case '[':
		if c.kind == compAll && len(path) == 1 {
			return q.matches(jvalue{typ: jNumber, exists: true, num: float64(countElements(b, i))}), true
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return false, false
		}
		for idx := 0; i < len(b); idx++ {
			var ok bool
			switch c.kind {
			case compAll:
				ok = true
			case compKey:
				ok = c.index == idx
			case compFilter:
				ok = w.cond(c.q, i)
			}
			if ok {
				h, f := w.any(i, path[1:], q)
				found = found || f
				if h {
					return true, true
				}
			}
			i = skipSpace(b, skipValue(b, i))
			if i >= len(b) || b[i] != ',' {
				break
			}
			i = skipSpace(b, i+1)
		}
	}
	return false, found
}

// jvalueAt reads the value at b[i] for a comparison.
func (w *walker) jvalueAt(i int) jvalue {
	b := w.b
	switch c := b[i]; {
	case c == '"':
		end, esc, ok := skipString(b, i)
		if !ok {
			return jvalue{}
		}
		s := b[i+1 : end-1]
		if esc {
			w.val = jsonscan.Unescape(w.val[:0], s)
			s = w.val
		}
		return jvalue{typ: jString, exists: true, str: s}
	case c == 't':
		return jvalue{typ: jTrue, exists: true}
	case c == 'f':
		return jvalue{typ: jFalse, exists: true}
	case c == 'n':
		return jvalue{typ: jNull, exists: true}
	case c == '{' || c == '[':
		return jvalue{typ: jJSON, exists: true}
	case c == '-' || '0' <= c && c <= '9':
		return jvalue{typ: jNumber, exists: true, num: parseNumber(b[i:skipValue(b, i)])}
	}
	return jvalue{}
}

// matches reports whether v satisfies q, exactly as gjson's queryMatches decides.
func (q *query) matches(v jvalue) bool {
	rpv := q.val
	if q.tilde != tildeNone {
		var ish bool
		switch q.tilde {
		case tildeAny:
			ish = v.exists
		case tildeNull:
			ish = v.typ == jNull
		case tildeTrue:
			ish = trueish(v)
		case tildeFalse:
			ish = falseish(v)
		default:
			return false
		}
		rpv = []byte("true")
		v = jvalue{typ: jFalse, exists: true}
		if ish {
			v.typ = jTrue
		}
	}
	if !v.exists {
		return false
	}
	if q.op == "" {
		return true // an existence test: #(name)#
	}
	switch v.typ {
	case jString:
		c := bytes.Compare(v.str, rpv)
		switch q.op {
		case "=":
			return c == 0
		case "!=":
			return c != 0
		case "<":
			return c < 0
		case "<=":
			return c <= 0
		case ">":
			return c > 0
		case ">=":
			return c >= 0
		case "%":
			return globMatch(v.str, q.glob)
		case "!%":
			return !globMatch(v.str, q.glob)
		}
	case jNumber:
		switch q.op {
		case "=":
			return v.num == q.num
		case "!=":
			return v.num != q.num
		case "<":
			return v.num < q.num
		case "<=":
			return v.num <= q.num
		case ">":
			return v.num > q.num
		case ">=":
			return v.num >= q.num
		}
	case jTrue:
		switch q.op {
		case "=":
			return string(rpv) == "true"
		case "!=":
			return string(rpv) != "true"
		case ">":
			return string(rpv) == "false"
		case ">=":
			return true
		}
	case jFalse:
		switch q.op {
		case "=":
			return string(rpv) == "false"
		case "!=":
			return string(rpv) != "false"
		case "<":
			return string(rpv) == "true"
		case "<=":
			return true
		}
	}
	return false
}

// trueish and falseish are gjson's: strings as strconv.ParseBool reads them lowercased.
func trueish(v jvalue) bool {
	switch v.typ {
	case jTrue:
		return true
	case jString:
		b, ok := parseBool(v.str)
		return ok && b
	case jNumber:
		return v.num != 0
	}
	return false
}

func falseish(v jvalue) bool {
	switch v.typ {
	case jNull, jFalse:
		return true
	case jString:
		b, ok := parseBool(v.str)
		return ok && !b
	case jNumber:
		return v.num == 0
	}
	return false
}

func parseBool(s []byte) (value, ok bool) {
	if len(s) > 5 {
		return false, false
	}
	var low [5]byte
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	switch string(low[:len(s)]) {
	case "1", "t", "true":
		return true, true
	case "0", "f", "false":
		return false, true
	}
	return false, false
}

// parseNumber returns the value of the JSON number s, as gjson's Num.
func parseNumber(s []byte) float64 {
	// Integers that float64 holds exactly need no strconv (nor its allocation).
	if len(s) > 0 && len(s) <= 15 {
		neg := s[0] == '-'
		d := s
		if neg {
			d = s[1:]
		}
		n, ok := 0, len(d) > 0
		for _, c := range d {
			if c < '0' || c > '9' {
				ok = false
				break
			}
			n = n*10 + int(c-'0')
		}
		if ok {
			if neg {
				return -float64(n)
			}
			return float64(n)
		}
	}
	f, _ := strconv.ParseFloat(string(s), 64)
	return f
}

// skipString returns the index after the JSON string at b[i] == '"' and whether it
// holds an escape; ok is false when it is not closed.
func skipString(b []byte, i int) (end int, esc, ok bool) {
	i++
	for {
		for i+8 <= len(b) && !quoteOrSlash(load8(b, i)) {
			i += 8
		}
		for i < len(b) && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) {
			return len(b), esc, false
		}
		if b[i] == '"' {
			return i + 1, esc, true
		}
		esc = true
		i += 2
	}
}

// load8 returns the eight bytes at b[i:], little-endian. The compiler makes it one load.
func load8(b []byte, i int) uint64 {
	b = b[i : i+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// quoteOrSlash reports whether one of the eight bytes of x is '"' or '\\'.
func quoteOrSlash(x uint64) bool {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return ((q-lsb)&^q|(s-lsb)&^s)&msb != 0
}

// skipValue returns the index after the value at b[i], without validating it. It
// always terminates and stays within b, whatever b holds.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		end, _, _ := skipString(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _, _ = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// countElements returns the number of elements of the array at b[i] == '['.
func countElements(b []byte, i int) int {
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] == ']' {
		return 0
	}
	n := 0
	for i < len(b) {
		n++
		i = skipSpace(b, skipValue(b, i))
		if i >= len(b) || b[i] != ',' {
			break
		}
		i = skipSpace(b, i+1)
	}
	return n
}
