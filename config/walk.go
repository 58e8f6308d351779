package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// A walker decodes a yaml.Node tree into the Config types by reflection, strictly:
// it records the YAML line of every field path it meets, expands ${VAR} references in
// scalar values, and collects an error for every unknown key, wrong node kind and bad
// leaf value instead of stopping at the first one.
type walker struct {
	getenv func(string) string
	// secretsOptional: an unset ${VAR} in a Secret becomes a placeholder (Options).
	secretsOptional bool

	lines   map[string]int    // field path -> YAML line, for every path met
	null    map[string]bool   // paths written as null (~, null or nothing)
	written map[string]string // paths whose value had a ${VAR} substituted -> the text as written
	bad     map[string]bool   // paths that already have an error; validation stays quiet about them
	errs    []*FieldError

	// budget bounds the nodes visited, so that aliases (a "billion laughs" document)
	// cannot make the walk exponential.
	budget   int
	stopped  bool
	visiting map[*yaml.Node]bool // alias targets being walked, to refuse an alias that contains itself
}

func newWalker(getenv func(string) string, nodes int) *walker {
	return &walker{
		getenv:   getenv,
		lines:    make(map[string]int),
		null:     make(map[string]bool),
		written:  make(map[string]string),
		bad:      make(map[string]bool),
		budget:   10*nodes + 10000,
		visiting: make(map[*yaml.Node]bool),
	}
}

// countNodes returns the number of nodes in the tree under n, not following aliases.
func countNodes(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, k := range n.Content {
		c += countNodes(k)
	}
	return c
}

func (w *walker) errorf(line int, path, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fail records an error about the value at path and marks path as bad.
func (w *walker) fail(line int, path, format string, args ...any) {
	w.bad[path] = true
	w.errorf(line, path, format, args...)
}

// underBad reports whether path, or a path that holds it, already has an error.
func (w *walker) underBad(path string) bool {
	for p := path; ; {
		if w.bad[p] {
			return true
		}
		parent, ok := parentPath(p)
		if !ok {
			return w.bad[""]
		}
		p = parent
	}
}

// record notes that path is written at line.
func (w *walker) record(path string, line int) {
	if path == "" {
		return
	}
	if _, ok := w.lines[path]; !ok {
		w.lines[path] = line
	}
}

// spend takes one node from the budget; false means the walk must stop.
func (w *walker) spend(line int, path string) bool {
	if w.stopped {
		return false
	}
	w.budget--
	if w.budget < 0 {
		w.stopped = true
		w.fail(line, path, "the document expands to too many values (aliases nested too deeply?)")
		return false
	}
	return true
}

// deref follows aliases to the node they name. It returns nil, after recording an
// error, for an alias that refers to a node containing it.
func (w *walker) deref(n *yaml.Node, line int, path string) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		if w.visiting[n.Alias] {
			w.fail(line, path, "alias *%s refers to a value that contains it", n.Value)
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindName describes the kind of n for an error message, without its value.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "true/false"
		}
		return "a string"
	}
	return "nothing"
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	scalarsType     = reflect.TypeFor[Scalars]()
)

// walk decodes n into v, the value at field path, written at line.
func (w *walker) walk(n *yaml.Node, v reflect.Value, path string, line int) {
	if !w.spend(line, path) {
		return
	}
	w.record(path, line)
	if n != nil && n.Kind == yaml.AliasNode {
		target := w.deref(n, line, path)
		if target == nil {
			return
		}
		w.visiting[target] = true
		defer delete(w.visiting, target)
		n = target
	}
	if isNull(n) && !(v.Type() == scalarsType && n != nil && n.Kind == yaml.ScalarNode) {
		// Like yaml.v3, leave the zero value for null, except in a condition, where
		// `field: null` asks for a JSON null.
		w.null[path] = true
		return
	}
	for v.Kind() == reflect.Pointer {
		v.Set(reflect.New(v.Type().Elem()))
		v = v.Elem()
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		w.custom(n, v, path, line)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		w.structure(n, v, path, line)
	case reflect.Map:
		w.mapping(n, v, path, line)
	case reflect.Slice:
		w.sequence(n, v, path, line)
	default:
		w.leaf(n, v, path, line)
	}
}

type pair struct{ key, val *yaml.Node }

