package recorder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// viaEncodingJSON is what the recorder wrote before it had its own appenders.
func viaEncodingJSON(t testing.TB, v any) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// tricky holds what a string field may meet: quotes, backslashes, control characters,
// HTML characters, U+2028, non-ASCII and invalid UTF-8.
const tricky = "a \"q\" \\ \n\r\t\b\f\x00\x1f\x7f <&> \u2028\u2029 é 日本 \xff\xc3"

// fill sets every exported field of v, recursively, to a value that is not the zero
// value, so that a field an appender forgets shows in the comparison.
func fill(v reflect.Value, seed string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fill(v.Elem(), seed)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 25, 1, 2, 3, 456789000, time.FixedZone("x", 5400))))
			return
		}
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				fill(v.Field(i), seed+"."+f.Name)
			}
		}
	case reflect.String:
		v.SetString(seed + tricky)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(len(seed)))
	case reflect.Float64:
		v.SetFloat(float64(len(seed)) / 7)
	case reflect.Interface:
		v.Set(reflect.ValueOf(seed + tricky))
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(s.Index(i), seed+strconv.Itoa(i))
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range []string{"Zeta", "alpha", "Content-Type", seed} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e, k)
			m.SetMapIndex(reflect.ValueOf(k), e)
		}
		v.Set(m)
	default:
		panic("fill: no case for " + v.Kind().String())
	}
}

// testRedactor hides one of fill's header names and a value fill's strings hold, so that
// the appenders' header redaction is compared with Redactor.Header's too.
var testRedactor = NewRedactor([]string{"Zeta"}, []string{"Content-Type0" + tricky[:6]})

// redactHeader is h with its values redacted header by header, as the recorder did
// before its appenders redacted them inline: copied, hidden headers' values replaced
// whole, secret values replaced in the others.
func redactHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		cp := make([]string, len(vs))
		for i, v := range vs {
			if testRedactor.hides(k) {
				cp[i] = Redacted
			} else {
				cp[i] = testRedactor.String(v)
			}
		}
		out[k] = cp
	}
	return out
}

// redactedExchange is x with its headers redacted as redactHeader does.
func redactedExchange(x *Exchange) *Exchange {
	y := *x
	y.Request.Header = redactHeader(y.Request.Header)
	if x.Response != nil {
		r := *x.Response
		r.Header = redactHeader(r.Header)
		y.Response = &r
	}
	return &y
}

func redactedCompletion(c *completion) *completion {
	d := *c
	if c.Response != nil {
		r := *c.Response
		r.Header = redactHeader(r.Header)
		d.Response = &r
	}
	return &d
}

// TestAppendMatchesEncodingJSON checks the appenders against encoding/json on records
// with every field set, with none, and with the usual mix.
func TestAppendMatchesEncodingJSON(t *testing.T) {
	var full Exchange
	fill(reflect.ValueOf(&full), "x")
	var fullC completion
	fill(reflect.ValueOf(&fullC), "c")
	now := time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)
	usual := Exchange{ID: "01JDX", ReceivedAt: now, Route: "crm", Decision: "allowed", Identity: &Identity{Subject: "agent"},
		Request: Request{Method: "GET", Path: "/c/1", Header: http.Header{"Accept": {"*/*"}, "X-Nil": nil, "X-Empty": {}}}}
	exchanges := map[string]*Exchange{"every field": &full, "zero": {}, "usual": &usual,
		"empty identity": {Identity: &Identity{}, Response: &Response{}}}
	for name, x := range exchanges {
		got, err := appendExchange(nil, x, testRedactor)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := viaEncodingJSON(t, redactedExchange(x)); string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	completions := map[string]*completion{"every field": &fullC, "zero": {},
		"usual": {RespondedAt: &now, Decision: "allowed", Response: &Response{Status: 200, Body: Body{Text: `{"a":1}`, Size: 7}},
			Durations: Durations{TotalMS: 0.000_000_1, UpstreamMS: 1e21}}}
	for name, c := range completions {
		got, err := appendCompletion(nil, c, testRedactor)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := viaEncodingJSON(t, redactedCompletion(c)); string(got) != want {
			t.Errorf("completion %s:\n got %s\nwant %s", name, got, want)
		}
	}
}

