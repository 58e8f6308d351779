package masking

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/config"
)

// The fuzz targets build JSON documents from the fuzz input, mask them, and compare
// the result with an oracle: a small, separate implementation of the masking rules
// over a parsed tree.

// fuzzRules are the rules of FuzzApply; oracleRules say the same for the oracle.
var fuzzRules = []config.MaskRule{
	{Field: "ssn", Action: "redact"},
	{Field: "users.#.card", Action: "last4"},
	{Field: "users.#.secret", Action: "remove"},
	{Field: "*.token", Action: "hash"},
	{Field: "#.ssn", Action: "remove"},
	{Field: `users.#(kind=="vip")#.note`, Action: "redact"},
	{Field: "list.1", Action: "redact"},
	{Field: "a.#.#", Action: "last4"},
	{Field: "na?e", Action: "hash"},
}

// step is one component of an oracle rule: 'k' a key, '*' any key, '?' a key of three
// runes "na?e", '#' every element, 'i' the element idx, 'f' elements whose kind is "vip".
type step struct {
	kind byte
	key  string
	idx  int
}

var oracleRules = []struct {
	steps  []step
	action action
}{
	{[]step{{kind: 'k', key: "ssn"}}, actRedact},
	{[]step{{kind: 'k', key: "users"}, {kind: '#'}, {kind: 'k', key: "card"}}, actLast4},
	{[]step{{kind: 'k', key: "users"}, {kind: '#'}, {kind: 'k', key: "secret"}}, actRemove},
	{[]step{{kind: '*'}, {kind: 'k', key: "token"}}, actHash},
	{[]step{{kind: '#'}, {kind: 'k', key: "ssn"}}, actRemove},
	{[]step{{kind: 'k', key: "users"}, {kind: 'f'}, {kind: 'k', key: "note"}}, actRedact},
	{[]step{{kind: 'k', key: "list"}, {kind: 'i', idx: 1}}, actRedact},
	{[]step{{kind: 'k', key: "a"}, {kind: '#'}, {kind: '#'}}, actLast4},
	{[]step{{kind: '?'}}, actHash},
}

// node is a parsed JSON value that keeps what it was written as.
type node struct {
	kind     byte // 'o', 'a', 's' (string), 'l' (number or literal)
	members  []member
	elems    []*node
	raw      string // 's', 'l': as written; every kind after serialize: the whole value
	text     string // 's': unescaped
	replaced bool   // in an expected tree: a replacement, compared by text
}

type member struct {
	rawKey, key string // the key as written (quotes included) and unescaped
	val         *node
}

// gen draws choices from fuzz bytes; it returns zeros once they run out.
type gen struct {
	data []byte
	n    int // planted values
}

func (g *gen) next() byte {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return b
}

func (g *gen) intn(n int) int { return int(g.next()) % n }

var (
	fuzzKeys    = []string{"ssn", "users", "card", "secret", "token", "kind", "note", "list", "a", "name", "nave", "n€me", "#", "x.y", "é", "", "0", "1"}
	fuzzStrings = []string{"vip", "x", "", "héllo wörld", "12345678", "line\nbreak", "quote\"d", "tab\t", "😀", "\u2028", "vip "}
	fuzzNumbers = []string{"0", "-1", "12.50", "1e3", "-0.0E-2", "4242424242424242", "true", "false", "null"}
)

