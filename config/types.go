package config

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is one configuration error, located by YAML line and field path.
type FieldError struct {
	Line int    // 1-based YAML line, 0 when unknown
	Path string // field path such as "routes[2].match.path"; "" for the whole file
	Msg  string
}

// Error formats the error as "line 12: routes[2].match.path: message".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errorf returns a *FieldError for field path p, located at the line c recorded for it.
func (c *Config) Errorf(p, format string, args ...any) *FieldError {
	return &FieldError{Line: c.Line(p), Path: p, Msg: fmt.Sprintf(format, args...)}
}

// Secret is a credential value. It prints as <secret> in logs, errors and JSON so that a
// stray %v or slog attribute cannot leak it; use Reveal where the value is needed.
type Secret string

// String returns "<secret>".
func (Secret) String() string { return "<secret>" }

// GoString returns "<secret>".
func (Secret) GoString() string { return "<secret>" }

// LogValue returns "<secret>" for log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("<secret>") }

// MarshalJSON returns "<secret>" as a JSON string.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"<secret>"`), nil }

// MarshalYAML returns "<secret>".
func (Secret) MarshalYAML() (any, error) { return "<secret>", nil }

// Reveal returns the secret value itself.
func (s Secret) Reveal() string { return string(s) }

// Duration is a time.Duration written as "30s", "15m", "2h" or, for retention, "90d".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string, with "d" accepted for whole days.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 30s or 90d")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// String writes d as ParseDuration reads it: whole days as "90d", anything else as
// time.Duration writes it ("1h30m0s").
func (d Duration) String() string {
	const day = 24 * time.Hour
	if v := time.Duration(d); v > 0 && v%day == 0 {
		return strconv.FormatInt(int64(v/day), 10) + "d"
	}
	return time.Duration(d).String()
}

// ParseDuration parses "1h30m", "500ms" or "90d". Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q: want whole days such as 90d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q: want a number with a unit (ms, s, m, h, d)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("bad duration %q: must not be negative", s)
	}
	return v, nil
}

// ByteSize is a size in bytes written as 1048576, "512KiB", "10MiB", "1GiB", "10MB" or "1KB".
type ByteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalYAML parses a size such as 10MiB.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 10MiB")
	}
	s := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return fmt.Errorf("bad size %q: want a whole number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

// Kind is the YAML type of a Scalar.
type Kind uint8

// Scalar kinds. A condition value of one kind matches only a JSON value of the same kind.
const (
	String Kind = iota
	Number
	Bool
	Null
)

// Scalar is one condition value as written in YAML, with its type.
type Scalar struct {
	Value string
	Kind  Kind
}

// Scalars is a list of accepted values; YAML may give one scalar or a list of scalars.
type Scalars []Scalar

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (s *Scalars) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := scalarOf(n)
		if err != nil {
			return err
		}
		*s = Scalars{v}
		return nil
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			return fmt.Errorf("want at least one value")
		}
		out := make(Scalars, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := scalarOf(c)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		*s = out
		return nil
	}
	return fmt.Errorf("want a value or a list of values")
}

func scalarOf(n *yaml.Node) (Scalar, error) {
	if n.Kind != yaml.ScalarNode {
		return Scalar{}, fmt.Errorf("want a plain value (string, number, true/false or null)")
	}
	switch n.ShortTag() {
	case "!!str", "!!timestamp":
		// A date such as 2024-01-31 resolves to !!timestamp; as a condition it is text.
		return Scalar{Value: n.Value, Kind: String}, nil
	case "!!int", "!!float":
		return Scalar{Value: n.Value, Kind: Number}, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return Scalar{}, err
		}
		return Scalar{Value: strconv.FormatBool(b), Kind: Bool}, nil
	case "!!null":
		return Scalar{Value: "null", Kind: Null}, nil
	}
	return Scalar{}, fmt.Errorf("unsupported value type %s", n.ShortTag())
}

// Strings returns the values as text, whatever their kind.
func (s Scalars) Strings() []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = v.Value
	}
	return out
}

// KeyPath returns the field path of map key k under parent: "upstreams.crm" for a plain key,
// `routes[0].match.when.body["params.name"]` for a key that is not a plain identifier.
func KeyPath(parent, k string) string {
	plain := k != ""
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			plain = false
			break
		}
	}
	if plain {
		if parent == "" {
			return k
		}
		return parent + "." + k
	}
	return parent + "[" + strconv.Quote(k) + "]"
}
