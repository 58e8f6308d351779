package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keyholehq/keyhole/config"
)

var testKey = []byte("test-hash-key-0123456789")

// hashOf is what action hash writes for a value whose canonical bytes are v.
func hashOf(v string) string {
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte(v))
	return `"sha256:` + hex.EncodeToString(mac.Sum(nil)) + `"`
}

func mustNew(t testing.TB, rules []config.MaskRule, detect ...string) *Masker {
	t.Helper()
	m, err := New(rules, detect, Options{HashKey: testKey})
	if err != nil {
		t.Fatalf("New(%v, %v): %v", rules, detect, err)
	}
	return m
}

func mr(field, action string) config.MaskRule { return config.MaskRule{Field: field, Action: action} }

func redact(fields ...string) []config.MaskRule {
	var rs []config.MaskRule
	for _, f := range fields {
		rs = append(rs, mr(f, "redact"))
	}
	return rs
}

const R = `"[REDACTED]"`

type applyCase struct {
	name  string
	rules []config.MaskRule
	in    string
	want  string
	count Counts
}

func runApply(t *testing.T, tests []applyCase, detect ...string) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustNew(t, tt.rules, detect...)
			got, counts, err := m.Apply(nil, []byte(tt.in))
			if err != nil {
				t.Fatalf("Apply(%s): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("Apply(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("Apply(%s) = %s: not valid JSON", tt.in, got)
			}
			if counts != tt.count {
				t.Errorf("Apply(%s) counts = %+v, want %+v", tt.in, counts, tt.count)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	runApply(t, []applyCase{
		{"top-level key", redact("ssn"),
			`{"name":"a","ssn":"123-45-6789"}`, `{"name":"a","ssn":` + R + `}`, Counts{Redact: 1}},
		{"nested key", redact("a.b"),
			`{"a":{"b":1,"c":2},"b":3}`, `{"a":{"b":` + R + `,"c":2},"b":3}`, Counts{Redact: 1}},
		{"missing path", redact("a.b.c"),
			`{"a":{"b":1},"c":{"b":{"c":2}}}`, `{"a":{"b":1},"c":{"b":{"c":2}}}`, Counts{}},
		{"key through a scalar", redact("a.b"),
			`{"a":"b"}`, `{"a":"b"}`, Counts{}},
		{"escaped dot", redact(`a\.b`),
			`{"a.b":1,"a":{"b":2}}`, `{"a.b":` + R + `,"a":{"b":2}}`, Counts{Redact: 1}},
		{"escaped wildcard is literal", redact(`a\*`),
			`{"a*":1,"ab":2}`, `{"a*":` + R + `,"ab":2}`, Counts{Redact: 1}},
		{"array index", redact("a.1"),
			`{"a":[10,11,12]}`, `{"a":[10,` + R + `,12]}`, Counts{Redact: 1}},
		{"array index with leading zero, as gjson", redact("a.01"),
			`{"a":[10,11]}`, `{"a":[10,` + R + `]}`, Counts{Redact: 1}},
		{"digit key on an object", redact("a.0"),
			`{"a":{"0":1,"1":2}}`, `{"a":{"0":` + R + `,"1":2}}`, Counts{Redact: 1}},
		{"index out of range", redact("a.5"),
			`{"a":[1,2]}`, `{"a":[1,2]}`, Counts{}},
		{"every element", redact("a.#.b"),
			`{"a":[{"b":1},{"c":2},{"b":{"x":1}},3,[{"b":4}]]}`,
			`{"a":[{"b":` + R + `},{"c":2},{"b":` + R + `},3,[{"b":4}]]}`, Counts{Redact: 2}},
		{"'#' last masks every element", redact("tags.#"),
			`{"tags":["a",1,null,{"x":1}],"n":[]}`, `{"tags":[` + R + `,` + R + `,` + R + `,` + R + `],"n":[]}`, Counts{Redact: 4}},
		{"'#' on an object is the key #, as gjson", redact("a.#"),
			`{"a":{"#":1,"b":2}}`, `{"a":{"#":` + R + `,"b":2}}`, Counts{Redact: 1}},
		{"nested #", redact("users.#.cards.#.number"),
			`{"users":[{"cards":[{"number":"1"},{"number":"2"}]},{"cards":[]},{"cards":[{"number":"3","x":{"number":"4"}}]}]}`,
			`{"users":[{"cards":[{"number":` + R + `},{"number":` + R + `}]},{"cards":[]},{"cards":[{"number":` + R + `,"x":{"number":"4"}}]}]}`,
			Counts{Redact: 3}},
		{"nested arrays", redact("m.#.#"),
			`{"m":[[1,2],[],[3]]}`, `{"m":[[` + R + `,` + R + `],[],[` + R + `]]}`, Counts{Redact: 3}},
		{"top-level array", redact("#.ssn"),
			`[{"ssn":"1"},{"ssn":"2","x":1},{}]`, `[{"ssn":` + R + `},{"ssn":` + R + `,"x":1},{}]`, Counts{Redact: 2}},
		{"top-level array index", redact("1.ssn"),
			`[{"ssn":"1"},{"ssn":"2"}]`, `[{"ssn":"1"},{"ssn":` + R + `}]`, Counts{Redact: 1}},
		{"top-level path on an array", redact("ssn"),
			`[{"ssn":"1"}]`, `[{"ssn":"1"}]`, Counts{}},
		{"top-level scalar", redact("ssn"),
			`"ssn"`, `"ssn"`, Counts{}},
		{"wildcard matches every key", redact("*.secret"),
			`{"a":{"secret":1},"b":{"secret":2},"c":{"other":3}}`,
			`{"a":{"secret":` + R + `},"b":{"secret":` + R + `},"c":{"other":3}}`, Counts{Redact: 2}},
		{"wildcard in a key", redact("card_*"),
			`{"card_number":"4242","card_cvc":"123","cardholder":"x"}`,
			`{"card_number":` + R + `,"card_cvc":` + R + `,"cardholder":"x"}`, Counts{Redact: 2}},
		{"question mark is one rune", redact("k?y"),
			`{"key":1,"kéy":2,"keey":3,"ky":4}`, `{"key":` + R + `,"kéy":` + R + `,"keey":3,"ky":4}`, Counts{Redact: 2}},
		{"wildcard does not index arrays, as gjson", redact("a.*"),
			`{"a":[1,2]}`, `{"a":[1,2]}`, Counts{}},
		{"duplicate keys: every one", redact("ssn"),
			`{"ssn":"a","x":1,"ssn":"b"}`, `{"ssn":` + R + `,"x":1,"ssn":` + R + `}`, Counts{Redact: 2}},
		{"duplicate keys on the way", redact("a.ssn"),
			`{"a":{"ssn":1},"a":{"ssn":2}}`, `{"a":{"ssn":` + R + `},"a":{"ssn":` + R + `}}`, Counts{Redact: 2}},
		{"escaped key", redact("ssn"),
			`{"s\u0073n":"a","\u0073\u0073\u006e":"b","ss\n":"c"}`,
			`{"s\u0073n":` + R + `,"\u0073\u0073\u006e":` + R + `,"ss\n":"c"}`, Counts{Redact: 2}},
		{"escaped key on the way", redact("a.b"),
			`{"\u0061":{"\u0062":1}}`, `{"\u0061":{"\u0062":` + R + `}}`, Counts{Redact: 1}},
		{"escaped key matched by a wildcard", redact("s*n"),
			`{"s\u0073n":"a"}`, `{"s\u0073n":` + R + `}`, Counts{Redact: 1}},
		{"unicode key", redact("名前.ñ"),
			`{"名前":{"ñ":"x","n":"y"}}`, `{"名前":{"ñ":` + R + `,"n":"y"}}`, Counts{Redact: 1}},
		{"unicode key escaped (surrogate pair)", redact("😀"),
			`{"\ud83d\ude00":1}`, `{"\ud83d\ude00":` + R + `}`, Counts{Redact: 1}},
		{"null, numbers, booleans, containers", redact("#.v"),
			`[{"v":null},{"v":-1.5e+3},{"v":true},{"v":false},{"v":{}},{"v":[]}]`,
			`[{"v":` + R + `},{"v":` + R + `},{"v":` + R + `},{"v":` + R + `},{"v":` + R + `},{"v":` + R + `}]`,
			Counts{Redact: 6}},
		{"empty containers", redact("a.#.b", "c.d"),
			`{"a":[],"c":{}}`, `{"a":[],"c":{}}`, Counts{}},
		{"whitespace kept", redact("a.#.b"),
			"  {\n \"a\" : [ { \"b\" :\t1 , \"c\" : 2.50 } ] }\n",
			"  {\n \"a\" : [ { \"b\" :\t" + R + " , \"c\" : 2.50 } ] }\n", Counts{Redact: 1}},
		{"escapes outside masked values kept", redact("b"),
			`{"a":"\u00e9\/\n","b":"\u00e9"}`, `{"a":"\u00e9\/\n","b":` + R + `}`, Counts{Redact: 1}},
		{"outer match wins, inner not counted", redact("a", "a.b"),
			`{"a":{"b":1}}`, `{"a":` + R + `}`, Counts{Redact: 1}},
		{"a path deeper than the document", redact("a.b.c.d.e.f"),
			`{"a":{"b":[1]}}`, `{"a":{"b":[1]}}`, Counts{}},
	})
}

func TestFilters(t *testing.T) {
	doc := `{"u":[{"n":"ann","age":30,"vip":true,"tags":["a","b"]},` +
		`{"n":"bob","age":"40","vip":false,"tags":[]},` +
		`{"n":"cy","age":51.5,"x":null},` +
		`"ann",7,null]}`
	// which elements of u a filter selects, by index
	tests := []struct {
		filter string
		want   []int
	}{
		{`n=="ann"`, []int{0}},
		{`n="ann"`, []int{0}},
		{`n=="ann" `, []int{0}},
		{` n == "ann" `, []int{0}},
		{`n!="ann"`, []int{1, 2}},
		{`n<"bob"`, []int{0}},
		{`n<="bob"`, []int{0, 1}},
		{`n>"ann"`, []int{1, 2}},
		{`n>="bob"`, []int{1, 2}},
		{`age>35`, []int{1, 2}}, // "40" > "35" as strings
		{`age>=30`, []int{0, 1, 2}},
		{`age<31`, []int{0}},
		{`age<=51.5`, []int{0, 1, 2}},
		{`age==30`, []int{0}},
		{`age!=30`, []int{1, 2}}, // "40" is a string: != compares strings
		{`age=="40"`, []int{1}},
		{`n%"a*"`, []int{0}},
		{`n%"?o?"`, []int{1}},
		{`n!%"a*"`, []int{1, 2}},
		{`vip==true`, []int{0}},
		{`vip==false`, []int{1}},
		{`vip!=true`, []int{1}},
		{`vip`, []int{0, 1}}, // existence
		{`x`, []int{2}},      // null exists
		{`vip==~true`, []int{0}},
		{`vip==~false`, []int{1, 2}}, // missing reads as null, which is falseish
		{`x==~null`, []int{0, 1, 2}},
		{`vip==~*`, []int{0, 1}},
		{`vip!=~*`, []int{2}},
		{`tags.#>1`, []int{0}},
		{`tags.#==0`, []int{1}},
		{`tags.#(=="b")`, []int{0}},
		{`tags.#(=="b")#`, []int{0}},
		{`tags.1=="b"`, []int{0}},
		{`=="ann"`, []int{3}},
		{`>5`, []int{3, 4}},            // "ann" > "5" as strings
		{`==~null`, []int{0, 1, 2, 5}}, // objects read as missing at the empty path, as gjson
		{`n=="nobody"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			m := mustNew(t, []config.MaskRule{mr("u.#("+tt.filter+")#", "redact")})
			got, _, err := m.Apply(nil, []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			var before, after struct{ U []json.RawMessage }
			if err := json.Unmarshal([]byte(doc), &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &after); err != nil {
				t.Fatalf("output %s: %v", got, err)
			}
			var masked []int
			for i := range after.U {
				if string(after.U[i]) == R {
					masked = append(masked, i)
				} else if string(after.U[i]) != string(before.U[i]) {
					t.Errorf("element %d changed to %s", i, after.U[i])
				}
			}
			if !equalInts(masked, tt.want) {
				t.Errorf("#(%s)# masked elements %v, want %v", tt.filter, masked, tt.want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFilterPaths(t *testing.T) {
	runApply(t, []applyCase{
		{"filter then key", redact(`users.#(role=="admin")#.ssn`),
			`{"users":[{"role":"admin","ssn":"1"},{"ssn":"2","role":"user"},{"ssn":"3","role":"admin"}]}`,
			`{"users":[{"role":"admin","ssn":` + R + `},{"ssn":"2","role":"user"},{"ssn":` + R + `,"role":"admin"}]}`,
			Counts{Redact: 2}},
		{"duplicate key in the condition: any reading", redact(`#(role=="admin")#.ssn`),
			`[{"role":"user","role":"admin","ssn":"1"},{"role":"user","ssn":"2"}]`,
			`[{"role":"user","role":"admin","ssn":` + R + `},{"role":"user","ssn":"2"}]`, Counts{Redact: 1}},
		{"escaped key in the condition", redact(`#(role=="admin")#.ssn`),
			`[{"r\u006fle":"adm\u0069n","ssn":"1"}]`, `[{"r\u006fle":"adm\u0069n","ssn":` + R + `}]`, Counts{Redact: 1}},
		{"condition on a nested path", redact(`#(a.b>=2)#.s`),
			`[{"a":{"b":1},"s":1},{"a":{"b":2},"s":2}]`, `[{"a":{"b":1},"s":1},{"a":{"b":2},"s":` + R + `}]`, Counts{Redact: 1}},
		{"condition with a wildcard: any key", redact(`#(*.k=="x")#.s`),
			`[{"a":{"k":"y"},"b":{"k":"x"},"s":1},{"a":{"k":"y"},"s":2}]`,
			`[{"a":{"k":"y"},"b":{"k":"x"},"s":` + R + `},{"a":{"k":"y"},"s":2}]`, Counts{Redact: 1}},
		{"condition through '#': any element", redact(`#(f.#.n=="x")#.s`),
			`[{"f":[{"n":"y"},{"n":"x"}],"s":1},{"f":[{"n":"y"}],"s":2}]`,
			`[{"f":[{"n":"y"},{"n":"x"}],"s":` + R + `},{"f":[{"n":"y"}],"s":2}]`, Counts{Redact: 1}},
		{"filter last masks the elements", redact(`a.#(=="x")#`),
			`{"a":["x","y","x"]}`, `{"a":[` + R + `,"y",` + R + `]}`, Counts{Redact: 2}},
		{"nested filters", redact(`g.#(k==1)#.u.#(k==2)#.v`),
			`{"g":[{"k":1,"u":[{"k":2,"v":1},{"k":3,"v":2}]},{"k":0,"u":[{"k":2,"v":3}]}]}`,
			`{"g":[{"k":1,"u":[{"k":2,"v":` + R + `},{"k":3,"v":2}]},{"k":0,"u":[{"k":2,"v":3}]}]}`,
			Counts{Redact: 1}},
		{"escaped quote in the value", redact(`#(n=="a\"b")#.s`),
			`[{"n":"a\"b","s":1},{"n":"ab","s":2}]`, `[{"n":"a\"b","s":` + R + `},{"n":"ab","s":2}]`, Counts{Redact: 1}},
		{"parenthesis in the value", redact(`#(n=="f(x)")#.s`),
			`[{"n":"f(x)","s":1}]`, `[{"n":"f(x)","s":` + R + `}]`, Counts{Redact: 1}},
		{"filter on a key that comes after the masked one", redact(`#(z==1)#.a`),
			`[{"a":1,"z":1},{"a":2,"z":2}]`, `[{"a":` + R + `,"z":1},{"a":2,"z":2}]`, Counts{Redact: 1}},
	})
}

func TestActions(t *testing.T) {
	runApply(t, []applyCase{
		{"redact with", []config.MaskRule{{Field: "a", Action: "redact", With: `<gone "x" \ é>`}},
			`{"a":1}`, `{"a":"<gone \"x\" \\ é>"}`, Counts{Redact: 1}},
		{"hash string: of the unescaped text", []config.MaskRule{mr("a", "hash"), mr("b", "hash")},
			`{"a":"é\n","b":"\u00e9\n"}`, `{"a":` + hashOf("é\n") + `,"b":` + hashOf("é\n") + `}`, Counts{Hash: 2}},
		{"hash other values: of the JSON as written", []config.MaskRule{mr("#", "hash")},
			`[12.50,true,null,{"a": 1}]`,
			`[` + hashOf("12.50") + `,` + hashOf("true") + `,` + hashOf("null") + `,` + hashOf(`{"a": 1}`) + `]`, Counts{Hash: 4}},
		{"last4", []config.MaskRule{mr("#", "last4")},
			`["4242424242424242","4242 4242 4242 4242","12345678","1234567","123456","12345","1234","12",""]`,
			`["************4242","***************4242","****5678","****567","****56","****5","****","**",""]`,
			Counts{Last4: 9}},
		{"last4 counts runes and re-escapes", []config.MaskRule{mr("#", "last4")},
			`["日本語のテキストです","\u00e9\u00e9\u00e9\u00e9a\"b\\c","abcd\u0001\n\t\""]`,
			`["******ストです","*****\"b\\c","****\u0001\n\t\""]`,
			Counts{Last4: 3}},
		{"last4 on other values redacts", []config.MaskRule{mr("#", "last4")},
			`[4242424242424242,{"a":"12345678"},null,true]`, `[` + R + `,` + R + `,` + R + `,` + R + `]`, Counts{Last4: 4}},
		{"strongest action wins", []config.MaskRule{mr("a", "last4"), mr("a", "hash"), mr("*", "redact")},
			`{"a":"12345678","b":"x"}`, `{"a":` + R + `,"b":` + R + `}`, Counts{Redact: 2}},
		{"first redact wins a tie", []config.MaskRule{{Field: "a", Action: "redact", With: "one"}, {Field: "a", Action: "redact", With: "two"}},
			`{"a":1}`, `{"a":"one"}`, Counts{Redact: 1}},
		{"remove beats all", []config.MaskRule{mr("a", "redact"), mr("*", "remove")},
			`{"a":1}`, `{}`, Counts{Remove: 1}},
	})
}

func TestRemove(t *testing.T) {
	rm := func(fields ...string) []config.MaskRule {
		var rs []config.MaskRule
		for _, f := range fields {
			rs = append(rs, mr(f, "remove"))
		}
		return rs
	}
	runApply(t, []applyCase{
		{"only member", rm("a"), `{"a":1}`, `{}`, Counts{Remove: 1}},
		{"only member, spaced", rm("a"), `{ "a" : 1 }`, `{  }`, Counts{Remove: 1}},
		{"first", rm("a"), `{"a":1,"b":2,"c":3}`, `{"b":2,"c":3}`, Counts{Remove: 1}},
		{"middle", rm("b"), `{"a":1, "b":2, "c":3}`, `{"a":1, "c":3}`, Counts{Remove: 1}},
		{"last", rm("c"), `{"a":1, "b":2, "c":3}`, `{"a":1, "b":2}`, Counts{Remove: 1}},
		{"first two", rm("a", "b"), `{"a":1, "b":2, "c":3}`, `{"c":3}`, Counts{Remove: 2}},
		{"last two", rm("b", "c"), `{"a":1, "b":2, "c":3}`, `{"a":1}`, Counts{Remove: 2}},
		{"first and last", rm("a", "c"), `{"a":1, "b":2, "c":3}`, `{"b":2}`, Counts{Remove: 2}},
		{"alternate", rm("a", "c", "e"), `{"a":1,"b":2,"c":3,"d":4,"e":5}`, `{"b":2,"d":4}`, Counts{Remove: 3}},
		{"all", rm("a", "b", "c"), "{\n \"a\":1,\n \"b\":2,\n \"c\":3\n}", "{\n \n}", Counts{Remove: 3}},
		{"duplicates", rm("ssn"), `{"ssn":1,"x":2,"ssn":3}`, `{"x":2}`, Counts{Remove: 2}},
		{"container value", rm("a"), `{"a":{"b":[1,{"c":2}]},"z":0}`, `{"z":0}`, Counts{Remove: 1}},
		{"in every element", rm("#.secret"),
			`[{"secret":1},{"a":1,"secret":2},{"secret":3,"a":1},{"a":1}]`,
			`[{},{"a":1},{"a":1},{"a":1}]`, Counts{Remove: 3}},
		{"array element becomes null", rm("a.1"), `{"a":[1,2,3]}`, `{"a":[1,null,3]}`, Counts{Remove: 1}},
		{"every element becomes null", rm("a.#"), `{"a":[1,{"b":2}]}`, `{"a":[null,null]}`, Counts{Remove: 1 + 1}},
		{"filtered elements become null", rm(`a.#(>1)#`), `{"a":[1,2,3]}`, `{"a":[1,null,null]}`, Counts{Remove: 2}},
		{"with another rule inside a kept member", []config.MaskRule{mr("a", "remove"), mr("b.c", "redact")},
			`{"b":{"c":1},"a":2}`, `{"b":{"c":` + R + `}}`, Counts{Remove: 1, Redact: 1}},
	})
}

func TestApplyAppends(t *testing.T) {
	m := mustNew(t, redact("a"))
	dst := []byte("prefix:")
	got, _, err := m.Apply(dst, []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `prefix:{"a":` + R + `}`; string(got) != want {
		t.Errorf("Apply = %s, want %s", got, want)
	}
	got, _, err = m.Apply(dst, []byte(`{"a":`))
	if err == nil || string(got) != "prefix:" {
		t.Errorf("Apply(invalid) = %q, %v; want dst unchanged and an error", got, err)
	}
}

func TestInvalidJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, "masking: body is not JSON: it is empty or only whitespace"},
		{" \n\t", "masking: body is not JSON: it is empty or only whitespace"},
		{`{"a":1`, "masking: body is not valid JSON: unexpected end at offset 6"},
		{`{"a":1}}`, "masking: body is not valid JSON: want the end of the body at offset 7"},
		{`{"a":1} {"b":2}`, "masking: body is not valid JSON: want the end of the body at offset 8"},
		{`{"a" 1}`, `masking: body is not valid JSON: want ":" at offset 5`},
		{`{"a":1,}`, "masking: body is not valid JSON: want an object key at offset 7"},
		{`{a:1}`, "masking: body is not valid JSON: want an object key at offset 1"},
		{`[1,]`, "masking: body is not valid JSON: want a value at offset 3"},
		{`[1 2]`, `masking: body is not valid JSON: want "," or "]" at offset 3`},
		{`{"a":1 "b":2}`, `masking: body is not valid JSON: want "," or "}" at offset 7`},
		{`{"a":tru}`, "masking: body is not valid JSON: want a value at offset 5"},
		{`{"a":01}`, `masking: body is not valid JSON: want "," or "}" at offset 6`},
		{`{"a":1.}`, "masking: body is not valid JSON: invalid number at offset 5"},
		{`{"a":-}`, "masking: body is not valid JSON: invalid number at offset 5"},
		{`{"a":1e}`, "masking: body is not valid JSON: invalid number at offset 5"},
		{`{"a":NaN}`, "masking: body is not valid JSON: want a value at offset 5"},
		{`"abc`, "masking: body is not valid JSON: unexpected end at offset 4"},
		{` [1,2`, "masking: body is not valid JSON: unexpected end at offset 5"},
		{`{"a":"x\q"}`, "masking: body is not valid JSON: invalid escape at offset 7"},
		{`{"a":"\u12x4"}`, `masking: body is not valid JSON: invalid \u escape at offset 6`},
		{"{\"a\":\"x\ny\"}", "masking: body is not valid JSON: control character in a string at offset 7"},
		{"{\"a\":\"\xff\"}", "masking: body is not valid JSON: invalid UTF-8 at offset 6"},
		{"{\"\xc3\":1}", "masking: body is not valid JSON: invalid UTF-8 at offset 2"},
		{`{"a":"abc`, "masking: body is not valid JSON: unexpected end at offset 9"},
		{"\xef\xbb\xbf{}", "masking: body is not JSON: want a value at offset 0"},
		{`'a'`, "masking: body is not JSON: want a value at offset 0"},
		{`<html>{"ssn":1}</html>`, "masking: body is not JSON: want a value at offset 0"},
		{`12 monkeys`, "masking: body is not JSON: want the end of the body at offset 3"},
		{`nothing`, "masking: body is not JSON: want a value at offset 0"},
		{strings.Repeat("[", 513) + strings.Repeat("]", 513), "masking: body is not valid JSON: it nests deeper than 512 levels at offset 512"},
		{strings.Repeat(`{"a":`, 513) + "1" + strings.Repeat("}", 513), "masking: body is not valid JSON: it nests deeper than 512 levels at offset 2560"},
		{strings.Repeat("[", 10_000_000), "masking: body is not valid JSON: it nests deeper than 512 levels at offset 512"},
	}
	// Invalid everywhere: also inside values that are masked, removed or skipped.
	m := mustNew(t, []config.MaskRule{mr("a", "remove"), mr("b", "redact")}, allDetectors...)
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			got, counts, err := m.Apply(nil, []byte(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Errorf("Apply(%q) error = %v, want %s", name, err, tt.want)
			}
			wantErr := ErrInvalidJSON
			if strings.HasPrefix(tt.want, "masking: body is not JSON") {
				wantErr = ErrNotJSON
			}
			if !errors.Is(err, wantErr) {
				t.Errorf("Apply(%q) error = %v, want errors.Is %v", name, err, wantErr)
			}
			if got != nil || counts != (Counts{}) {
				t.Errorf("Apply(%q) = %q, %+v; want nothing", name, got, counts)
			}
		})
	}
	// Exactly 512 levels are accepted.
	deep := strings.Repeat("[", 512) + strings.Repeat("]", 512)
	if _, _, err := m.Apply(nil, []byte(deep)); err != nil {
		t.Errorf("Apply(512 levels): %v", err)
	}
}