// quote writes s as a JSON string, escaping some characters as \uXXXX or \/ when the
// fuzz input says so.
func (g *gen) quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch mode := g.intn(4); {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		case mode == 0 && r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		case mode == 0:
			r1, r2 := (r-0x10000)>>10+0xd800, (r-0x10000)&0x3ff+0xdc00
			fmt.Fprintf(&b, `\u%04X\u%04X`, r1, r2)
		case mode == 1 && r == '/':
			b.WriteString(`\/`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (g *gen) str(s string) *node { return &node{kind: 's', text: s, raw: g.quote(s)} }

// value generates a value; under "users" it leans towards objects with the keys the
// rules name.
func (g *gen) value(depth int, key string) *node {
	k := g.intn(8)
	if (key == "users" || key == "a" || key == "list") && k < 5 {
		k = 1
	}
	if depth >= 6 {
		k = 2 + 2*(k%2) // a string or a literal
	}
	switch k {
	case 0, 5:
		n := &node{kind: 'o'}
		for range g.intn(5) {
			key := fuzzKeys[g.intn(len(fuzzKeys))]
			n.members = append(n.members, member{rawKey: g.quote(key), key: key, val: g.value(depth+1, key)})
		}
		return n
	case 1:
		n := &node{kind: 'a'}
		for range g.intn(5) {
			child := key
			if key == "list" {
				child = ""
			}
			if key == "a" && depth > 1 {
				child = ""
			}
			n.elems = append(n.elems, g.value(depth+1, child))
		}
		return n
	case 2, 6:
		return g.str(fuzzStrings[g.intn(len(fuzzStrings))])
	}
	return &node{kind: 'l', raw: fuzzNumbers[g.intn(len(fuzzNumbers))]}
}

// document generates a top-level object or array.
func (g *gen) document() *node {
	if g.intn(3) == 0 {
		n := &node{kind: 'a'}
		for range g.intn(5) {
			n.elems = append(n.elems, g.value(1, "users"))
		}
		return n
	}
	return g.value(0, "users")
}

// serialize writes n with whitespace the fuzz input chooses and records each value's
// text in raw.
func (g *gen) serialize(b *bytes.Buffer, n *node) {
	ws := func() {
		b.WriteString([]string{"", "", " ", "\n  ", "\t", "\r\n"}[g.intn(6)])
	}
	start := b.Len()
	switch n.kind {
	case 'o':
		b.WriteByte('{')
		for i, m := range n.members {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			b.WriteString(m.rawKey)
			ws()
			b.WriteByte(':')
			ws()
			g.serialize(b, m.val)
			ws()
		}
		b.WriteByte('}')
	case 'a':
		b.WriteByte('[')
		for i, e := range n.elems {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			g.serialize(b, e)
			ws()
		}
		b.WriteByte(']')
	default:
		b.WriteString(n.raw)
	}
	n.raw = b.String()[start:]
}

// oracle walks a tree as the rules say. With plant, it replaces every string inside a
// value that will be masked by a planted secret; otherwise it returns the expected
// masked tree.
type oracle struct {
	g     *gen
	plant bool
}

type ostate struct{ rule, step int }

// strongest returns the rule that ends at a value reached with states, or -1.
func strongest(states []ostate) int {
	best := -1
	for _, s := range states {
		r := oracleRules[s.rule]
		if len(r.steps) != s.step {
			continue
		}
		if best < 0 || r.action > oracleRules[best].action {
			best = s.rule
		}
	}
	return best
}

func (o *oracle) advance(states []ostate, key string, isKey bool, idx int, elem *node) []ostate {
	var out []ostate
	for _, s := range states {
		r := oracleRules[s.rule]
		if s.step >= len(r.steps) {
			continue
		}
		st := r.steps[s.step]
		ok := false
		switch st.kind {
		case 'k':
			ok = isKey && key == st.key || !isKey && st.key == fmt.Sprint(idx)
		case '*':
			ok = isKey
		case '?':
			ok = isKey && utf8.RuneCountInString(key) == 4 && strings.HasPrefix(key, "na") && strings.HasSuffix(key, "e")
		case '#':
			ok = !isKey || key == "#"
		case 'i':
			ok = !isKey && idx == st.idx || isKey && key == fmt.Sprint(st.idx)
		case 'f':
			ok = !isKey && isVIP(elem)
		}
		if ok {
			out = append(out, ostate{s.rule, s.step + 1})
		}
	}
	return out
}

func isVIP(n *node) bool {
	if n.kind != 'o' {
		return false
	}
	for _, m := range n.members {
		if m.key == "kind" && m.val.kind == 's' && m.val.text == "vip" {
			return true
		}
		// gjson compares a number with the query's value read as a number, and "vip"
		// reads as 0: a kind of 0 (or -0.0E-2) matches #(kind=="vip") too. The masker
		// keeps gjson's answer (cond.go), which masks more, never less.
		if f, err := strconv.ParseFloat(m.val.raw, 64); m.key == "kind" && m.val.kind == 'l' && err == nil && f == 0 {
			return true
		}
	}
	return false
}

// walk returns what n becomes (nil: removed) given the states that reach it.
func (o *oracle) walk(n *node, states []ostate) *node {
	if r := strongest(states); r >= 0 {
		if o.plant {
			o.plantIn(n)
			return n
		}
		return o.replace(n, oracleRules[r].action)
	}
	switch n.kind {
	case 'o':
		out := &node{kind: 'o'}
		for _, m := range n.members {
			v := o.walk(m.val, o.advance(states, m.key, true, 0, nil))
			if v != nil {
				out.members = append(out.members, member{m.rawKey, m.key, v})
			}
		}
		if o.plant {
			n.members = out.members
			return n
		}
		return out
	case 'a':
		out := &node{kind: 'a'}
		for i, e := range n.elems {
			v := o.walk(e, o.advance(states, "", false, i, e))
			if v == nil {
				v = &node{kind: 'l', raw: "null"}
			}
			out.elems = append(out.elems, v)
		}
		if o.plant {
			n.elems = out.elems
			return n
		}
		return out
	}
	return n
}

func (o *oracle) plantIn(n *node) {
	switch n.kind {
	case 's':
		o.g.n++
		*n = *o.g.str(fmt.Sprintf("PLANTED-%04d", o.g.n))
	case 'o':
		for _, m := range n.members {
			o.plantIn(m.val)
		}
	case 'a':
		for _, e := range n.elems {
			o.plantIn(e)
		}
	}
}

func (o *oracle) replace(n *node, a action) *node {
	switch a {
	case actRemove:
		return nil
	case actRedact:
		return &node{kind: 's', text: "[REDACTED]", replaced: true}
	case actHash:
		v := n.raw
		if n.kind == 's' {
			v = n.text
		}
		h := hashOf(v)
		return &node{kind: 's', text: h[1 : len(h)-1], replaced: true}
	}
	if n.kind != 's' {
		return &node{kind: 's', text: "[REDACTED]", replaced: true}
	}
	rs := []rune(n.text)
	show := min(max(len(rs)-4, 0), 4)
	return &node{kind: 's', text: strings.Repeat("*", len(rs)-show) + string(rs[len(rs)-show:]), replaced: true}
}

// parse reads valid JSON into a tree that keeps keys and scalars as written.
func parse(b []byte) *node {
	p := &parser{b: b}
	return p.value()
}

type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) && strings.IndexByte(" \t\r\n", p.b[p.i]) >= 0 {
		p.i++
	}
}

