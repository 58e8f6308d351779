package recorder

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Exchange is the record of one request at the gateway: who asked, what was decided, what
// was sent upstream and what the client received. It is what the admin API and the CLI
// show, and what HAR export and replay start from. Credentials never appear in it: headers
// and values are redacted before an Exchange is written.
type Exchange struct {
	ID string `json:"id"`
	// TraceID is the W3C trace id (32 hex digits) of the request's OpenTelemetry trace
	// when it was sampled, "" when traces are off: the record and the trace name each other.
	TraceID     string     `json:"trace_id,omitempty"`
	ReceivedAt  time.Time  `json:"received_at"`
	ForwardedAt *time.Time `json:"forwarded_at,omitempty"`
	RespondedAt *time.Time `json:"responded_at,omitempty"`
	Identity    *Identity  `json:"identity,omitempty"`
	Route       string     `json:"route,omitempty"`
	// Decision is the outcome label of keyhole_requests_total (allowed, forbidden,
	// denied, no_route, unauthenticated, error, ...) or "replay" for an auditor's replay.
	Decision   string `json:"decision"`
	Reason     string `json:"reason,omitempty"`
	ApprovalID string `json:"approval_id,omitempty"`
	// ReplayOf is the id of the exchange this one replayed, "" for client traffic.
	ReplayOf string `json:"replay_of,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	// Target is the origin a replay was sent to when it was not the upstream's.
	Target string `json:"target,omitempty"`
	// Masked is whether the route masked the response: what the record holds is masked.
	Masked bool `json:"masked,omitempty"`
	// MCP is what an mcp route read of the JSON-RPC message, nil on other routes.
	MCP *MCP `json:"mcp,omitempty"`
	// Record is RecordMetadata when the route records no bodies (their sizes are kept, the
	// bodies marked truncated), "" for a whole record.
	Record string `json:"record,omitempty"`
	// Retention is the route's own retention ("7d"), overriding recorder.retention for
	// its records; "" when the route has none.
	Retention string    `json:"retention,omitempty"`
	Request   Request   `json:"request"`
	Response  *Response `json:"response,omitempty"`
	// Error is the error code the client received (upstream_timeout, mask_failed, ...).
	Error     string    `json:"error,omitempty"`
	Durations Durations `json:"durations"`
}

// RecordMetadata is Exchange.Record of a route that records no bodies (config's
// record: metadata).
const RecordMetadata = "metadata"

// MCP is the Model Context Protocol part of an exchange on an mcp route. The arguments
// are in the request body, redacted as any body is.
type MCP struct {
	// Method is the JSON-RPC method ("tools/call"), "" for a response to the server's
	// request and for GET and DELETE.
	Method string `json:"method,omitempty"`
	// Name is the tool or prompt name, or the resource URI, the method acts on.
	Name string `json:"name,omitempty"`
	// ID is the JSON-RPC id as its JSON text: 7, or "req-7" with its quotes.
	ID string `json:"id,omitempty"`
	// Session is the request's Mcp-Session-Id.
	Session string `json:"session_id,omitempty"`
}

// Tool is the name of the tool m calls, "" when m is not a tools/call.
func (m *MCP) Tool() string {
	if m == nil || m.Method != "tools/call" {
		return ""
	}
	return m.Name
}

// Identity is who made the request, from the verified token.
type Identity struct {
	Issuer   string   `json:"issuer,omitempty"`
	Subject  string   `json:"subject,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// Claims are the token claims the route rules read (tenant, ...), so that a replay
	// is judged as the request was.
	Claims map[string]any `json:"claims,omitempty"`
}

