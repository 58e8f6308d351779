package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// harOrigin is the scheme and host of the URLs of records made before the gateway kept
// how a request reached it (Request.Scheme and Host): HAR viewers need an absolute URL.
const harOrigin = "http://keyhole"

// harUnknownMIME is a content's mimeType when the record names none, as browsers export
// a body of unknown type.
const harUnknownMIME = "x-unknown"

// harSpoolMemory is how many bytes of encoded entries a HARWriter holds in memory before
// it moves them to a temporary file.
const harSpoolMemory = 4 << 20

// HARSpoolLimit bounds the encoded entries one HARWriter keeps (in memory and in its
// temporary file) until Close: an export larger than this is refused with
// ErrHARTooLarge, so an auditor's export cannot fill the gateway's disk or, where /tmp
// is a tmpfs, its memory.
const HARSpoolLimit = 1 << 30

// ErrHARTooLarge is Add's error when the entries added so far exceed HARSpoolLimit: the
// export should select fewer exchanges (a shorter since..until).
var ErrHARTooLarge = fmt.Errorf("har: the export exceeds %d MiB of entries; select fewer exchanges (a shorter time range)", HARSpoolLimit>>20)

// harTimeFormat is ISO 8601 with milliseconds, as HAR's startedDateTime asks.
const harTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// harEntryIndent indents entry objects to sit inside log.entries.
const harEntryIndent = "      "

// HARWriter writes exchanges as one HAR 1.2 document whose entries are in chronological
// order (oldest first, as HAR viewers expect), whatever the order they are added in: the
// store lists newest first. Each entry is encoded when it is added and kept aside (in
// memory up to 4 MiB, then in an unlinked temporary file) with its time; Close sorts them
// and writes the document, so an export of any length needs memory for an index of a few
// dozen bytes an entry and one entry. The zero value is not usable; make one with
// NewHARWriter. Nothing is written to w until Close. A HARWriter is not safe for
// concurrent use.
//
// Each entry maps an Exchange as follows; fields HAR requires that the record does not
// hold are written with HAR's "unknown" value:
//   - request.url is the scheme and host the request reached the gateway with
//     (Request.Scheme, Request.Host; "http://keyhole" for a record that has none) followed
//     by the recorded path and query, escaped where a URL needs it (a canonical path is
//     stored decoded).
//   - httpVersion, of the request and of the response, is the protocol the client spoke
//     (Request.Protocol, "" when the record has none); headersSize is -1: the record
//     keeps no raw header block.
//   - cookies are always empty: Cookie and Set-Cookie are redacted whole before an
//     exchange is recorded (AlwaysRedactedHeaders), so there is nothing to list; the
//     redacted headers themselves are in headers.
//   - headers are sorted by name, values in recorded order; queryString keeps the order
//     of the query, with names and values unescaped.
//   - request.postData is present when the request had a body. HAR's postData has no
//     encoding field, so a binary body is written as its base64 text with the custom
//     field "_encoding": "base64", mirroring response.content's "encoding".
//   - mimeType (of postData and content) is the Content-Type, or "x-unknown" when the
//     record has none: an empty body, a lost response.
//   - bodySize and content.size are Body.Size: for a truncated request body that is a
//     lower bound.
//   - timings: blocked is the gateway's own time before forwarding (authentication,
//     rules, an approval wait), or all of time for a request that was never forwarded;
//     wait is Durations.UpstreamMS (forwarded until the upstream's response headers);
//     receive is the rest of Durations.TotalMS (masking and sending the body); send is 0
//     (the request body is sent within wait) and dns and connect are -1 (unknown).
//     time is Durations.TotalMS.
//   - an exchange whose response was not recorded (Response == nil) has status 0, an
//     empty content and bodySize -1, as browsers export a request that got no answer.
//   - "_keyhole" holds what HAR has no place for: id, route, decision, reason, identity,
//     upstream, target, forward_path, approval_id, replay_of, error and whether either
//     body was truncated at the recorder's body limit.
type HARWriter struct {
	w       io.Writer
	version string
	buf     bytes.Buffer // one encoded entry
	enc     *json.Encoder
	spool   harSpool
	index   []harSpooled
	closed  bool
	err     error // the first error: the document is broken from there on
}

// harSpooled is where an added entry waits in the spool, and when it started.
type harSpooled struct {
	at     time.Time
	id     string
	off, n int64
}