func (p *parser) value() *node {
	p.ws()
	start := p.i
	switch p.b[p.i] {
	case '{':
		n := &node{kind: 'o'}
		p.i++
		for p.ws(); p.b[p.i] != '}'; p.ws() {
			k := p.value()
			p.ws()
			p.i++ // ':'
			n.members = append(n.members, member{rawKey: k.raw, key: k.text, val: p.value()})
			p.ws()
			if p.b[p.i] == ',' {
				p.i++
			}
		}
		p.i++
		return n
	case '[':
		n := &node{kind: 'a'}
		p.i++
		for p.ws(); p.b[p.i] != ']'; p.ws() {
			n.elems = append(n.elems, p.value())
			p.ws()
			if p.b[p.i] == ',' {
				p.i++
			}
		}
		p.i++
		return n
	case '"':
		end, _, _ := skipString(p.b, p.i)
		p.i = end
		var s string
		if err := json.Unmarshal(p.b[start:end], &s); err != nil {
			panic(err)
		}
		return &node{kind: 's', raw: string(p.b[start:end]), text: s}
	}
	p.i = skipValue(p.b, p.i)
	return &node{kind: 'l', raw: string(p.b[start:p.i])}
}

// same reports how got differs from want, or "".
func same(want, got *node, at string) string {
	if want.kind != got.kind {
		return fmt.Sprintf("%s: got %s, want kind %c %s", at, got.raw, want.kind, want.raw)
	}
	switch want.kind {
	case 'o':
		if len(want.members) != len(got.members) {
			return fmt.Sprintf("%s: got %d members, want %d", at, len(got.members), len(want.members))
		}
		for i := range want.members {
			w, g := want.members[i], got.members[i]
			if w.rawKey != g.rawKey {
				return fmt.Sprintf("%s: key %d is %s, want %s", at, i, g.rawKey, w.rawKey)
			}
			if d := same(w.val, g.val, at+"."+w.key); d != "" {
				return d
			}
		}
	case 'a':
		if len(want.elems) != len(got.elems) {
			return fmt.Sprintf("%s: got %d elements, want %d", at, len(got.elems), len(want.elems))
		}
		for i := range want.elems {
			if d := same(want.elems[i], got.elems[i], fmt.Sprintf("%s.%d", at, i)); d != "" {
				return d
			}
		}
	case 's':
		if want.replaced && want.text != got.text || !want.replaced && want.raw != got.raw {
			return fmt.Sprintf("%s: got %s, want %q (%s)", at, got.raw, want.text, want.raw)
		}
	default:
		if want.raw != got.raw {
			return fmt.Sprintf("%s: got %s, want %s", at, got.raw, want.raw)
		}
	}
	return ""
}

