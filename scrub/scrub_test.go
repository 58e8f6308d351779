package scrub

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

const planted = "UPSTREAM-SECRET-KEY/9f8e+7d6c=5b4a"

// TestEveryForm checks that each encoding of a secret is replaced, with a same-length
// replacement, by Bytes and by a Reader that gets the text one byte at a time.
func TestEveryForm(t *testing.T) {
	s := New([]string{planted, "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:pa55word-PLANTED"))}, SameLength)
	for _, form := range []string{
		planted,
		base64.StdEncoding.EncodeToString([]byte(planted)),
		base64.RawStdEncoding.EncodeToString([]byte(planted)),
		base64.URLEncoding.EncodeToString([]byte(planted)),
		base64.RawURLEncoding.EncodeToString([]byte(planted)),
		url.QueryEscape(planted),
		url.PathEscape(planted),
		strings.ReplaceAll(planted, "/", `\/`),
		"svc:pa55word-PLANTED",
		"pa55word-PLANTED",
	} {
		text := []byte(`{"echo":"` + form + `"} and again ` + form)
		for name, got := range map[string][]byte{"Bytes": s.Bytes(text), "Reader": readAll(t, iotest.OneByteReader(bytes.NewReader(text)), s)} {
			if bytes.Contains(got, []byte(form)) {
				t.Errorf("%s(%q) = %q, want the form replaced", name, text, got)
			}
			if len(got) != len(text) {
				t.Errorf("%s(%q) is %d bytes, want %d (same length)", name, text, len(got), len(text))
			}
		}
	}
	if got := New([]string{"short"}, SameLength).String("a short word"); got != "a short word" {
		t.Errorf("a value shorter than %d bytes was replaced: %q", MinLen, got)
	}
}

