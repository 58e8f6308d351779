package recorder

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// harExchanges are the exchanges of testdata/export.har, oldest first: an allowed GET
// over HTTP/2 and TLS answered with JSON, a forbidden POST with a JSON body that never
// reached an upstream, and an upload whose binary body was truncated at the body limit,
// recorded before the gateway kept scheme, host and protocol.
func harExchanges() []Exchange {
	at := func(ms int) time.Time {
		return time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC).Add(time.Duration(ms) * time.Millisecond)
	}
	ptr := func(t time.Time) *time.Time { return &t }
	text := func(s string) Body { return NewBody([]byte(s), int64(len(s))) }
	id := &Identity{Issuer: "https://id.example.com", Subject: "svc-billing", ClientID: "billing", Groups: []string{"finance"}, Scopes: []string{"customers:read"}}
	png := []byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0x0d, 'I', 'H', 'D', 'R', 0xff, 0xfe}
	return []Exchange{
		{
			ID: "01JPB6Q4V8Z5W7GJ4N3K2M1A0B", ReceivedAt: at(0), ForwardedAt: ptr(at(2)), RespondedAt: ptr(at(48)),
			Identity: id, Route: "customers-read", Decision: "allowed", Upstream: "crm",
			Request: Request{
				Method: "GET", Path: "/v1/customers/42", ForwardPath: "/api/customers/42", Query: "expand=orders&fields=name%2Cemail&q=a+b",
				Header: http.Header{"Authorization": {Redacted}, "Accept": {"application/json"}, "User-Agent": {"billing/2.3"}},
				Scheme: "https", Host: "keyhole.example.com", Protocol: "HTTP/2.0",
			},
			Response: &Response{
				Status: 200,
				Header: http.Header{"Content-Type": {"application/json"}, "Date": {"Fri, 14 Mar 2025 09:26:53 GMT"}, "Vary": {"Accept", "Accept-Encoding"}},
				Body:   text(`{"id":42,"name":"Ada","email":"a***@example.com"}`),
			},
			Durations: Durations{TotalMS: 48.125, UpstreamMS: 41.5},
		},
		{
			ID: "01JPB6Q5A1C3E5G7J9K1M3P5R7", ReceivedAt: at(1500), RespondedAt: ptr(at(1503)),
			Identity: id, Route: "customers-read", Decision: "forbidden", Reason: "POST is not allowed on route customers-read",
			Request: Request{
				Method: "POST", Path: "/v1/customers",
				Header: http.Header{"Authorization": {Redacted}, "Content-Type": {"application/json"}},
				Body:   text(`{"name":"Eve","email":"eve@example.com"}`),
				Scheme: "http", Host: "127.0.0.1:8080", Protocol: "HTTP/1.1",
			},
			Response: &Response{
				Status: 403,
				Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"01JPB6Q5A1C3E5G7J9K1M3P5R7"}},
				Body:   text(`{"error":"forbidden","message":"POST is not allowed on route customers-read"}`),
			},
			Error:     "forbidden",
			Durations: Durations{TotalMS: 2.75},
		},
		{
			ID: "01JPB6Q6F0H2K4M6P8R0T2V4X6", ReceivedAt: at(3000), ForwardedAt: ptr(at(3001)), RespondedAt: ptr(at(3250)),
			Identity: id, Route: "documents", Decision: "allowed", Upstream: "docs",
			Request: Request{
				Method: "POST", Path: "/v1/documents/scans", ForwardPath: "/scans",
				Header: http.Header{"Content-Type": {"image/png"}, "Content-Length": {"1048577"}},
				Body:   NewBody(png, 1048577),
			},
			Response: &Response{
				Status: 201,
				Header: http.Header{"Content-Type": {"application/json"}, "Location": {"/v1/documents/scans/7"}},
				Body:   text(`{"id":7}`),
			},
			Durations: Durations{TotalMS: 250.5, UpstreamMS: 240.25},
		},
	}
}

