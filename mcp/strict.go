package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

var errArray = errors.New("a JSON array")

// strictObject checks that b is one strict JSON object and returns its members, raw.
// Strict: valid JSON and UTF-8, one value with nothing after it, nested at most maxDepth,
// and no object anywhere with two keys equal after case folding. It reports errArray
// for a top-level array (a batch).
//
// It is the one place this package reads JSON syntax, with encoding/json's token walk;
// a shared strict scanner can replace it without touching the callers.
func strictObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("body is not UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	first, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	switch first {
	case json.Delim('{'):
	case json.Delim('['):
		if err := walk(d, false); err != nil {
			return nil, err
		}
		return nil, errArray
	default:
		return nil, errors.New("body is not a JSON object")
	}
	if err := walk(d, true); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	return top, nil
}

// frame is one open container of walk: an object's folded keys and whether the next
// token is a key, or an array (keys nil).
type frame struct {
	keys    map[string]bool
	wantKey bool
}

// walk reads the rest of a value whose opening delimiter was read, then checks that
// nothing follows it.
func walk(d *json.Decoder, obj bool) error {
	stack := []frame{newFrame(obj)}
	for len(stack) > 0 {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("body is not JSON: %w", err)
		}
		f := &stack[len(stack)-1]
		if t, ok := tok.(json.Delim); ok && (t == '}' || t == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if f.keys != nil {
			if f.wantKey {
				k, _ := tok.(string)
				fk := fold(k)
				if f.keys[fk] {
					return fmt.Errorf("body repeats the key %q (keys are compared ignoring case)", k)
				}
				f.keys[fk] = true
				f.wantKey = false
				continue
			}
			f.wantKey = true
		}
		if t, ok := tok.(json.Delim); ok {
			if len(stack) >= maxDepth {
				return fmt.Errorf("body is nested deeper than %d", maxDepth)
			}
			stack = append(stack, newFrame(t == '{'))
		}
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("body holds more than one JSON value")
	}
	return nil
}

func newFrame(obj bool) frame {
	if obj {
		return frame{keys: map[string]bool{}, wantKey: true}
	}
	return frame{}
}

// fold maps every rune of s to the smallest rune of its case-folding orbit, so that two
// keys equal under Unicode simple case folding have the same fold.
func fold(s string) string {
	var b []byte
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b = utf8.AppendRune(b, m)
	}
	return string(b)
}
