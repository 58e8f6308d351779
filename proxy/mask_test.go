package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// Planted values a masked route must never let through.
const (
	plantedSSN   = "078-05-1120"
	plantedCard  = "4242424242424242"
	plantedEmail = "ada@example.com"
)

const maskConfig = `
identity:
  issuers: [{ issuer: "${ISSUER}", audiences: [api://keyhole] }]
upstreams:
  crm: { url: "${CRM_URL}" }
routes:
  - name: masked
    match: { methods: [GET], path: "/masked/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask:
      - { field: ssn, action: redact }
      - { field: payment.card_number, action: last4 }
      - { field: customers.#.ssn, action: redact }
    detect: [email, credit_card, us_ssn]
  - name: masked-pass
    match: { methods: [GET], path: "/pass/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask:
      - { field: ssn, action: redact }
      - { field: payment.card_number, action: last4 }
      - { field: customers.#.ssn, action: redact }
    detect: [email]
    pass_non_json: true
limits:
  max_response_body_masked: 4KiB
`

var customerJSON = fmt.Sprintf(`{"id":1,"name":"Ada","email":%q,"ssn":%q,"payment":{"card_number":%q},"customers":[{"ssn":%q},{"ssn":%q}]}`,
	plantedEmail, plantedSSN, plantedCard, plantedSSN, plantedSSN)

func newMaskHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.load(t, maskConfig)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		switch strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/masked"), "/pass") {
		case "/json", "/head":
			hdr.Set("Content-Type", "application/json")
			hdr.Set("ETag", `"v1"`)
			hdr.Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
			hdr.Set("Content-Md5", "x")
			io.WriteString(w, customerJSON)
		case "/early-hints":
			hdr.Set("X-Hint", plantedSSN)
			w.WriteHeader(http.StatusEarlyHints)
			hdr.Del("X-Hint")
			hdr.Set("Content-Type", "application/json")
			io.WriteString(w, customerJSON)
		case "/gzip":
			hdr.Set("Content-Type", "application/json")
			hdr.Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, customerJSON)
			zw.Close()
		case "/gzip-second-field":
			// identity in one field, gzip in the next: the body is gzip.
			hdr.Set("Content-Type", "application/json")
			hdr["Content-Encoding"] = []string{"identity", "gzip"}
			zw := gzip.NewWriter(w)
			io.WriteString(zw, customerJSON)
			zw.Close()
		case "/gzip-unlabelled":
			hdr.Set("Content-Type", "application/octet-stream")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, customerJSON)
			zw.Close()
		case "/gzip-twice":
			hdr.Set("Content-Type", "application/json")
			hdr["Content-Encoding"] = []string{"gzip", "gzip"}
			zw := gzip.NewWriter(w)
			io.WriteString(zw, customerJSON)
			zw.Close()
		case "/brotli":
			hdr.Set("Content-Type", "application/json")
			hdr.Set("Content-Encoding", "br")
			io.WriteString(w, "\x0b\x02\x80"+plantedSSN)
		case "/error":
			hdr.Set("Content-Type", "application/problem+json")
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"error":"lookup failed for ssn %s","ssn":%q}`, plantedSSN, plantedSSN)
		case "/text":
			hdr.Set("Content-Type", "text/plain")
			io.WriteString(w, customerJSON)
		case "/plain":
			hdr.Set("Content-Type", "text/plain")
			io.WriteString(w, "plain words")
		case "/truncated":
			hdr.Set("Content-Type", "application/json")
			io.WriteString(w, customerJSON[:len(customerJSON)-20])
		case "/jsonp":
			hdr.Set("Content-Type", "application/javascript")
			io.WriteString(w, "cb("+customerJSON+")")
		case "/big":
			hdr.Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"ssn":%q,"pad":%q}`, plantedSSN, strings.Repeat("x", 8<<10))
		case "/ndjson":
			hdr.Set("Content-Type", "application/x-ndjson")
			fmt.Fprintf(w, "{\"ssn\":%q}\n\n{\"note\":\"mail %s\"}\n", plantedSSN, plantedEmail)
		case "/sse-bad":
			hdr.Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"ssn\":%q}\n\ndata: not json %s\n\n", plantedSSN, plantedSSN)
		}
	}
	return h
}