// Request is the client's request as the gateway judged it.
type Request struct {
	Method string `json:"method"`
	// Path is the canonical path that was matched; ForwardPath the path sent upstream
	// after the route's rewrite ("" when the request was not forwarded).
	Path        string      `json:"path"`
	ForwardPath string      `json:"forward_path,omitempty"`
	Query       string      `json:"query,omitempty"`
	Header      http.Header `json:"headers,omitempty"`
	Body        Body        `json:"body"`
	// Scheme ("http" or "https"), Host (the Host header or HTTP/2 :authority) and
	// Protocol ("HTTP/1.1", "HTTP/2.0") are how the request reached the gateway; records
	// made before they were kept have none.
	Scheme   string `json:"scheme,omitempty"`
	Host     string `json:"host,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// Response is the response as the client received it: masked, never the upstream's original.
type Response struct {
	Status int         `json:"status"`
	Header http.Header `json:"headers,omitempty"`
	Body   Body        `json:"body"`
	// Incomplete is set when the client got only part of the response: the upstream's
	// body ended early or stalled after the status was sent (Exchange.Error says which),
	// and Body holds what the gateway delivered before it cut the connection.
	Incomplete bool `json:"incomplete,omitempty"`
}

// Body is a captured message body, at most the recorder's body limit long.
type Body struct {
	// Text is the body as UTF-8 text, or standard base64 when Encoding is "base64".
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Size is the length of the whole body in bytes as far as it was read, Truncated
	// whether Text holds less than that.
	Size      int64 `json:"size"`
	Truncated bool  `json:"truncated,omitempty"`
	// Coding is the content coding (gzip, deflate) the body was sent in. A coded body is
	// recorded decoded, so that redaction sees its content and an auditor can read it; a
	// body in a coding the recorder cannot decode is not kept at all (Text is empty,
	// Truncated is set): what cannot be redacted is not recorded.
	Coding string `json:"coding,omitempty"`

	// after marks a body whose bytes follow its record's JSON in the entry's Data
	// instead of being JSON-escaped into it (see detach): its record holds "raw":true
	// and no text.
	after bool
}

// Bytes returns the captured bytes of b.
func (b Body) Bytes() []byte {
	if b.Encoding == "base64" {
		out, err := base64.StdEncoding.DecodeString(b.Text)
		if err != nil {
			return nil
		}
		return out
	}
	return []byte(b.Text)
}

// NewBody returns the Body for captured bytes p of a body of size bytes in all.
func NewBody(p []byte, size int64) Body {
	b := Body{Size: size, Truncated: int64(len(p)) < size}
	if utf8.Valid(p) {
		b.Text = string(p)
	} else {
		b.Text, b.Encoding = base64.StdEncoding.EncodeToString(p), "base64"
	}
	return b
}

// NewCodedBody returns the Body for captured bytes p of a body of size bytes in all, sent
// with the Content-Encoding field values codings. An identity body is NewBody's; a gzip
// or deflate body is decoded and at most limit bytes of it kept, Size counting what was
// decoded and Truncated set unless that is the whole body; any other coding, or a stack
// of codings, keeps no bytes.
func NewCodedBody(p []byte, size int64, codings []string, limit int64) Body {
	coding := ContentCoding(codings)
	if coding == "" || size == 0 {
		return NewBody(p, size)
	}
	var zr io.Reader
	var err error
	switch coding {
	case "gzip", "x-gzip":
		zr, err = gzip.NewReader(bytes.NewReader(p))
	case "deflate":
		zr, err = zlib.NewReader(bytes.NewReader(p))
	default:
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return Body{Size: size, Truncated: true, Coding: coding}
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	whole := err == nil && int64(len(out)) <= limit && int64(len(p)) >= size
	if int64(len(out)) > limit {
		out = out[:limit]
	}
	b := NewBody(out, int64(len(out)))
	b.Truncated, b.Coding = !whole, coding
	return b
}

// ContentCoding returns the content coding that Content-Encoding field values (every
// field, every list element) name, lower case: "" for none or identity, the one coding
// there is, or the comma-joined list when codings are stacked.
func ContentCoding(values []string) string {
	var cs []string
	for _, v := range values {
		for _, c := range strings.Split(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				cs = append(cs, c)
			}
		}
	}
	return strings.Join(cs, ",")
}

// Durations are the times spent, in milliseconds.
type Durations struct {
	TotalMS    float64 `json:"total_ms"`
	UpstreamMS float64 `json:"upstream_ms,omitempty"`
}

// completion is the part of an Exchange known only when the response is done. It is
// written as a second chain entry; its JSON names are Exchange's, so that decoding the
// request entry and then the completion into one Exchange yields the whole record.
type completion struct {
	ForwardedAt *time.Time `json:"forwarded_at,omitempty"`
	RespondedAt *time.Time `json:"responded_at,omitempty"`
	Decision    string     `json:"decision"`
	Reason      string     `json:"reason,omitempty"`
	ApprovalID  string     `json:"approval_id,omitempty"`
	Response    *Response  `json:"response,omitempty"`
	Error       string     `json:"error,omitempty"`
	Durations   Durations  `json:"durations"`
}
