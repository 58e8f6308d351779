package proxy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// recordingHarness is a harness whose gateway records into a real SQLite file.
type recordingHarness struct {
	*harness
	dir   string
	store *sqlite.Store
	rec   *recorder.Recorder
}

func newRecordingHarness(t testing.TB, mode string) *recordingHarness {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(dir, "keyhole.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := recorder.New(st, recorder.Policy{Mode: mode, BodyLimit: 512,
		Redactor: recorder.NewRedactor([]string{"X-Api-Key"}, []string{crmKey, "Bearer " + billingKey})}, recorder.Options{})
	t.Cleanup(func() { rec.Close(context.Background()) })
	return &recordingHarness{harness: newHarnessWith(t, rec), dir: dir, store: st, rec: rec}
}

// flush writes everything the recorder holds.
func (h *recordingHarness) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func (h *recordingHarness) exchange(t *testing.T, id string) recorder.Exchange {
	t.Helper()
	rec, err := h.store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("exchange %s: %v", id, err)
	}
	x, err := recorder.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestRecordEveryPath checks that every way through the gateway leaves exactly one
// complete record with the right fields, and that no secret reaches the database file.
func TestRecordEveryPath(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	const cookie = "session=PLANTED-COOKIE-77c1"
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "upstream=PLANTED-SET-COOKIE-19ab")
		key := r.Header.Get("X-Api-Key")
		// A careless backend echoes its key in every encoding, compressed when asked to be.
		var out io.Writer = w
		if r.URL.Query().Has("gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			defer zw.Close()
			out = zw
		}
		fmt.Fprintf(out, `{"path":%q,"raw":%q,"b64":%q,"url":%q}`, r.URL.Path, key,
			base64.StdEncoding.EncodeToString([]byte(key)), url.QueryEscape(key))
	}
	reader := h.token(t, map[string]any{"sub": "agent-reader", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	writer := h.token(t, map[string]any{"sub": "agent-writer", "scp": []string{"crm.write", "billing.read"}})
	tests := []struct {
		name, method, path, token, body string
		wantStatus                      int
		wantDecision, wantRoute         string
		wantError                       string
		wantUpstream                    bool
	}{
		{"allowed", "GET", "/crm/customers/42?expand=1", reader, "", 200, "allowed", "crm-read-customer", "", true},
		{"allowed with body", "POST", "/crm/customers", writer, `{"name":"Ada"}`, 200, "allowed", "crm-create-customer", "", true},
		{"forbidden", "DELETE", "/crm/customers/42", reader, "", 403, "forbidden", "crm-delete-customer", "forbidden", false},
		{"denied by guard", "POST", "/crm/customers", writer, `{"q":"DROP TABLE customers"}`, 403, "denied", "no-sql-drop", "denied", false},
		{"no route", "GET", "/nothing/here", reader, "", 404, "no_route", "", "no_route", false},
		{"unauthenticated", "GET", "/crm/customers/42", "not-a-jwt-PLANTED-CLIENT-TOKEN", "", 401, "unauthenticated", "", "unauthenticated", false},
		{"upstream down", "GET", "/down", reader, "", 502, "error", "down", "upstream_error", false},
		{"upstream timeout", "GET", "/billing/slow", writer, "", 504, "error", "billing-slow", "upstream_timeout", false},
		{"body too large", "POST", "/crm/customers", writer, strings.Repeat("x", 2048), 413, "error", "", "body_too_large", false},
		{"gzip response", "GET", "/crm/customers/43?gzip=1", reader, "", 200, "allowed", "crm-read-customer", "", true},
		{"secret in the path", "GET", "/crm/customers/" + crmKey, reader, "", 200, "allowed", "crm-read-customer", "", true},
		{"encoded query token", "GET", "/crm/customers/42?%61ccess_token=PLANTED-QUERY-TOKEN-5d2e", reader, "", 400, "error", "", "bad_request", false},
	}
	ids := map[string]string{}
	for _, tt := range tests {
		h.crm.Reset()
		resp, _ := h.do(t, tt.method, tt.path, tt.token, tt.body, http.Header{"Cookie": {cookie}})
		if resp.StatusCode != tt.wantStatus {
			t.Fatalf("%s: %s %s = %d, want %d", tt.name, tt.method, tt.path, resp.StatusCode, tt.wantStatus)
		}
		ids[tt.name] = resp.Header.Get("X-Request-Id")
		if got := len(h.crm.Requests()) > 0; got != tt.wantUpstream {
			t.Errorf("%s: upstream received a request = %v, want %v", tt.name, got, tt.wantUpstream)
		}
	}
	h.flush(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := h.exchange(t, ids[tt.name])
			if x.Decision != tt.wantDecision || x.Route != tt.wantRoute || x.Error != tt.wantError {
				t.Errorf("record decision, route, error = %q, %q, %q; want %q, %q, %q", x.Decision, x.Route, x.Error, tt.wantDecision, tt.wantRoute, tt.wantError)
			}
			if x.Response == nil || x.Response.Status != tt.wantStatus {
				t.Fatalf("record response = %+v, want status %d", x.Response, tt.wantStatus)
			}
			if x.Request.Method != tt.method || x.RespondedAt == nil || x.ReceivedAt.IsZero() {
				t.Errorf("record request = %s at %v..%v", x.Request.Method, x.ReceivedAt, x.RespondedAt)
			}
			if r := x.Request; r.Scheme != "http" || r.Host != h.srv.Listener.Addr().String() || r.Protocol != "HTTP/1.1" {
				t.Errorf("record request scheme, host, protocol = %q, %q, %q; want http, %s, HTTP/1.1", r.Scheme, r.Host, r.Protocol, h.srv.Listener.Addr())
			}
			if tt.wantError != "" && !strings.Contains(x.Response.Body.Text, `"error":"`+tt.wantError+`"`) {
				t.Errorf("recorded response body %q, want the error the client saw", x.Response.Body.Text)
			}
			if tt.name == "unauthenticated" && x.Request.Body.Size != 0 {
				t.Errorf("401 recorded a request body")
			}
			if tt.token != "" && tt.wantStatus != 401 && tt.wantStatus != 413 && (x.Identity == nil || x.Identity.Subject == "") {
				t.Errorf("record has no identity")
			}
		})
	}
	t.Run("allowed request in detail", func(t *testing.T) {
		x := h.exchange(t, ids["allowed"])
		if x.Identity.Subject != "agent-reader" || x.Upstream != "crm" || x.Request.Path != "/crm/customers/42" ||
			x.Request.ForwardPath != "/customers/42" || x.Request.Query != "expand=1" || x.ForwardedAt == nil {
			t.Errorf("record = %+v", x)
		}
		if got := x.Request.Header.Get("Cookie"); got != recorder.Redacted {
			t.Errorf("recorded Cookie = %q, want %q", got, recorder.Redacted)
		}
		if got := x.Response.Header.Get("Set-Cookie"); got != recorder.Redacted {
			t.Errorf("recorded Set-Cookie = %q, want %q", got, recorder.Redacted)
		}
		// The gateway scrubbed the echo from what the client got (same length), and the
		// record holds what the client got.
		if strings.Count(x.Response.Body.Text, "[REDACTED") != 3 {
			t.Errorf("recorded body %s: want the key redacted in all three encodings", x.Response.Body.Text)
		}
	})
	t.Run("gzip response recorded decoded and redacted", func(t *testing.T) {
		x := h.exchange(t, ids["gzip response"])
		b := x.Response.Body
		// The gateway decodes a coding the upstream sent unasked, to check it for the
		// credential; the client, and so the record, gets it decoded.
		if b.Coding != "" || b.Truncated || !strings.HasPrefix(b.Text, `{"path":"/api/customers/43"`) ||
			strings.Count(b.Text, "[REDACTED") != 3 {
			t.Errorf("recorded gzip body = %+v, want it decoded with the key redacted three times", b)
		}
	})
	t.Run("request body recorded", func(t *testing.T) {
		x := h.exchange(t, ids["allowed with body"])
		if x.Request.Body.Text != `{"name":"Ada"}` || x.Request.Body.Truncated {
			t.Errorf("recorded request body = %+v", x.Request.Body)
		}
	})
	t.Run("exactly one record per request", func(t *testing.T) {
		recs, _, err := h.store.List(context.Background(), recorder.Filter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(tests) {
			t.Errorf("store holds %d exchanges, want %d", len(recs), len(tests))
		}
		for _, r := range recs {
			if r.Response == nil {
				t.Errorf("exchange %s has no response entry", r.Request.ExchangeID)
			}
		}
	})
	t.Run("chain verifies", func(t *testing.T) {
		rep, err := recorder.Verify(context.Background(), h.store, nil)
		if err != nil || !rep.OK || rep.Entries != int64(2*len(tests)) {
			t.Errorf("Verify = %+v, %v; want OK with %d entries", rep, err, 2*len(tests))
		}
	})
	t.Run("no secret in the database files", func(t *testing.T) {
		planted := []string{crmKey, base64.StdEncoding.EncodeToString([]byte(crmKey)), url.QueryEscape(crmKey), billingKey,
			reader, writer, "PLANTED-CLIENT-TOKEN", "PLANTED-COOKIE", "PLANTED-SET-COOKIE", "PLANTED-QUERY-TOKEN"}
		files, _ := filepath.Glob(filepath.Join(h.dir, "*"))
		if len(files) == 0 {
			t.Fatal("no database files")
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range planted {
				if bytes.Contains(b, []byte(p)) {
					t.Errorf("%s holds planted secret %.20q...", filepath.Base(f), p)
				}
			}
		}
	})
}

