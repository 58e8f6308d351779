package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/recorder"
)

// TestRequestTrailersDropped checks that a client's request trailers never reach an
// upstream: they arrive after the body, past the header hygiene and when.headers, so a
// chunked request could otherwise carry a credential, a spoofed X-Forwarded-For or a
// tenant the rules never saw (issue 11, item 4).
const guardBlock = `guards:
  - name: no-sql-drop
    match: { methods: ["*"], path: "/*", when: { body_regex: "(?i)\\bdrop\\s+table\\b" } }
    deny: "destructive SQL is never forwarded"
`

func TestRequestTrailersDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	trailers := []string{"Authorization", "Cookie", "X-Api-Key", "X-Forwarded-For", "X-Tenant", "X-Keyhole-Approval"}
	var tr strings.Builder
	for _, k := range trailers {
		fmt.Fprintf(&tr, "%s: evil-%s\r\n", k, strings.ToLower(k))
	}
	// Without the body guard the route streams the body: the trailers arrive as the
	// upstream reads it, after every check ran.
	streamed := strings.Replace(testConfig, guardBlock, "", 1)
	if streamed == testConfig {
		t.Fatal("test config has no body guard to remove")
	}
	for _, tc := range []struct {
		name, config string
	}{{"streamed", streamed}, {"buffered for a body guard", testConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			h.load(t, tc.config)
			size := 5
			h.crm.Reset()
			body := strings.Repeat("a", size)
			req := "POST /crm/customers HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + tok + "\r\n" +
				"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: " + strings.Join(trailers, ", ") + "\r\n\r\n" +
				fmt.Sprintf("%x\r\n%s\r\n0\r\n", len(body), body) + tr.String() + "\r\n"
			status, b := h.raw(t, req)
			if status != 200 {
				t.Fatalf("POST = %d %s, want 200", status, b)
			}
			reqs := h.crm.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if len(got.Trailer) != 0 {
				t.Errorf("upstream got trailers %v, want none", got.Trailer)
			}
			if v := got.Header.Values("Trailer"); len(v) != 0 {
				t.Errorf("upstream got Trailer header %q, want none", v)
			}
			if got.Body != body {
				t.Errorf("upstream body %d bytes, want %d", len(got.Body), len(body))
			}
		})
	}
}

// TestMaskedRoutesSendNoTrailers checks that a masked route's client gets no response
// trailers, in no framing, neither announced nor sent, and that the record holds none:
// trailers are headers the masker never sees, and Go's transport fills resp.Trailer only
// once the body is read, after ModifyResponse ran (issue 11, item 5).
func TestMaskedRoutesSendNoTrailers(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, maskConfig)
	const bearer = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Trailer", "X-Ssn, X-Token")
		switch path.Base(r.URL.Path) {
		case "json":
			hdr.Set("Content-Type", "application/json")
			io.WriteString(w, customerJSON)
		case "ndjson":
			hdr.Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, customerJSON+"\n")
		case "sse":
			hdr.Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: "+customerJSON+"\n\n")
		case "plain":
			hdr.Set("Content-Type", "text/plain")
			io.WriteString(w, "plain words")
		}
		http.NewResponseController(w).Flush() // chunked, so trailers can follow
		hdr.Set("X-Ssn", plantedSSN)
		hdr.Set("X-Token", bearer)
	}
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	var ids []string
	for _, p := range []string{"/masked/json", "/masked/ndjson", "/masked/sse", "/pass/plain"} {
		t.Run(p, func(t *testing.T) {
			resp, body := h.do(t, "GET", p, tok, "", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s = %d %s, want 200", p, resp.StatusCode, body)
			}
			if len(resp.Trailer) != 0 {
				t.Errorf("GET %s: client got trailers %v, want none", p, resp.Trailer)
			}
			if v := resp.Header.Values("Trailer"); len(v) != 0 {
				t.Errorf("GET %s: client got Trailer %q, want none", p, v)
			}
			var all strings.Builder
			resp.Header.Write(&all)
			all.Write(body)
			for _, planted := range []string{plantedSSN, bearer} {
				if strings.Contains(all.String(), planted) {
					t.Errorf("GET %s: client saw %q:\n%s", p, planted, all.String())
				}
			}
			ids = append(ids, resp.Header.Get("X-Request-Id"))
		})
	}
	h.flush(t)
	for _, id := range ids {
		x := h.exchange(t, id)
		var all strings.Builder
		x.Response.Header.Write(&all)
		for _, k := range []string{"Trailer", "X-Ssn", "X-Token", http.TrailerPrefix + "X-Ssn"} {
			if v := x.Response.Header.Values(k); len(v) != 0 {
				t.Errorf("record %s: response header %s = %q, want none", x.Request.Path, k, v)
			}
		}
		if strings.Contains(all.String(), plantedSSN) || strings.Contains(all.String(), "eyJ") {
			t.Errorf("record %s holds a trailer: %s", x.Request.Path, all.String())
		}
	}
}

