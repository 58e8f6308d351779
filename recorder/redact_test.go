package recorder

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/scrub"
)

// TestRedactor checks that a secret is found in every encoding a record may hold it in.
func TestRedactor(t *testing.T) {
	const key = "sk_live_PLANTED/key+42="
	r := NewRedactor([]string{"x-api-key"}, []string{key, "Bearer tok-PLANTED-9f8e", "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:pw-PLANTED-77"))})
	tests := []struct {
		name, in string
	}{
		{"raw", "echo " + key},
		{"base64", base64.StdEncoding.EncodeToString([]byte(key))},
		{"base64url unpadded", base64.RawURLEncoding.EncodeToString([]byte(key))},
		{"query escaped", "k=" + url.QueryEscape(key)},
		{"path escaped", "/x/" + url.PathEscape(key)},
		{"json escaped", `{"k":"sk_live_PLANTED\/key+42="}`},
		{"bearer credential alone", "token tok-PLANTED-9f8e here"},
		{"basic password alone", "password was pw-PLANTED-77"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.String(tt.in)
			if strings.Contains(got, "PLANTED") || !strings.Contains(got, Redacted) {
				t.Errorf("String(%q) = %q, want the secret replaced", tt.in, got)
			}
		})
	}
	var rec struct {
		Headers http.Header `json:"headers"`
	}
	raw := appendHeader([]byte("{\"x\":0"), http.Header{"X-Api-Key": {"whatever"}, "cookie": {"a=b"}, "X-Other": {"has " + key}, "Accept": {"json"}}, r)
	if err := json.Unmarshal(append(raw, '}'), &rec); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	for k, want := range map[string]string{"X-Api-Key": Redacted, "cookie": Redacted, "X-Other": "has " + Redacted, "Accept": "json"} {
		if got := rec.Headers[k]; len(got) != 1 || got[0] != want {
			t.Errorf("recorded header %s = %q, want [%q]", k, got, want)
		}
	}
	if got := NewRedactor(nil, []string{"short"}).String("a short word"); got != "a short word" {
		t.Errorf("a value shorter than %d bytes was redacted: %q", minSecretLen, got)
	}
}

// BenchmarkRedactorBytes measures finding no secret in 64 KiB of JSON, the common case,
// with three credentials' forms to look for.
func BenchmarkRedactorBytes(b *testing.B) {
	r := NewRedactor(nil, []string{"crm-key-7f3a9c-0123456789", "Bearer billing-token-51e2-abcdef", "hash-key-0123456789abcdef"})
	var text []byte
	for i := 0; len(text) < 64<<10; i++ {
		text = append(text, `{"id":12345,"name":"Customer","email":"c@example.com","ssn":"[REDACTED]"},`...)
	}
	b.SetBytes(int64(len(text)))
	cpu := cpuTime(b)
	for b.Loop() {
		r.Bytes(text)
	}
	reportCPU(b, cpu)
}

// cpuTime returns the CPU time the process has used so far, user and system, all its
// threads (the garbage collector's included).
func cpuTime(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// reportCPU reports the CPU time per operation used since start, as cpu-ns/op: on a
// machine shared with other work, ns/op (wall time) also counts the time the benchmark
// waited for a core.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

// realisticToken is the shape of a client's bearer token as the gateway sees it: an RS256
// JWT of some 800 bytes (a 2048-bit signature, a few claims), longer than the 63 bytes
// bytes.Index searches with vector instructions.
var realisticToken = func() string {
	claims := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"https://id.example.com/oauth2/default","aud":"api://keyhole","sub":"0oa1agent","cid":"0oa1agent","scp":["crm.read","billing.read"],"groups":["agents","crm-readers"],"iat":1764108000,"exp":1764111600,"jti":"AT.0123456789abcdefghijklmnopqrstuvwxyz"}`))
	sig := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\x8f\x1e\x3a\x77", 64)))
	return "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + claims + "." + sig
}()

// BenchmarkRedactEntries measures redacting the two chain entries of an exchange with a
// 64 KiB JSON response (a record's usual body limit) that holds no secret, the common
// case: the configured credentials' forms and the client's own ~800-byte token are
// looked for in both entries.
func BenchmarkRedactEntries(b *testing.B) {
	x := benchExchanges()[1].x
	extra := []string{realisticToken}
	b.SetBytes(int64(len(x.Response.Body.Text)))
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		if _, err := requestEntry(x, benchRedactor, extra); err != nil {
			b.Fatal(err)
		}
		if _, err := responseEntry(x, benchRedactor, extra); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// oldRedact is the redactor before issue 17, the reference the one-pass redaction must
// equal: a strings.Replacer of every form of secrets (longest first), then each extra of
// minSecretLen or more replaced in turn with bytes.ReplaceAll.
func oldRedact(secrets, extra []string, p []byte) []byte {
	var pairs []string
	var forms []string
	for _, s := range secrets {
		forms = append(forms, scrub.Forms(s)...)
	}
	slices.SortStableFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	out := p
	if len(pairs) > 0 {
		out = []byte(strings.NewReplacer(pairs...).Replace(string(p)))
	}
	for _, x := range extra {
		if len(x) >= minSecretLen {
			out = bytes.ReplaceAll(out, []byte(x), []byte(Redacted))
		}
	}
	return out
}

// FuzzRedactor holds the one-pass redaction of a record (the policy's secrets in every
// form and a request's own secrets) to oldRedact, on random texts and secrets, with forms
// of the secrets and the request's secret planted in the text, overlapping or not.
func FuzzRedactor(f *testing.F) {
	f.Add([]byte(`{"k":"v"}`), "sk_live_PLANTED/key+42=", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl", uint(5), uint(3), uint(7))
	f.Add([]byte("0123456789"), "Bearer abcdefgh12345678", "gh1234567890", uint(2), uint(1), uint(4))
	f.Add([]byte("xx"), "Basic "+base64.StdEncoding.EncodeToString([]byte("svc:pw-PLANTED-77")), "pw-PLANTED-77x", uint(1), uint(9), uint(0))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "aaaaaaaaab", "aaaaaaaa", uint(3), uint(0), uint(2))
	f.Fuzz(func(t *testing.T, text []byte, secret, token string, at, which, shift uint) {
		secrets := []string{secret, "crm-key-7f3a9c-0123456789"}
		extra := []string{token, url.QueryEscape(token)}
		forms := scrub.Forms(secret)
		plant := func(s string, pos uint) {
			pos %= uint(len(text) + 1)
			text = append(text[:pos:pos], append([]byte(s), text[pos:]...)...)
		}
		if len(forms) > 0 && at > 0 {
			plant(forms[which%uint(len(forms))], at)
		}
		if at%3 == 1 {
			plant(token, at+shift) // overlapping the form when shift is small
		}
		want := oldRedact(secrets, extra, text)
		rd := NewRedactor(nil, secrets).with(extra)
		if got := rd.bytes(text); !bytes.Equal(got, want) {
			t.Fatalf("bytes(%q) = %q, want %q", text, got, want)
		}
		if got := rd.string(string(text)); got != string(want) {
			t.Fatalf("string(%q) = %q, want %q", text, got, want)
		}
	})
}
