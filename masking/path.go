package masking

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keyholehq/keyhole/jsonscan"
)

// compKind is the kind of one component of a compiled path.
type compKind uint8

const (
	// compKey matches an object member by its unescaped key and, when the key is all
	// digits, the array element at that index (as gjson does: "a.0", "a.01").
	compKey compKind = iota
	// compGlob matches every object member whose key fits a '*'/'?' pattern.
	compGlob
	// compAll ('#') matches every element of an array, and a member keyed "#" (gjson
	// reads '#' on an object as that key).
	compAll
	// compFilter ('#(cond)#') matches every array element for which the condition holds.
	compFilter
)

// comp is one compiled path component.
type comp struct {
	kind  compKind
	lit   []byte // compKey: the key, unescaped
	index int    // compKey: the array index the key names, or -1
	glob  []gtok // compGlob
	q     *query // compFilter
	fold  bool   // compKey, compGlob: keys compare under case folding; lit and glob are folded
}

// foldCase makes c match keys case-insensitively (a rule's case_insensitive).
func (c *comp) foldCase() {
	switch c.kind {
	case compKey:
		c.lit, c.fold = jsonscan.AppendFold(nil, c.lit), true
	case compGlob:
		for i := range c.glob {
			c.glob[i].lit = jsonscan.AppendFold(nil, c.glob[i].lit)
		}
		c.fold = true
	case compFilter:
		// Keys inside a condition fold too: more elements match, so more is masked.
		for i := range c.q.path {
			c.q.path[i].foldCase()
		}
	}
}

// matchKey reports whether an object member whose unescaped key is key matches c.
func (c *comp) matchKey(key []byte) bool {
	switch c.kind {
	case compKey:
		if c.fold {
			return bytes.EqualFold(key, c.lit)
		}
		return bytes.Equal(key, c.lit)
	case compGlob:
		if c.fold {
			var buf [64]byte
			return globMatch(jsonscan.AppendFold(buf[:0], key), c.glob)
		}
		return globMatch(key, c.glob)
	case compAll:
		return len(key) == 1 && key[0] == '#'
	}
	return false
}

// query is a compiled '#(...)' condition: the gjson query syntax, path op value.
type query struct {
	path  []comp // relative to the array element; empty for the element itself
	op    string // "", "=", "!=", "<", "<=", ">", ">=", "%", "!%"
	val   []byte // the value, unquoted and unescaped when it was a JSON string
	num   float64
	glob  []gtok // op % and !%
	tilde tilde
}

// tilde is a gjson '~' value: the element's value is converted to a boolean first.
type tilde uint8

const (
	tildeNone tilde = iota
	tildeTrue
	tildeFalse
	tildeNull
	tildeAny
	tildeBad // an unknown ~ word: gjson never matches it
)

// pathError explains why a path is refused.
type pathError string

func (e pathError) Error() string { return string(e) }

const (
	errEmptyKey    pathError = `empty key; escape a literal dot as \.`
	errLoneEscape  pathError = "it ends in a lone escape"
	errJSONLines   pathError = "JSON lines (a path starting with ..) are not supported; NDJSON is masked line by line"
	errModifier    pathError = "modifiers are not supported"
	errPipe        pathError = "pipes are not supported"
	errMultipath   pathError = "multipaths are not supported"
	errLiteral     pathError = "literals are not supported"
	errBracket     pathError = `brackets do not index in gjson; write a.0 for an array element, or escape a literal bracket as \[`
	errFirstMatch  pathError = "#(...) masks only the first matching element; write #(...)# to mask every match"
	errOldQuery    pathError = "#[...] queries are not supported; write #(...)#"
	errHashKey     pathError = `'#' must be a whole key ('#', '#(...)#'); escape a literal '#' as \#`
	errUnclosed    pathError = "unclosed #("
	errAfterQuery  pathError = `#(...)# must be followed by "." or end the path`
	errQueryString pathError = "the condition's value is not a valid JSON string"
)