// TestRecordStrictStoreDown checks that in strict mode a request that cannot be recorded
// is refused with 503 and never reaches the upstream, while best-effort mode forwards it.
func TestRecordStrictStoreDown(t *testing.T) {
	for _, tt := range []struct {
		mode       string
		wantStatus int
		wantSent   bool
	}{
		{recorder.Strict, 503, false},
		{recorder.BestEffort, 200, true},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			h := newRecordingHarness(t, tt.mode)
			tok := h.token(t, map[string]any{"sub": "a", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
			h.store.Close() // the store can no longer write
			resp, body := h.do(t, "GET", "/crm/customers/1", tok, "", nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET = %d %s, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantStatus == 503 && !bytes.Contains(body, []byte(`"error":"recorder_unavailable"`)) {
				t.Errorf("body %s, want recorder_unavailable", body)
			}
			if got := len(h.crm.Requests()) > 0; got != tt.wantSent {
				t.Errorf("upstream received the request = %v, want %v", got, tt.wantSent)
			}
		})
	}
}

// TestRecordMaskedBody checks that a masked route's record holds the masked body the
// client saw, never the upstream's original.
func TestRecordMaskedBody(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, maskConfig)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, customerJSON)
	}
	tok := h.token(t, map[string]any{"sub": "agent", "scp": []string{"crm.read"}})
	resp, _ := h.do(t, "GET", "/masked/json", tok, "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET = %d", resp.StatusCode)
	}
	h.flush(t)
	x := h.exchange(t, resp.Header.Get("X-Request-Id"))
	for _, p := range []string{plantedSSN, plantedCard, plantedEmail} {
		if strings.Contains(x.Response.Body.Text, p) {
			t.Errorf("record holds unmasked %q: %s", p, x.Response.Body.Text)
		}
	}
	if !strings.Contains(x.Response.Body.Text, `"ssn":"[REDACTED]"`) {
		t.Errorf("recorded body %s, want the masked body", x.Response.Body.Text)
	}
}

