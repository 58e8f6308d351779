package masking

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"unicode/utf8"

	"github.com/keyholehq/keyhole/jsonscan"
)

// maxDepth bounds the nesting of arrays and objects Apply accepts. Deeper documents
// are refused rather than walked: a body of a million '[' must not exhaust the stack.
const maxDepth = 512

// Apply's errors wrap one of these, so that a caller can tell a body that is not JSON
// at all from one that looks like JSON but cannot be masked.
var (
	// ErrNotJSON is a body that does not begin like a JSON object, array or string
	// (after whitespace): an HTML error page, plain text, or nothing. A route that
	// accepts non-JSON responses may pass such a body on unmasked.
	ErrNotJSON = errors.New("masking: body is not JSON")
	// ErrInvalidJSON is a body that begins like a JSON object, array or string but is
	// not one valid JSON value: truncated, malformed, not UTF-8, or nested deeper than
	// 512 levels. It must never be passed on: clients may still read what it holds.
	ErrInvalidJSON = errors.New("masking: body is not valid JSON")
)

// syntaxError is Apply's error for a body that is not one valid JSON value. It names
// an offset, never body content.
type syntaxError struct {
	off     int
	msg     string
	notJSON bool
}

func (e *syntaxError) Error() string {
	if e.off < 0 {
		return fmt.Sprintf("%v: %s", e.Unwrap(), e.msg)
	}
	return fmt.Sprintf("%v: %s at offset %d", e.Unwrap(), e.msg, e.off)
}

func (e *syntaxError) Unwrap() error {
	if e.notJSON {
		return ErrNotJSON
	}
	return ErrInvalidJSON
}

// span is one change to the body: bytes [start, end) are replaced by rep.
type span struct {
	start, end int
	rep        []byte
}

// walker holds the state of one Apply: the body, the spans to change and scratch
// buffers reused from call to call.
//
// The walk is one recursive descent over the raw bytes that validates the JSON and,
// for every value, knows which rules are still active there. A rule's component i
// applies at depth i, so the active rules of a value are just rule numbers: those of
// the open containers sit on one stack, act. A rule whose last component matched
// masks the value whole; the value is then only validated.
type walker struct {
	m      *Masker
	b      []byte
	spans  []span
	act    []int32 // active rules of the open containers, innermost last
	arena  []byte  // computed replacements (hash, last4)
	key    []byte  // an unescaped key
	val    []byte  // an unescaped string value
	det    scratch
	counts Counts
	mac    hash.Hash
	sum    [sha256.Size]byte
	err    *syntaxError
}

// maxPooled bounds the scratch memory a pooled walker keeps between calls.
const maxPooled = 1 << 20

// release drops references to the body and buffers too large to keep.
func (w *walker) release() {
	w.b = nil
	if cap(w.arena) > maxPooled {
		w.arena = nil
	}
	if cap(w.spans) > maxPooled/32 {
		w.spans = nil
	}
	if cap(w.val) > maxPooled {
		w.val = nil
	}
	if cap(w.key) > maxPooled {
		w.key = nil
	}
	w.det.release()
}

func (w *walker) run(dst, body []byte) ([]byte, Counts, error) {
	w.b, w.err, w.counts = body, nil, Counts{}
	w.spans, w.arena = w.spans[:0], w.arena[:0]
	w.act = append(w.act[:0], w.m.roots...)
	i := skipSpace(body, 0)
	if i == len(body) {
		return dst, Counts{}, &syntaxError{off: -1, msg: "it is empty or only whitespace", notJSON: true}
	}
	end := w.value(i, 0, 0, len(w.act), w.m.detect != 0)
	if end >= 0 {
		if j := skipSpace(body, end); j != len(body) {
			w.fail(j, "want the end of the body")
		}
	}
	if w.err != nil {
		if c := body[i]; c != '{' && c != '[' && c != '"' {
			w.err.notJSON = true
		}
		return dst, Counts{}, w.err
	}
	size := len(body)
	prev := 0
	for _, s := range w.spans {
		// Spans are made in document order and never overlap; check it rather than
		// write a body with a change misplaced.
		if s.start < prev || s.end < s.start || s.end > len(body) {
			return dst, Counts{}, errors.New("masking: internal error: overlapping changes")
		}
		size += len(s.rep) - (s.end - s.start)
		prev = s.end
	}
	out := slices.Grow(dst, size)
	prev = 0
	for _, s := range w.spans {
		out = append(out, body[prev:s.start]...)
		out = append(out, s.rep...)
		prev = s.end
	}
	out = append(out, body[prev:]...)
	return out, w.counts, nil
}

