package recorder

import (
	"encoding/base64"
	"net/http"
	"time"
	"unicode/utf8"
)

// Exchange is the record of one request at the gateway: who asked, what was decided, what
// was sent upstream and what the client received. It is what the admin API and the CLI
// show, and what HAR export and replay start from. Credentials never appear in it: headers
// and values are redacted before an Exchange is written.
type Exchange struct {
	ID          string     `json:"id"`
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
	Target   string    `json:"target,omitempty"`
	Request  Request   `json:"request"`
	Response *Response `json:"response,omitempty"`
	// Error is the error code the client received (upstream_timeout, mask_failed, ...).
	Error     string    `json:"error,omitempty"`
	Durations Durations `json:"durations"`
}

// Identity is who made the request, from the verified token.
type Identity struct {
	Issuer   string   `json:"issuer,omitempty"`
	Subject  string   `json:"subject,omitempty"`
	ClientID string   `json:"client_id,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
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
}

// Response is the response as the client received it: masked, never the upstream's original.
type Response struct {
	Status int         `json:"status"`
	Header http.Header `json:"headers,omitempty"`
	Body   Body        `json:"body"`
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
	Response    *Response  `json:"response,omitempty"`
	Error       string     `json:"error,omitempty"`
	Durations   Durations  `json:"durations"`
}
