package configs_test

import (
	"bufio"
	"bytes"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/metrics"
)

// reference is the repository's reference of keys, commands, endpoints and metrics.
const reference = "../docs/reference.md"

// TestReferenceConfigKeys fails when docs/reference.md leaves out a configuration key that
// config.Parse accepts, or lists one it does not accept, so the reference keeps in step
// with config/types.go and config/config.go.
func TestReferenceConfigKeys(t *testing.T) {
	documented := firstColumn(t, section(t, "## Configuration keys"))
	keys := configKeys()
	if !keys["telemetry.otlp.endpoint"] || len(keys) < 100 {
		t.Fatalf("found %d config keys by reflection, want every key of config.Config (telemetry.otlp.endpoint among them)", len(keys))
	}
	for _, k := range sortedKeys(keys) {
		if _, ok := documented[k]; !ok {
			t.Errorf("config key %s is accepted by config.Parse but missing from %s", k, reference)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !keys[k] {
			t.Errorf("%s lists config key %s, which config.Parse does not accept", reference, k)
		}
	}
}

// TestReferenceMetrics fails when docs/reference.md leaves out a metric that metrics.New
// registers or one of its labels, or lists a metric it does not register.
func TestReferenceMetrics(t *testing.T) {
	documented := firstColumn(t, section(t, "## Metrics"))
	registered := keyholeMetrics(t)
	if len(registered) < 20 {
		t.Fatalf("metrics.New registered %d keyhole_ metrics, want every one (20 or more)", len(registered))
	}
	for _, name := range sortedKeys(registered) {
		row, ok := documented[name]
		if !ok {
			t.Errorf("metric %s is registered by metrics.New but missing from %s", name, reference)
			continue
		}
		for _, l := range registered[name] {
			if !strings.Contains(row, "`"+l+"`") {
				t.Errorf("%s: the row of %s does not name its label %s", reference, name, l)
			}
		}
	}
	for _, name := range sortedKeys(documented) {
		if _, ok := registered[name]; !ok {
			t.Errorf("%s lists metric %s, which metrics.New does not register", reference, name)
		}
	}
}

// section returns the text of docs/reference.md under heading (a "## " line) up to the
// next "## " heading.
func section(t *testing.T, heading string) string {
	t.Helper()
	doc, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(doc, []byte("\n"+heading+"\n"))
	if !ok {
		t.Fatalf("%s has no %q section", reference, heading)
	}
	if i := bytes.Index(rest, []byte("\n## ")); i >= 0 {
		rest = rest[:i]
	}
	return string(rest)
}

// firstColumn maps the code span that opens each table row of text ("| `key` | ...") to
// the whole row.
func firstColumn(t *testing.T, text string) map[string]string {
	t.Helper()
	rows := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		m := rowKey.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("%s lists %s twice", reference, m[1])
		}
		rows[m[1]] = sc.Text()
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table rows found", reference)
	}
	return rows
}

var rowKey = regexp.MustCompile("^\\| `([^`]+)` \\|")

// allowKey is how the reference names the keys of an allow block, wherever it is used.
const allowKey = "<allow>"

// guardKeys are the only keys a guard takes (config/validate.go refuses the rest of a
// route's keys on guards).
var guardKeys = []string{"name", "match", "deny"}

var (
	allowType       = reflect.TypeFor[config.Allow]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// configKeys returns the path of every key config.Parse accepts, found as its decoder
// finds them: by the yaml tags of config.Config's fields. Lists are written "[]", the
// keys of a map of sections "<name>" ("<role>" for admin.roles), and an allow block's
// keys once, as "<allow>.groups".
func configKeys() map[string]bool {
	keys := map[string]bool{}
	var fields func(t reflect.Type, prefix string)
	// inner adds the keys inside a value of type t at path p: a struct's, a list's
	// elements', a map of sections' entries. Leaves, maps of values and allow blocks have
	// none here.
	var inner func(t reflect.Type, p string)
	inner = func(t reflect.Type, p string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == allowType || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			fields(t, p)
		case reflect.Slice:
			inner(t.Elem(), p+"[]")
		case reflect.Map:
			elem := t.Elem()
			for elem.Kind() == reflect.Pointer {
				elem = elem.Elem()
			}
			if elem.Kind() != reflect.Struct {
				return // a map of values: its keys are the user's
			}
			name := "<name>"
			if p == "admin.roles" {
				name = "<role>"
			}
			keys[p+"."+name] = true
			inner(t.Elem(), p+"."+name)
		}
	}
	fields = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" || prefix == "guards[]" && !slices.Contains(guardKeys, name) {
				continue
			}
			p := name
			if prefix != "" {
				p = prefix + "." + name
			}
			keys[p] = true
			inner(f.Type, p)
		}
	}
	fields(reflect.TypeFor[config.Config](), "")
	for i := range allowType.NumField() {
		name, _, _ := strings.Cut(allowType.Field(i).Tag.Get("yaml"), ",")
		keys[allowKey+"."+name] = true
	}
	return keys
}

// collectors is a prometheus.Registerer that keeps what is registered.
type collectors []prometheus.Collector

func (c *collectors) Register(x prometheus.Collector) error   { *c = append(*c, x); return nil }
func (c *collectors) MustRegister(xs ...prometheus.Collector) { *c = append(*c, xs...) }
func (c *collectors) Unregister(prometheus.Collector) bool    { return false }

// descName reads a metric's name and variable labels from prometheus.Desc's String, the
// only way Desc shows them.
var descName = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// keyholeMetrics returns the keyhole_ metrics metrics.New registers, with their labels.
func keyholeMetrics(t *testing.T) map[string][]string {
	t.Helper()
	var cs collectors
	if _, err := metrics.New(&cs); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			if !strings.HasPrefix(m[1], "keyhole_") {
				continue
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = labels
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