// fail records the first error and returns -1.
func (w *walker) fail(i int, msg string) int {
	if w.err == nil {
		if i >= len(w.b) {
			msg, i = "unexpected end", len(w.b)
		}
		w.err = &syntaxError{off: i, msg: msg}
	}
	return -1
}

// value walks the value at b[i], whose active rules are act[lo:hi] (none of them ends
// here), and returns the index after it, or -1. With scan, detectors run on strings.
func (w *walker) value(i, depth, lo, hi int, scan bool) int {
	b := w.b
	if i >= len(b) {
		return w.fail(i, "want a value")
	}
	switch c := b[i]; {
	case c == '"':
		end, esc := w.str(i)
		if end > 0 && scan {
			w.detectString(i, end, esc)
		}
		return end
	case c == '{':
		return w.object(i, depth, lo, hi, scan)
	case c == '[':
		return w.array(i, depth, lo, hi, scan)
	case c == 't':
		return w.literal(i, "true")
	case c == 'f':
		return w.literal(i, "false")
	case c == 'n':
		return w.literal(i, "null")
	case c == '-' || '0' <= c && c <= '9':
		return w.number(i)
	}
	return w.fail(i, "want a value")
}

// object walks the object at b[i] == '{'.
//
// A removed member takes its separator with it: a run of removed members followed by a
// kept one is cut from the first removed key to the kept key; a run that ends the
// object is cut from the end of the last kept value (taking the comma before the run)
// or, when nothing is kept, from the first removed key. The result stays valid JSON.
func (w *walker) object(i, depth, lo, hi int, scan bool) int {
	if depth == maxDepth {
		return w.fail(i, fmt.Sprintf("it nests deeper than %d levels", maxDepth))
	}
	b := w.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	run, lastKept, lastRemoved := -1, -1, -1
	// firsts and lens hold the first bytes and the lengths (mod 64) of the keys the
	// active rules name, so that most members are passed over without comparing their
	// key with each rule; all is set when a rule matches other keys too (a wildcard, '#').
	var firsts [4]uint64
	var lens uint64
	all := false
	for _, r := range w.act[lo:hi] {
		if c := &w.m.rules[r].comps[depth]; c.kind == compKey && len(c.lit) > 0 && !c.fold {
			firsts[c.lit[0]>>6] |= 1 << (c.lit[0] & 63)
			lens |= 1 << (len(c.lit) & 63)
		} else {
			all = true
		}
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return w.fail(i, "want an object key")
		}
		k := i
		kend, kesc := w.str(i)
		if kend < 0 {
			return -1
		}
		j := skipSpace(b, kend)
		if j >= len(b) || b[j] != ':' {
			return w.fail(j, `want ":"`)
		}
		j = skipSpace(b, j+1)
		clo := len(w.act)
		best := -1
		if lo < hi {
			key := b[k+1 : kend-1]
			if kesc {
				w.key = jsonscan.Unescape(w.key[:0], key)
				key = w.key
			}
			if all || len(key) > 0 && firsts[key[0]>>6]&(1<<(key[0]&63)) != 0 && lens&(1<<(len(key)&63)) != 0 {
				best = w.advanceKey(key, depth, lo, hi)
			}
		}
		removed := best >= 0 && w.m.rules[best].action == actRemove
		if !removed && run >= 0 {
			w.spans = append(w.spans, span{start: run, end: k})
			run = -1
		}
		var end int
		if best >= 0 {
			if end = w.value(j, depth+1, 0, 0, false); end < 0 {
				return -1
			}
			if removed {
				w.counts.Remove++
				if run < 0 {
					run = k
				}
				lastRemoved = end
			} else {
				w.mask(j, end, best)
			}
		} else if end = w.value(j, depth+1, clo, len(w.act), scan); end < 0 {
			return -1
		}
		w.act = w.act[:clo]
		if !removed {
			lastKept = end
		}
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			if run >= 0 {
				if lastKept >= 0 {
					run = lastKept
				}
				w.spans = append(w.spans, span{start: run, end: lastRemoved})
			}
			return i + 1
		}
		return w.fail(i, `want "," or "}"`)
	}
}