// pairs returns the key/value pairs of mapping n, with << merge keys applied: keys
// written in n win over merged ones, and an earlier merged mapping wins over a later one.
// It records an error for a duplicate key or a key that is not a scalar.
func (w *walker) pairs(n *yaml.Node, path string) []pair {
	var out, merged []pair
	seen := make(map[string]int) // key -> line first written
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := w.deref(n.Content[i], n.Content[i].Line, path)
		val := n.Content[i+1]
		if k == nil {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.errorf(n.Content[i].Line, path, "a key must be a string, got %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, w.merge(val, path)...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			w.errorf(n.Content[i].Line, path, "key %q is already set at line %d", k.Value, first)
			continue
		}
		seen[k.Value] = n.Content[i].Line
		out = append(out, pair{n.Content[i], val})
	}
	for _, p := range merged {
		k := w.deref(p.key, p.key.Line, path)
		if k == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		if _, dup := seen[k.Value]; dup {
			continue
		}
		seen[k.Value] = p.key.Line
		out = append(out, p)
	}
	return out
}

// merge returns the pairs that a << key with value v merges in.
func (w *walker) merge(v *yaml.Node, path string) []pair {
	line := v.Line
	m := w.deref(v, line, path)
	if m == nil {
		return nil
	}
	maps := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		maps = maps[:0]
		for _, c := range m.Content {
			if c := w.deref(c, c.Line, path); c != nil {
				maps = append(maps, c)
			}
		}
	}
	var out []pair
	for _, mm := range maps {
		if mm.Kind != yaml.MappingNode {
			w.errorf(line, path, "<< merges a mapping or a list of mappings, got %s", kindName(mm))
			continue
		}
		if w.visiting[mm] {
			w.fail(line, path, "<< merges a mapping that contains it")
			continue
		}
		if !w.spend(line, path) {
			return out
		}
		w.visiting[mm] = true
		out = append(out, w.pairs(mm, path)...)
		delete(w.visiting, mm)
	}
	return out
}

// fieldsOf returns the struct fields of t by yaml key.
func fieldsOf(t reflect.Type) (map[string]int, []string) {
	idx := make(map[string]int)
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		idx[name] = i
		names = append(names, name)
	}
	return idx, names
}

func (w *walker) structure(n *yaml.Node, v reflect.Value, path string, line int) {
	if n.Kind != yaml.MappingNode {
		w.fail(line, path, "want a mapping, got %s", kindName(n))
		return
	}
	idx, names := fieldsOf(v.Type())
	for _, p := range w.pairs(n, path) {
		k := w.deref(p.key, p.key.Line, path)
		i, ok := idx[k.Value]
		if !ok {
			msg := fmt.Sprintf("unknown key %q", k.Value)
			if s := Suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
				// The misspelt key is the mistake: that s is then missing is not another.
				w.bad[KeyPath(path, s)] = true
			}
			w.errorf(p.key.Line, path, "%s", msg)
			continue
		}
		w.walk(p.val, v.Field(i), KeyPath(path, k.Value), p.key.Line)
	}
}

