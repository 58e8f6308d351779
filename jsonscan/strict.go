package jsonscan

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// DefaultMaxDepth is the nesting Scanner accepts when Options.MaxDepth is 0.
const DefaultMaxDepth = 512

// The kinds of Error, for errors.Is. Each names a way two parsers may read one body
// differently, so a caller that must judge what a backend reads can refuse each.
var (
	ErrSyntax        = errors.New("invalid JSON")
	ErrDepth         = errors.New("JSON nests too deep")
	ErrDuplicateKey  = errors.New("duplicate object key")
	ErrTrailingData  = errors.New("data after the JSON value")
	ErrNonFinite     = errors.New("non-finite number (NaN or Infinity)")
	ErrTrailingComma = errors.New("trailing comma")
	ErrUTF8          = errors.New("JSON is not valid UTF-8")
	ErrLoneSurrogate = errors.New("lone surrogate escape")
)

// Error is Scanner's error: a kind (one of the Err values above), the offset where it was
// found and, for syntax-like kinds, what was wanted there. It never holds body content.
type Error struct {
	Kind error
	Off  int    // offset of the fault; for ErrDuplicateKey, of the second key's quote
	Prev int    // ErrDuplicateKey: offset of the first key's quote
	Want string // what was wanted at Off ("a value", `"," or "}"`), or ""
}

func (e *Error) Error() string {
	switch {
	case e.Kind == ErrDuplicateKey:
		return fmt.Sprintf("jsonscan: %v at offset %d (first at %d)", e.Kind, e.Off, e.Prev)
	case e.Want != "":
		return fmt.Sprintf("jsonscan: %v: want %s at offset %d", e.Kind, e.Want, e.Off)
	}
	return fmt.Sprintf("jsonscan: %v at offset %d", e.Kind, e.Off)
}

// Unwrap returns e.Kind.
func (e *Error) Unwrap() error { return e.Kind }

// Options configures a Scanner. The zero value is strict RFC 8259 with duplicate keys
// refused (compared after unescaping) and nesting bounded by DefaultMaxDepth.
type Options struct {
	// MaxDepth bounds the nesting of objects and arrays; 0 means DefaultMaxDepth.
	MaxDepth int
	// AllowDuplicateKeys turns off the duplicate-key check (and its memory).
	AllowDuplicateKeys bool
	// FoldKeys compares keys after Unicode simple case folding (AppendFold), as Go's
	// encoding/json matches struct fields: {"method":1,"Method":2} is a duplicate.
	FoldKeys bool
	// RejectLoneSurrogates refuses \u escapes of unpaired surrogates (I-JSON).
	RejectLoneSurrogates bool
}

// Kind is the kind of a Token.
type Kind uint8

// The kinds of Token.
const (
	ObjectStart Kind = iota + 1
	ObjectEnd
	ArrayStart
	ArrayEnd
	Key // an object key; the member's value is the next token
	String
	Number
	True
	False
	Null
	End // the end of the document: nothing but whitespace follows the value
)

// Token is one token of a document: its kind and where it is in the body.
type Token struct {
	Kind       Kind
	Start, End int  // the bytes of the token (for Key and String, quotes included)
	Esc        bool // Key, String: the text holds an escape (decode with Unescape)
	// Index is the position of a value (or container start) in its array, or -1 when
	// the value is a member's or the top-level one. It is -1 on every other token.
	Index int
	// Depth is the number of containers open around the token (a container's own start
	// and end tokens count it as outside).
	Depth int
}

// Raw returns the bytes of t in b.
func (t Token) Raw(b []byte) []byte { return b[t.Start:t.End] }

// Text returns the decoded text of a Key or String token appended to dst.
func (t Token) Text(dst, b []byte) []byte {
	raw := b[t.Start+1 : t.End-1]
	if !t.Esc {
		return append(dst, raw...)
	}
	return Unescape(dst, raw)
}

type state uint8

const (
	stStart state = iota
	stValue
	stFirstKey
	stKey
	stFirstElem
	stElem
	stAfter
	stDone
)

type frame struct {
	object bool
	index  int
	keys   int // first keyRef of this object
	arena  int // arena length when the object opened
}

type keyRef struct{ off, end, quote int }

// Scanner tokenizes one JSON document strictly. Its buffers are reused across Reset, so
// a pooled Scanner does not allocate per document.
type Scanner struct {
	b      []byte
	i      int
	opts   Options
	st     state
	frames []frame
	key    []byte // the last key, unescaped
	arena  []byte // keys of the open objects, unescaped (and folded with FoldKeys)
	keys   []keyRef
	err    error
}

// Reset starts scanning b with opts.
func (s *Scanner) Reset(b []byte, opts Options) {
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	s.b, s.i, s.opts, s.st, s.err = b, 0, opts, stStart, nil
	s.frames, s.arena, s.keys, s.key = s.frames[:0], s.arena[:0], s.keys[:0], s.key[:0]
}