// array walks the array at b[i] == '['. A removed element becomes null: deleting it
// would shift the index of every later element.
func (w *walker) array(i, depth, lo, hi int, scan bool) int {
	if depth == maxDepth {
		return w.fail(i, fmt.Sprintf("it nests deeper than %d levels", maxDepth))
	}
	b := w.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for idx := 0; ; idx++ {
		clo := len(w.act)
		best := -1
		if lo < hi {
			best = w.advanceElem(i, idx, depth, lo, hi)
		}
		var end int
		if best >= 0 {
			if end = w.value(i, depth+1, 0, 0, false); end < 0 {
				return -1
			}
			if w.m.rules[best].action == actRemove {
				w.counts.Remove++
				w.spans = append(w.spans, span{start: i, end: end, rep: jsonNull})
			} else {
				w.mask(i, end, best)
			}
		} else if end = w.value(i, depth+1, clo, len(w.act), scan); end < 0 {
			return -1
		}
		w.act = w.act[:clo]
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			return i + 1
		}
		return w.fail(i, `want "," or "]"`)
	}
}

var jsonNull = []byte("null")

// advanceKey moves the rules act[lo:hi], active at an object of depth, over the member
// keyed key: those that go on are pushed on act; the strongest that ends at the member's
// value is returned, or -1.
func (w *walker) advanceKey(key []byte, depth, lo, hi int) int {
	best := -1
	rules := w.m.rules
	for _, r := range w.act[lo:hi] {
		ru := &rules[r]
		c := &ru.comps[depth]
		if c.kind == compKey && !c.fold {
			if string(c.lit) != string(key) {
				continue
			}
		} else if !c.matchKey(key) {
			continue
		}
		if len(ru.comps) == depth+1 {
			best = w.stronger(best, int(r))
		} else {
			w.act = append(w.act, r)
		}
	}
	return best
}

// advanceElem is advanceKey for the element idx at b[i] of an array.
func (w *walker) advanceElem(i, idx, depth, lo, hi int) int {
	best := -1
	rules := w.m.rules
	for _, r := range w.act[lo:hi] {
		ru := &rules[r]
		c := &ru.comps[depth]
		switch c.kind {
		case compAll:
		case compKey:
			if c.index != idx {
				continue
			}
		case compFilter:
			if !w.cond(c.q, i) {
				continue
			}
		default:
			continue
		}
		if len(ru.comps) == depth+1 {
			best = w.stronger(best, int(r))
		} else {
			w.act = append(w.act, r)
		}
	}
	return best
}

// stronger returns whichever of rules a (or -1) and b hides more; the earlier on a tie.
func (w *walker) stronger(a, b int) int {
	if a < 0 || w.m.rules[b].action > w.m.rules[a].action {
		return b
	}
	return a
}