func TestMaskedResponses(t *testing.T) {
	h := newMaskHarness(t)
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	tests := []struct {
		name, method, path string
		reqHeader          http.Header
		wantStatus         int
		wantCode           string   // error code for refusals
		wantIn             []string // must appear in the body
	}{
		{"JSON fields and detectors", "GET", "/masked/json", nil, 200, "", []string{`"ssn":"[REDACTED]"`, `"card_number":"************4242"`, `"email":"[EMAIL]"`}},
		{"client asks for gzip", "GET", "/masked/json", http.Header{"Accept-Encoding": {"gzip"}}, 200, "", []string{`"ssn":"[REDACTED]"`}},
		{"conditional and range requests are not forwarded", "GET", "/masked/json",
			http.Header{"Range": {"bytes=0-10"}, "If-None-Match": {`"v1"`}, "If-Modified-Since": {"Mon, 02 Jan 2006 15:04:05 GMT"}, "If-Range": {`"v1"`}}, 200, "", []string{`"[REDACTED]"`}},
		{"upstream sends gzip unasked", "GET", "/masked/gzip", nil, 200, "", []string{`"ssn":"[REDACTED]"`}},
		{"unknown content coding", "GET", "/masked/brotli", nil, 502, "mask_failed", nil},
		{"gzip named in a second Content-Encoding field", "GET", "/pass/gzip-second-field", nil, 200, "", []string{`"ssn":"[REDACTED]"`}},
		{"stacked codings", "GET", "/pass/gzip-twice", nil, 502, "mask_failed", nil},
		{"gzip labelled as nothing is not passed as non-JSON", "GET", "/pass/gzip-unlabelled", nil, 502, "mask_failed", nil},
		{"error bodies are masked too", "GET", "/masked/error", nil, 500, "", []string{`"ssn":"[REDACTED]"`, "[US_SSN]"}},
		{"text/plain carrying JSON", "GET", "/masked/text", nil, 200, "", []string{`"ssn":"[REDACTED]"`}},
		{"JSONP is not JSON", "GET", "/masked/jsonp", nil, 502, "mask_failed", nil},
		{"body over the masking limit", "GET", "/masked/big", nil, 502, "mask_failed", nil},
		{"NDJSON per line", "GET", "/masked/ndjson", nil, 200, "", []string{`{"ssn":"[REDACTED]"}`, "[EMAIL]"}},
		{"HEAD", "HEAD", "/masked/head", nil, 200, "", nil},
		{"1xx headers are dropped", "GET", "/masked/early-hints", nil, 200, "", []string{`"[REDACTED]"`}},
		{"pass_non_json still masks JSON", "GET", "/pass/text", nil, 200, "", []string{`"ssn":"[REDACTED]"`}},
		{"pass_non_json passes what is not JSON", "GET", "/pass/plain", nil, 200, "", []string{"plain words"}},
		{"truncated JSON is refused", "GET", "/masked/truncated", nil, 502, "mask_failed", nil},
		{"pass_non_json never passes truncated JSON", "GET", "/pass/truncated", nil, 502, "mask_failed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			req, _ := http.NewRequest(tt.method, h.srv.URL+tt.path, nil)
			for k, v := range tt.reqHeader {
				req.Header[k] = v
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			var got1xx []string
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
					got1xx = append(got1xx, fmt.Sprint(code, hdr))
					return nil
				},
			}))
			tr := &http.Transport{DisableCompression: true}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, resp.StatusCode, body, tt.wantStatus)
			}
			var all bytes.Buffer
			all.Write(body)
			resp.Header.Write(&all)
			fmt.Fprint(&all, got1xx)
			for _, planted := range []string{plantedSSN, plantedCard, plantedEmail} {
				if strings.Contains(all.String(), planted) {
					t.Errorf("client saw planted %q:\n%s", planted, all.String())
				}
			}
			if v := resp.Header.Values("X-Request-Id"); len(v) != 1 {
				t.Errorf("X-Request-Id = %q, want one value", v)
			}
			if len(got1xx) > 0 {
				t.Errorf("client got 1xx responses %v", got1xx)
			}
			if tt.wantCode != "" && !strings.Contains(string(body), `"error":"`+tt.wantCode+`"`) {
				t.Errorf("body %s, want error %s", body, tt.wantCode)
			}
			for _, want := range tt.wantIn {
				if !strings.Contains(string(body), want) {
					t.Errorf("body %s lacks %s", body, want)
				}
			}
			for _, k := range []string{"Etag", "Last-Modified", "Content-Md5", "Content-Encoding"} {
				if v := resp.Header.Get(k); v != "" {
					t.Errorf("response %s = %q, want it dropped", k, v)
				}
			}
			if cl := resp.Header.Get("Content-Length"); tt.method == "GET" && cl != "" && cl != fmt.Sprint(len(body)) {
				t.Errorf("Content-Length %s, body %d bytes", cl, len(body))
			}
			if reqs := h.crm.Requests(); len(reqs) == 1 {
				for _, k := range []string{"Accept-Encoding", "Range", "If-None-Match", "If-Modified-Since", "If-Range"} {
					if v := reqs[0].Header.Get(k); v != "" {
						t.Errorf("upstream got %s: %q on a masked route", k, v)
					}
				}
			}
		})
	}
	if got := counterValue(t, h.reg, "keyhole_masked_values_total", "route", "masked", "action", "redact"); got < 3 {
		t.Errorf("keyhole_masked_values_total{route=masked,action=redact} = %v, want at least 3", got)
	}
	if got := counterValue(t, h.reg, "keyhole_mask_failures_total", "route", "masked"); got != 4 {
		t.Errorf("keyhole_mask_failures_total{route=masked} = %v, want 4", got)
	}
	if got := counterValue(t, h.reg, "keyhole_mask_failures_total", "route", "masked-pass"); got != 3 {
		t.Errorf("keyhole_mask_failures_total{route=masked-pass} = %v, want 3", got)
	}
}