func readAll(t *testing.T, r io.Reader, s *Scrubber) []byte {
	t.Helper()
	b, err := io.ReadAll(NewReader(r, s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chunks reads text in the pieces given by cuts.
type chunks struct {
	text []byte
	cuts []int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.text) == 0 {
		return 0, io.EOF
	}
	n := len(c.text)
	if len(c.cuts) > 0 {
		n, c.cuts = min(c.cuts[0], n), c.cuts[1:]
	}
	n = min(n, len(p))
	copy(p, c.text[:n])
	c.text = c.text[n:]
	return n, nil
}

// TestReaderSplitEverywhere cuts a text holding the secret at every position: the
// Reader's output must equal Bytes of the whole text, and hold no secret.
func TestReaderSplitEverywhere(t *testing.T) {
	s := New([]string{planted}, SameLength)
	text := []byte("data: {\"key\":\"" + planted + "\"}\n\n")
	want := s.Bytes(text)
	for i := 1; i < len(text); i++ {
		for j := 1; j+i < len(text); j += 7 {
			got := readAll(t, &chunks{text: append([]byte(nil), text...), cuts: []int{i, j}}, s)
			if !bytes.Equal(got, want) {
				t.Fatalf("cut at %d, %d: %q, want %q", i, i+j, got, want)
			}
		}
	}
}

// TestReaderHoldsBackOnlyPrefixes checks that a stream is not delayed: a read that ends
// in bytes that cannot begin the secret is passed on whole at once.
func TestReaderHoldsBackOnlyPrefixes(t *testing.T) {
	s := New([]string{planted}, SameLength)
	pr, pw := io.Pipe()
	r := NewReader(pr, s)
	go pw.Write([]byte("data: {\"n\":1}\n\nUPSTREAM-SEC"))
	buf := make([]byte, 100)
	n, _ := r.Read(buf)
	if got, want := string(buf[:n]), "data: {\"n\":1}\n\n"; got != want {
		t.Errorf("first read %q, want %q (the possible secret's start held back)", got, want)
	}
	go func() { pw.Write([]byte("RET-KEY/9f8e+7d6c=5b4a\n")); pw.Close() }()
	rest, _ := io.ReadAll(r)
	if bytes.Contains(rest, []byte("SECRET")) || len(rest) != len(planted)+1 {
		t.Errorf("rest %q, want the secret replaced", rest)
	}
	if !r.Found() {
		t.Error("Found() = false after a replacement")
	}
}

// FuzzScrubber checks that the prefix filter never lets a secret through (Bytes equals
// what the Replacer alone makes of the text) and that the Reader, at any cut, makes the
// same of a stream as Bytes of the whole.
func FuzzScrubber(f *testing.F) {
	secrets := []string{"sk_live_PLANTED/key+42=", "Bearer tok-PLANTED-9f8e", "an-api-key-0123456789"}
	s := New(secrets, Fixed("[REDACTED]"))
	f.Add([]byte("nothing here"), 0, 0, 3)
	f.Add([]byte(`{"k":"sk_live_PLANTED\/key+42="}`), 0, 0, 9)
	f.Add([]byte("xx"), 2, 1, 1)
	f.Fuzz(func(t *testing.T, text []byte, at, which, cut int) {
		// Plant one of the forms somewhere, some of the time.
		forms := Forms(secrets[uint(which)%uint(len(secrets))])
		if at > 0 && len(forms) > 0 {
			form := forms[uint(at)%uint(len(forms))]
			pos := uint(at) % uint(len(text)+1)
			text = append(text[:pos:pos], append([]byte(form), text[pos:]...)...)
		}
		want := s.replacer.Replace(string(text))
		if got := string(s.Bytes(text)); got != want {
			t.Fatalf("Bytes(%q) = %q, want %q", text, got, want)
		}
		if got := s.String(string(text)); got != want {
			t.Fatalf("String(%q) = %q, want %q", text, got, want)
		}
		c := 1 + int(uint(cut)%16)
		got, err := io.ReadAll(NewReader(&chunks{text: text, cuts: []int{c, c, c, c, c, c, c, c}}, s))
		if err != nil || string(got) != want {
			t.Fatalf("Reader(%q) cut every %d = %q, %v; want %q", text, c, got, err, want)
		}
	})
}

// BenchmarkBytes measures finding no secret in 64 KiB of JSON, the common case, with
// three credentials' forms to look for.
func BenchmarkBytes(b *testing.B) {
	s := New([]string{"crm-key-7f3a9c-0123456789", "Bearer billing-token-51e2-abcdef", "hash-key-0123456789abcdef"}, SameLength)
	var text []byte
	for i := 0; len(text) < 64<<10; i++ {
		text = append(text, `{"id":12345,"name":"Customer","email":"c@example.com","ssn":"[REDACTED]"},`...)
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		s.Bytes(text)
	}
}

// BenchmarkReader measures streaming 1 MiB of JSON that holds no secret through a Reader.
func BenchmarkReader(b *testing.B) {
	s := New([]string{"crm-key-7f3a9c-0123456789", "Bearer billing-token-51e2-abcdef"}, SameLength)
	text := bytes.Repeat([]byte(`{"id":12345,"name":"Customer","email":"c@example.com"},`), 1<<20/56)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		io.Copy(io.Discard, NewReader(bytes.NewReader(text), s))
	}
}

// TestFilter checks that a Filter finds its strings wherever they are (the start and the
// end of the text included, and between two sampled positions), whatever their lengths,
// with strings added by With, and that it lets a text without them through, one that
// holds only a string's start or a window of it at a sampled position included.
func TestFilter(t *testing.T) {
	long := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"
	for _, c := range []struct {
		name  string
		strs  []string
		extra []string
		text  string
		want  bool
	}{
		{"none", nil, nil, "anything", false},
		{"empty text", []string{"abcd"}, nil, "", false},
		{"4 bytes alone", []string{"abcd", "wxyz1"}, nil, "abcd", true},
		{"4 bytes at the end", []string{"abcd", "wxyz1"}, nil, "..abcd", true},
		{"5 bytes after 10", []string{"abcd", "wxyz1"}, nil, "0123456789wxyz1", true},
		{"a start only", []string{"abcd", "wxyz1"}, nil, "wxyz", false},
		{"near misses", []string{"abcd", "wxyz1"}, nil, "abc abce wxy1 xyz1", false},
		{"3 bytes", []string{"abc"}, nil, "..abc", true},
		{"1 byte", []string{"q"}, nil, "..q", true},
		{"long, every offset", []string{planted}, nil, strings.Repeat(".", 13) + planted + "..", true},
		{"long, cut short", []string{planted}, nil, "x" + planted[:len(planted)-1], false},
		{"long, its window at a sampled position", []string{planted}, nil, planted[5:] + planted[:30], false},
		{"extra", []string{planted}, []string{long}, `{"t":"` + long + `"}`, true},
		{"extra absent", []string{planted}, []string{long}, `{"t":"` + long[:40] + `"}`, false},
		{"original through extra", []string{planted}, []string{long}, "." + planted, true},
		{"extra shorter than all", []string{planted}, []string{"short-one"}, "a short-one", true},
		{"extra into none", nil, []string{"short-one"}, "a short-one", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := NewFilter(c.strs).With(c.extra)
			if got := f.Holds([]byte(c.text)); got != c.want {
				t.Errorf("NewFilter(%q).With(%q).Holds(%q) = %v, want %v", c.strs, c.extra, c.text, got, c.want)
			}
		})
	}
}

