package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/jsonscan"
	"github.com/keyholehq/keyhole/masking"
	"github.com/keyholehq/keyhole/recorder"
)

// maskHeaders are request headers never forwarded on a masked route: the upstream must
// send one whole, readable representation, so the gateway can mask all of it.
var maskRequestHeaders = []string{"Accept-Encoding", "Range", "If-Range", "If-None-Match", "If-Modified-Since"}

// maskResponseHeaders describe the unmasked representation and are dropped from a masked response.
var maskResponseHeaders = []string{"Etag", "Last-Modified", "Content-Md5", "Accept-Ranges", "Content-Range",
	"Digest", "Content-Digest", "Repr-Digest", "Trailer"}

// maskError is a response that could not be masked. The client gets 502 mask_failed with
// msg; the response body is never passed on.
type maskError struct{ msg string }

func (e *maskError) Error() string { return "mask: " + e.msg }

// routeMask is the masking of one route.
type routeMask struct {
	masker      *masking.Masker
	passNonJSON bool
	limit       int64 // limits.max_response_body_masked: one document, one NDJSON line, one SSE event
	mcp         *mcpMask
}

// CheckMasks compiles every route's mask and detect rules and returns their errors at
// their config paths (routes[i].mask[j].field). config.Parse runs it as a Check, so a
// path that cannot be masked safely is refused at load.
func CheckMasks(cfg *config.Config) error {
	var errs []error
	for i, r := range cfg.Routes {
		if len(r.Mask) == 0 && len(r.Detect) == 0 {
			continue
		}
		// Whether hash_key is set is the config's to report; here only the rules count.
		_, err := masking.New(r.Mask, r.Detect, masking.Options{HashKey: []byte("checking-the-rules-only")})
		var leaves []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			leaves = j.Unwrap()
		} else if err != nil {
			leaves = []error{err}
		}
		for _, e := range leaves {
			var re *masking.RuleError
			// Anything else is an unknown detector, which config reports itself with
			// the valid names: one error per mistake.
			if errors.As(e, &re) {
				errs = append(errs, cfg.Errorf(fmt.Sprintf("routes[%d].mask[%d].field", i, re.Index), "%s", re.Msg))
			}
		}
	}
	for i, r := range cfg.Routes {
		if r.MCP != nil {
			errs = append(errs, checkToolMasks(cfg, i)...)
		}
	}
	return errors.Join(errs...)
}

// maskResponse replaces resp's body with its masked form, or returns a *maskError (or the
// 503 overloaded refusal, beyond limits.max_masked_bytes_held). It runs
// in ModifyResponse, before any header reaches the client, so a refusal is still possible;
// streamed framings (NDJSON, SSE) are masked as they arrive, one line or event at a time,
// and a failure mid-stream aborts the response rather than pass an unmasked event.
func (g *Gateway) maskResponse(resp *http.Response, info *reqInfo) error {
	h := resp.Header
	for _, k := range maskResponseHeaders {
		delete(h, k)
	}
	resp.Trailer = nil
	body, err := decodedBody(resp)
	if err != nil {
		return err
	}
	h.Del("Content-Encoding")
	if resp.Request.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		// No body to mask; the length of the unmasked one would describe nothing the client gets.
		h.Del("Content-Length")
		return nil
	}
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch ct {
	case "text/event-stream":
		resp.Body = &streamMasker{src: bufio.NewReaderSize(body, 32<<10), closer: resp.Body, g: g, info: info, sse: true}
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines":
		resp.Body = &streamMasker{src: bufio.NewReaderSize(body, 32<<10), closer: resp.Body, g: g, info: info}
	default:
		// application/json, any +json, and every other type: a body that is JSON is masked
		// whatever it claims to be (text/plain carrying JSON leaks as well as JSON does).
		// Held whole, as received and as masked, within limits.max_masked_bytes_held.
		raw, held, err := g.readMasked(info, body, resp.ContentLength)
		var ue *upstreamBodyError
		if errors.As(err, &ue) {
			return ue // the upstream's fault, not the mask's
		}
		if err != nil && resp.Request.Context().Err() != nil {
			return err // the client left: 499 client_closed, not the mask's fault
		}
		var rf *refusal
		var me *maskError
		if err != nil && !errors.As(err, &rf) && !errors.As(err, &me) {
			return &maskError{msg: "response body could not be read"}
		}
		if err != nil {
			return err // over the size limit, or over the budget (503 overloaded)
		}
		out, sent, err := g.maskHeld(info, raw, held)
		if err != nil {
			return err
		}
		if enc, bom := jsonscan.Detect(raw); (bom > 0 || enc != jsonscan.UTF8) && !bytes.Equal(out, raw) {
			setCharsetUTF8(h) // masked from UTF-16/32 or BOM-prefixed JSON, sent as UTF-8
		}
		resp.Body.Close()
		resp.Body = sent
		resp.ContentLength = int64(len(out))
		h.Set("Content-Length", strconv.Itoa(len(out)))
		return nil
	}
	resp.ContentLength = -1
	h.Del("Content-Length")
	return nil
}