// TestMaskedEventStream checks that SSE events are masked one by one as they arrive, an
// event split over two writes included, and that a bad event aborts the stream.
func TestMaskedEventStream(t *testing.T) {
	h := newMaskHarness(t)
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	next := make(chan struct{})
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/masked/sse-bad" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"ssn\":%q}\n\ndata: not json %s\n\n", plantedSSN, plantedSSN)
			return
		}
		fl := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: customer\nid: 1\ndata: {\"ssn\":%q}\n\n", plantedSSN)
		fl.Flush()
		<-next
		fmt.Fprint(w, "data: {\"note\":\"card ")
		fl.Flush()
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "%s\"}\n\n", plantedCard)
		fl.Flush()
	}
	req, _ := http.NewRequest("GET", h.srv.URL+"/masked/sse", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent := func() string {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			ev.WriteString(line)
			if line == "\n" || err != nil {
				return ev.String()
			}
		}
	}
	first := readEvent() // arrives while the upstream still holds the second one back
	close(next)
	second := readEvent()
	if want := "event: customer\nid: 1\ndata: {\"ssn\":\"[REDACTED]\"}\n\n"; first != want {
		t.Errorf("first event = %q, want %q", first, want)
	}
	if want := "data: {\"note\":\"card [CREDIT_CARD]\"}\n\n"; second != want {
		t.Errorf("second event = %q, want %q", second, want)
	}

	req, _ = http.NewRequest("GET", h.srv.URL+"/masked/sse-bad", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("stream with a bad event ended cleanly (%q), want it aborted", body)
	}
	if strings.Contains(string(body), plantedSSN) {
		t.Errorf("aborted stream leaked %s: %q", plantedSSN, body)
	}
}
