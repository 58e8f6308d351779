package proxy_test

import (
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

const echoConfig = `
identity:
  issuers: [{ issuer: "${ISSUER}", audiences: [api://keyhole] }]
upstreams:
  crm:
    url: "${CRM_URL}"
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
  billing:
    url: "${BILLING_URL}"
    credential: { header: Authorization, value: "Basic ${BILLING_KEY}" }
routes:
  - name: plain
    match: { methods: [GET, HEAD], path: "/plain/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
  - name: masked
    match: { methods: [GET], path: "/masked/*" }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask: [{ field: ssn, action: redact }]
    detect: [us_ssn]
  - name: basic
    match: { methods: [GET], path: "/basic/*" }
    upstream: billing
    allow: { scopes: [crm.read] }
`

// TestCredentialEchoScrubbed checks that an upstream that sends its credential back (in
// a header, in a JSON body, in every encoding, split across writes, gzip-compressed
// unasked, in a trailer, in 103 Early Hints) never hands it to the client, on plain,
// masked and streamed routes; that the record holds what the client got; and that each
// such response is counted and the first of each route logged (issue 11, item 6).
func TestCredentialEchoScrubbed(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	userPass := "svc-billing:" + billingKey
	h.cfgEnv["BILLING_KEY"] = base64.StdEncoding.EncodeToString([]byte(userPass))
	h.load(t, echoConfig)
	encodings := func(v string) []string {
		return []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)),
			url.QueryEscape(v), url.PathEscape(v), strings.ReplaceAll(v, "/", `\/`)}
	}
	echo := func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		if key == "" {
			key = r.Header.Get("Authorization")
		}
		hdr := w.Header()
		hdr.Set("X-Echo-Api-Key", key)
		hdr.Set("Trailer", "X-Echo-Trailer")
		kind := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		if kind == "hints" {
			hdr.Set("Link", "</k?key="+url.QueryEscape(key)+">; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			hdr.Del("Link")
		}
		var out io.Writer = w
		switch kind {
		case "sse":
			hdr.Set("Content-Type", "text/event-stream")
		case "gzip":
			hdr.Set("Content-Type", "application/json")
			hdr.Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			defer zw.Close()
			out = zw
		default:
			hdr.Set("Content-Type", "application/json")
		}
		fl := http.NewResponseController(w)
		var parts []string
		for _, e := range encodings(key) {
			parts = append(parts, fmt.Sprintf("%q", e))
		}
		doc := `{"ssn":"1","echo":[` + strings.Join(parts, ",") + `]}`
		if kind == "sse" {
			doc = "data: " + doc + "\n\n"
		}
		if kind == "split" || kind == "sse" {
			// The key cut across two writes, flushed apart.
			i := strings.Index(doc, key) + len(key)/2
			io.WriteString(out, doc[:i])
			fl.Flush()
			time.Sleep(20 * time.Millisecond)
			io.WriteString(out, doc[i:])
		} else {
			io.WriteString(out, doc)
		}
		if kind != "gzip" {
			fl.Flush()
			hdr.Set("X-Echo-Trailer", key)
		}
	}
	h.crm.Respond, h.billing.Respond = echo, echo
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	secrets := append(encodings(crmKey), encodings(userPass)...)
	secrets = append(secrets, encodings(billingKey)...)
	secrets = append(secrets, encodings(h.cfgEnv["BILLING_KEY"])...)
	var ids []string
	for _, p := range []string{"/plain/json", "/plain/split", "/plain/sse", "/plain/gzip", "/plain/hints",
		"/masked/json", "/masked/split", "/masked/sse", "/basic/json", "/basic/split"} {
		t.Run(p, func(t *testing.T) {
			req, _ := http.NewRequest("GET", h.srv.URL+p, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Accept-Encoding", "gzip") // the client asks; the upstream must not answer it
			tr := &http.Transport{DisableCompression: true}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s = %d %q, %v; want 200", p, resp.StatusCode, body, err)
			}
			var all strings.Builder
			resp.Header.Write(&all)
			resp.Trailer.Write(&all)
			all.Write(body)
			for _, s := range secrets {
				if strings.Contains(all.String(), s) {
					t.Errorf("GET %s: client got the credential as %q:\n%s", p, s, all.String())
				}
			}
			if !strings.Contains(all.String(), "[REDACTED") {
				t.Errorf("GET %s: no replacement in the response, want one:\n%s", p, all.String())
			}
			if cl := resp.Header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(body)) {
				t.Errorf("GET %s: Content-Length %s, body %d bytes", p, cl, len(body))
			}
			ids = append(ids, resp.Header.Get("X-Request-Id"))
		})
	}
	// HEAD carries the echo in its headers only.
	if resp, _ := h.do(t, "HEAD", "/plain/json", tok, "", nil); strings.Contains(resp.Header.Get("X-Echo-Api-Key"), crmKey) {
		t.Errorf("HEAD: client got the credential in a header")
	}
	h.flush(t)
	for _, id := range ids {
		x := h.exchange(t, id)
		var all strings.Builder
		x.Response.Header.Write(&all)
		all.WriteString(x.Response.Body.Text)
		if !strings.Contains(all.String(), "[REDACTED*") {
			t.Errorf("record %s: %s, want the same-length replacement the client got", x.Request.Path, all.String())
		}
	}
	for _, c := range []struct {
		route string
		want  float64
	}{{"plain", 6}, {"masked", 3}, {"basic", 2}} {
		if got := counterValue(t, h.reg, "keyhole_credential_echo_total", "route", c.route); got != c.want {
			t.Errorf("keyhole_credential_echo_total{route=%s} = %v, want %v", c.route, got, c.want)
		}
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "sent back its credential"); n != 3 {
		t.Errorf("%d credential echo warnings, want 3 (one per route):\n%s", n, logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log holds the credential as %q", s)
		}
	}
}