func TestValidEdgeCases(t *testing.T) {
	m := mustNew(t, redact("a"), allDetectors...)
	for _, in := range []string{
		`0`, `-0.5e-7`, `"x"`, `true`, `null`, `[]`, `{}`, " \r\n\t[ ] ",
		`"\ud800"`,                 // a lone surrogate is valid JSON
		`{"a":"\ud83d\ude00"}`,     // a pair
		`{"":1,"a":{"":2}}`,        // empty keys
		`"` + "\u2028\u2029" + `"`, // line separators are plain characters in JSON
		`"\u0000"`,
	} {
		got, _, err := m.Apply(nil, []byte(in))
		if err != nil {
			t.Errorf("Apply(%q): %v", in, err)
			continue
		}
		if !json.Valid(got) {
			t.Errorf("Apply(%q) = %q: invalid JSON", in, got)
		}
	}
}

func TestEmpty(t *testing.T) {
	if m := mustNew(t, nil); !m.Empty() {
		t.Error("New(nil, nil).Empty() = false")
	}
	if m := mustNew(t, redact("a")); m.Empty() {
		t.Error("Empty() with a rule = true")
	}
	if m := mustNew(t, nil, "email"); m.Empty() {
		t.Error("Empty() with a detector = true")
	}
	m := mustNew(t, nil)
	if got, _, err := m.Apply(nil, []byte(` {"a" : 1} `)); err != nil || string(got) != ` {"a" : 1} ` {
		t.Errorf("Apply = %q, %v", got, err)
	}
	if _, _, err := m.Apply(nil, []byte(`{`)); err == nil {
		t.Error("an empty Masker accepted invalid JSON")
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		field string
		want  string
	}{
		{"", "field is required"},
		{"@reverse", `unsupported gjson path "@reverse": modifiers are not supported`},
		{"a.@this", `unsupported gjson path "a.@this": modifiers are not supported`},
		{"a|b", `unsupported gjson path "a|b": pipes are not supported`},
		{"a.#.b|c", `unsupported gjson path "a.#.b|c": pipes are not supported`},
		{"[a,b]", `unsupported gjson path "[a,b]": multipaths are not supported`},
		{"{a,b}", `unsupported gjson path "{a,b}": multipaths are not supported`},
		{"a.[b]", `unsupported gjson path "a.[b]": multipaths are not supported`},
		{"a[0]", `unsupported gjson path "a[0]": brackets do not index in gjson; write a.0 for an array element, or escape a literal bracket as \[`},
		{"!true", `unsupported gjson path "!true": literals are not supported`},
		{"..a", `unsupported gjson path "..a": JSON lines (a path starting with ..) are not supported; NDJSON is masked line by line`},
		{"a..b", `unsupported gjson path "a..b": empty key; escape a literal dot as \.`},
		{".a", `unsupported gjson path ".a": empty key; escape a literal dot as \.`},
		{"a.", `unsupported gjson path "a.": empty key; escape a literal dot as \.`},
		{`a\`, `unsupported gjson path "a\\": it ends in a lone escape`},
		{`a.#(b=="x").c`, `unsupported gjson path "a.#(b==\"x\").c": #(...) masks only the first matching element; write #(...)# to mask every match`},
		{`a.#(b=="x")`, `unsupported gjson path "a.#(b==\"x\")": #(...) masks only the first matching element; write #(...)# to mask every match`},
		{`a.#[b=="x"]#`, `unsupported gjson path "a.#[b==\"x\"]#": #[...] queries are not supported; write #(...)#`},
		{`a.#(b=="x"`, `unsupported gjson path "a.#(b==\"x\"": unclosed #(`},
		{`a.#(b=="x")#c`, `unsupported gjson path "a.#(b==\"x\")#c": #(...)# must be followed by "." or end the path`},
		{`a.#(b=="\q")#`, `unsupported gjson path "a.#(b==\"\\q\")#": the condition's value is not a valid JSON string`},
		{`a.#(b|c=="x")#`, `unsupported gjson path "a.#(b|c==\"x\")#": pipes are not supported`},
		{`a.#(@this=="x")#`, `unsupported gjson path "a.#(@this==\"x\")#": modifiers are not supported`},
		{`a.#x`, `unsupported gjson path "a.#x": '#' must be a whole key ('#', '#(...)#'); escape a literal '#' as \#`},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			_, err := New([]config.MaskRule{mr("ok", "redact"), mr(tt.field, "redact")}, nil, Options{})
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("New(%q) error = %v, want a *RuleError", tt.field, err)
			}
			if re.Index != 1 || re.Msg != tt.want || err.Error() != tt.want {
				t.Errorf("New(%q) = RuleError{%d, %q}, want {1, %q}", tt.field, re.Index, re.Msg, tt.want)
			}
		})
	}
}

