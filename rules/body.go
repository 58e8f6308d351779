package rules

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/jsonscan"
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
	s.js.Release(64 << 10)
	t.scanners.Put(s)
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
		folded := string(jsonscan.AppendFold(nil, []byte(c)))
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

// scanner is the strict checker of one body: jsonscan's tokenizer with folded duplicate
// keys and lone surrogates refused, plus the condition-path nodes of the open containers.
// Its buffers are reused between bodies.
type scanner struct {
	js    jsonscan.Scanner
	num   []byte     // an array index as text
	nodes []*keyNode // condition-path node of each open container
}

// check validates b and returns why it is refused, or "".
func (s *scanner) check(b []byte, root *keyNode) string {
	i := jsonscan.SkipSpace(b, 0)
	if i == len(b) {
		return "request body is not valid JSON: it holds only whitespace"
	}
	top := b[i]
	s.js.Reset(b, jsonscan.Options{MaxDepth: maxDepth, FoldKeys: true, RejectLoneSurrogates: true})
	s.nodes = s.nodes[:0]
	node := root // the node of the next value
	for {
		t, err := s.js.Next()
		if err != nil {
			return refusal(b, err)
		}
		if t.Index >= 0 {
			node = s.element(s.nodes[len(s.nodes)-1], t.Index)
		}
		switch t.Kind {
		case jsonscan.End:
			return topLevel(top)
		case jsonscan.ObjectStart, jsonscan.ArrayStart:
			s.nodes = append(s.nodes, node)
		case jsonscan.ObjectEnd, jsonscan.ArrayEnd:
			s.nodes = s.nodes[:len(s.nodes)-1]
		case jsonscan.Key:
			key := s.js.Key()
			if bytes.IndexByte(key, 0) >= 0 {
				return "request body has an object key holding NUL (\\u0000)"
			}
			node = nil
			if e := s.nodes[len(s.nodes)-1].edge(s.js.FoldedKey()); e != nil {
				if !slices.Contains(e.exact, string(key)) {
					return fmt.Sprintf("request body key %s differs only in letter case from %q, which a rule reads",
						quoteRaw(b[t.Start+1:t.End-1]), e.exact[0])
				}
				node = e.node
			}
		}
	}
}

// refusal words a jsonscan error as the reason a body is refused.
func refusal(b []byte, err error) string {
	var e *jsonscan.Error
	if !errors.As(err, &e) {
		return "request body is not valid JSON"
	}
	switch {
	case e.Kind == jsonscan.ErrDepth:
		return fmt.Sprintf("request body nests deeper than %d levels", maxDepth)
	case e.Kind == jsonscan.ErrDuplicateKey:
		r1, r2 := rawKey(b, e.Prev), rawKey(b, e.Off)
		if bytes.Equal(r1, r2) {
			return "request body has duplicate key " + quoteRaw(r1)
		}
		return fmt.Sprintf("request body has keys %s and %s that name the same member", quoteRaw(r1), quoteRaw(r2))
	case e.Kind == jsonscan.ErrLoneSurrogate:
		return fmt.Sprintf("request body is not accepted: lone surrogate escape at offset %d", e.Off)
	case e.Kind == jsonscan.ErrUTF8:
		return fmt.Sprintf("request body is not valid UTF-8 at offset %d", e.Off)
	}
	return syntax(b, e.Off, e.Want)
}

// rawKey returns the key as written (escapes kept) of the string at b[quote] == '"'.
func rawKey(b []byte, quote int) []byte {
	end, _, _ := jsonscan.ScanString(b, quote)
	return b[quote+1 : end-1]
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

// quoteRaw quotes a key as written in JSON (escapes kept), cut to a readable length.
func quoteRaw(raw []byte) string {
	const max = 64
	s := string(raw)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return `"` + s + `"`
}

func syntax(b []byte, i int, want string) string {
	if i >= len(b) || want == "" {
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