// parsePath compiles gjson path p. In a condition (cond), a first-match '#(...)' is
// accepted: a condition asks whether any element matches, so first and all agree.
func parsePath(p string, cond bool) ([]comp, error) {
	if strings.HasPrefix(p, "..") {
		return nil, errJSONLines
	}
	var comps []comp
	for i := 0; ; {
		if i == len(p) || p[i] == '.' {
			return nil, errEmptyKey
		}
		var c comp
		var err error
		switch p[i] {
		case '@':
			return nil, errModifier
		case '[', '{':
			return nil, errMultipath
		case '!':
			return nil, errLiteral
		case '#':
			c, i, err = parseHash(p, i, cond)
		default:
			c, i, err = parseKey(p, i)
		}
		if err != nil {
			return nil, err
		}
		comps = append(comps, c)
		if i == len(p) {
			return comps, nil
		}
		i++ // the '.'
	}
}

// parseKey compiles the key component at p[i:] and returns it with the index of the
// '.' that ends it, or len(p).
func parseKey(p string, i int) (comp, int, error) {
	var lit []byte
	var pat []byte // the pattern with '\' escapes kept, for a glob
	wild := false
	for ; i < len(p) && p[i] != '.'; i++ {
		switch ch := p[i]; ch {
		case '\\':
			if i+1 == len(p) {
				return comp{}, 0, errLoneEscape
			}
			i++
			lit = append(lit, p[i])
			pat = append(pat, '\\', p[i])
		case '*', '?':
			wild = true
			pat = append(pat, ch)
		case '|':
			return comp{}, 0, errPipe
		case '[', ']', '{', '}':
			return comp{}, 0, errBracket
		default:
			lit = append(lit, ch)
			pat = append(pat, ch)
		}
	}
	if wild {
		return comp{kind: compGlob, glob: compileGlob(pat), index: -1}, i, nil
	}
	return comp{kind: compKey, lit: lit, index: arrayIndex(lit)}, i, nil
}