// hasPlanted reports whether a key or string of n holds a planted value.
func hasPlanted(n *node) bool {
	switch n.kind {
	case 'o':
		for _, m := range n.members {
			if strings.Contains(m.key, "PLANTED") || hasPlanted(m.val) {
				return true
			}
		}
	case 'a':
		for _, e := range n.elems {
			if hasPlanted(e) {
				return true
			}
		}
	case 's':
		return strings.Contains(n.text, "PLANTED")
	}
	return false
}

func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c"))
	f.Add([]byte("users with cards and secrets; vip notes; duplicate keys 0000111122223333"))
	f.Add(bytes.Repeat([]byte{5, 1, 3, 0, 2, 7, 4, 1}, 40))
	f.Add(bytes.Repeat([]byte{0, 4, 2, 1, 5, 5, 3, 6, 9}, 60))
	m, err := New(fuzzRules, nil, Options{HashKey: testKey})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{data: data}
		doc := g.document()
		(&oracle{g: g, plant: true}).walk(doc, rootStates())
		var buf bytes.Buffer
		g.serialize(&buf, doc)
		in := buf.Bytes()
		want := (&oracle{g: g}).walk(doc, rootStates())

		out, counts, err := m.Apply(nil, in)
		if err != nil {
			t.Fatalf("Apply(%s): %v", in, err)
		}
		if !json.Valid(out) || !gjson.ValidBytes(out) {
			t.Fatalf("Apply(%s) = %s: not valid JSON", in, out)
		}
		got := parse(out)
		if hasPlanted(got) || bytes.Contains(out, []byte("PLANTED")) {
			t.Fatalf("Apply(%s) = %s: a planted value is left", in, out)
		}
		if d := same(want, got, "$"); d != "" {
			t.Fatalf("Apply(%s)\n = %s\n%s", in, out, d)
		}
		if g.n > 0 && counts == (Counts{}) {
			t.Fatalf("Apply(%s): planted %d values, counted none", in, g.n)
		}
	})
}

func rootStates() []ostate {
	s := make([]ostate, len(oracleRules))
	for i := range s {
		s[i] = ostate{rule: i}
	}
	return s
}

