package mcp

import (
	"bytes"
	"errors"
	"testing"
)

// upper is a stand-in mask: Fields and Other upper-case "secret", Text replaces it.
var upper = ResultMask{
	Fields: func(doc []byte) ([]byte, error) {
		return bytes.ReplaceAll(doc, []byte("secret"), []byte("SECRET")), nil
	},
	Text:   func(text []byte) []byte { return bytes.ReplaceAll(text, []byte("secret"), []byte("[X]")) },
	Other:  func(v []byte) ([]byte, error) { return bytes.ReplaceAll(v, []byte("secret"), []byte("[O]")), nil },
	Strict: true,
}

func TestMaskResult(t *testing.T) {
	tests := []struct {
		name, msg, want string
		fails           bool
	}{
		{"structured and JSON text alike",
			`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"a\":\"secret\"}"}],"structuredContent":{"a":"secret"}}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"a\":\"SECRET\"}"}],"structuredContent":{"a":"SECRET"}}}`, false},
		{"plain text gets Text",
			`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a secret <b>"}]}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a [X] <b>"}]}}`, false},
		{"other members get Other",
			`{"jsonrpc":"2.0","id":1,"result":{"_meta":{"k":"secret"},"content":[{"type":"image","data":"secret"}]}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"_meta":{"k":"[O]"},"content":[{"type":"image","data":"[O]"}]}}`, false},
		{"an error gets Other",
			`{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"secret"}}`,
			`{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"[O]"}}`, false},
		{"a notification gets Other whole",
			`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":{"text":"{\"a\":\"secret\"}"}}}`,
			`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":{"text":"{\"a\":\"[O]\"}"}}}`, false},
		{"unchanged is the same bytes",
			`{ "jsonrpc":"2.0", "id":1, "result":{ "content":[ {"type":"text", "text":"fine"} ] } }`,
			`{ "jsonrpc":"2.0", "id":1, "result":{ "content":[ {"type":"text", "text":"fine"} ] } }`, false},
		// encoding/json reads a lone case variant as the member: it is masked as the member.
		{"lone StructuredContent", `{"jsonrpc":"2.0","id":1,"result":{"StructuredContent":{"a":"secret"}}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"StructuredContent":{"a":"SECRET"}}}`, false},
		{"lone Content and Text", `{"jsonrpc":"2.0","id":1,"Result":{"Content":[{"Type":"text","Text":"{\"a\":\"secret\"}"}]}}`,
			`{"jsonrpc":"2.0","id":1,"Result":{"Content":[{"Type":"text","Text":"{\"a\":\"SECRET\"}"}]}}`, false},
		{"Method is a method", `{"jsonrpc":"2.0","Method":"notifications/message","params":{"text":"{\"a\":\"secret\"}"}}`,
			`{"jsonrpc":"2.0","Method":"notifications/message","params":{"text":"{\"a\":\"[O]\"}"}}`, false},
		{"embedded resource text", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"crm://c/1","text":"{\"a\":\"secret\"}"}},{"type":"resource","Resource":{"Text":"a secret"}}]}}`,
			`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"crm://c/1","text":"{\"a\":\"SECRET\"}"}},{"type":"resource","Resource":{"Text":"a [X]"}}]}}`, false},
		{"text that looks like JSON but is not", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"a\":\"secret\",}"}]}}`, "", true},
		{"repeated result", `{"jsonrpc":"2.0","id":1,"result":{"content":[]},"result":{"structuredContent":{"a":"secret"}}}`, "", true},
		{"repeated text, folded", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x","Text":"secret"}]}}`, "", true},
		{"content not a list", `{"jsonrpc":"2.0","id":1,"result":{"content":{"text":"secret"}}}`, "", true},
		{"result not an object", `{"jsonrpc":"2.0","id":1,"result":"secret"}`, "", true},
		{"not JSON", `{"jsonrpc":"2.0","id":1,"result":{`, "", true},
		{"two values", `{"jsonrpc":"2.0","id":1} {}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MaskResult([]byte(tt.msg), upper)
			if tt.fails {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("got %s, %v\nwant %s", got, err, tt.want)
			}
		})
	}
}

func TestMaskResultFieldsErrorFails(t *testing.T) {
	rm := upper
	rm.Fields = func([]byte) ([]byte, error) { return nil, errors.New("cannot") }
	if _, err := MaskResult([]byte(`{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"a":1}}}`), rm); err == nil {
		t.Error("got no error, want the Fields error: an answer that cannot be masked is not passed")
	}
	rm.Strict = false
	got, err := MaskResult([]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"[not json secret"}]}}`), rm)
	if err != nil || !bytes.Contains(got, []byte("[X]")) {
		t.Errorf("without field rules, text that looks like JSON: got %s, %v, want the detectors applied", got, err)
	}
}