// decodedBody returns resp's body without its content coding. The gateway does not ask for
// compression on masked routes, but an upstream may send it unasked; a coding the gateway
// cannot decode, or a stack of codings, is refused rather than passed on unmasked. Every
// Content-Encoding field counts: "identity" in one and "gzip" in the next is gzip.
func decodedBody(resp *http.Response) (io.Reader, error) {
	switch ce := recorder.ContentCoding(resp.Header.Values("Content-Encoding")); ce {
	case "":
		return resp.Body, nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(resp.Body)
		if ue := (*upstreamBodyError)(nil); errors.As(err, &ue) {
			return nil, ue // cut before its gzip header: the upstream's fault
		}
		if err != nil {
			return nil, &maskError{msg: "gzip response body could not be decoded"}
		}
		return zr, nil
	case "deflate":
		zr, err := zlib.NewReader(resp.Body)
		if ue := (*upstreamBodyError)(nil); errors.As(err, &ue) {
			return nil, ue
		}
		if err != nil {
			return nil, &maskError{msg: "deflate response body could not be decoded"}
		}
		return zr, nil
	default:
		return nil, &maskError{msg: fmt.Sprintf("response content coding %q cannot be masked", ce)}
	}
}

// maskDocument masks one JSON document (a whole body, an NDJSON line or an SSE payload).
// Blank input passes as is. A body that is not JSON at all (an HTML error page, plain
// text) passes only when the route says pass_non_json; one that looks like JSON but is
// not valid (truncated, malformed) is always refused, since lenient clients may still
// read the values it holds.
func (g *Gateway) maskDocument(info *reqInfo, doc []byte) ([]byte, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return doc, nil
	}
	// Clients decode JSON with a BOM or in UTF-16/32 (RFC 4627 §3) as JSON: mask the text
	// it stands for, and send it as UTF-8, the encoding RFC 8259 requires. Decoding is
	// lossy, as a lenient client's is; what does not begin like JSON is judged as before.
	text := doc
	if enc, bom := jsonscan.Detect(doc); bom > 0 || enc != jsonscan.UTF8 {
		text, _ = jsonscan.Transcode(nil, doc[bom:], enc, true)
	}
	if info.mask.mcp != nil && info.mask.mcp.call {
		return g.maskToolAnswer(info, text, doc)
	}
	out, n, err := info.mask.masker.Apply(make([]byte, 0, len(text)+64), text)
	if err != nil {
		switch {
		case errors.Is(err, masking.ErrNotJSON) && info.mask.passNonJSON && !compressed(doc):
			return doc, nil
		case errors.Is(err, masking.ErrNotJSON):
			return nil, &maskError{msg: "response body is not JSON and the route does not pass non-JSON"}
		default:
			return nil, &maskError{msg: "response body is not valid JSON"}
		}
	}
	g.countMasked(info.route.Name, n)
	return out, nil
}

// setCharsetUTF8 labels a masked body that was transcoded to UTF-8 as UTF-8.
func setCharsetUTF8(h http.Header) {
	ct, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		ct, params = "application/json", nil
	}
	if params == nil {
		params = map[string]string{}
	}
	params["charset"] = "utf-8"
	h.Set("Content-Type", mime.FormatMediaType(ct, params))
}

// compressed reports whether doc starts as a gzip or zlib stream does: a compressed body
// labelled as uncompressed is not "non-JSON" to pass on, but JSON the masker cannot see.
func compressed(doc []byte) bool {
	return bytes.HasPrefix(doc, []byte{0x1f, 0x8b}) ||
		len(doc) >= 2 && doc[0]&0x0f == 8 && (uint16(doc[0])<<8|uint16(doc[1]))%31 == 0
}

// countMasked adds what one document had masked to keyhole_masked_values_total.
func (g *Gateway) countMasked(route string, n masking.Counts) {
	for _, c := range []struct {
		action string
		n      int
	}{{"redact", n.Redact}, {"remove", n.Remove}, {"hash", n.Hash}, {"last4", n.Last4}, {"detect", n.Detected}} {
		if c.n > 0 {
			g.metrics.MaskedValues.WithLabelValues(route, c.action).Add(float64(c.n))
		}
	}
}

// streamMasker masks an NDJSON or SSE body as it streams: it reads one line (NDJSON) or one
// event (SSE), masks it and hands it on, so the client sees each event as soon as it is
// complete and memory stays bounded by one event.
type streamMasker struct {
	src    *bufio.Reader
	closer io.Closer
	g      *Gateway
	info   *reqInfo
	sse    bool
	out    []byte // masked bytes not yet read
	err    error
}