// FuzzApplyBytes feeds arbitrary bytes: Apply accepts exactly valid JSON (in UTF-8,
// nested at most 512 deep), and what it returns is valid JSON.
func FuzzApplyBytes(f *testing.F) {
	for _, s := range []string{`{"ssn":"1","users":[{"card":"4242424242424242","kind":"vip","note":"n"}]}`,
		`[{"ssn":1},{"s\u0073n":2}]`, `{"a":[[1,2],[3]],"list":[1,2,3]}`, `"bob@example.com 078-05-1120"`,
		`{"a":"\ud800"}`, `[1,2`, `{"a" 1}`, "\"\xff\"", `[-]`, `{"name":"x","token":{"token":1}}`} {
		f.Add([]byte(s))
	}
	plain, err := New(nil, nil, Options{})
	if err != nil {
		f.Fatal(err)
	}
	masked, err := New(fuzzRules, allDetectors, Options{HashKey: testKey})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		valid := json.Valid(in) && utf8.Valid(in) && depth(in) <= maxDepth
		out, _, err := plain.Apply(nil, in)
		if (err == nil) != valid {
			t.Fatalf("Apply(%q) error = %v, want valid = %v", in, err, valid)
		}
		if err == nil && !bytes.Equal(out, in) {
			t.Fatalf("Apply without rules changed %q to %q", in, out)
		}
		out, _, err = masked.Apply(nil, in)
		if (err == nil) != valid {
			t.Fatalf("Apply(%q) error = %v, want valid = %v", in, err, valid)
		}
		if err == nil && !json.Valid(out) {
			t.Fatalf("Apply(%q) = %q: not valid JSON", in, out)
		}
		if err != nil && out != nil {
			t.Fatalf("Apply(%q) returned output with an error", in)
		}
	})
}

// depth returns the deepest nesting of arrays and objects in valid JSON b.
func depth(b []byte) int {
	d, deepest := 0, 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end, _, _ := skipString(b, i)
			i = end - 1
		case '{', '[':
			d++
			deepest = max(deepest, d)
		case '}', ']':
			d--
		}
	}
	return deepest
}

// secrets are values each detector must find wherever they stand alone.
var secrets = []string{
	"4242 4242 4242 4242", "378282246310005", "5555-5555-5555-4444",
	"078-05-1120", "123 45 6789",
	"bob.smith+x@mail.example.com", "zoë@exämple.de",
	"+1 212 555 0100", "(212) 555-0100", "212.555.0100", "+4915112345678",
	"DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Bearer abcdef0123456789xyz",
	"AKIAIOSFODNN7EXAMPLE",
	"-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQ\n-----END RSA PRIVATE KEY-----",
}

// FuzzDetect plants secrets among fuzz text in one string, written with random
// escapes: no secret may be left.
func FuzzDetect(f *testing.F) {
	f.Add([]byte("hello 0 world 1 x 2"))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte("4242\x004242@@--++  \x05\x09\x0f"))
	m, err := New(nil, allDetectors, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &gen{data: data}
		var text strings.Builder
		var planted []string
		for len(g.data) > 0 {
			if c := g.next(); c < 32 {
				s := secrets[int(c)%len(secrets)]
				planted = append(planted, s)
				text.WriteString(" | " + s + " | ")
			} else if c != '|' {
				text.WriteByte(c)
			}
		}
		s := strings.ToValidUTF8(text.String(), "?")
		in := []byte(`{"k":` + g.quote(s) + `}`)
		out, _, err := m.Apply(nil, in)
		if err != nil {
			t.Fatalf("Apply(%s): %v", in, err)
		}
		var v struct{ K string }
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("Apply(%s) = %s: %v", in, out, err)
		}
		for _, p := range planted {
			if strings.Contains(v.K, p) {
				t.Fatalf("Apply(%s) = %s: %q is left", in, out, p)
			}
		}
	})
}
