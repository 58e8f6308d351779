package rules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/jsonscan"
)

func TestCheckBody(t *testing.T) {
	tests := []struct {
		body string
		want string // "" for accepted
	}{
		{`{}`, ""},
		{` {"a":[1,-2.5e+3,true,false,null,"s\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"b":{}} `, ""},
		{`{"a":0.5,"b":-0,"c":1E9}`, ""},
		{`{"k":1,"K":2}`, `request body has keys "k" and "K" that name the same member`},
		// U+212A KELVIN SIGN folds with k, as encoding/json's field matching has it.
		{`{"k":1,"\u212a":2}`, `request body has keys "k" and "\u212a" that name the same member`},
		{"{\"s\":1,\"\u017f\":2}", "request body has keys \"s\" and \"\u017f\" that name the same member"},
		{`{"a":01}`, `request body is not valid JSON: want "," or "}" at offset 6`},
		{`{"a":1.}`, "request body is not valid JSON: want a number at offset 5"},
		{`{"a":-}`, "request body is not valid JSON: want a number at offset 5"},
		{`{"a":1e}`, "request body is not valid JSON: want a number at offset 5"},
		{`{"a":tru}`, "request body is not valid JSON: want a value at offset 5"},
		{`{"a":'x'}`, "request body is not valid JSON: want a value at offset 5"},
		{`{"a" 1}`, `request body is not valid JSON: want ":" at offset 5`},
		{`{a:1}`, "request body is not valid JSON: want an object key at offset 1"},
		{`{"a":[1,]}`, "request body is not valid JSON: want a value at offset 8"},
		{`{"a":[1 2]}`, `request body is not valid JSON: want "," or "]" at offset 8`},
		{"{\"a\":\"x\ty\"}", "request body is not valid JSON: want no control character in a string at offset 7"},
		{`{"a":"\x"}`, "request body is not valid JSON: want a valid escape at offset 6"},
		{`{"a":"\u12"}`, `request body is not valid JSON: want four hex digits after \u at offset 6`},
		{`{"a":"\udc00"}`, "request body is not accepted: lone surrogate escape at offset 6"},
		{`{"a":"\ud800\u0041"}`, "request body is not accepted: lone surrogate escape at offset 6"},
		{"{\"a\":\"\xed\xa0\x80\"}", "request body is not valid UTF-8 at offset 6"},
		{`{"a":1`, "request body is not valid JSON: unexpected end"},
		{`{"a":"x`, "request body is not valid JSON: want a closed string at offset 5"},
		{`null`, "request body is a JSON scalar; one JSON object is required"},
		// What lenient parsers read is refused, so body conditions see what every parser sees.
		{`{"a":NaN}`, "request body is not valid JSON: want a value at offset 5"},
		{`{"a":1} x`, "request body is not valid JSON: want the end of the body at offset 8"},
		{`{"a":1,}`, "request body is not valid JSON: want an object key at offset 7"},
		{"\ufeff{}", "request body is not valid JSON: want a value at offset 0"},
		{"{\x00}\x00", "request body is not valid JSON: want an object key at offset 1"},
		{strings.Repeat(`{"a":`, 513) + "1" + strings.Repeat("}", 513), "request body nests deeper than 512 levels"},
		{`[]`, "request body is a JSON array; one JSON object is required (JSON-RPC batches are not accepted)"},
	}
	tb := &Table{keys: &keyNode{}}
	for _, tt := range tests {
		if got := tb.checkBody([]byte(tt.body)); got != tt.want {
			t.Errorf("checkBody(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestAppendFold(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"method", "METHOD", true},
		{"Straße", "STRASSE", false}, // full folding (ß → ss) is not simple folding
		{"k", "\u212a", true},
		{"σ", "ς", true},
		{"a", "b", false},
		{"ı", "i", false}, // dotless i has no simple fold with i
	}
	for _, tt := range tests {
		got := bytes.Equal(jsonscan.AppendFold(nil, []byte(tt.a)), jsonscan.AppendFold(nil, []byte(tt.b)))
		if got != tt.same {
			t.Errorf("fold(%q) == fold(%q): %v, want %v", tt.a, tt.b, got, tt.same)
		}
		if ef := strings.EqualFold(tt.a, tt.b); ef != tt.same {
			t.Errorf("strings.EqualFold(%q, %q) = %v, want %v", tt.a, tt.b, ef, tt.same)
		}
	}
}

// FuzzCheckBody compares the strict checker with encoding/json and gjson, and holds the
// body_regex guard to lenient readers: whatever string a lenient parser (Go's
// json.Decoder after the first value, Python's NaN and Infinity, trailing commas) reads
// from the body, in UTF-8, UTF-16LE with a BOM or UTF-32BE without, must be matched.
func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"A":2}`, `{"a":{"b":[1,{"c":null}]}}`, `[1]`, `{"a":"\ud800"}`, `{"k":1,"\u212a":1}`,
		`{"q":"DROP\u0020TABLE users","n":NaN}`, `{"q":"DROP\u0020TABLE users"} x`, `[[{"q":"drop\ttable"}]]`,
		`{"q":"DROP\u0020TABLE users",}`, `["x",-Infinity,"DROP\u0020DATABASE"]`, `{"dr\u006fp table":1}`} {
		f.Add([]byte(s))
	}
	tb := &Table{keys: &keyNode{}}
	guard := regexp.MustCompile(`(?i)\bdrop\s+(table|database)\b`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if lenientMatch(guard, b) {
			forms := map[string][]byte{"utf-8": b}
			if utf8.Valid(b) {
				forms["utf-16le with BOM"] = []byte(testkit.EncodeText(string(b), 2, false, true))
				forms["utf-32be"] = []byte(testkit.EncodeText(string(b), 4, true, false))
			}
			for name, body := range forms {
				if matched, why := regexHolds(guard, body, nil); !matched && why == "" {
					t.Fatalf("guard passed %q in %s, which a lenient parser reads as matching", b, name)
				}
			}
		}
		why := tb.checkBody(b)
		valid := json.Valid(b) && gjson.ValidBytes(b)
		object := bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
		if why == "" && (!valid || !object || !utf8.Valid(b) || !refUniqueKeys(b)) {
			t.Fatalf("checkBody accepted %q: valid %v, object %v, unique keys %v", b, valid, object, refUniqueKeys(b))
		}
		plain := !bytes.Contains(b, []byte(`\u`)) && !bytes.ContainsAny(b, "\x00") && bytes.Count(b, []byte("[")) < 200 && bytes.Count(b, []byte("{")) < 200
		if why != "" && valid && object && utf8.Valid(b) && plain && refUniqueKeys(b) {
			t.Fatalf("checkBody refused %q: %s", b, why)
		}
	})
}

// lenientMatch reports whether re matches a string that a lenient parser reads from
// the first JSON value of b: NaN, Infinity and -Infinity outside strings read as 0 and
// commas before a closing bracket dropped (Python, JSON5), data after the value ignored
// (Go's json.Decoder).
func lenientMatch(re *regexp.Regexp, b []byte) bool {
	var norm []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(b)-1)
			norm = append(norm, b[i:j+1]...)
			i = j
			continue
		case c == ',':
			k := i + 1
			for k < len(b) && strings.IndexByte(" \t\r\n", b[k]) >= 0 {
				k++
			}
			if k < len(b) && (b[k] == ']' || b[k] == '}') {
				continue
			}
		default:
			if lit := lenientLiteral(b[i:]); lit > 0 {
				norm = append(norm, '0')
				i += lit - 1
				continue
			}
		}
		norm = append(norm, c)
	}
	var v any
	if json.NewDecoder(bytes.NewReader(norm)).Decode(&v) != nil {
		return false
	}
	return anyStringMatches(re, v)
}

func lenientLiteral(b []byte) int {
	for _, lit := range []string{"NaN", "-Infinity", "Infinity"} {
		if bytes.HasPrefix(b, []byte(lit)) {
			return len(lit)
		}
	}
	return 0
}

func anyStringMatches(re *regexp.Regexp, v any) bool {
	switch v := v.(type) {
	case string:
		return re.MatchString(v)
	case []any:
		for _, e := range v {
			if anyStringMatches(re, e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if re.MatchString(k) || anyStringMatches(re, e) {
				return true
			}
		}
	}
	return false
}

// refUniqueKeys reports whether no object of valid JSON b has two keys equal under
// strings.EqualFold, using encoding/json's tokenizer.
func refUniqueKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	type level struct {
		object bool
		keys   []string
		expect bool // next string token is a key
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err != nil {
			return true // end, or invalid JSON (judged elsewhere)
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if k, ok := tok.(string); ok {
				for _, seen := range top.keys {
					if strings.EqualFold(seen, k) {
						return false
					}
				}
				top.keys = append(top.keys, k)
				top.expect = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &level{object: true, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, &level{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}