// arrayIndex returns the array index that an all-digit key names (gjson reads "01" as 1),
// or -1.
func arrayIndex(key []byte) int {
	if len(key) == 0 {
		return -1
	}
	n := 0
	for _, c := range key {
		if c < '0' || c > '9' {
			return -1
		}
		if n > (1<<31)/10 {
			return -1 // no array has that many elements
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// parseHash compiles the component at p[i] == '#': "#" or a "#(...)#" query.
func parseHash(p string, i int, cond bool) (comp, int, error) {
	if i+1 == len(p) || p[i+1] == '.' {
		return comp{kind: compAll, index: -1}, i + 1, nil
	}
	switch p[i+1] {
	case '(':
	case '[':
		return comp{}, 0, errOldQuery
	default:
		return comp{}, 0, errHashKey
	}
	q, end, err := parseQuery(p[i:])
	if err != nil {
		return comp{}, 0, err
	}
	i += end
	all := i < len(p) && p[i] == '#'
	if all {
		i++
	}
	if !all && !cond {
		return comp{}, 0, errFirstMatch
	}
	if i < len(p) && p[i] != '.' {
		return comp{}, 0, errAfterQuery
	}
	return comp{kind: compFilter, q: q, index: -1}, i, nil
}

// parseQuery compiles the query at s, which starts with "#(", and returns the length
// of the text up to and including its ')'. It splits path, operator and value exactly
// as gjson's parseQuery does, so a condition means here what it means to gjson.
func parseQuery(s string) (*query, int, error) {
	i, j, depth := 2, 0, 1
	for ; i < len(s); i++ {
		if depth == 1 && j == 0 {
			switch s[i] {
			case '!', '=', '<', '>', '%':
				j = i // the operator and value start here
				continue
			}
		}
		switch s[i] {
		case '\\':
			i++
		case '[', '(':
			depth++
		case ']', ')':
			depth--
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		}
		if depth == 0 {
			break
		}
	}
	if depth > 0 {
		return nil, 0, errUnclosed
	}
	q := &query{}
	var path string
	if j > 0 {
		path = trim(s[2:j])
		value := trim(s[j:i])
		opsz := 0 // gjson: a '!' before anything but '=' or '%' is no operator (an existence test)
		switch {
		case len(value) == 1:
			opsz = 1 // an operator without a value: "!" never matches
		case strings.HasPrefix(value, "!="), strings.HasPrefix(value, "!%"),
			strings.HasPrefix(value, "<="), strings.HasPrefix(value, ">="):
			opsz = 2
		case strings.HasPrefix(value, "=="):
			value = value[1:]
			opsz = 1
		case value[0] != '!':
			opsz = 1
		}
		q.op = value[:opsz]
		value = trim(value[opsz:])
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			raw := []byte(value[1 : len(value)-1])
			if !jsonscan.ValidEscapes(raw) {
				return nil, 0, errQueryString
			}
			q.val = jsonscan.Unescape(nil, raw)
		} else {
			q.val = []byte(value)
		}
	} else {
		path = trim(s[2:i])
	}
	if len(q.val) > 0 && q.val[0] == '~' {
		switch string(q.val[1:]) {
		case "true":
			q.tilde = tildeTrue
		case "false":
			q.tilde = tildeFalse
		case "null":
			q.tilde = tildeNull
		case "*":
			q.tilde = tildeAny
		default:
			q.tilde = tildeBad
		}
	}
	q.num, _ = strconv.ParseFloat(string(q.val), 64)
	if q.op == "%" || q.op == "!%" {
		q.glob = compileGlob(q.val)
	}
	if path != "" {
		comps, err := parsePath(path, true)
		if err != nil {
			return nil, 0, err
		}
		q.path = comps
	}
	return q, i + 1, nil
}

// trim removes leading and trailing bytes <= ' ', as gjson does.
func trim(s string) string {
	for len(s) > 0 && s[0] <= ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] <= ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// gtok is one token of a compiled glob: a literal run, '?' (one rune) or '*' (any run).
type gtok struct {
	kind byte // 'l', '?', '*'
	lit  []byte
}

// compileGlob compiles a pattern in which '*' matches any run of runes, '?' one rune
// and '\' makes the next byte literal (tidwall/match, which gjson uses).
func compileGlob(pat []byte) []gtok {
	var toks []gtok
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			toks = append(toks, gtok{kind: 'l', lit: lit})
			lit = nil
		}
	}
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '\\':
			if i+1 < len(pat) {
				i++
				lit = append(lit, pat[i])
			}
		case '*':
			flush()
			if len(toks) == 0 || toks[len(toks)-1].kind != '*' {
				toks = append(toks, gtok{kind: '*'})
			}
		case '?':
			flush()
			toks = append(toks, gtok{kind: '?'})
		default:
			lit = append(lit, c)
		}
	}
	flush()
	return toks
}

// globMatch reports whether s matches the compiled glob p. It backtracks only to the
// last '*', so it runs in O(len(s)·len(p)) whatever the input.
func globMatch(s []byte, p []gtok) bool {
	si, pi := 0, 0
	star, starS := -1, 0
	for {
		if pi < len(p) {
			t := &p[pi]
			switch t.kind {
			case '*':
				star, starS = pi, si
				pi++
				continue
			case '?':
				if si < len(s) {
					si += runeLen(s[si:])
					pi++
					continue
				}
			default:
				if bytes.HasPrefix(s[si:], t.lit) {
					si += len(t.lit)
					pi++
					continue
				}
			}
		} else if si == len(s) {
			return true
		}
		// Mismatch: let the last '*' take one more rune, or fail.
		if star < 0 || starS >= len(s) {
			return false
		}
		starS += runeLen(s[starS:])
		si, pi = starS, star+1
	}
}

func runeLen(s []byte) int {
	if s[0] < utf8.RuneSelf {
		return 1
	}
	_, n := utf8.DecodeRune(s)
	return n
}