func (w *walker) mapping(n *yaml.Node, v reflect.Value, path string, line int) {
	if n.Kind != yaml.MappingNode {
		w.fail(line, path, "want a mapping, got %s", kindName(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	for _, p := range w.pairs(n, path) {
		k := w.deref(p.key, p.key.Line, path)
		e := reflect.New(v.Type().Elem()).Elem()
		w.walk(p.val, e, KeyPath(path, k.Value), p.key.Line)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
	v.Set(m)
}

func (w *walker) sequence(n *yaml.Node, v reflect.Value, path string, line int) {
	if n.Kind != yaml.SequenceNode {
		w.fail(line, path, "want a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		w.walk(c, s.Index(i), path+"["+strconv.Itoa(i)+"]", c.Line)
	}
	v.Set(s)
}

// scalar returns a copy of scalar n with ${VAR} references expanded. A plain
// (unquoted, untagged) scalar that changed gets its tag resolved again, so that
// "${N}" can become an int. ok is false after an expansion error.
func (w *walker) scalar(n *yaml.Node, path string, line int) (out *yaml.Node, ok bool) {
	s, subst, errs := expand(n.Value, w.getenv)
	if len(errs) > 0 {
		w.bad[path] = true
		for _, e := range errs {
			w.errorf(line, path, "%s", e)
		}
		return nil, false
	}
	if subst {
		w.written[path] = n.Value
	}
	c := *n
	if s != n.Value {
		c.Value = s
		if c.Style&(yaml.TaggedStyle|yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			c.Tag = ""
			c.Tag = c.ShortTag()
		}
	}
	return &c, true
}

// secretScalar is scalar for a Secret under Options.SecretsOptional: an unset
// variable stands for a placeholder.
func (w *walker) secretScalar(n *yaml.Node, path string, line int) (*yaml.Node, bool) {
	getenv := w.getenv
	defer func() { w.getenv = getenv }()
	w.getenv = func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return placeholderSecret(name)
	}
	return w.scalar(n, path, line)
}

func (w *walker) leaf(n *yaml.Node, v reflect.Value, path string, line int) {
	want := map[reflect.Kind]string{reflect.String: "a string", reflect.Bool: "true or false", reflect.Int: "a whole number"}[v.Kind()]
	if want == "" {
		want = "a value of type " + v.Type().String()
	}
	if n.Kind != yaml.ScalarNode {
		w.fail(line, path, "want %s, got %s", want, kindName(n))
		return
	}
	scalar := w.scalar
	if w.secretsOptional && v.Type() == reflect.TypeFor[Secret]() {
		scalar = w.secretScalar
	}
	c, ok := scalar(n, path, line)
	if !ok {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(c.Value)
		return
	case reflect.Bool:
		ok = c.ShortTag() == "!!bool"
	case reflect.Int:
		ok = c.ShortTag() == "!!int"
	}
	// Decode into a fresh value so that a failed decode leaves v zero.
	p := reflect.New(v.Type())
	if !ok || c.Decode(p.Interface()) != nil {
		w.fail(line, path, "want %s, got %s", want, strconv.Quote(w.asWritten(path, c.Value)))
		return
	}
	v.Set(p.Elem())
}

// custom decodes n with v's UnmarshalYAML method (Duration, ByteSize, Scalars).
func (w *walker) custom(n *yaml.Node, v reflect.Value, path string, line int) {
	expanded, ok := w.resolved(n, path, line, true)
	if !ok {
		return
	}
	u := v.Addr().Interface().(yaml.Unmarshaler)
	err := u.UnmarshalYAML(expanded)
	if err == nil {
		return
	}
	if w.hasWritten(path) {
		// The message may quote the expanded value, which may be a secret: decode the
		// value as written instead, to explain the error in the file's own terms.
		asWritten, _ := w.resolved(n, path, line, false)
		werr := reflect.New(v.Type()).Interface().(yaml.Unmarshaler).UnmarshalYAML(asWritten)
		if werr != nil {
			err = werr
		} else {
			err = fmt.Errorf("the value of %s is not valid here", strconv.Quote(w.asWritten(path, "")))
		}
	}
	w.fail(line, path, "%s", err)
}

// asWritten returns the text of path as written if a ${VAR} was substituted in it, else v.
func (w *walker) asWritten(path, v string) string {
	if s, ok := w.written[path]; ok {
		return s
	}
	return v
}

// hasWritten reports whether path or a path under it had a ${VAR} substituted.
func (w *walker) hasWritten(path string) bool {
	for p := range w.written {
		if p == path || strings.HasPrefix(p, path+"[") {
			return true
		}
	}
	return false
}

// resolved returns a copy of n with aliases followed and, when expand is true,
// ${VAR} references expanded in every scalar. It records the lines of sequence
// items as path[i].
func (w *walker) resolved(n *yaml.Node, path string, line int, expand bool) (*yaml.Node, bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !expand {
			return n, true
		}
		return w.scalar(n, path, line)
	case yaml.SequenceNode:
		c := *n
		c.Content = make([]*yaml.Node, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			if !w.spend(item.Line, p) {
				return nil, false
			}
			w.record(p, item.Line)
			item := w.deref(item, item.Line, p)
			if item == nil {
				ok = false
				continue
			}
			if item.Kind == yaml.ScalarNode {
				r, itemOK := w.resolved(item, p, item.Line, expand)
				if !itemOK {
					ok = false
					continue
				}
				item = r
			}
			c.Content = append(c.Content, item)
		}
		return &c, ok
	}
	return n, true
}

// Suggest returns the name in names closest to k, if it is close enough to be a typo of
// it, else "". It is what "did you mean" hints of config errors use.
func Suggest(k string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(strings.ToLower(k), n); d < bestD && d <= len(n)/2 {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sortErrors orders errs by line, then path, keeping the order of equal ones.
func sortErrors(errs []*FieldError) {
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Path < errs[j].Path
	})
}