// NewHARWriter returns a HARWriter that writes to w and names keyhole creatorVersion as
// the document's creator. The HARWriter never closes w.
func NewHARWriter(w io.Writer, creatorVersion string) *HARWriter {
	h := &HARWriter{w: w, version: creatorVersion, spool: harSpool{limit: HARSpoolLimit}}
	h.enc = json.NewEncoder(&h.buf)
	h.enc.SetEscapeHTML(false)
	h.enc.SetIndent(harEntryIndent, "  ")
	return h
}

// Add encodes x as an entry and keeps it for Close. It returns an error if x cannot be
// encoded or kept (the temporary file fails), after which every later Add or Close
// returns the same error, or if the HARWriter is closed.
func (h *HARWriter) Add(x Exchange) error {
	if h.closed {
		return errors.New("har: add after close")
	}
	if h.err != nil {
		return h.err
	}
	h.buf.Reset()
	if err := h.enc.Encode(harEntryOf(x)); err != nil {
		h.err = fmt.Errorf("har: encode exchange %s: %w", x.ID, err)
		return h.err
	}
	entry := h.buf.Bytes()[:h.buf.Len()-1] // without the newline Encode appends
	off, err := h.spool.write(entry)
	if err != nil {
		h.err = fmt.Errorf("har: keep exchange %s: %w", x.ID, err)
		return h.err
	}
	h.index = append(h.index, harSpooled{at: x.ReceivedAt, id: x.ID, off: off, n: int64(len(entry))})
	return nil
}

