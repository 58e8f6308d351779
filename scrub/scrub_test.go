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

// TestPrefixFilterShortStrings covers prefixes shorter than a word (scrubbing itself only
// searches for strings of 8 bytes or more): a string is found wherever it is, the end of
// the text included, and a text without it is let through.
func TestPrefixFilterShortStrings(t *testing.T) {
	f := newPrefixFilter([]string{"abcd", "wxyz1"})
	for _, c := range []struct {
		text string
		want bool
	}{
		{"abcd", true}, {"..abcd", true}, {"abcd..", true}, {"0123456789wxyz1", true},
		{"abc", false}, {"abce wxy1 xyz1", false}, {"", false},
		{"wxyz", true}, // a prefix is enough: the Replacer decides
	} {
		if got := f.mayHold([]byte(c.text)); got != c.want {
			t.Errorf("mayHold(%q) = %v, want %v", c.text, got, c.want)
		}
	}
	if newPrefixFilter([]string{"abc"}) != nil {
		t.Error("a filter for a 3-byte string, want none (always replace)")
	}
}
