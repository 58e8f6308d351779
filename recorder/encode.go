package recorder

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The appenders below write an Exchange (a request entry) and a completion (a
// response entry) as JSON without reflection: a record is encoded twice per request on
// the gateway's hot path. Their output is byte for byte what encoding/json makes of the
// same value with HTML escaping off, field order and omitempty included;
// TestAppendMatchesEncodingJSON and FuzzAppendExchange hold them to that, and fill every
// field by reflection, so a field added to these types without its appender fails them.

// appendExchange appends x as JSON, its header values redacted by red as they are
// written (no redacted copy of each header map is made).
func appendExchange(b []byte, x *Exchange, red *Redactor) ([]byte, error) {
	var err error
	b = append(b, `{"id":`...)
	b = appendString(b, x.ID)
	b = appendOptString(b, `,"trace_id":`, x.TraceID)
	b = append(b, `,"received_at":`...)
	if b, err = appendTime(b, x.ReceivedAt); err != nil {
		return nil, err
	}
	if x.ForwardedAt != nil {
		b = append(b, `,"forwarded_at":`...)
		if b, err = appendTime(b, *x.ForwardedAt); err != nil {
			return nil, err
		}
	}
	if x.RespondedAt != nil {
		b = append(b, `,"responded_at":`...)
		if b, err = appendTime(b, *x.RespondedAt); err != nil {
			return nil, err
		}
	}
	if x.Identity != nil {
		b = append(b, `,"identity":`...)
		if b, err = appendIdentity(b, x.Identity); err != nil {
			return nil, err
		}
	}
	b = appendOptString(b, `,"route":`, x.Route)
	b = append(b, `,"decision":`...)
	b = appendString(b, x.Decision)
	b = appendOptString(b, `,"reason":`, x.Reason)
	b = appendOptString(b, `,"approval_id":`, x.ApprovalID)
	b = appendOptString(b, `,"replay_of":`, x.ReplayOf)
	b = appendOptString(b, `,"upstream":`, x.Upstream)
	b = appendOptString(b, `,"target":`, x.Target)
	if x.Masked {
		b = append(b, `,"masked":true`...)
	}
	if m := x.MCP; m != nil {
		b = append(b, `,"mcp":{`...)
		n := len(b)
		b = appendOptString(b, `,"method":`, m.Method)
		b = appendOptString(b, `,"name":`, m.Name)
		b = appendOptString(b, `,"id":`, m.ID)
		b = appendOptString(b, `,"session_id":`, m.Session)
		if len(b) > n {
			b = append(b[:n], b[n+1:]...) // the first member's leading comma
		}
		b = append(b, '}')
	}
	b = appendOptString(b, `,"record":`, x.Record)
	b = appendOptString(b, `,"retention":`, x.Retention)
	b = append(b, `,"request":{"method":`...)
	b = appendString(b, x.Request.Method)
	b = append(b, `,"path":`...)
	b = appendString(b, x.Request.Path)
	b = appendOptString(b, `,"forward_path":`, x.Request.ForwardPath)
	b = appendOptString(b, `,"query":`, x.Request.Query)
	b = appendHeader(b, x.Request.Header, red)
	b = appendBody(b, &x.Request.Body)
	b = appendOptString(b, `,"scheme":`, x.Request.Scheme)
	b = appendOptString(b, `,"host":`, x.Request.Host)
	b = appendOptString(b, `,"protocol":`, x.Request.Protocol)
	b = append(b, '}')
	if x.Response != nil {
		b = appendResponse(b, x.Response, red)
	}
	b = appendOptString(b, `,"error":`, x.Error)
	if b, err = appendDurations(b, x.Durations); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendCompletion appends c as JSON, its header values redacted by red.
func appendCompletion(b []byte, c *completion, red *Redactor) ([]byte, error) {
	var err error
	b = append(b, '{')
	if c.ForwardedAt != nil {
		b = append(b, `"forwarded_at":`...)
		if b, err = appendTime(b, *c.ForwardedAt); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	if c.RespondedAt != nil {
		b = append(b, `"responded_at":`...)
		if b, err = appendTime(b, *c.RespondedAt); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	b = append(b, `"decision":`...)
	b = appendString(b, c.Decision)
	b = appendOptString(b, `,"reason":`, c.Reason)
	b = appendOptString(b, `,"approval_id":`, c.ApprovalID)
	if c.Response != nil {
		b = appendResponse(b, c.Response, red)
	}
	b = appendOptString(b, `,"error":`, c.Error)
	if b, err = appendDurations(b, c.Durations); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func appendIdentity(b []byte, id *Identity) ([]byte, error) {
	b = append(b, '{')
	n := len(b)
	sep := func() {
		if len(b) > n {
			b = append(b, ',')
		}
	}
	if id.Issuer != "" {
		b = append(b, `"issuer":`...)
		b = appendString(b, id.Issuer)
	}
	if id.Subject != "" {
		sep()
		b = append(b, `"subject":`...)
		b = appendString(b, id.Subject)
	}
	if id.ClientID != "" {
		sep()
		b = append(b, `"client_id":`...)
		b = appendString(b, id.ClientID)
	}
	if len(id.Groups) > 0 {
		sep()
		b = append(b, `"groups":`...)
		b = appendStrings(b, id.Groups)
	}
	if len(id.Scopes) > 0 {
		sep()
		b = append(b, `"scopes":`...)
		b = appendStrings(b, id.Scopes)
	}
	if len(id.Claims) > 0 {
		sep()
		b = append(b, `"claims":`...)
		// Claims are whatever the token held: rare on the hot path (only routes that
		// read claims record them), so encoding/json does them.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(id.Claims); err != nil {
			return nil, err
		}
		b = append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
	}
	return append(b, '}'), nil
}

func appendResponse(b []byte, r *Response, red *Redactor) []byte {
	b = append(b, `,"response":{"status":`...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = appendHeader(b, r.Header, red)
	b = appendBody(b, &r.Body)
	if r.Incomplete {
		b = append(b, `,"incomplete":true`...)
	}
	return append(b, '}')
}

// appendHeader appends `,"headers":{...}` for a non-empty h, names sorted, values
// redacted by red.
func appendHeader(b []byte, h http.Header, red *Redactor) []byte {
	if len(h) == 0 {
		return b
	}
	var names [32]string
	keys := names[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, `,"headers":{`...)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		vs := h[k] // nil is written []: a record's headers are lists
		hidden := red.hides(k)
		b = append(b, '[')
		for j, v := range vs {
			if j > 0 {
				b = append(b, ',')
			}
			if hidden {
				v = Redacted
			} else {
				v = red.String(v)
			}
			b = appendString(b, v)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendBody appends `,"body":{...}`.
func appendBody(b []byte, body *Body) []byte {
	b = append(b, `,"body":{`...)
	if body.after {
		b = append(b, `"raw":true,`...)
	}
	if body.Text != "" {
		b = append(b, `"text":`...)
		b = appendString(b, body.Text)
		b = append(b, ',')
	}
	if body.Encoding != "" {
		b = append(b, `"encoding":`...)
		b = appendString(b, body.Encoding)
		b = append(b, ',')
	}
	b = append(b, `"size":`...)
	b = strconv.AppendInt(b, body.Size, 10)
	if body.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = appendOptString(b, `,"coding":`, body.Coding)
	return append(b, '}')
}

// appendDurations appends `,"durations":{...}`.
func appendDurations(b []byte, d Durations) ([]byte, error) {
	var err error
	b = append(b, `,"durations":{"total_ms":`...)
	if b, err = appendFloat(b, d.TotalMS); err != nil {
		return nil, err
	}
	if d.UpstreamMS != 0 {
		b = append(b, `,"upstream_ms":`...)
		if b, err = appendFloat(b, d.UpstreamMS); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendOptString appends key and s unless s is empty (omitempty).
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendTime appends t as time.Time.MarshalJSON does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

// appendFloat appends f as encoding/json does a float64.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &json.UnsupportedValueError{Str: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as in encoding/json.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// jsonSafe tells the ASCII characters a JSON string holds as they are: all but the
// control characters, '"' and '\\'.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := range t {
		t[c] = c >= 0x20 && c != '"' && c != '\\'
	}
	return t
}()

// sizeHint is about the length of an entry's Data with header h and tail body bytes after
// its JSON: enough, most of the time, for its appender not to grow the buffer.
func sizeHint(h http.Header, tail []byte) int {
	n := 512 + len(tail)
	for k, vs := range h {
		n += len(k) + 6
		for _, v := range vs {
			n += len(v) + 3
		}
	}
	return n
}

// appendString appends s as a JSON string the way encoding/json does with HTML
// escaping off: '"', '\\' and control characters escaped, invalid UTF-8 replaced by
// U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