// Close writes the document, its entries oldest first (then by id), a complete HAR with
// no entries if none were added, and releases what the entries were kept in. It returns
// the error of a failed write, or of an earlier Add. Closing a closed HARWriter does
// nothing.
func (h *HARWriter) Close() error {
	if h.closed {
		return nil
	}
	h.closed = true
	defer h.spool.close()
	if h.err != nil {
		return h.err
	}
	slices.SortStableFunc(h.index, func(a, b harSpooled) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	bw := bufio.NewWriterSize(h.w, 64<<10)
	if err := h.writeHead(bw); err != nil {
		return err
	}
	var entry []byte
	for i, e := range h.index {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteString("\n" + harEntryIndent)
		entry = slices.Grow(entry[:0], int(e.n))[:e.n]
		if err := h.spool.readAt(entry, e.off); err != nil {
			h.err = fmt.Errorf("har: read back exchange %s: %w", e.id, err)
			return h.err
		}
		if _, err := bw.Write(entry); err != nil {
			h.err = fmt.Errorf("har: write exchange %s: %w", e.id, err)
			return h.err
		}
	}
	if len(h.index) > 0 {
		bw.WriteString("\n    ")
	}
	bw.WriteString("]\n  }\n}\n")
	if err := bw.Flush(); err != nil {
		h.err = fmt.Errorf("har: write: %w", err)
		return h.err
	}
	return nil
}

// Discard releases what the entries were kept in and writes nothing: the export was
// abandoned. It does nothing to a closed HARWriter, so it can be deferred beside Close.
func (h *HARWriter) Discard() {
	if h.closed {
		return
	}
	h.closed = true
	h.spool.close()
}

// writeHead writes the document's opening, up to the entries array.
func (h *HARWriter) writeHead(w *bufio.Writer) error {
	creator, err := json.MarshalIndent(harCreator{Name: "keyhole", Version: h.version}, "    ", "  ")
	if err != nil {
		return fmt.Errorf("har: encode creator: %w", err)
	}
	w.WriteString("{\n  \"log\": {\n    \"version\": \"1.2\",\n    \"creator\": ")
	w.Write(creator)
	w.WriteString(",\n    \"entries\": [")
	return nil
}

// harSpool keeps bytes in memory up to harSpoolMemory, then in a temporary file that is
// unlinked as soon as it is made, so nothing is left behind whatever happens.
type harSpool struct {
	limit int64 // HARSpoolLimit; smaller in tests
	mem   []byte
	file  *os.File
	size  int64 // bytes in file
}

// write appends p and returns its offset.
func (s *harSpool) write(p []byte) (int64, error) {
	if int64(len(s.mem))+s.size+int64(len(p)) > s.limit {
		return 0, ErrHARTooLarge
	}
	if s.file == nil && len(s.mem)+len(p) <= harSpoolMemory {
		off := int64(len(s.mem))
		s.mem = append(s.mem, p...)
		return off, nil
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "keyhole-har-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name())
		s.file = f
	}
	off := int64(len(s.mem)) + s.size
	n, err := s.file.Write(p)
	s.size += int64(n)
	if err != nil {
		return 0, err
	}
	return off, nil
}

// readAt fills p with the bytes written at off.
func (s *harSpool) readAt(p []byte, off int64) error {
	if m := int64(len(s.mem)); off < m {
		copy(p, s.mem[off:])
		return nil
	}
	_, err := s.file.ReadAt(p, off-int64(len(s.mem)))
	return err
}

func (s *harSpool) close() {
	s.mem = nil
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

// WriteHAR writes xs to w as one HAR 1.2 document whose creator is keyhole creatorVersion,
// mapped as HARWriter describes. It returns the first write error; w then holds an
// incomplete document.
func WriteHAR(w io.Writer, xs []Exchange, creatorVersion string) error {
	h := NewHARWriter(w, creatorVersion)
	for _, x := range xs {
		if err := h.Add(x); err != nil {
			return err
		}
	}
	return h.Close()
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	StartedDateTime string      `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         harRequest  `json:"request"`
	Response        harResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         harTimings  `json:"timings"`
	Keyhole         harKeyhole  `json:"_keyhole"`
}

type harNameValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harRequest struct {
	Method      string         `json:"method"`
	URL         string         `json:"url"`
	HTTPVersion string         `json:"httpVersion"`
	Cookies     []harNameValue `json:"cookies"`
	Headers     []harNameValue `json:"headers"`
	QueryString []harNameValue `json:"queryString"`
	PostData    *harPostData   `json:"postData,omitempty"`
	HeadersSize int64          `json:"headersSize"`
	BodySize    int64          `json:"bodySize"`
}

type harPostData struct {
	MimeType string `json:"mimeType"`
	Text     string `json:"text"`
	Encoding string `json:"_encoding,omitempty"`
}

type harResponse struct {
	Status      int            `json:"status"`
	StatusText  string         `json:"statusText"`
	HTTPVersion string         `json:"httpVersion"`
	Cookies     []harNameValue `json:"cookies"`
	Headers     []harNameValue `json:"headers"`
	Content     harContent     `json:"content"`
	RedirectURL string         `json:"redirectURL"`
	HeadersSize int64          `json:"headersSize"`
	BodySize    int64          `json:"bodySize"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
}

type harTimings struct {
	Blocked float64 `json:"blocked"`
	DNS     float64 `json:"dns"`
	Connect float64 `json:"connect"`
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
}

type harKeyhole struct {
	ID                    string    `json:"id"`
	Route                 string    `json:"route,omitempty"`
	Decision              string    `json:"decision"`
	Reason                string    `json:"reason,omitempty"`
	Identity              *Identity `json:"identity,omitempty"`
	Upstream              string    `json:"upstream,omitempty"`
	Target                string    `json:"target,omitempty"`
	ForwardPath           string    `json:"forward_path,omitempty"`
	ApprovalID            string    `json:"approval_id,omitempty"`
	ReplayOf              string    `json:"replay_of,omitempty"`
	Error                 string    `json:"error,omitempty"`
	RequestBodyTruncated  bool      `json:"request_body_truncated,omitempty"`
	ResponseBodyTruncated bool      `json:"response_body_truncated,omitempty"`
}

// harEntryOf maps x as HARWriter describes.
func harEntryOf(x Exchange) harEntry {
	e := harEntry{
		StartedDateTime: x.ReceivedAt.UTC().Format(harTimeFormat),
		Request: harRequest{
			Method:      x.Request.Method,
			URL:         harURL(x.Request),
			HTTPVersion: x.Request.Protocol,
			Cookies:     []harNameValue{},
			Headers:     harHeaders(x.Request.Header),
			QueryString: harQuery(x.Request.Query),
			HeadersSize: -1,
		},
		Response: harResponse{
			HTTPVersion: x.Request.Protocol,
			Cookies:     []harNameValue{},
			Headers:     []harNameValue{},
			Content:     harContent{MimeType: harUnknownMIME},
			HeadersSize: -1,
			BodySize:    -1,
		},
		Keyhole: harKeyhole{
			ID: x.ID, Route: x.Route, Decision: x.Decision, Reason: x.Reason, Identity: x.Identity,
			Upstream: x.Upstream, Target: x.Target, ForwardPath: x.Request.ForwardPath,
			ApprovalID: x.ApprovalID, ReplayOf: x.ReplayOf, Error: x.Error,
			RequestBodyTruncated: x.Request.Body.Truncated,
		},
	}
	if b := x.Request.Body; b.Size > 0 || b.Text != "" {
		e.Request.BodySize = b.Size
		e.Request.PostData = &harPostData{MimeType: harMIME(x.Request.Header), Text: b.Text, Encoding: b.Encoding}
	}
	if r := x.Response; r != nil {
		e.Response.Status = r.Status
		e.Response.StatusText = http.StatusText(r.Status)
		e.Response.Headers = harHeaders(r.Header)
		e.Response.Content = harContent{Size: r.Body.Size, MimeType: harMIME(r.Header), Text: r.Body.Text, Encoding: r.Body.Encoding}
		e.Response.RedirectURL = r.Header.Get("Location")
		e.Response.BodySize = r.Body.Size
		e.Keyhole.ResponseBodyTruncated = r.Body.Truncated
	}
	e.Time, e.Timings = harTimingsOf(x)
	return e
}

// harMIME returns the Content-Type of h, or harUnknownMIME when it has none.
func harMIME(h http.Header) string {
	if ct := h.Get("Content-Type"); ct != "" {
		return ct
	}
	return harUnknownMIME
}

// harTimingsOf returns the entry's time and timings. Each is rounded to the microsecond
// and the timings add up to time unless the record's durations disagree.
func harTimingsOf(x Exchange) (float64, harTimings) {
	total := harMS(x.Durations.TotalMS)
	t := harTimings{DNS: -1, Connect: -1, Blocked: total}
	if x.ForwardedAt != nil {
		t.Blocked = min(harMS(float64(x.ForwardedAt.Sub(x.ReceivedAt))/float64(time.Millisecond)), total)
		t.Wait = harMS(x.Durations.UpstreamMS)
		t.Receive = harMS(total - t.Blocked - t.Wait)
	}
	return total, t
}

// harMS returns ms rounded to the microsecond, or 0 for a negative or non-finite value,
// which a well-formed record never holds and JSON cannot carry.
func harMS(ms float64) float64 {
	if !(ms > 0) || math.IsInf(ms, 1) {
		return 0
	}
	return math.Round(ms*1000) / 1000
}

// harHeaders returns h as HAR name/value pairs, sorted by name.
func harHeaders(h http.Header) []harNameValue {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	out := []harNameValue{}
	for _, k := range names {
		for _, v := range h[k] {
			out = append(out, harNameValue{Name: k, Value: v})
		}
	}
	return out
}

// harQuery returns the pairs of a raw query in order, unescaped; a part that does not
// unescape is kept as it is.
func harQuery(raw string) []harNameValue {
	out := []harNameValue{}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		out = append(out, harNameValue{Name: harUnescape(k), Value: harUnescape(v)})
	}
	return out
}

func harUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// harURL returns the absolute URL of r: its origin, the path and the query.
func harURL(r Request) string {
	var b strings.Builder
	b.WriteString(harOriginOf(r))
	if !strings.HasPrefix(r.Path, "/") {
		// A request refused before its target was canonicalised keeps what the client
		// sent, which need not start with '/'.
		b.WriteByte('/')
	}
	harEscape(&b, r.Path, true)
	if r.Query != "" {
		b.WriteByte('?')
		harEscape(&b, r.Query, false)
	}
	return b.String()
}

// harOriginOf returns the scheme and host r reached the gateway with, or harOrigin when
// the record has none or its host is not one a URL can carry as it is (a client chooses
// its Host header).
func harOriginOf(r Request) string {
	if r.Scheme != "http" && r.Scheme != "https" || r.Host == "" {
		return harOrigin
	}
	for i := 0; i < len(r.Host); i++ {
		c := r.Host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._:[]", c) >= 0) {
			return harOrigin
		}
	}
	if u, err := url.Parse(r.Scheme + "://" + r.Host); err != nil || u.Host != r.Host || u.Path != "" {
		return harOrigin
	}
	return r.Scheme + "://" + r.Host
}

// harEscape writes s percent-encoding every byte that may not appear in a URL's path
// (inPath) or query (RFC 3986). A '%' that starts a valid escape is kept: a canonical
// path holds no '%' (it is decoded), while a raw target or query is already escaped and
// must not be escaped twice. In a path a '?' is escaped too: a canonical path decoded
// from "%3F" holds one, which raw would start a query the request never had.
func harEscape(b *strings.Builder, s string, inPath bool) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '?' && inPath:
			b.WriteString("%3F")
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0,
			c == '%' && i+2 < len(s) && harIsHex(s[i+1]) && harIsHex(s[i+2]):
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}

func harIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