// TestRecordRefusedBodies checks that the record of a refused request keeps its body, as
// that of an allowed one does (up to the body limit, marked cut beyond it), whichever
// stage refused it and whether or not a stage had read the body — except before
// authentication: an unknown client's bytes are not kept.
func TestRecordRefusedBodies(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	reader := h.token(t, map[string]any{"sub": "agent-reader", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	writer := h.token(t, map[string]any{"sub": "agent-writer", "scp": []string{"crm.write"}})
	big := strings.Repeat("x", 700) // over the record limit (512), under max_request_body (1KiB)
	huge := strings.Repeat("y", 2048)
	tests := []struct {
		name, method, path, token, body string
		wantStatus                      int
		wantText                        string
		wantSize                        int64
	}{
		{"guard", "POST", "/crm/customers", writer, `{"q":"DROP TABLE customers"}`, 403, `{"q":"DROP TABLE customers"}`, 28},
		{"deny", "POST", "/crm/customers/bulk/purge", writer, `{"ids":[1,2,3]}`, 403, `{"ids":[1,2,3]}`, 15},
		{"forbidden", "DELETE", "/crm/customers/42", reader, `{"reason":"cleanup"}`, 403, `{"reason":"cleanup"}`, 20},
		{"forbidden, cut at the limit", "DELETE", "/crm/customers/43", reader, big, 403, big[:512], 700},
		{"no route", "POST", "/nothing/here", reader, `{"hello":"world"}`, 404, `{"hello":"world"}`, 17},
		{"bad request", "POST", "/crm/customers?a=%zz", writer, `{"name":"Ada"}`, 400, `{"name":"Ada"}`, 14},
		{"too large", "POST", "/crm/customers", writer, huge, 413, huge[:512], 2048},
		{"unauthenticated", "POST", "/crm/customers", "not-a-jwt", `{"name":"Ada"}`, 401, "", 0},
		// Refused before authentication: nobody known sent the bytes, so none are kept.
		{"bad path, no token", "POST", "/crm/a/../customers", "", `{"name":"Ada"}`, 400, "", 0},
		{"too large, no token", "POST", "/crm/customers", "", huge, 401, "", 0},
	}
	ids := map[string]string{}
	for _, tt := range tests {
		resp, _ := h.do(t, tt.method, tt.path, tt.token, tt.body, http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != tt.wantStatus {
			t.Fatalf("%s: %s %s = %d, want %d", tt.name, tt.method, tt.path, resp.StatusCode, tt.wantStatus)
		}
		ids[tt.name] = resp.Header.Get("X-Request-Id")
	}
	if n := len(h.crm.Requests()); n != 0 {
		t.Fatalf("the upstream received %d requests, want none", n)
	}
	h.flush(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := h.exchange(t, ids[tt.name]).Request.Body
			if b.Text != tt.wantText || b.Size != tt.wantSize || b.Truncated != (tt.wantSize > 512) {
				t.Errorf("recorded request body = %.60q (size %d, truncated %v), want %.60q (size %d)", b.Text, b.Size, b.Truncated, tt.wantText, tt.wantSize)
			}
		})
	}
}

// TestRecordRefusedStalledBody sends a refused request that announces a large body, sends
// 10 bytes of it and falls silent: the refusal comes within the record's short wait
// (not the body timeouts), the connection closes, and the record keeps the 10 bytes.
func TestRecordRefusedStalledBody(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	h.load(t, strings.Replace(dosConfig, "request_body_idle_timeout: 300ms", "request_body_idle_timeout: 30s", 1))
	reader := h.token(t, map[string]any{"sub": "agent-reader", "scp": []string{"crm.read"}})
	c := rawRequest(t, h.srv.Listener.Addr().String(),
		"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+reader+"\r\nContent-Length: 1000", "0123456789")
	start := time.Now()
	resp, _ := answerThenClose(t, c, 5*time.Second)
	if resp.StatusCode != http.StatusForbidden || time.Since(start) > 3*time.Second {
		t.Fatalf("got %d after %s, want 403 within about a second", resp.StatusCode, time.Since(start))
	}
	h.flush(t)
	b := h.exchange(t, resp.Header.Get("X-Request-Id")).Request.Body
	if b.Text != "0123456789" || b.Size != 1000 || !b.Truncated {
		t.Errorf("recorded body = %q (size %d, truncated %v), want the 10 bytes sent of 1000", b.Text, b.Size, b.Truncated)
	}
}

// TestRecordSchemeHostProtocol checks that a record keeps how the request reached the
// gateway — TLS, the Host the client addressed, HTTP/2 — and that the HAR export's URL
// and httpVersion are those.
func TestRecordSchemeHostProtocol(t *testing.T) {
	h := newRecordingHarness(t, recorder.Strict)
	tsrv := httptest.NewUnstartedServer(h.gw)
	tsrv.EnableHTTP2 = true
	tsrv.StartTLS()
	t.Cleanup(tsrv.Close)
	reader := h.token(t, map[string]any{"sub": "agent-reader", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	req, _ := http.NewRequest("GET", tsrv.URL+"/crm/customers/42?expand=1", nil)
	req.Host = "keyhole.example.com:8443"
	req.Header.Set("Authorization", "Bearer "+reader)
	resp, err := tsrv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("GET over TLS = %d %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	h.flush(t)
	x := h.exchange(t, resp.Header.Get("X-Request-Id"))
	if r := x.Request; r.Scheme != "https" || r.Host != "keyhole.example.com:8443" || r.Protocol != "HTTP/2.0" {
		t.Errorf("record request scheme, host, protocol = %q, %q, %q; want https, keyhole.example.com:8443, HTTP/2.0", r.Scheme, r.Host, r.Protocol)
	}
	var har bytes.Buffer
	if err := recorder.WriteHAR(&har, []recorder.Exchange{x}, "test"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"url": "https://keyhole.example.com:8443/crm/customers/42?expand=1"`, `"httpVersion": "HTTP/2.0"`} {
		if !strings.Contains(har.String(), want) {
			t.Errorf("HAR export lacks %s:\n%s", want, har.String())
		}
	}
}
