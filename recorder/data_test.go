package recorder

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/scrub"
)

// dataSecret is the credential the data tests plant in bodies.
const dataSecret = "sk_live_PLANTED/key+42="

// entries returns the request and response entries the recorder makes of x, with
// dataSecret configured and token as the request's own secret.
func entries(t testing.TB, x *Exchange, token string) (req, resp *Entry) {
	t.Helper()
	red := NewRedactor(nil, []string{dataSecret})
	req, err := requestEntry(x, red, []string{token})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err = responseEntry(x, red, []string{token}); err != nil {
		t.Fatal(err)
	}
	return req, resp
}

// bodyExchange is an exchange with request body in and response body out.
func bodyExchange(in, out Body) *Exchange {
	at := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	return &Exchange{ID: "01JDXK3M8Q2V7N5R4T6Y9W0Z1A", ReceivedAt: at, RespondedAt: &at, Route: "r", Decision: "allowed",
		Request:  Request{Method: "POST", Path: "/p", Header: http.Header{"Content-Type": {"application/json"}}, Body: in},
		Response: &Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: out}}
}

func TestEntryDataHoldsBodyBytes(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"
	binary := []byte{0xff, 0x00, 0xc3, 'k', 0x1f, '"', '\\'}
	for _, c := range []struct {
		name   string
		body   Body
		want   []byte // the bytes the record keeps
		inline bool   // a binary body: base64 in the record's JSON, not after it
	}{
		{"empty", NewBody(nil, 0), nil, false},
		{"json", NewBody([]byte(`{"a":"q\"uote","b":[1,2]}`), 25), []byte(`{"a":"q\"uote","b":[1,2]}`), false},
		{"control characters and separators", NewBody([]byte("a\n\t\x00\u2028 é 日本"), 99), []byte("a\n\t\x00\u2028 é 日本"), false},
		{"binary", NewBody(binary, 7), binary, true},
		{"truncated, coded", func() Body { b := NewBody([]byte("part"), 10); b.Coding = "gzip"; return b }(), []byte("part"), false},
		{"secret raw", NewBody([]byte(`{"echo":"`+dataSecret+`"}`), 40), []byte(`{"echo":"[REDACTED]"}`), false},
		{"secret JSON-escaped", NewBody([]byte(`{"echo":"sk_live_PLANTED\/key+42="}`), 40), []byte(`{"echo":"[REDACTED]"}`), false},
		{"secret base64", NewBody([]byte(base64.StdEncoding.EncodeToString([]byte(dataSecret))), 32), []byte(Redacted), false},
		{"secret URL-encoded", NewBody([]byte("k="+url.QueryEscape(dataSecret)), 32), []byte("k=" + Redacted), false},
		{"the client's token", NewBody([]byte("tok "+token), 60), []byte("tok " + Redacted), false},
		{"secret in a binary body", NewBody(append([]byte{0xff}, dataSecret...), 24), append([]byte{0xff}, Redacted...), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, resp := entries(t, bodyExchange(c.body, c.body), token)
			for _, e := range []*Entry{req, resp} {
				if c.inline {
					if bytes.Contains(e.Data, []byte(`"raw"`)) || !bytes.HasSuffix(e.Data, []byte("}")) {
						t.Errorf("%s entry's Data %q: want the body in the record's JSON", e.Kind, e.Data)
					}
				} else if !bytes.HasSuffix(e.Data, c.want) || bytes.Contains(e.Data, []byte(`"text"`)) {
					t.Errorf("%s entry's Data %q: want the record's JSON without a text, then %q", e.Kind, e.Data, c.want)
				}
				if len(c.want) > 0 && !c.inline && !bytes.Contains(e.Data, []byte(`"raw":true`)) {
					t.Errorf("%s entry's Data %q does not mark its body raw", e.Kind, e.Data)
				}
				for _, f := range append(scrub.Forms(dataSecret), token) {
					if bytes.Contains(e.Data, []byte(f)) {
						t.Errorf("%s entry's Data holds the secret as %q", e.Kind, f)
					}
				}
			}
			x, err := Decode(Record{Request: *req, Response: resp})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range []Body{x.Request.Body, x.Response.Body} {
				if !bytes.Equal(b.Bytes(), c.want) || b.Size != c.body.Size || b.Truncated != c.body.Truncated || b.Coding != c.body.Coding {
					t.Errorf("decoded %+v; want the bytes %q, size %d, truncated %v, coding %q", b, c.want, c.body.Size, c.body.Truncated, c.body.Coding)
				}
				if want := NewBody(c.want, 0).Encoding; b.Encoding != want {
					t.Errorf("decoded encoding %q, want %q", b.Encoding, want)
				}
			}
		})
	}
}