func TestNewRuleErrors(t *testing.T) {
	rules := []config.MaskRule{
		{Field: "a", Action: "redact"},
		{Field: "b", Action: "hash"},
		{Field: "c", Action: "scramble"},
		{Field: "d", Action: "last4", With: "x"},
		{Field: "e|f", Action: "remove"},
	}
	_, err := New(rules, []string{"email", "zip_code"}, Options{})
	want := []string{
		"1: action hash needs a hash key (masking.hash_key), and none is configured",
		`2: unknown action "scramble": want redact, remove, hash or last4`,
		"3: with applies only to action redact",
		`4: unsupported gjson path "e|f": pipes are not supported`,
		`-: unknown detector "zip_code"`,
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var re *RuleError
		if errors.As(e, &re) {
			got = append(got, strings.Join([]string{itoa(re.Index), re.Msg}, ": "))
		} else {
			got = append(got, "-: "+e.Error())
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("New errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := New([]config.MaskRule{{Field: "b", Action: "hash"}}, nil, Options{HashKey: []byte("k")}); err != nil {
		t.Errorf("New(hash with a key): %v", err)
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestHashKeyCopied(t *testing.T) {
	key := []byte("0123456789abcdef")
	m, err := New([]config.MaskRule{mr("a", "hash")}, nil, Options{HashKey: key})
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := m.Apply(nil, []byte(`{"a":"x"}`))
	key[0] = 'X'
	after, _, _ := m.Apply(nil, []byte(`{"a":"x"}`))
	if string(before) != string(after) {
		t.Error("changing Options.HashKey after New changed the hashes")
	}
}

func TestConcurrent(t *testing.T) {
	m := mustNew(t, append(benchRules[:4:4], mr("#.email", "hash")), allDetectors...)
	body := customers(200)
	want, wantCounts, err := m.Apply(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			var out []byte
			for range 20 {
				got, counts, err := m.Apply(out[:0], body)
				if err != nil || string(got) != string(want) || counts != wantCounts {
					t.Errorf("concurrent Apply differs: %v", err)
					return
				}
				out = got
			}
		})
	}
	wg.Wait()
}

// TestBenchmarkBody checks what the benchmarks measure: every planted value masked.
func TestBenchmarkBody(t *testing.T) {
	body := customers(4000)
	if n := len(body); n < 1<<20-100<<10 || n > 1<<20+100<<10 {
		t.Errorf("customers(4000) is %d bytes, want about 1 MB", n)
	}
	m := mustNew(t, benchRules)
	out, counts, err := m.Apply(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var in, got []struct {
		SSN, Email, Tier, Notes string
		Payment                 struct {
			CardNumber string `json:"card_number"`
		}
		Cards []struct{ Number string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	gold := 0
	for i := range in {
		a, b := in[i], got[i]
		if b.SSN != "[REDACTED]" || !strings.HasPrefix(b.Email, "sha256:") ||
			b.Payment.CardNumber != "************"+a.Payment.CardNumber[12:] ||
			b.Cards[0].Number != "************"+a.Cards[0].Number[12:] {
			t.Fatalf("customer %d not masked: %+v", i, b)
		}
		if a.Tier == "gold" {
			gold++
			if b.Notes != "[REDACTED]" {
				t.Fatalf("gold customer %d notes not masked", i)
			}
		} else if b.Notes != a.Notes {
			t.Fatalf("customer %d notes changed", i)
		}
	}
	want := Counts{Redact: 4000 + gold, Hash: 4000, Last4: 2 * 4000}
	if counts != want {
		t.Errorf("counts = %+v, want %+v", counts, want)
	}
}

// TestFiltersAgreeWithGJSON checks that a filter selects the elements gjson's
// "#(...)#" selects, on documents where gjson's readings are unambiguous (no duplicate
// keys, no wildcards or '#' inside the condition's path but a final length).
func TestFiltersAgreeWithGJSON(t *testing.T) {
	docs := []string{
		`[{"n":"ann","age":30,"vip":true,"t":["a","b"],"o":{"k":1}},{"n":"bob","age":"40","vip":false,"t":[]},` +
			`{"n":"cy","age":51.5,"x":null,"o":{"k":"1"}},"ann",7,null,true,false,"",0,-2.5,[1],{},{"n":"Ann"},{"n":"a\"n"}]`,
		`[{"a":{"b":{"c":"x"}}},{"a":{"b":{"c":"y"}}},{"a":{"b":[1,2,3]}},{"a":"b"},{"a":{"b":{"c":10}}},{"a":{"b":{"c":true}}}]`,
	}
	queries := []string{
		`n=="ann"`, `n!="ann"`, `n<"b"`, `n<="bob"`, `n>"ann"`, `n>="Ann"`, `n%"a*"`, `n%"*n"`, `n!%"?o?"`, `n%"A*"`,
		`n=="a\"n"`, `n`, `age`, `age>35`, `age<=30`, `age==51.5`, `age!=30`, `age=="40"`, `vip==true`, `vip!=false`,
		`vip==~true`, `vip==~false`, `vip!=~false`, `x==~null`, `age==~*`, `age!=~*`, `vip>false`, `vip<true`, `vip>=true`, `vip<=false`,
		`t.#>1`, `t.#==0`, `t.0=="a"`, `t.#(=="b")`, `o.k==1`, `o.k=="1"`, `o.k>0`,
		`=="ann"`, `==~null`, `==~false`, `==~true`, `!=~*`, `>5`, `<0`, `==0`, `==""`, `=="Ann"`, `!=7`, `==true`, `==false`,
		`a.b.c=="x"`, `a.b.c!="x"`, `a.b.c>5`, `a.b.c==~true`, `a.b.#==3`, `a.b.1==2`, `a.b`, `a=="b"`, `a.b.c`,
		`n==ann`, `n!x`, `n!`, `age>abc`,
	}
	for _, doc := range docs {
		for _, q := range queries {
			path := "#(" + q + ")#"
			m := mustNew(t, []config.MaskRule{mr(path, "redact")})
			got, _, err := m.Apply(nil, []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			var before, after []json.RawMessage
			if err := json.Unmarshal([]byte(doc), &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got, &after); err != nil {
				t.Fatal(err)
			}
			var ours []string
			for i := range after {
				if string(after[i]) == R && string(before[i]) != R {
					ours = append(ours, string(before[i]))
				}
			}
			var theirs []string
			for _, r := range gjson.Get(doc, path).Array() {
				theirs = append(theirs, r.Raw)
			}
			if strings.Join(ours, " ") != strings.Join(theirs, " ") {
				t.Errorf("%s on %.40s...: masked %v, gjson selects %v", path, doc, ours, theirs)
			}
		}
	}
}

// TestWordTricks checks the eight-bytes-at-a-time test against its definition, for
// every byte in every position (jsonscan tests its own).
func TestWordTricks(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			var w [8]byte
			for i := range w {
				w[i] = 'a'
			}
			w[pos] = byte(c)
			x := load8(w[:], 0)
			wantQS := c == '"' || c == '\\'
			if got := quoteOrSlash(x); got != wantQS {
				t.Errorf("quoteOrSlash(%#x at %d) = %v, want %v", c, pos, got, wantQS)
			}
		}
	}
}

func TestEscapeMapping(t *testing.T) {
	runApply(t, []applyCase{
		{"surrogate pair inside a finding", nil,
			`"x \ud83d\ude00bob@example.com\ud800 y"`, `"x [EMAIL] y"`, Counts{Detected: 1}},
		{"escapes around a finding", nil,
			`"\ud83d\ude00 \t bob@example.com \ud800\n"`, `"\ud83d\ude00 \t [EMAIL] \ud800\n"`, Counts{Detected: 1}},
		{"finding written entirely in escapes", nil,
			`"\u0034\u0032\u0034\u0032\u0034\u0032\u0034\u0032\u0034\u0032\u0034\u0032\u0034\u0032\u0034\u0032!"`,
			`"[CREDIT_CARD]!"`, Counts{Detected: 1}},
		{"two findings, escapes between", nil,
			`"a@b.io\u0020\u002c\u0020c@d.io"`, `"[EMAIL]\u0020\u002c\u0020[EMAIL]"`, Counts{Detected: 2}},
		{"finding ends the string", nil,
			`"see AKIAIOSFODNN7EXAMPL\u0045"`, `"see [AWS_ACCESS_KEY]"`, Counts{Detected: 1}},
	}, allDetectors...)
}
