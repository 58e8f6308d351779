package recorder

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"
)

// An entry's Data is its record's JSON followed by the bytes of the one body the record
// holds, if it holds a text body that is not empty: the request's in a request entry, the
// response's in a response entry. The record marks that body "raw":true and gives it no
// text. A text body is stored as the bytes it was, not JSON-escaped into the record
// (issue 17: escaping a 64 KiB JSON answer was a sixth of a large exchange's CPU, and its
// escapes a tenth of its bytes); the chain's hash covers both parts, since it covers the
// SHA-256 of the whole Data. A binary body, and any body when redacting the record's JSON
// changed where it ends (errMarkLost), is held in the JSON as before. Records written
// before hold their body's text in their JSON and nothing after it; Decode reads both.

// detach returns b as its entry's record holds it and the bytes that follow the record:
// for a text body, b marked after and without its text, and b's bytes redacted by rd;
// for an empty or binary body, inline's, and no bytes.
func detach(b Body, rd *redaction) (Body, []byte) {
	var raw []byte
	switch {
	case b.Text == "":
		return b, nil
	case b.Encoding == "" && utf8.ValidString(b.Text):
		// A read-only view: redaction returns it or a copy, and it is only copied from.
		raw = unsafe.Slice(unsafe.StringData(b.Text), len(b.Text))
	default:
		// A binary body stays base64 in the record, redacted there too (see inline):
		// its base64 can spell a secret (one that is itself base64) that its bytes do not.
		return inline(b, rd), nil
	}
	return Body{Size: b.Size, Truncated: b.Truncated, Coding: b.Coding, after: true}, rd.bytes(raw)
}

// Decode returns the Exchange stored as rec.
func Decode(rec Record) (Exchange, error) {
	var x Exchange
	if err := decodeEntry(rec.Request.Data, &x, KindRequest); err != nil {
		return Exchange{}, fmt.Errorf("decode exchange %s: %w", rec.Request.ExchangeID, err)
	}
	if rec.Response != nil {
		if err := decodeEntry(rec.Response.Data, &x, KindResponse); err != nil {
			return Exchange{}, fmt.Errorf("decode exchange %s response: %w", rec.Request.ExchangeID, err)
		}
	}
	return x, nil
}

// rawMarks are the "raw" marks of an entry's record.
type rawMarks struct {
	Request *struct {
		Body struct {
			Raw bool `json:"raw"`
		} `json:"body"`
	} `json:"request"`
	Response *struct {
		Body struct {
			Raw bool `json:"raw"`
		} `json:"body"`
	} `json:"response"`
}

// errMarkLost is an entry whose record's JSON redaction changed so that it no longer
// delimits the body after it (see encodeEntry).
var errMarkLost = errors.New("redaction cut the record's JSON")

// marksRaw reports whether data is one JSON object that marks the body of its entry of
// kind raw, as a reader finds it.
func marksRaw(data []byte, kind string) bool {
	var m rawMarks
	if !json.Valid(data) || json.Unmarshal(data, &m) != nil {
		return false
	}
	if kind == KindRequest {
		return m.Request != nil && m.Request.Body.Raw
	}
	return m.Response != nil && m.Response.Body.Raw
}

// errTail is an entry whose Data has bytes after its record that no body of it claims.
var errTail = errors.New("bytes after the record that no body is marked to hold")

// decodeEntry decodes the Data of an entry of kind into x: the record's JSON, then the
// bytes after it into the body the record marks raw.
func decodeEntry(data []byte, x *Exchange, kind string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(x); err != nil {
		return err
	}
	n := dec.InputOffset()
	tail := data[n:]
	if len(tail) == 0 {
		return nil // a record without a body, or made before bodies followed records
	}
	var m rawMarks
	if err := json.Unmarshal(data[:n], &m); err != nil {
		return err
	}
	var body *Body
	switch {
	case kind == KindRequest && m.Request != nil && m.Request.Body.Raw:
		body = &x.Request.Body
	case kind == KindResponse && m.Response != nil && m.Response.Body.Raw && x.Response != nil:
		body = &x.Response.Body
	default:
		return errTail
	}
	body.Text, body.Encoding = "", ""
	if utf8.Valid(tail) {
		body.Text = string(tail)
	} else {
		body.Text, body.Encoding = base64.StdEncoding.EncodeToString(tail), "base64"
	}
	return nil
}
