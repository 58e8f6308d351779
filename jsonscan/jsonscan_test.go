package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

func TestValidateKinds(t *testing.T) {
	tests := []struct {
		body string
		opts Options
		want error // nil: valid
		off  int
	}{
		{`{"a":[1,-2.5e+3,true,false,null,"s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}}`, Options{}, nil, 0},
		{` "x" `, Options{}, nil, 0},
		{`{"a":1,"a":2}`, Options{}, ErrDuplicateKey, 7},
		{`{"a":1,"\u0061":2}`, Options{}, ErrDuplicateKey, 7},
		{`{"a":1,"a":2}`, Options{AllowDuplicateKeys: true}, nil, 0},
		{`{"k":1,"K":2}`, Options{}, nil, 0},
		{`{"k":1,"K":2}`, Options{FoldKeys: true}, ErrDuplicateKey, 7},
		{`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"b":0}`, Options{}, ErrDuplicateKey, 55},
		{`{"n":NaN}`, Options{}, ErrNonFinite, 5},
		{`[Infinity]`, Options{}, ErrNonFinite, 1},
		{`[-Infinity]`, Options{}, ErrNonFinite, 1},
		{`{"a":1} x`, Options{}, ErrTrailingData, 8},
		{`{"a":1}{}`, Options{}, ErrTrailingData, 7},
		{`{"a":1,}`, Options{}, ErrTrailingComma, 7},
		{`[1,]`, Options{}, ErrTrailingComma, 3},
		{strings.Repeat("[", 3) + strings.Repeat("]", 3), Options{MaxDepth: 2}, ErrDepth, 2},
		{strings.Repeat("[", 513) + strings.Repeat("]", 513), Options{}, ErrDepth, 512},
		{strings.Repeat("[", 512) + strings.Repeat("]", 512), Options{}, nil, 0},
		{"\"\xff\"", Options{}, ErrUTF8, 1},
		{`"\ud800"`, Options{}, nil, 0},
		{`"\ud800"`, Options{RejectLoneSurrogates: true}, ErrLoneSurrogate, 1},
		{`{"a" 1}`, Options{}, ErrSyntax, 5},
		{`{a:1}`, Options{}, ErrSyntax, 1},
		{`['x']`, Options{}, ErrSyntax, 1},
		{``, Options{}, ErrSyntax, 0},
		{`{"a":`, Options{}, ErrSyntax, 5},
		{"\xef\xbb\xbf{}", Options{}, ErrSyntax, 0},
	}
	for _, tt := range tests {
		t.Run(tt.body[:min(len(tt.body), 30)], func(t *testing.T) {
			err := Validate([]byte(tt.body), tt.opts)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("Validate(%q) = %v, want %v", tt.body, err, tt.want)
			}
			var e *Error
			if errors.As(err, &e) && e.Off != tt.off {
				t.Errorf("Validate(%q) at offset %d, want %d", tt.body, e.Off, tt.off)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	b := []byte(`{"a":[10,"x\u0041",{}],"b":null}`)
	var s Scanner
	s.Reset(b, Options{})
	var got []string
	for {
		tok, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if tok.Kind == End {
			break
		}
		text := string(tok.Raw(b))
		if tok.Kind == Key || tok.Kind == String {
			text = string(tok.Text(nil, b))
		}
		got = append(got, strings.Join([]string{text, itoa(tok.Index), itoa(tok.Depth)}, "/"))
	}
	want := "{/-1/0 a/-1/1 [/-1/1 10/0/2 xA/1/2 {/2/2 }/-1/2 ]/-1/1 b/-1/1 null/-1/1 }/-1/0"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("tokens\n got %s\nwant %s", g, want)
	}
}

func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	return string(rune('0' + n))
}

func TestDetect(t *testing.T) {
	text := `{"q":"x"}`
	tests := []struct {
		name string
		b    []byte
		enc  Encoding
		bom  int
	}{
		{"utf-8", []byte(text), UTF8, 0},
		{"utf-8 bom", append([]byte{0xef, 0xbb, 0xbf}, text...), UTF8, 3},
		{"utf-16le bom", encode(text, UTF16LE, true), UTF16LE, 2},
		{"utf-16be bom", encode(text, UTF16BE, true), UTF16BE, 2},
		{"utf-32le bom", encode(text, UTF32LE, true), UTF32LE, 4},
		{"utf-32be bom", encode(text, UTF32BE, true), UTF32BE, 4},
		{"utf-16le", encode(text, UTF16LE, false), UTF16LE, 0},
		{"utf-16be", encode(text, UTF16BE, false), UTF16BE, 0},
		{"utf-32le", encode(text, UTF32LE, false), UTF32LE, 0},
		{"utf-32be", encode(text, UTF32BE, false), UTF32BE, 0},
		{"utf-16le one char", encode("1", UTF16LE, false), UTF16LE, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc, bom := Detect(tt.b)
			if enc != tt.enc || bom != tt.bom {
				t.Fatalf("Detect = %v, %d; want %v, %d", enc, bom, tt.enc, tt.bom)
			}
			out, enc, err := ToUTF8(nil, tt.b)
			if err != nil || string(out) != strings.TrimPrefix(text, "") && tt.name != "utf-16le one char" {
				t.Fatalf("ToUTF8 = %q, %v, %v; want %q", out, enc, err, text)
			}
		})
	}
}