// TestAppendRefusesWhatJSONCannotHold checks that a value encoding/json refuses is
// refused, not written as something else.
func TestAppendRefusesWhatJSONCannotHold(t *testing.T) {
	if _, err := appendCompletion(nil, &completion{Durations: Durations{TotalMS: math.NaN()}}, testRedactor); err == nil {
		t.Error("NaN duration encoded")
	}
	if _, err := appendExchange(nil, &Exchange{ReceivedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, testRedactor); err == nil {
		t.Error("a year past 9999 encoded")
	}
}

// FuzzAppendExchange compares the appenders with encoding/json on fuzzed strings and
// numbers in every kind of field.
func FuzzAppendExchange(f *testing.F) {
	f.Add("01JDX", "/c/1", "X-Api-Key", tricky, int64(200), 12.5)
	f.Add("", "", "", "", int64(-1), 1e-7)
	f.Fuzz(func(t *testing.T, id, path, name, value string, n int64, ms float64) {
		if math.IsNaN(ms) || math.IsInf(ms, 0) {
			return
		}
		at := time.Unix(0, n).UTC()
		x := &Exchange{ID: id, ReceivedAt: at, ForwardedAt: &at, Route: name, Decision: value, Reason: path,
			Identity:  &Identity{Subject: value, Groups: []string{name, value}},
			MCP:       &MCP{Method: name, Name: value, ID: path},
			Request:   Request{Method: name, Path: path, Query: value, Header: http.Header{name: {value}, value: nil}, Body: Body{Text: value, Size: n}},
			Response:  &Response{Status: int(n), Header: http.Header{path: {}}, Body: Body{Coding: name, Truncated: n%2 == 0}},
			Durations: Durations{TotalMS: ms, UpstreamMS: -ms}}
		got, err := appendExchange(nil, x, testRedactor)
		if err != nil {
			t.Fatal(err)
		}
		if want := viaEncodingJSON(t, redactedExchange(x)); string(got) != want {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
		c := &completion{RespondedAt: &at, Decision: value, Error: path, Response: x.Response, Durations: x.Durations}
		if got, err = appendCompletion(nil, c, testRedactor); err != nil {
			t.Fatal(err)
		}
		if want := viaEncodingJSON(t, redactedCompletion(c)); string(got) != want {
			t.Errorf("completion\n got %s\nwant %s", got, want)
		}
	})
}

// benchRedactor redacts what a realistic configuration does: a credential header and
// three credentials' values (some 40 encoded forms).
var benchRedactor = NewRedactor([]string{"X-Api-Key"}, []string{"crm-key-7f3a9c-0123456789", "Bearer billing-token-51e2-abcdef", "hash-key-0123456789abcdef"})

// benchToken is the client's bearer token, redacted by value as a request's own secret.
const benchToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"

// benchExchanges are the exchanges the encoding benchmarks record: one with a small JSON
// response and one with 64 KiB, a record's usual body limit.
func benchExchanges() []struct {
	name string
	x    *Exchange
} {
	small := []byte(`{"id":42,"name":"Ada Lovelace","email":"ada@example.com","plan":"pro"}`)
	var large []byte
	large = append(large, `{"customers":[`...)
	for i := 0; len(large) < 64<<10-200; i++ {
		large = fmt.Appendf(large, `{"id":%d,"name":"Customer %d","email":"c%d@example.com","ssn":"[REDACTED]","card":"************4242"},`, i, i, i)
	}
	large = append(large[:len(large)-1], "]}"...)
	var out []struct {
		name string
		x    *Exchange
	}
	for _, c := range []struct {
		name string
		body []byte
	}{{"small", small}, {"64KiB", large}} {
		now := time.Now()
		x := &Exchange{ID: "01JDXK3M8Q2V7N5R4T6Y9W0Z1A", ReceivedAt: now, ForwardedAt: &now, RespondedAt: &now, Route: "crm-read-customer", Decision: "allowed",
			Identity: &Identity{Issuer: "https://id.example.com", Subject: "agent", ClientID: "agent", Scopes: []string{"crm.read"}},
			Request: Request{Method: "GET", Path: "/crm/customers/42", ForwardPath: "/customers/42",
				Header: http.Header{"Accept": {"application/json"}, "Authorization": {"Bearer " + benchToken}, "User-Agent": {"agent/1.0"}, "X-Request-Id": {"01JDXK3M8Q2V7N5R4T6Y9W0Z1A"}}},
			Response: &Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "Date": {"Wed, 25 Nov 2026 22:00:00 GMT"}, "Content-Length": {"70"}},
				Body: NewBody(c.body, int64(len(c.body)))},
			Durations: Durations{TotalMS: 1.234, UpstreamMS: 0.456}}
		out = append(out, struct {
			name string
			x    *Exchange
		}{c.name, x})
	}
	return out
}

// BenchmarkEntries measures encoding one exchange into its two chain entries, redacted
// by benchRedactor and the client's token.
func BenchmarkEntries(b *testing.B) {
	extra := []string{benchToken}
	for _, c := range benchExchanges() {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.x.Response.Body.Text)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := requestEntry(c.x, benchRedactor, extra); err != nil {
					b.Fatal(err)
				}
				if _, err := responseEntry(c.x, benchRedactor, extra); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRedacted measures Recorder.Redacted, what an approver or a replay is shown:
// both entries encoded and decoded again.
func BenchmarkRedacted(b *testing.B) {
	rec := New(nil, Policy{Redactor: benchRedactor}, Options{})
	for _, c := range benchExchanges() {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.x.Response.Body.Text)))
			b.ReportAllocs()
			cpu := cpuTime(b)
			for b.Loop() {
				if _, err := rec.Redacted(c.x, benchToken); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
		})
	}
}