// FuzzFilter holds Filter to what searching each string in turn tells, with and without
// strings added by With, the base filter unchanged by them.
func FuzzFilter(f *testing.F) {
	f.Add([]byte("xx sk_live_PLANTED/key+42= yy"), "sk_live_PLANTED/key+42=", "another-secret", "a-third-one", uint(3))
	f.Add([]byte("abcabcabcd"), "abcd", "bcab", "", uint(0))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"), "aaaaaaaaaaaaaaaaab", "aab", "b", uint(1))
	f.Fuzz(func(t *testing.T, text []byte, a, b, c string, at uint) {
		strs := []string{a, b}
		if len(text) > 0 && len(c) > 0 {
			pos := at % uint(len(text)+1)
			text = append(text[:pos:pos], append([]byte(c), text[pos:]...)...)
		}
		holds := func(strs ...string) bool {
			for _, s := range strs {
				if s != "" && bytes.Contains(text, []byte(s)) {
					return true
				}
			}
			return false
		}
		base := NewFilter(strs)
		if got, want := base.Holds(text), holds(strs...); got != want {
			t.Fatalf("NewFilter(%q).Holds(%q) = %v, want %v", strs, text, got, want)
		}
		g := base.With([]string{c})
		if got, want := g.Holds(text), holds(a, b, c); got != want {
			t.Fatalf("NewFilter(%q).With(%q).Holds(%q) = %v, want %v", strs, c, text, got, want)
		}
		if again := base.With([]string{c}); c != "" && again != g {
			t.Fatalf("With(%q) again made a new Filter, want the one kept", c)
		}
		if got, want := base.Holds(text), holds(strs...); got != want {
			t.Fatalf("after With, NewFilter(%q).Holds(%q) = %v, want %v", strs, text, got, want)
		}
	})
}

// TestReaderClose checks that a Reader read after Close gives nothing more, and that the
// Reader that gets its buffer next reads its own text whole.
func TestReaderClose(t *testing.T) {
	s := New([]string{"s3cr3t-value"}, Fixed("[X]"))
	a := NewReader(strings.NewReader(strings.Repeat("a", 1000)), s)
	p := make([]byte, 10)
	if n, err := a.Read(p); n != 10 || err != nil {
		t.Fatalf("Read = %d, %v; want 10, nil", n, err)
	}
	a.Close()
	if n, err := a.Read(p); n != 0 || err != ErrClosed {
		t.Errorf("Read after Close = %d, %v; want 0, ErrClosed", n, err)
	}
	text := strings.Repeat("b", 1000) + "s3cr3t-value"
	got, err := io.ReadAll(NewReader(strings.NewReader(text), s))
	if want := strings.Repeat("b", 1000) + "[X]"; string(got) != want || err != nil {
		t.Errorf("next Reader read %q, %v; want %q", got, err, want)
	}
}