func TestTranscodeInvalid(t *testing.T) {
	for _, b := range [][]byte{
		{0xff, 0xfe, '{', 0, '}'},           // odd length
		{0xff, 0xfe, 0x00, 0xd8, '}', 0},    // lone high surrogate
		{0, 0, 0xfe, 0xff, 0, 0x11, 0, 0},   // beyond U+10FFFF
		{0xfe, 0xff, 0xdc, 0x00, 0x00, '}'}, // lone low surrogate
	} {
		if _, _, err := ToUTF8(nil, b); !errors.Is(err, ErrEncoding) {
			t.Errorf("ToUTF8(% x) = %v, want ErrEncoding", b, err)
		}
	}
	if out, _ := Transcode(nil, []byte{0x00, 0xd8, 'A', 0}, UTF16LE, true); string(out) != "\ufffdA" {
		t.Errorf("lossy = %q, want %q", out, "\ufffdA")
	}
}

// encode returns s in enc, with a BOM when bom.
func encode(s string, enc Encoding, bom bool) []byte {
	var out []byte
	put := func(u uint32, n int) {
		for k := range n {
			shift := 8 * k
			if enc == UTF16BE || enc == UTF32BE {
				shift = 8 * (n - 1 - k)
			}
			out = append(out, byte(u>>shift))
		}
	}
	if bom {
		s = "\ufeff" + s
	}
	for _, r := range s {
		switch enc {
		case UTF16LE, UTF16BE:
			for _, u := range utf16.Encode([]rune{r}) {
				put(uint32(u), 2)
			}
		default:
			put(uint32(r), 4)
		}
	}
	return out
}

func TestStrings(t *testing.T) {
	tests := []struct {
		body string
		want string // one of the texts
	}{
		{`{"q":"DROP\u0020TABLE users","n":NaN}`, "DROP TABLE users"},
		{`{"q":"DROP\u0020TABLE users"} x`, "DROP TABLE users"},
		{`{'q':'DROP\u0020TABLE users',}`, "DROP TABLE users"},
		{`{"q":"DROP\x20TABLE"}`, "DROP TABLE"},
		{`{"q":"DROP\ TABLE"}`, "DROP TABLE"},
		{`{"q":"DROP\u0020TAB`, "DROP TAB"},
		{`{q:DROP\u0020TABLE}`, "{q:DROP TABLE}"},
		{`{"a":"it's","b":"DROP\/TABLE"}`, "DROP/TABLE"},
	}
	for _, tt := range tests {
		var texts []string
		Strings([]byte(tt.body), func(text []byte, _ bool) bool {
			texts = append(texts, string(text))
			return false
		})
		found := false
		for _, s := range texts {
			found = found || s == tt.want
		}
		if !found {
			t.Errorf("Strings(%s) = %q, want %q among them", tt.body, texts, tt.want)
		}
	}
}

// FuzzScan holds the strict scanner to encoding/json (validity and every decoded
// string) and the lenient pass to the strict one (it decodes at least what strict does).
func FuzzScan(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,"x\u0041",{"b":null}]}`, `[1,]`, `{"n":NaN}`, `"\ud800"`,
		`{"a":1,"a":2}`, `{"a":1} x`, `[-0.5e+3]`, "\"\xff\"", `{"\u00e9":"\ud83d\ude00"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		opts := Options{AllowDuplicateKeys: true, MaxDepth: 10000}
		err := Validate(b, opts)
		if utf8.Valid(b) {
			if (err == nil) != json.Valid(b) {
				t.Fatalf("Validate(%q) = %v, json.Valid = %v", b, err, json.Valid(b))
			}
		} else if err == nil {
			t.Fatalf("Validate(%q) accepted invalid UTF-8", b)
		}
		if err != nil {
			return
		}
		var s Scanner
		s.Reset(b, opts)
		dec := json.NewDecoder(bytes.NewReader(b))
		var strict []string
		for {
			tok, err := s.Next()
			if err != nil {
				t.Fatalf("Next after Validate accepted %q: %v", b, err)
			}
			if tok.Kind == End {
				break
			}
			if tok.Kind == ObjectEnd || tok.Kind == ArrayEnd {
				continue
			}
			ref, err := dec.Token()
			for ref == json.Delim('}') || ref == json.Delim(']') {
				ref, err = dec.Token()
			}
			if err != nil {
				t.Fatalf("encoding/json token after %q: %v", strict, err)
			}
			if tok.Kind == Key || tok.Kind == String {
				got := string(tok.Text(nil, b))
				strict = append(strict, got)
				if ref != got {
					t.Fatalf("string %q, encoding/json read %q", got, ref)
				}
			}
		}
		if _, err := dec.Token(); err != io.EOF {
			for err == nil {
				_, err = dec.Token()
			}
			if err != io.EOF {
				t.Fatalf("encoding/json after the end: %v", err)
			}
		}
		var lenient []string
		Strings(b, func(text []byte, _ bool) bool {
			lenient = append(lenient, string(text))
			return false
		})
		for k := 0; k < len(strict); k++ {
			found := false
			for _, l := range lenient {
				if l == strict[k] {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("lenient %q misses strict %q", lenient, strict[k])
			}
		}
	})
}

// TestWordTricks checks the eight-bytes-at-a-time test of ScanString against its
// definition, for every byte in every position.
func TestWordTricks(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			var w [8]byte
			for i := range w {
				w[i] = 'a'
			}
			w[pos] = byte(c)
			want := c == '"' || c == '\\' || c < 0x20 || c >= 0x80
			if got := special(load8(w[:], 0)); got != want {
				t.Errorf("special(%#x at %d) = %v, want %v", c, pos, got, want)
			}
		}
	}
}