// TestRedactionCannotOpenTheRecord holds the record to what a client can do with the
// values redacted as its own secrets (its token, an access_token it sent): choose one
// that cuts the record's JSON open, as the rest of the record from inside a header value
// it also chose, and a body that would close it again with fields of its own. The entry
// must keep the body inside its JSON then, where redaction breaks at worst the record's
// JSON (as it did before bodies followed records), never its meaning.
func TestRedactionCannotOpenTheRecord(t *testing.T) {
	forged := []byte(`"],"Zzz":["x"]},"body":{"raw":true}},"identity":{"subject":"alice"},"route":"admin"}innocent body`)
	at := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC)
	x := &Exchange{ID: "01JDXK3M8Q2V7N5R4T6Y9W0Z1A", ReceivedAt: at, RespondedAt: &at, Route: "public", Decision: "refused",
		Identity: &Identity{Subject: "mallory"},
		Request: Request{Method: "POST", Path: "/p", Header: http.Header{"Zz": {"aaaaaaaa"}}, Body: NewBody(forged, int64(len(forged))),
			Scheme: "http", Host: "gw", Protocol: "HTTP/1.1"},
		Response: &Response{Status: 400, Body: NewBody([]byte(`{"error":"bad_request"}`), 23)}}
	red := NewRedactor(nil, nil)
	plain, err := requestEntry(x, red, nil)
	if err != nil {
		t.Fatal(err)
	}
	record := plain.Data[:len(plain.Data)-len(forged)]
	cut := string(record[bytes.Index(record, []byte("aaaaaaaa"))+1:]) // from inside the header value to the end
	for _, token := range []string{cut, `raw":true,"size`} {
		req, err := requestEntry(x, red, []string{token})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := responseEntry(x, red, []string{token})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(Record{Request: *req, Response: resp})
		if err != nil {
			continue // unreadable, as before: not a forgery
		}
		if got.Identity == nil || got.Identity.Subject != "mallory" || got.Route != "public" || got.Request.Header.Get("Zzz") != "" {
			t.Errorf("token %q: decoded identity %+v, route %q, headers %v: the body rewrote the record", token, got.Identity, got.Route, got.Request.Header)
		}
	}
}