// Release drops the body and any buffer larger than max bytes, for pooling.
func (s *Scanner) Release(max int) {
	s.b = nil
	if cap(s.arena) > max {
		s.arena = nil
	}
	if cap(s.key) > max {
		s.key = nil
	}
	if cap(s.keys) > max/16 {
		s.keys = nil
	}
}

// Key returns the unescaped text of the last Key token. It is valid until the next call.
func (s *Scanner) Key() []byte { return s.key }

// FoldedKey returns the last key as compared for duplicates (folded with FoldKeys). It is
// empty with AllowDuplicateKeys.
func (s *Scanner) FoldedKey() []byte {
	if len(s.keys) == 0 {
		return nil
	}
	k := s.keys[len(s.keys)-1]
	return s.arena[k.off:k.end]
}

func (s *Scanner) fail(kind error, off int, want string) (Token, error) {
	if off > len(s.b) {
		off = len(s.b)
	}
	s.err = &Error{Kind: kind, Off: off, Want: want}
	return Token{}, s.err
}

// Next returns the next token, or an *Error. After End or an error it returns the same
// again.
func (s *Scanner) Next() (Token, error) {
	if s.err != nil {
		return Token{}, s.err
	}
	b := s.b
	for {
		i := SkipSpace(b, s.i)
		s.i = i
		switch s.st {
		case stDone:
			return Token{Kind: End, Start: len(b), End: len(b), Index: -1}, nil
		case stStart:
			if i == len(b) {
				return s.fail(ErrSyntax, i, "a value")
			}
			s.st = stValue
			continue
		case stFirstKey, stKey:
			if i < len(b) && b[i] == '}' {
				if s.st == stKey {
					return s.fail(ErrTrailingComma, i, "an object key")
				}
				return s.close(i, true)
			}
			return s.readKey(i)
		case stFirstElem, stElem:
			if i < len(b) && b[i] == ']' {
				if s.st == stElem {
					return s.fail(ErrTrailingComma, i, "a value")
				}
				return s.close(i, false)
			}
			s.st = stValue
			continue
		case stValue:
			return s.value(i)
		case stAfter:
			if len(s.frames) == 0 {
				if i != len(b) {
					return s.fail(ErrTrailingData, i, "the end of the body")
				}
				s.st = stDone
				continue
			}
			if i == len(b) {
				return s.fail(ErrSyntax, i, "")
			}
			f := &s.frames[len(s.frames)-1]
			switch {
			case b[i] == ',':
				s.i = i + 1
				if f.object {
					s.st = stKey
				} else {
					f.index++
					s.st = stElem
				}
				continue
			case f.object && b[i] == '}':
				return s.close(i, true)
			case !f.object && b[i] == ']':
				return s.close(i, false)
			case f.object:
				return s.fail(ErrSyntax, i, `"," or "}"`)
			default:
				return s.fail(ErrSyntax, i, `"," or "]"`)
			}
		}
	}
}

// index is the array index of a value starting now, or -1.
func (s *Scanner) index() int {
	if n := len(s.frames); n > 0 && !s.frames[n-1].object {
		return s.frames[n-1].index
	}
	return -1
}

func (s *Scanner) value(i int) (Token, error) {
	b := s.b
	if i == len(b) {
		return s.fail(ErrSyntax, i, "")
	}
	t := Token{Start: i, Index: s.index(), Depth: len(s.frames)}
	s.st = stAfter
	switch c := b[i]; {
	case c == '{' || c == '[':
		if len(s.frames) == s.opts.MaxDepth {
			return s.fail(ErrDepth, i, "")
		}
		s.frames = append(s.frames, frame{object: c == '{', keys: len(s.keys), arena: len(s.arena)})
		t.Kind, t.End = ArrayStart, i+1
		s.st = stFirstElem
		if c == '{' {
			t.Kind, s.st = ObjectStart, stFirstKey
		}
	case c == '"':
		end, esc, f := ScanString(b, i)
		if f != NoFault {
			return s.stringFault(i, end, f)
		}
		if esc && s.opts.RejectLoneSurrogates {
			if k := LoneSurrogate(b[i+1 : end-1]); k >= 0 {
				return s.fail(ErrLoneSurrogate, i+1+k, "")
			}
		}
		t.Kind, t.End, t.Esc = String, end, esc
	case c == '-' || '0' <= c && c <= '9':
		end, f := ScanNumber(b, i)
		if f != NoFault {
			if bytes.HasPrefix(b[i:], []byte("-Infinity")) {
				return s.fail(ErrNonFinite, i, "a value")
			}
			return s.fail(ErrSyntax, i, "a number")
		}
		t.Kind, t.End = Number, end
	case c == 't':
		return s.literal(t, "true", True)
	case c == 'f':
		return s.literal(t, "false", False)
	case c == 'n':
		return s.literal(t, "null", Null)
	case c == 'N' && bytes.HasPrefix(b[i:], []byte("NaN")), c == 'I' && bytes.HasPrefix(b[i:], []byte("Infinity")):
		return s.fail(ErrNonFinite, i, "a value")
	default:
		return s.fail(ErrSyntax, i, "a value")
	}
	s.i = t.End
	return t, nil
}