func (s *streamMasker) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.sse {
			s.err = s.nextEvent()
		} else {
			s.err = s.nextLine()
		}
		var me *maskError
		if errors.As(s.err, &me) {
			s.g.metrics.MaskFailures.WithLabelValues(s.info.route.Name).Inc()
			s.info.refusal = &refusal{status: http.StatusBadGateway, code: "mask_failed", msg: me.msg, decision: labelError, cause: me}
		}
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

func (s *streamMasker) Close() error { return s.closer.Close() }

// readLine returns the next line with its terminator, refusing one longer than the limit.
func (s *streamMasker) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := s.src.ReadSlice('\n')
		line = append(line, frag...)
		if int64(len(line)) > s.info.mask.limit {
			return nil, &maskError{msg: "a streamed line is larger than the gateway masks"}
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

func (s *streamMasker) nextLine() error {
	line, err := s.readLine()
	if len(line) > 0 {
		body, eol := trimEOL(line)
		out, merr := s.g.maskDocument(s.info, body)
		if merr != nil {
			return merr
		}
		s.out = append(append(s.out[:0], out...), eol...)
	}
	return err
}

// nextEvent reads one SSE event (up to a blank line), masks the JSON its data lines carry,
// and re-emits it: fields other than data as they were, then the masked payload as data
// lines, then the blank line.
func (s *streamMasker) nextEvent() error {
	var fields, data []byte
	hasData, size := false, int64(0)
	for {
		line, err := s.readLine()
		size += int64(len(line))
		if size > s.info.mask.limit {
			return &maskError{msg: "a streamed event is larger than the gateway masks"}
		}
		body, _ := trimEOL(line)
		if bytes.IndexByte(body, '\r') >= 0 {
			// A bare CR ends a line for an SSE client but not for this parser: refuse
			// rather than let the two read different events.
			return &maskError{msg: "event stream uses bare CR line endings"}
		}
		if len(line) > 0 && len(body) > 0 {
			name, value, _ := bytes.Cut(body, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(name) {
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data, hasData = append(data, value...), true
			case "event", "id":
				v, ferr := s.g.maskField(s.info, value)
				if ferr != nil {
					return ferr
				}
				fields = append(append(append(append(fields, name...), ": "...), v...), '\n')
			case "retry":
				// Clients ignore a retry that is not all digits; one that is not cannot
				// carry anything but a delay.
				if allDigits(value) {
					fields = append(append(fields, body...), '\n')
				}
			case "":
				// A comment: keep it as a keep-alive, without its text.
				fields = append(fields, ":\n"...)
			}
			// Any other field is ignored by SSE clients and dropped here: it could carry data.
		}
		if len(line) > 0 && len(body) == 0 || err != nil {
			// End of the event (blank line), or of the stream.
			if hasData || len(fields) > 0 {
				out := append(s.out[:0], fields...)
				if hasData {
					masked, merr := s.g.maskDocument(s.info, data)
					if merr != nil {
						return merr
					}
					masked = bytes.ReplaceAll(masked, []byte("\r"), []byte("\n")) // JSON whitespace only
					for _, l := range bytes.Split(masked, []byte("\n")) {
						out = append(append(append(out, "data: "...), l...), '\n')
					}
				}
				if len(line) > 0 {
					out = append(out, '\n')
				}
				s.out = out
			}
			return err
		}
	}
}

// trimEOL splits a line into its content and its terminator ("\n", "\r\n" or "").
func trimEOL(line []byte) (body, eol []byte) {
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return line[:len(line)-2], line[len(line)-2:]
	}
	if bytes.HasSuffix(line, []byte("\n")) {
		return line[:len(line)-1], line[len(line)-1:]
	}
	return line, nil
}

// maskField masks the value of an SSE id or event field, which clients hand to the
// application as it is (issue 11: `id: {"ssn":"..."}`, `event: 123-45-6789`): a value
// that is JSON is masked as a document, any other value has the detectors run over it.
// Ids are scanned rather than replaced with opaque ones: a resuming client sends the id
// back in Last-Event-ID, and opaque ids would need a mapping the gateway keeps across
// reconnections and replicas; event names are the client's dispatch keys and cannot be
// opaque at all.
func (g *Gateway) maskField(info *reqInfo, value []byte) ([]byte, error) {
	out, n, err := info.mask.masker.Apply(nil, value)
	if err == nil {
		g.countMasked(info.route.Name, n)
		return out, nil
	}
	if !errors.Is(err, masking.ErrNotJSON) {
		return nil, &maskError{msg: "an event field looks like JSON but is not valid"}
	}
	out, found := info.mask.masker.Text(nil, value)
	g.countMasked(info.route.Name, masking.Counts{Detected: found})
	return out, nil
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}