// mask records the replacement of the value b[start:end] by rule r (not remove).
func (w *walker) mask(start, end, r int) {
	ru := &w.m.rules[r]
	var rep []byte
	switch ru.action {
	case actRedact:
		w.counts.Redact++
		rep = ru.rep
	case actHash:
		w.counts.Hash++
		rep = w.hashed(start, end)
	case actLast4:
		w.counts.Last4++
		rep = defaultRedaction
		if w.b[start] == '"' {
			rep = w.last4(w.stringAt(start, end))
		}
	}
	w.spans = append(w.spans, span{start: start, end: end, rep: rep})
}

// stringAt returns the unescaped text of the JSON string b[start:end].
func (w *walker) stringAt(start, end int) []byte {
	raw := w.b[start+1 : end-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	w.val = jsonscan.Unescape(w.val[:0], raw)
	return w.val
}

// hashed returns "sha256:<hex>" of the value b[start:end]: HMAC-SHA256 under the hash
// key of the unescaped text for a string, of the JSON as written for any other value.
func (w *walker) hashed(start, end int) []byte {
	v := w.b[start:end]
	if v[0] == '"' {
		v = w.stringAt(start, end)
	}
	mac := w.hmac()
	mac.Reset()
	mac.Write(v)
	sum := mac.Sum(w.sum[:0])
	off := len(w.arena)
	w.arena = append(w.arena, `"sha256:`...)
	w.arena = hex.AppendEncode(w.arena, sum)
	w.arena = append(w.arena, '"')
	return w.arena[off:len(w.arena):len(w.arena)]
}

// last4 returns s as a JSON string of asterisks that keeps its last four runes, with
// at least four runes masked: a value of eight runes or more shows its last four, a
// shorter one shows fewer (len-4), one of four runes or fewer shows none.
func (w *walker) last4(s []byte) []byte {
	n := utf8.RuneCount(s)
	show := min(max(n-4, 0), 4)
	tail := len(s)
	for range show {
		_, size := utf8.DecodeLastRune(s[:tail])
		tail -= size
	}
	off := len(w.arena)
	w.arena = append(w.arena, '"')
	for range n - show {
		w.arena = append(w.arena, '*')
	}
	w.arena = appendEscaped(w.arena, s[tail:])
	w.arena = append(w.arena, '"')
	return w.arena[off:len(w.arena):len(w.arena)]
}

// detectString runs the detectors over the string b[start:end] and records a span for
// each finding. Findings are made on the unescaped text, then mapped back to the
// bytes as written, so escapes outside a finding are kept as they are.
func (w *walker) detectString(start, end int, esc bool) {
	raw := w.b[start+1 : end-1]
	text := raw
	if esc {
		w.val = jsonscan.Unescape(w.val[:0], raw)
		text = w.val
	}
	fs := w.det.find(text, w.m.detect)
	if len(fs) == 0 {
		return
	}
	if esc {
		mapToRaw(raw, fs)
	}
	for _, f := range fs {
		w.spans = append(w.spans, span{start: start + 1 + f.start, end: start + 1 + f.end, rep: f.det.token()})
	}
	w.counts.Detected += len(fs)
}

// str validates the JSON string at b[i] == '"' and returns the index after it and
// whether it holds an escape, or -1.
func (w *walker) str(i int) (int, bool) {
	end, esc, f := jsonscan.ScanString(w.b, i)
	if f != jsonscan.NoFault {
		return w.fail(end, f.String()), false
	}
	return end, esc
}

func (w *walker) number(i int) int {
	end, f := jsonscan.ScanNumber(w.b, i)
	if f != jsonscan.NoFault {
		return w.fail(end, f.String())
	}
	return end
}

func (w *walker) literal(i int, lit string) int {
	if !bytes.HasPrefix(w.b[i:], []byte(lit)) {
		return w.fail(i, "want a value")
	}
	return i + len(lit)
}

func skipSpace(b []byte, i int) int { return jsonscan.SkipSpace(b, i) }
