package mcp

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keyholehq/keyhole/jsonscan"
)

var errArray = errors.New("a JSON array")

// strictOptions is how this package reads a JSON-RPC message: strict RFC 8259 and UTF-8,
// nested at most maxDepth, and no object with two keys equal after case folding (Go's
// encoding/json, in the gateway and in many MCP servers, matches "Method" to "method").
var strictOptions = jsonscan.Options{MaxDepth: maxDepth, FoldKeys: true}

// strictObject checks that b is one strict JSON object (strictOptions) and returns its
// members, raw. It reports errArray for a top-level array (a batch).
func strictObject(b []byte) (map[string]json.RawMessage, error) {
	if err := jsonscan.Validate(b, strictOptions); err != nil {
		return nil, describe(err)
	}
	switch b[jsonscan.SkipSpace(b, 0)] {
	case '{':
	case '[':
		return nil, errArray
	default:
		return nil, errors.New("body is not a JSON object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	return top, nil
}

// describe words a jsonscan error for the client: the kind and where, never the body.
func describe(err error) error {
	var e *jsonscan.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	switch e.Kind {
	case jsonscan.ErrUTF8:
		return errors.New("body is not UTF-8")
	case jsonscan.ErrDuplicateKey:
		return fmt.Errorf("body repeats a key at offset %d (keys are compared ignoring case)", e.Off)
	case jsonscan.ErrDepth:
		return fmt.Errorf("body is nested deeper than %d", maxDepth)
	case jsonscan.ErrTrailingData:
		return errors.New("body holds more than one JSON value")
	}
	return fmt.Errorf("body is not JSON: %w", err)
}