// TestBinaryBodyHidesSecretsInItsBase64 holds a binary body to what its record shows: its
// base64, which can spell a secret (one that is itself base64) its bytes do not hold.
func TestBinaryBodyHidesSecretsInItsBase64(t *testing.T) {
	key := []byte{0xfb, 0xff, 0xbf, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	secret := base64.StdEncoding.EncodeToString(key)
	x := bodyExchange(NewBody(append([]byte{0x80, 0x81, 0x82}, key...), 15), NewBody(nil, 0))
	req, err := requestEntry(x, NewRedactor(nil, []string{secret}), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(Record{Request: *req})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.Request.Body.Text, secret) || bytes.Contains(req.Data, []byte(secret)) {
		t.Errorf("the secret %s is in the record: body %q, Data %q", secret, got.Request.Body.Text, req.Data)
	}
}

// TestDecodeRecordsWrittenBefore holds Decode to the records written before bodies
// followed them: the body's text is in the record's JSON, escaped or base64-encoded.
func TestDecodeRecordsWrittenBefore(t *testing.T) {
	req := Entry{Kind: KindRequest, ExchangeID: "x1", Data: []byte(`{"id":"x1","received_at":"2026-12-01T10:00:00Z","decision":"allowed",` +
		`"request":{"method":"POST","path":"/p","body":{"text":"{\"a\":\"b\\n\"}","size":10}}}`)}
	resp := Entry{Kind: KindResponse, ExchangeID: "x1", Data: []byte(`{"decision":"allowed",` +
		`"response":{"status":200,"body":{"text":"/wDD","encoding":"base64","size":3}},"durations":{"total_ms":1.5}}`)}
	x, err := Decode(Record{Request: req, Response: &resp})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(x.Request.Body.Bytes()); got != `{"a":"b\n"}` || x.Request.Body.Size != 10 {
		t.Errorf("request body %+v", x.Request.Body)
	}
	if got := x.Response.Body.Bytes(); !bytes.Equal(got, []byte{0xff, 0, 0xc3}) || x.Response.Status != 200 || x.Durations.TotalMS != 1.5 {
		t.Errorf("response %+v, durations %+v", x.Response, x.Durations)
	}
}

func TestDecodeRefusesBytesNoBodyClaims(t *testing.T) {
	req, resp := entries(t, bodyExchange(NewBody([]byte("in"), 2), NewBody([]byte("out"), 3)), "")
	for _, c := range []struct {
		name string
		rec  Record
	}{
		{"after a record without a raw body", Record{Request: Entry{Kind: KindRequest, Data: []byte(`{"id":"x","request":{"body":{"size":0}}} trailing`)}}},
		{"a response's raw body after a request entry", Record{Request: Entry{Kind: KindRequest, Data: resp.Data}}},
		{"a request's raw body after a response entry", Record{Request: *req, Response: &Entry{Kind: KindResponse, Data: req.Data}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode(c.rec); !errors.Is(err, errTail) {
				t.Errorf("Decode: %v, want %v", err, errTail)
			}
		})
	}
}

// FuzzEntryData holds the entries' Data to its contract on any body and secret: the body
// decodes to its bytes redacted as the old redactor did them, and no form of the secret
// is stored.
func FuzzEntryData(f *testing.F) {
	f.Add([]byte(`{"k":"v"}`), "sk_live_PLANTED/key+42=", uint(3), uint(0))
	f.Add([]byte{0xff, '"', 0}, "Bearer abcdefgh12345678", uint(1), uint(2))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "aaaaaaaaab", uint(4), uint(1))
	f.Fuzz(func(t *testing.T, body []byte, secret string, at, which uint) {
		if len(secret) < minSecretLen || strings.Contains(Redacted, secret) {
			return
		}
		if forms := scrub.Forms(secret); len(forms) > 0 {
			pos := at % uint(len(body)+1)
			body = append(body[:pos:pos], append([]byte(forms[which%uint(len(forms))]), body[pos:]...)...)
		}
		red := NewRedactor(nil, []string{secret})
		x := bodyExchange(NewBody(body, int64(len(body))), NewBody(body, int64(len(body))))
		req, err := requestEntry(x, red, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := responseEntry(x, red, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(Record{Request: *req, Response: resp})
		if err != nil {
			t.Fatalf("Decode: %v\nrequest %q\nresponse %q", err, req.Data, resp.Data)
		}
		want := oldRedact([]string{secret}, nil, body)
		for _, b := range []Body{got.Request.Body, got.Response.Body} {
			if !bytes.Equal(b.Bytes(), want) || b.Size != int64(len(body)) {
				t.Fatalf("decoded body %q (size %d), want %q (size %d)", b.Bytes(), b.Size, want, len(body))
			}
		}
		if !bytes.Contains(want, []byte(secret)) && bytes.Contains(resp.Data, []byte(secret)) {
			t.Fatalf("response Data %q holds the secret", resp.Data)
		}
	})
}
