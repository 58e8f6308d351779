package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/keyholehq/keyhole/config"
)

// Options configures New.
type Options struct {
	// HashKey is the HMAC-SHA256 key of action hash: a per-deployment secret, so that
	// hashed values stay joinable across responses but cannot be guessed by hashing
	// candidates. New refuses hash rules when it is empty. New copies it.
	HashKey []byte
}

// RuleError is one mask rule that New refuses.
type RuleError struct {
	// Index is the rule's position in the rules given to New, so the caller can name
	// it in its config path (routes[i].mask[Index].field).
	Index int
	Msg   string
}

// Error returns Msg.
func (e *RuleError) Error() string { return e.Msg }

// action is what a rule does to a matched value. A higher action hides more: when
// several rules match one value, the highest wins.
type action uint8

const (
	actLast4 action = iota
	actHash
	actRedact
	actRemove
)

// rule is one compiled mask rule.
type rule struct {
	comps  []comp
	action action
	rep    []byte // actRedact: the replacement, a JSON string
}

// Masker masks the JSON responses of one route: its mask rules and detectors,
// compiled. A Masker is immutable and safe for concurrent use; the zero value is not
// usable, build one with New.
type Masker struct {
	rules   []rule
	roots   []int32 // 0..len(rules)-1: every rule is active at the root
	detect  detectors
	hashKey []byte
	pool    sync.Pool // *walker
}

// Counts tells how many values Apply masked, by action. A value is counted once, under
// the action applied to it, however many rules matched it; values inside a value that
// was masked whole are not counted. Detected counts the spans that detectors replaced
// (a string holding two e-mail addresses counts 2).
type Counts struct {
	Redact, Remove, Hash, Last4, Detected int
}

// defaultRedaction is what redact writes without a with string, and last4 writes for
// a value that is not a string.
var defaultRedaction = []byte(`"[REDACTED]"`)

// New compiles one route's mask rules and detectors. Rules are gjson paths with an
// action (redact, remove, hash or last4, and with for redact); detectors are names
// such as "credit_card" (see the package documentation). Its error is an errors.Join of
// a *RuleError for each refused rule, such as a path that cannot be masked safely
// (modifiers, multipaths, pipes, a first-match-only query) or a hash rule without
// Options.HashKey, and of a plain error for each unknown detector.
func New(rules []config.MaskRule, detect []string, opts Options) (*Masker, error) {
	m := &Masker{hashKey: append([]byte(nil), opts.HashKey...)}
	var errs []error
	fail := func(i int, format string, args ...any) {
		errs = append(errs, &RuleError{Index: i, Msg: fmt.Sprintf(format, args...)})
	}
	for i, r := range rules {
		if r.Field == "" {
			fail(i, "field is required")
			continue
		}
		comps, err := parsePath(r.Field, false)
		if err != nil {
			fail(i, "unsupported gjson path %q: %v", r.Field, err)
			continue
		}
		if r.CaseInsensitive {
			for j := range comps {
				comps[j].foldCase()
			}
		}
		cr := rule{comps: comps}
		switch r.Action {
		case "redact":
			cr.action = actRedact
			cr.rep = defaultRedaction
			if r.With != "" {
				cr.rep = appendJSONString(nil, []byte(r.With))
			}
		case "remove":
			cr.action = actRemove
		case "hash":
			cr.action = actHash
			if len(m.hashKey) == 0 {
				fail(i, "action hash needs a hash key (masking.hash_key), and none is configured")
				continue
			}
		case "last4":
			cr.action = actLast4
		default:
			fail(i, "unknown action %q: want redact, remove, hash or last4", r.Action)
			continue
		}
		if r.With != "" && cr.action != actRedact {
			fail(i, "with applies only to action redact")
			continue
		}
		m.rules = append(m.rules, cr)
	}
	for _, name := range detect {
		d, ok := detectorByName(name)
		if !ok {
			errs = append(errs, fmt.Errorf("unknown detector %q", name))
			continue
		}
		m.detect |= d
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	m.roots = make([]int32, len(m.rules))
	for i := range m.roots {
		m.roots[i] = int32(i)
	}
	return m, nil
}

// Empty reports whether m has no rules and no detectors: Apply then only checks that
// the body is valid JSON and copies it.
func (m *Masker) Empty() bool { return len(m.rules) == 0 && m.detect == 0 }

// Apply appends to dst the JSON document body with every configured field and every
// detected span masked, and returns it with the counts of what was masked. Bytes that
// are not masked are copied unchanged (whitespace, number formatting, key order,
// escapes). It returns dst unchanged and an error, never a partly masked body, if body
// is not one valid JSON value in UTF-8 (surrounding whitespace allowed) or nests
// deeper than 512 arrays and objects. The error wraps ErrNotJSON when body does not
// even begin like a JSON object, array or string, ErrInvalidJSON otherwise; it names an
// offset, never body content. dst must not overlap body. Apply is safe for concurrent
// use.
func (m *Masker) Apply(dst, body []byte) ([]byte, Counts, error) {
	w, _ := m.pool.Get().(*walker)
	if w == nil {
		w = &walker{m: m}
	}
	out, counts, err := w.run(dst, body)
	w.release()
	m.pool.Put(w)
	return out, counts, err
}

// mac returns the walker's HMAC, made on first use.
func (w *walker) hmac() hash.Hash {
	if w.mac == nil {
		w.mac = hmac.New(sha256.New, w.m.hashKey)
	}
	return w.mac
}
