package recorder

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func jsonResponse(status int, body string) *Response {
	return &Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: NewBody([]byte(body), int64(len(body)))}
}

// bodyChanges renders changes one per line as "op path old new" for comparison.
func bodyChanges(cs []BodyChange) string {
	var lines []string
	for _, c := range cs {
		line := c.Op + " " + c.Path
		for _, v := range []json.RawMessage{c.Old, c.New} {
			if v != nil {
				line += " " + string(v)
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

func headerChanges(cs []HeaderChange) string {
	var lines []string
	for _, c := range cs {
		lines = append(lines, fmt.Sprintf("%s %s %q %q", c.Op, c.Name, c.Old, c.New))
	}
	return strings.Join(lines, "\n")
}

func TestDiffBody(t *testing.T) {
	tests := []struct {
		name     string
		old, new string
		want     string // bodyChanges of the result
	}{
		{"identical", `{"a":1,"b":[1,2]}`, `{"a":1,"b":[1,2]}`, ""},
		{"reordered keys and whitespace", `{"a":1,"b":{"x":true,"y":null}}`, "{ \"b\" : {\"y\":null,\n\"x\":true}, \"a\":1 }", ""},
		{"string escapes", `{"s":"A\u00e9\/"}`, `{"s":"Aé/"}`, ""},
		{"numbers alike", `[1, 1.0, 100, 0, 0.5]`, `[1.0, 1, 1e2, -0, 5E-1]`, ""},
		{"changed nested value", `{"customers":[{"id":1},{"id":2,"email":"a@x"}]}`, `{"customers":[{"id":1},{"id":2,"email":"b@x"}]}`,
			`changed customers.1.email "a@x" "b@x"`},
		{"added and removed keys", `{"a":1,"gone":{"x":1},"keep":2}`, `{"a":1,"keep":2,"new":[true]}`,
			"removed gone {\"x\":1}\nadded new [true]"},
		{"array grows", `{"l":[1,2]}`, `{"l":[1,2,3,{"z":0}]}`, "added l.2 3\nadded l.3 {\"z\":0}"},
		{"array shrinks", `[1,2,3]`, `[1]`, "removed 1 2\nremoved 2 3"},
		{"type change", `{"a":"1","b":{},"c":null,"d":true}`, `{"a":1,"b":[],"c":false,"d":false}`,
			"changed a \"1\" 1\nchanged b {} []\nchanged c null false\nchanged d true false"},
		{"root scalar", `1`, `2`, "changed  1 2"},
		{"keys needing escapes", `{"a.b":{"c*":1},"d":{"e?":[0]}}`, `{"a.b":{"c*":2},"d":{"e?":[1]}}`,
			`changed a\.b.c\* 1 2` + "\n" + `changed d.e\?.0 0 1`},
		{"big integers compared exactly", `{"id":9007199254740993}`, `{"id":9007199254740992}`,
			"changed id 9007199254740993 9007199254740992"},
		{"big integers equal", `[123456789012345678901234567890]`, `[123456789012345678901234567890]`, ""},
		{"huge exponents compared as written", `[1e400]`, `[2e400]`, "changed 0 1e400 2e400"},
		{"float change", `{"p":0.1}`, `{"p":0.2}`, "changed p 0.1 0.2"},
		{"repeated key counts last", `{"a":1,"a":2}`, `{"a":2}`, ""},
		{"not JSON", "hello\n", "hello!\n", `changed  "hello\n" "hello!\n"`},
		{"not JSON, same", "plain text", "plain text", ""},
		{"invalid JSON on one side", `{"a":1}`, `{"a":1`, `changed  "{\"a\":1}" "{\"a\":1"`},
		{"empty to JSON", ``, `{}`, `changed  "" "{}"`},
		{"NDJSON is not one document", "{\"a\":1}\n{\"a\":2}\n", "{\"a\":1}\n{\"a\":3}\n",
			`changed  "{\"a\":1}\n{\"a\":2}\n" "{\"a\":1}\n{\"a\":3}\n"`},
		{"both empty", ``, ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Diff(jsonResponse(200, tt.old), jsonResponse(200, tt.new))
			if got := bodyChanges(c.Body); got != tt.want {
				t.Errorf("Diff(%s, %s).Body =\n%s\nwant\n%s", tt.old, tt.new, got, tt.want)
			}
			if c.Same != (tt.want == "") {
				t.Errorf("Same = %v, want %v", c.Same, tt.want == "")
			}
			if c.Truncated || c.BodyIncomplete || c.Status != nil || c.Headers != nil {
				t.Errorf("Diff = %+v, want body changes only", c)
			}
			if _, err := json.Marshal(c); err != nil {
				t.Errorf("json.Marshal(Diff) = %v", err)
			}
		})
	}
}

func TestDiffBinaryBodies(t *testing.T) {
	bin := func(p ...byte) *Response { return &Response{Status: 200, Body: NewBody(p, int64(len(p)))} }
	if c := Diff(bin(0xff, 1, 2), bin(0xff, 1, 2)); !c.Same {
		t.Errorf("Diff of equal binary bodies = %+v, want Same", c)
	}
	c := Diff(bin(0xff, 1, 2), bin(0xff, 1, 3))
	if got, want := bodyChanges(c.Body), `changed  "/wEC" "/wED"`; got != want {
		t.Errorf("Diff of binary bodies = %s, want %s", got, want)
	}
	// The same bytes recorded as text on one side and base64 on the other are equal.
	text := &Response{Body: Body{Text: "hi", Size: 2}}
	b64 := &Response{Body: Body{Text: "aGk=", Encoding: "base64", Size: 2}}
	if c := Diff(text, b64); !c.Same {
		t.Errorf("Diff(text, base64 of the same bytes) = %+v, want Same", c)
	}
	// Bad base64 is never mistaken for equal bytes.
	bad := &Response{Body: Body{Text: "!!", Encoding: "base64", Size: 2}}
	if c := Diff(&Response{}, bad); c.Same {
		t.Errorf("Diff(empty, bad base64) is Same, want a change")
	}
}

func TestDiffLongTexts(t *testing.T) {
	long := strings.Repeat("é", 3000) // 6000 bytes
	c := Diff(&Response{Body: NewBody([]byte(long), 6000)}, &Response{Body: NewBody([]byte(long+"!"), 6001)})
	if len(c.Body) != 1 {
		t.Fatalf("Body = %v, want one change", c.Body)
	}
	var old string
	if err := json.Unmarshal(c.Body[0].Old, &old); err != nil {
		t.Fatal(err)
	}
	if len(old) != 4096 || old != long[:4096] {
		t.Errorf("old text is %d bytes, want the first 4096 bytes, cut at a rune boundary", len(old))
	}
}

func TestDiffTruncatedBodies(t *testing.T) {
	part := func(s string, size int64) *Response { return &Response{Status: 200, Body: NewBody([]byte(s), size)} }
	tests := []struct {
		name     string
		old, new *Response
		same     bool
	}{
		{"same prefix and size", part(`{"a":[1,2`, 100), part(`{"a":[1,2`, 100), true},
		{"same prefix, other size", part(`{"a":[1,2`, 100), part(`{"a":[1,2`, 101), false},
		{"other prefix", part(`{"a":[1,2`, 100), part(`{"a":[1,3`, 100), false},
		{"one complete", part(`{"a":1}`, 7), part(`{"a":1}`, 70), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Diff(tt.old, tt.new)
			if !c.BodyIncomplete {
				t.Errorf("BodyIncomplete = false, want true")
			}
			if c.Same != tt.same {
				t.Errorf("Same = %v, want %v (%+v)", c.Same, tt.same, c)
			}
			if !c.Same && (len(c.Body) != 1 || c.Body[0].Path != "" || c.Body[0].Op != OpChanged) {
				t.Errorf("Body = %+v, want one whole-body change", c.Body)
			}
		})
	}
}

func TestDiffStatusAndHeaders(t *testing.T) {
	old := &Response{Status: 200, Header: http.Header{
		"Content-Type": {"application/json"}, "Etag": {`"v1"`}, "X-Gone": {"1"}, "Vary": {"Accept", "Origin"},
		"Date": {"Mon, 01 Jan 2024 00:00:00 GMT"}, "X-Request-Id": {"a"}, "Content-Length": {"10"}, "Age": {"3"},
		"Connection": {"close"}, "Keep-Alive": {"timeout=5"},
	}}
	cur := &Response{Status: 404, Header: http.Header{
		"Content-Type": {"application/json"}, "Etag": {`"v2"`}, "x-new": {"y"}, "Vary": {"Origin", "Accept"},
		"Date": {"Tue, 02 Jan 2024 00:00:00 GMT"}, "X-Request-Id": {"b"}, "Content-Length": {"12"},
		"Transfer-Encoding": {"chunked"},
	}}
	c := Diff(old, cur)
	if c.Status == nil || *c.Status != (StatusChange{Old: 200, New: 404}) {
		t.Errorf("Status = %+v, want 200 -> 404", c.Status)
	}
	want := strings.Join([]string{
		`changed Etag ["\"v1\""] ["\"v2\""]`,
		`changed Vary ["Accept" "Origin"] ["Origin" "Accept"]`,
		`removed X-Gone ["1"] []`,
		`added X-New [] ["y"]`,
	}, "\n")
	if got := headerChanges(c.Headers); got != want {
		t.Errorf("Headers =\n%s\nwant\n%s", got, want)
	}
	if c.Same {
		t.Error("Same = true, want false")
	}

	onlyVolatile := &Response{Status: 200, Header: http.Header{"Date": {"x"}, "Age": {"1"}, "Empty": {}}}
	if c := Diff(onlyVolatile, &Response{Status: 200}); !c.Same || c.Headers != nil {
		t.Errorf("Diff with only volatile or empty headers = %+v, want Same", c)
	}
}

func TestDiffNil(t *testing.T) {
	if c := Diff(nil, nil); !c.Same {
		t.Errorf("Diff(nil, nil) = %+v, want Same", c)
	}
	c := Diff(nil, jsonResponse(200, `{}`))
	if c.Same || c.Status == nil || *c.Status != (StatusChange{0, 200}) || len(c.Headers) != 1 || len(c.Body) != 1 {
		t.Errorf("Diff(nil, response) = %+v, want status 0 -> 200, Content-Type added, body changed", c)
	}
}

func TestDiffCap(t *testing.T) {
	var a, b strings.Builder
	a.WriteString("[")
	b.WriteString("[")
	for i := range 2500 {
		if i > 0 {
			a.WriteString(",")
			b.WriteString(",")
		}
		fmt.Fprintf(&a, "%d", i)
		fmt.Fprintf(&b, "%d", i+1)
	}
	a.WriteString("]")
	b.WriteString("]")
	c := Diff(jsonResponse(200, a.String()), jsonResponse(200, b.String()))
	if len(c.Body) != maxBodyChanges || !c.Truncated || c.Same {
		t.Errorf("Diff of 2500 changed elements: %d changes, Truncated %v, Same %v; want %d, true, false", len(c.Body), c.Truncated, c.Same, maxBodyChanges)
	}
}

func TestDiffDeepNesting(t *testing.T) {
	for _, depth := range []int{9000, 200000} {
		deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		other := strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
		c := Diff(jsonResponse(200, deep), jsonResponse(200, other))
		if c.Same || len(c.Body) != 1 {
			t.Errorf("depth %d: Diff = %d changes, Same %v; want one change", depth, len(c.Body), c.Same)
		}
		if !Diff(jsonResponse(200, deep), jsonResponse(200, deep)).Same {
			t.Errorf("depth %d: Diff(x, x) is not Same", depth)
		}
	}
}

func FuzzDiff(f *testing.F) {
	seeds := [][2]string{
		{`{"a":1}`, `{"a":1.0}`},
		{`{"a":[1,2,{"b":"c"}]}`, `{"a":[1,{"b":"c"}],"d":null}`},
		{`[1e400]`, `[-0]`},
		{`"\ud800"`, `"\ufffd"`},
		{"\xff\xfe", `{}`},
		{``, `null`},
		{`{"a.b":{"":1}}`, `{"a.b":{"":2}}`},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), false)
	}
	f.Fuzz(func(t *testing.T, x, y []byte, truncated bool) {
		size := int64(len(x))
		if truncated {
			size++
		}
		rx := &Response{Status: 200, Body: NewBody(x, size)}
		ry := &Response{Status: 200, Body: NewBody(y, int64(len(y)))}
		if c := Diff(rx, rx); !c.Same {
			t.Errorf("Diff(x, x) = %+v, want Same", c)
		}
		if c := Diff(ry, ry); !c.Same {
			t.Errorf("Diff(y, y) = %+v, want Same", c)
		}
		xy, yx := Diff(rx, ry), Diff(ry, rx)
		if xy.Same != yx.Same {
			t.Errorf("Diff(x, y).Same = %v but Diff(y, x).Same = %v", xy.Same, yx.Same)
		}
		if xy.Same && string(x) != string(y) && !(json.Valid(x) && json.Valid(y)) {
			t.Errorf("Diff of different non-JSON bodies is Same")
		}
		if len(xy.Body) > maxBodyChanges {
			t.Errorf("Diff reported %d body changes, want at most %d", len(xy.Body), maxBodyChanges)
		}
		if _, err := json.Marshal(xy); err != nil {
			t.Errorf("json.Marshal(Diff(x, y)) = %v", err)
		}
	})
}