func (s *Scanner) literal(t Token, lit string, k Kind) (Token, error) {
	if !bytes.HasPrefix(s.b[t.Start:], []byte(lit)) {
		return s.fail(ErrSyntax, t.Start, "a value")
	}
	t.Kind, t.End = k, t.Start+len(lit)
	s.i = t.End
	return t, nil
}

// stringFault reports a fault of the string opened at quote.
func (s *Scanner) stringFault(quote, off int, f Fault) (Token, error) {
	switch f {
	case BadUTF8:
		return s.fail(ErrUTF8, off, "")
	case Unterminated:
		return s.fail(ErrSyntax, quote, "a closed string")
	case BadHex:
		return s.fail(ErrSyntax, off, `four hex digits after \u`)
	case ControlChar:
		return s.fail(ErrSyntax, off, "no control character in a string")
	}
	return s.fail(ErrSyntax, off, "a valid escape")
}

func (s *Scanner) readKey(i int) (Token, error) {
	b := s.b
	if i == len(b) || b[i] != '"' {
		return s.fail(ErrSyntax, i, "an object key")
	}
	end, esc, f := ScanString(b, i)
	if f != NoFault {
		return s.stringFault(i, end, f)
	}
	raw := b[i+1 : end-1]
	if esc && s.opts.RejectLoneSurrogates {
		if k := LoneSurrogate(raw); k >= 0 {
			return s.fail(ErrLoneSurrogate, i+1+k, "")
		}
	}
	if esc {
		s.key = Unescape(s.key[:0], raw)
	} else {
		s.key = append(s.key[:0], raw...)
	}
	if !s.opts.AllowDuplicateKeys {
		off := len(s.arena)
		if s.opts.FoldKeys {
			s.arena = AppendFold(s.arena, s.key)
		} else {
			s.arena = append(s.arena, s.key...)
		}
		s.keys = append(s.keys, keyRef{off: off, end: len(s.arena), quote: i})
	}
	j := SkipSpace(b, end)
	if j == len(b) || b[j] != ':' {
		return s.fail(ErrSyntax, j, `":"`)
	}
	s.i, s.st = j+1, stValue
	return Token{Kind: Key, Start: i, End: end, Esc: esc, Index: -1, Depth: len(s.frames)}, nil
}

// close ends the innermost container at b[i] ('}' or ']').
func (s *Scanner) close(i int, object bool) (Token, error) {
	f := s.frames[len(s.frames)-1]
	if object && !s.opts.AllowDuplicateKeys {
		if err := s.duplicates(&f); err != nil {
			s.err = err
			return Token{}, err
		}
		s.keys, s.arena = s.keys[:f.keys], s.arena[:f.arena]
	}
	s.frames = s.frames[:len(s.frames)-1]
	s.i, s.st = i+1, stAfter
	k := ArrayEnd
	if object {
		k = ObjectEnd
	}
	return Token{Kind: k, Start: i, End: i + 1, Index: -1, Depth: len(s.frames)}, nil
}

// duplicates returns an *Error when the object f has two keys naming one member.
func (s *Scanner) duplicates(f *frame) error {
	keys := s.keys[f.keys:]
	key := func(k keyRef) []byte { return s.arena[k.off:k.end] }
	dup := func(a, b keyRef) error {
		if a.quote > b.quote {
			a, b = b, a
		}
		return &Error{Kind: ErrDuplicateKey, Off: b.quote, Prev: a.quote}
	}
	if len(keys) <= 8 {
		for x := 1; x < len(keys); x++ {
			for y := 0; y < x; y++ {
				if bytes.Equal(key(keys[x]), key(keys[y])) {
					return dup(keys[y], keys[x])
				}
			}
		}
		return nil
	}
	slices.SortStableFunc(keys, func(x, y keyRef) int { return bytes.Compare(key(x), key(y)) })
	for x := 1; x < len(keys); x++ {
		if bytes.Equal(key(keys[x]), key(keys[x-1])) {
			return dup(keys[x-1], keys[x])
		}
	}
	return nil
}

// Validate reports whether b is one JSON document under opts: nil or an *Error.
func Validate(b []byte, opts Options) error {
	var s Scanner
	s.Reset(b, opts)
	for {
		t, err := s.Next()
		if err != nil || t.Kind == End {
			return err
		}
	}
}