func TestWriteHARGolden(t *testing.T) {
	var buf bytes.Buffer
	xs := harExchanges()
	slices.Reverse(xs) // as the store lists them: the document is oldest first all the same
	if err := WriteHAR(&buf, xs, "1.4.0-test"); err != nil {
		t.Fatalf("WriteHAR: %v", err)
	}
	golden := filepath.Join("testdata", "export.har")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestWriteHARGolden -update to create it)", err)
	}
	if got := buf.String(); got != string(want) {
		t.Errorf("WriteHAR output differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
}

// harType is the JSON type of a HAR field.
type harType string

const (
	harString harType = "string"
	harNumber harType = "number"
	harObject harType = "object"
	harArray  harType = "array"
)

// harSchema lists, per HAR 1.2 object, its required fields with their JSON types and its
// optional fields. A field in neither list must be custom: its name starts with '_'.
var harSchema = map[string]struct {
	required map[string]harType
	optional []string
}{
	"log":     {map[string]harType{"version": harString, "creator": harObject, "entries": harArray}, []string{"browser", "pages", "comment"}},
	"creator": {map[string]harType{"name": harString, "version": harString}, []string{"comment"}},
	"entry": {map[string]harType{"startedDateTime": harString, "time": harNumber, "request": harObject,
		"response": harObject, "cache": harObject, "timings": harObject}, []string{"pageref", "serverIPAddress", "connection", "comment"}},
	"request": {map[string]harType{"method": harString, "url": harString, "httpVersion": harString, "cookies": harArray,
		"headers": harArray, "queryString": harArray, "headersSize": harNumber, "bodySize": harNumber}, []string{"postData", "comment"}},
	"response": {map[string]harType{"status": harNumber, "statusText": harString, "httpVersion": harString, "cookies": harArray,
		"headers": harArray, "content": harObject, "redirectURL": harString, "headersSize": harNumber, "bodySize": harNumber}, []string{"comment"}},
	"content":   {map[string]harType{"size": harNumber, "mimeType": harString}, []string{"compression", "text", "encoding", "comment"}},
	"postData":  {map[string]harType{"mimeType": harString, "text": harString}, []string{"params", "comment"}},
	"cache":     {map[string]harType{}, []string{"beforeRequest", "afterRequest", "comment"}},
	"timings":   {map[string]harType{"send": harNumber, "wait": harNumber, "receive": harNumber}, []string{"blocked", "dns", "connect", "ssl", "comment"}},
	"nameValue": {map[string]harType{"name": harString, "value": harString}, []string{"comment"}},
}

func jsonTypeOf(v any) harType {
	switch v.(type) {
	case string:
		return harString
	case json.Number:
		return harNumber
	case map[string]any:
		return harObject
	case []any:
		return harArray
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return harType(fmt.Sprintf("%T", v))
}

// checkHARObject reports every required field of obj, a HAR object of kind, that is
// missing or of the wrong type, and every field HAR does not define that is not custom.
func checkHARObject(t *testing.T, where, kind string, v any) map[string]any {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		t.Errorf("%s is %s, want object", where, jsonTypeOf(v))
		return nil
	}
	s, ok := harSchema[kind]
	if !ok {
		t.Fatalf("no schema for %q", kind)
	}
	for k, want := range s.required {
		f, ok := obj[k]
		if !ok {
			t.Errorf("%s: required field %q is missing", where, k)
		} else if got := jsonTypeOf(f); got != want {
			t.Errorf("%s.%s is %s, want %s", where, k, got, want)
		}
	}
	for k := range obj {
		if _, req := s.required[k]; !req && !strings.HasPrefix(k, "_") && !slices.Contains(s.optional, k) {
			t.Errorf("%s: field %q is not HAR 1.2 and not custom (_name)", where, k)
		}
	}
	return obj
}

var harMillis = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`)

// checkHAR decodes doc and checks it against HAR 1.2: every object, required field and
// type, dates, absolute URLs and non-negative timings. It returns the entries.
func checkHAR(t *testing.T, doc []byte) []any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("HAR is not JSON: %v\n%s", err, doc)
	}
	if dec.More() {
		t.Errorf("HAR has data after the document")
	}
	if len(root) != 1 {
		t.Errorf("HAR root has %d fields, want only log", len(root))
	}
	log := checkHARObject(t, "log", "log", root["log"])
	if log == nil {
		return nil
	}
	if v := log["version"]; v != "1.2" {
		t.Errorf("log.version = %v, want 1.2", v)
	}
	checkHARObject(t, "log.creator", "creator", log["creator"])
	entries, _ := log["entries"].([]any)
	for i, ev := range entries {
		w := fmt.Sprintf("entries[%d]", i)
		e := checkHARObject(t, w, "entry", ev)
		if e == nil {
			continue
		}
		if s, _ := e["startedDateTime"].(string); !harMillis.MatchString(s) {
			t.Errorf("%s.startedDateTime = %q, want ISO 8601 with milliseconds", w, s)
		}
		total := number(t, e["time"])
		if total < 0 {
			t.Errorf("%s.time = %v, want >= 0", w, total)
		}
		if req := checkHARObject(t, w+".request", "request", e["request"]); req != nil {
			if u, err := url.Parse(fmt.Sprint(req["url"])); err != nil || !u.IsAbs() || u.Host == "" {
				t.Errorf("%s.request.url = %v, want an absolute URL (%v)", w, req["url"], err)
			}
			checkNameValues(t, w+".request", req, "cookies", "headers", "queryString")
			if pd, ok := req["postData"]; ok {
				checkHARObject(t, w+".request.postData", "postData", pd)
			}
		}
		if resp := checkHARObject(t, w+".response", "response", e["response"]); resp != nil {
			checkNameValues(t, w+".response", resp, "cookies", "headers")
			if c := checkHARObject(t, w+".response.content", "content", resp["content"]); c != nil {
				if enc, ok := c["encoding"]; ok && enc != "base64" {
					t.Errorf("%s.response.content.encoding = %v, want base64", w, enc)
				}
			}
		}
		checkHARObject(t, w+".cache", "cache", e["cache"])
		if tm := checkHARObject(t, w+".timings", "timings", e["timings"]); tm != nil {
			for _, k := range []string{"send", "wait", "receive"} {
				if v := number(t, tm[k]); v < 0 {
					t.Errorf("%s.timings.%s = %v, want >= 0", w, k, v)
				}
			}
		}
		if kh, ok := e["_keyhole"].(map[string]any); !ok {
			t.Errorf("%s._keyhole is missing", w)
		} else if _, ok := kh["id"].(string); !ok {
			t.Errorf("%s._keyhole.id is missing", w)
		}
	}
	return entries
}

func checkNameValues(t *testing.T, where string, obj map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		list, _ := obj[f].([]any)
		for i, nv := range list {
			checkHARObject(t, fmt.Sprintf("%s.%s[%d]", where, f, i), "nameValue", nv)
		}
	}
}

func number(t *testing.T, v any) float64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		return math.NaN()
	}
	f, err := n.Float64()
	if err != nil {
		t.Errorf("number %v: %v", n, err)
	}
	return f
}

func TestHARRequiredFields(t *testing.T) {
	xs := append(harExchanges(),
		// The response entry was lost.
		Exchange{ID: "lost", ReceivedAt: time.Date(2025, 3, 14, 10, 0, 0, 0, time.FixedZone("CET", 3600)), Decision: "allowed",
			Request: Request{Method: "GET", Path: "/v1/x"}},
		// Nothing at all, durations that make no sense included.
		Exchange{Durations: Durations{TotalMS: math.NaN(), UpstreamMS: -3}},
		// Refused before canonicalisation, binary response.
		Exchange{ID: "raw", Decision: "error", Request: Request{Method: "GET", Path: "*", Query: "a=%zz&b"},
			Response: &Response{Status: 400, Body: NewBody([]byte{0xff, 0x00}, 2)}},
	)
	var buf bytes.Buffer
	if err := WriteHAR(&buf, xs, ""); err != nil {
		t.Fatalf("WriteHAR: %v", err)
	}
	entries := checkHAR(t, buf.Bytes())
	if len(entries) != len(xs) {
		t.Fatalf("HAR has %d entries, want %d", len(entries), len(xs))
	}

	t.Run("no entries", func(t *testing.T) {
		var buf bytes.Buffer
		if err := NewHARWriter(&buf, "1").Close(); err != nil {
			t.Fatal(err)
		}
		if got := checkHAR(t, buf.Bytes()); got == nil || len(got) != 0 {
			t.Errorf("entries = %v, want []", got)
		}
	})
}

// harEntries returns the entries WriteHAR writes for xs, decoded.
func harEntries(t *testing.T, xs ...Exchange) []harEntry {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteHAR(&buf, xs, "test"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Log struct{ Entries []harEntry }
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Log.Entries
}

func TestHARMapping(t *testing.T) {
	xs := harExchanges()
	es := harEntries(t, xs...)

	t.Run("binary truncated request body", func(t *testing.T) {
		pd := es[2].Request.PostData
		if pd == nil || pd.Encoding != "base64" || pd.Text != xs[2].Request.Body.Text || pd.MimeType != "image/png" {
			t.Errorf("postData = %+v, want the base64 text with _encoding base64 and mimeType image/png", pd)
		}
		if !es[2].Keyhole.RequestBodyTruncated || es[2].Request.BodySize != 1048577 {
			t.Errorf("request_body_truncated = %v, bodySize = %d, want true, 1048577", es[2].Keyhole.RequestBodyTruncated, es[2].Request.BodySize)
		}
	})
	t.Run("no body", func(t *testing.T) {
		if es[0].Request.PostData != nil || es[0].Request.BodySize != 0 {
			t.Errorf("GET without body: postData = %+v, bodySize = %d, want none, 0", es[0].Request.PostData, es[0].Request.BodySize)
		}
	})
	t.Run("query string", func(t *testing.T) {
		want := []harNameValue{{"expand", "orders"}, {"fields", "name,email"}, {"q", "a b"}}
		if got := es[0].Request.QueryString; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("queryString = %v, want %v", got, want)
		}
	})
	t.Run("headers sorted", func(t *testing.T) {
		var names []string
		for _, h := range es[0].Response.Headers {
			names = append(names, h.Name+"="+h.Value)
		}
		want := "Content-Type=application/json Date=Fri, 14 Mar 2025 09:26:53 GMT Vary=Accept Vary=Accept-Encoding"
		if got := strings.Join(names, " "); got != want {
			t.Errorf("headers = %s, want %s", got, want)
		}
	})
	t.Run("binary response", func(t *testing.T) {
		x := Exchange{ID: "bin", Response: &Response{Status: 200, Header: http.Header{"Content-Type": {"application/octet-stream"}}, Body: NewBody([]byte{0xff, 0xd8, 0xff}, 3)}}
		c := harEntries(t, x)[0].Response.Content
		if c.Encoding != "base64" || c.Text != "/9j/" || c.Size != 3 || c.MimeType != "application/octet-stream" {
			t.Errorf("content = %+v, want base64 /9j/ of size 3", c)
		}
	})
	t.Run("lost response", func(t *testing.T) {
		r := harEntries(t, Exchange{ID: "lost", Request: Request{Method: "GET", Path: "/"}})[0].Response
		if r.Status != 0 || r.BodySize != -1 || r.Content != (harContent{MimeType: "x-unknown"}) {
			t.Errorf("response = %+v, want status 0, bodySize -1, empty content of mimeType x-unknown", r)
		}
	})
	t.Run("empty bodies", func(t *testing.T) {
		x := Exchange{ID: "204", Request: Request{Method: "POST", Path: "/", Body: NewBody([]byte("x"), 1)}, Response: &Response{Status: 204}}
		e := harEntries(t, x)[0]
		if c := e.Response.Content; c.MimeType != "x-unknown" || c.Size != 0 {
			t.Errorf("204 content = %+v, want size 0, mimeType x-unknown", c)
		}
		if pd := e.Request.PostData; pd == nil || pd.MimeType != "x-unknown" {
			t.Errorf("postData without Content-Type = %+v, want mimeType x-unknown", pd)
		}
		if c := es[1].Response.Content; c.MimeType != "application/json" {
			t.Errorf("content with Content-Type = %+v, want mimeType application/json", c)
		}
	})
	t.Run("protocol", func(t *testing.T) {
		for i, want := range []string{"HTTP/2.0", "HTTP/1.1", ""} {
			if got := es[i].Request.HTTPVersion; got != want || es[i].Response.HTTPVersion != want {
				t.Errorf("entries[%d] httpVersion = %q, %q, want %q (the record's protocol)", i, got, es[i].Response.HTTPVersion, want)
			}
		}
	})
}

// TestHAROrder checks that entries come out oldest first (then by id) in whatever order
// they were added, also when they are kept in the temporary file (over 4 MiB), and that
// each comes out whole.
func TestHAROrder(t *testing.T) {
	at := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	big := strings.Repeat("y", 64<<10)
	var xs []Exchange
	for i := range 100 { // 6.4 MiB of bodies: past the memory the writer keeps entries in
		xs = append(xs, Exchange{ID: fmt.Sprintf("x%03d", i), ReceivedAt: at.Add(time.Duration(i) * time.Second),
			Request: Request{Method: "GET", Path: fmt.Sprintf("/%d", i)}, Response: &Response{Status: 200, Body: NewBody([]byte(big), int64(len(big)))}})
	}
	xs = append(xs, Exchange{ID: "x050a", ReceivedAt: xs[50].ReceivedAt, Request: Request{Method: "GET", Path: "/50a"}})
	slices.Reverse(xs) // newest first, as the store lists
	var buf bytes.Buffer
	if err := WriteHAR(&buf, xs, "test"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Log struct{ Entries []harEntry }
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range doc.Log.Entries {
		got = append(got, e.Keyhole.ID)
		if e.Keyhole.ID != "x050a" && e.Response.Content.Text != big {
			t.Errorf("entry %s: content of %d bytes, want the whole body", e.Keyhole.ID, len(e.Response.Content.Text))
		}
	}
	want := []string{}
	for i := range 100 {
		want = append(want, fmt.Sprintf("x%03d", i))
		if i == 50 {
			want = append(want, "x050a")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries in order %v, want oldest first, same time by id: %v", got, want)
	}
}

func TestHARURL(t *testing.T) {
	origins := []struct {
		scheme, host, want string
	}{
		{"https", "keyhole.example.com", "https://keyhole.example.com/p"},
		{"http", "127.0.0.1:8080", "http://127.0.0.1:8080/p"},
		{"http", "[::1]:8080", "http://[::1]:8080/p"},
		// Records from before scheme and host were kept.
		{"", "", "http://keyhole/p"},
		{"http", "", "http://keyhole/p"},
		// Hosts a client made up that a URL cannot carry as they are.
		{"http", "evil.example/x", "http://keyhole/p"},
		{"http", "user@evil.example", "http://keyhole/p"},
		{"http", "a b", "http://keyhole/p"},
		{"http", "a:b:c", "http://keyhole/p"},
		{"ftp", "keyhole.example.com", "http://keyhole/p"},
	}
	for _, o := range origins {
		if got := harURL(Request{Path: "/p", Scheme: o.scheme, Host: o.host}); got != o.want {
			t.Errorf("URL of %s://%s /p = %q, want %q", o.scheme, o.host, got, o.want)
		}
	}
	tests := []struct {
		path, query, want string
	}{
		{"/v1/customers/42", "", "http://keyhole/v1/customers/42"},
		{"/v1/customers/42", "a=1&b=x%20y", "http://keyhole/v1/customers/42?a=1&b=x%20y"},
		// A canonical path is decoded: escape what a URL cannot hold.
		{"/files/a b/ünï", "", "http://keyhole/files/a%20b/%C3%BCn%C3%AF"},
		// A raw target refused before canonicalisation is escaped already.
		{"/a%2f..%2fadmin", "", "http://keyhole/a%2f..%2fadmin"},
		{"/bad%zz%", "q=%", "http://keyhole/bad%25zz%25?q=%25"},
		{"*", "", "http://keyhole/*"},
		{"/p", "x=1#frag", "http://keyhole/p?x=1%23frag"},
		// A canonical path decoded from %3F holds a '?' that starts no query.
		{"/v1/orders?status=open", "", "http://keyhole/v1/orders%3Fstatus=open"},
		{"/v1/a?b", "c=?d", "http://keyhole/v1/a%3Fb?c=?d"},
		{"", "", "http://keyhole/"},
	}
	for _, tt := range tests {
		got := harURL(Request{Path: tt.path, Query: tt.query})
		if got != tt.want {
			t.Errorf("URL of %q ? %q = %q, want %q", tt.path, tt.query, got, tt.want)
		}
		if u, err := url.Parse(got); err != nil || !u.IsAbs() {
			t.Errorf("URL %q does not parse as absolute: %v", got, err)
		}
	}
}

func TestHARTimings(t *testing.T) {
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	fwd := at.Add(1500 * time.Microsecond)
	tests := []struct {
		name string
		x    Exchange
		time float64
		want harTimings
	}{
		{"forwarded", Exchange{ReceivedAt: at, ForwardedAt: &fwd, Durations: Durations{TotalMS: 10.1, UpstreamMS: 7.3}},
			10.1, harTimings{Blocked: 1.5, DNS: -1, Connect: -1, Wait: 7.3, Receive: 1.3}},
		{"never forwarded", Exchange{ReceivedAt: at, Durations: Durations{TotalMS: 2.5}},
			2.5, harTimings{Blocked: 2.5, DNS: -1, Connect: -1}},
		{"upstream longer than total", Exchange{ReceivedAt: at, ForwardedAt: &fwd, Durations: Durations{TotalMS: 1, UpstreamMS: 9}},
			1, harTimings{Blocked: 1, DNS: -1, Connect: -1, Wait: 9}},
		{"forwarded before received", Exchange{ReceivedAt: fwd, ForwardedAt: &at, Durations: Durations{TotalMS: 3, UpstreamMS: 2}},
			3, harTimings{DNS: -1, Connect: -1, Wait: 2, Receive: 1}},
		{"not finite", Exchange{Durations: Durations{TotalMS: math.Inf(1), UpstreamMS: math.NaN()}},
			0, harTimings{DNS: -1, Connect: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, got := harTimingsOf(tt.x)
			if total != tt.time || got != tt.want {
				t.Errorf("timings = %v, %+v, want %v, %+v", total, got, tt.time, tt.want)
			}
		})
	}
}

// failWriter accepts n writes, then fails.
type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errDiskFull
	}
	w.n--
	return len(p), nil
}

func TestHARWriterErrors(t *testing.T) {
	xs := harExchanges()
	h := NewHARWriter(&failWriter{n: 0}, "1")
	for _, x := range xs {
		if err := h.Add(x); err != nil {
			t.Fatalf("Add: %v (nothing is written before Close)", err)
		}
	}
	if err := h.Close(); !errors.Is(err, errDiskFull) {
		t.Errorf("Close on a failing writer = %v, want %v", err, errDiskFull)
	}

	var buf bytes.Buffer
	h = NewHARWriter(&buf, "1")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(xs[0]); err == nil {
		t.Error("Add after Close = nil, want an error")
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := WriteHAR(&failWriter{}, xs, "1"); !errors.Is(err, errDiskFull) {
		t.Errorf("WriteHAR on a failing writer = %v, want %v", err, errDiskFull)
	}
}

// TestHARSpoolLimit: an export past the spool's limit is refused with ErrHARTooLarge
// and writes nothing, instead of filling the disk (or a tmpfs /tmp, memory).
func TestHARSpoolLimit(t *testing.T) {
	var out bytes.Buffer
	h := NewHARWriter(&out, "test")
	h.spool.limit = 64 << 10
	body := NewBody(bytes.Repeat([]byte("x"), 8<<10), 8<<10)
	var err error
	for i := 0; err == nil && i < 100; i++ {
		err = h.Add(Exchange{ID: fmt.Sprint(i), Request: Request{Method: "POST", Path: "/", Body: body}})
	}
	if !errors.Is(err, ErrHARTooLarge) {
		t.Fatalf("Add past the limit = %v, want ErrHARTooLarge", err)
	}
	if err := h.Close(); !errors.Is(err, ErrHARTooLarge) || out.Len() != 0 {
		t.Errorf("Close = %v with %d bytes written, want ErrHARTooLarge and nothing", err, out.Len())
	}
}