// TestMaskedEventFields checks that the id and event fields of a masked route's SSE
// events are masked like data (field rules on JSON, detectors on text), and that a retry
// that is not a delay is dropped (issue 11, item 8).
func TestMaskedEventFields(t *testing.T) {
	h := newMaskHarness(t)
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: {\"ssn\":\"123456789\"}\nevent: %s\nretry: %s\ndata: {}\n\n", plantedSSN, plantedSSN)
		fmt.Fprintf(w, "id: 42\nevent: customer\nretry: 3000\ndata: {}\n\n")
	}
	resp, body := h.do(t, "GET", "/masked/sse", tok, "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET = %d %s", resp.StatusCode, body)
	}
	want := "id: {\"ssn\":\"[REDACTED]\"}\nevent: [US_SSN]\ndata: {}\n\nid: 42\nevent: customer\nretry: 3000\ndata: {}\n\n"
	if string(body) != want {
		t.Errorf("stream = %q, want %q", body, want)
	}
}

// TestMaskedResponseHeaders checks mask_headers (values redacted) and that a route's
// detectors run over the URL-bearing response headers, encoded or not, and that the
// record holds what the client got.
func TestMaskedResponseHeaders(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, strings.Replace(maskConfig, "    detect: [email, credit_card, us_ssn]\n",
		"    detect: [email, credit_card, us_ssn]\n    mask_headers: [Set-Cookie, x-debug-user]\n", 1))
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr.Set("Content-Type", "application/json")
		hdr.Add("Set-Cookie", "session=PLANTED-SESSION-1")
		hdr.Add("Set-Cookie", "other=PLANTED-SESSION-2")
		hdr.Set("X-Debug-User", plantedEmail)
		hdr.Set("Location", "/next?ssn="+plantedSSN)
		hdr.Set("Content-Location", "/c/"+plantedCard)
		hdr.Set("Link", "</who?e="+url.QueryEscape(plantedEmail)+">; rel=next")
		hdr.Set("Refresh", "0; url=/x?e="+plantedEmail)
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, `{}`)
	}
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", h.srv.URL+"/masked/json", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != recorder.Redacted {
		t.Errorf("Set-Cookie = %q, want [%s]", got, recorder.Redacted)
	}
	for k, want := range map[string]string{"X-Debug-User": recorder.Redacted, "Location": "/next?ssn=[US_SSN]",
		"Content-Location": "/c/[CREDIT_CARD]", "Link": recorder.Redacted, "Refresh": "0; url=/x?e=[EMAIL]"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	h.flush(t)
	x := h.exchange(t, resp.Header.Get("X-Request-Id"))
	var all strings.Builder
	x.Response.Header.Write(&all)
	for _, p := range []string{plantedSSN, plantedCard, plantedEmail, url.QueryEscape(plantedEmail), "PLANTED-SESSION"} {
		if strings.Contains(all.String(), p) {
			t.Errorf("record holds %q:\n%s", p, all.String())
		}
	}
}
