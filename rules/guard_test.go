package rules

import (
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/internal/testkit"
)

// TestDecideGuardLenientBodies holds the body_regex guard to what lenient backend parsers
// (Python's json, Go's json.Decoder, JSON5, a UTF-16 reader) read as DROP TABLE.
func TestDecideGuardLenientBodies(t *testing.T) {
	tb := compile(t, crmConfig())
	const doc = `{"q":"DROP\u0020TABLE users"}`
	const plainDoc = `{"q":"DROP TABLE users"}`
	deny := want{Deny, "no-sql-drop", "destructive SQL is never forwarded"}
	tests := []struct {
		name   string
		body   string
		header []string
		want   want
	}{
		{"NaN after", `{"q":"DROP\u0020TABLE users","n":NaN}`, nil, deny},
		{"Infinity before", `{"n":Infinity,"q":"DROP\u0020TABLE users"}`, nil, deny},
		{"trailing data", doc + ` x`, nil, deny},
		{"a second document", doc + `{}`, nil, deny},
		{"513 nested arrays", strings.Repeat("[", 513) + doc + strings.Repeat("]", 513), nil, deny},
		{"100000 nested arrays", strings.Repeat("[", 100000) + doc, nil, deny},
		{"trailing comma", `{"q":"DROP\u0020TABLE users",}`, nil, deny},
		{"single quotes", `{'q':'DROP\u0020TABLE users'}`, nil, deny},
		{"JSON5 hex escape", `{"q":"DROP\x20TABLE users"}`, nil, deny},
		{"JSON5 escaped space", `{"q":"DROP\ TABLE users"}`, nil, deny},
		{"unterminated string", `{"q":"DROP\u0020TABLE users`, nil, deny},
		{"lone surrogate before", `{"a":"\ud800","q":"DROP\u0020TABLE users"}`, nil, deny},
		{"UTF-8 BOM", "\ufeff" + doc, nil, deny},
		{"UTF-16LE BOM", testkit.EncodeText(plainDoc, 2, false, true), nil, deny},
		{"UTF-16BE BOM", testkit.EncodeText(plainDoc, 2, true, true), nil, deny},
		{"UTF-32LE BOM", testkit.EncodeText(plainDoc, 4, false, true), nil, deny},
		{"UTF-32BE BOM", testkit.EncodeText(plainDoc, 4, true, true), nil, deny},
		{"UTF-16LE", testkit.EncodeText(plainDoc, 2, false, false), nil, deny},
		{"UTF-16BE", testkit.EncodeText(plainDoc, 2, true, false), nil, deny},
		{"UTF-32LE", testkit.EncodeText(plainDoc, 4, false, false), nil, deny},
		{"UTF-32BE", testkit.EncodeText(plainDoc, 4, true, false), nil, deny},
		{"UTF-16LE escaped", testkit.EncodeText(doc, 2, false, true), nil, deny},
		{"UTF-16 plain text", testkit.EncodeText("drop table users", 2, false, false), nil, deny},
		{"UTF-16 after a non-ASCII start", "x" + testkit.EncodeText("é drop table users", 2, false, false)[1:], nil, deny},
		{"UTF-16 odd length with BOM", testkit.EncodeText(`{"q":"x"}`, 2, false, true) + "!", nil, deny},
		{"UTF-16 lone surrogate with BOM", testkit.EncodeText(`{"q":"x"}`, 2, false, true) + "\x00\xd8", nil, deny},
		{"declared charset utf-16le", testkit.EncodeText(plainDoc, 2, false, false), []string{"Content-Type", "application/json; charset=utf-16le"}, deny},
		{"undecodable declared charset", `{"q":"+AEQ-ROP TABLE"}`, []string{"Content-Type", "application/json; charset=utf-7"}, deny},
		{"form value holding JSON", `q=%7B%22a%22%3A%22DROP%5Cu0020TABLE%22%7D`, nil, deny},
		{"form with an invalid percent escape", `x=%zz&q=drop%20table`, nil, deny},
		{"harmless lenient body", `{"q":"select 1","n":NaN,}`, nil, want{Allow, "crm-read-customer", ""}},
		{"harmless UTF-16", testkit.EncodeText(`{"q":"select 1"}`, 2, false, true), nil, want{Allow, "crm-read-customer", ""}},
		{"harmless declared latin-1", `{"q":"caf` + "\xe9" + `"}`, []string{"Content-Type", "text/plain; charset=ISO-8859-1"}, want{Allow, "crm-read-customer", ""}},
		{"binary with NULs", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", nil, want{Allow, "crm-read-customer", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tb, req("GET", "/crm/customers/1", "", tt.body, tt.header...), reader, tt.want)
		})
	}
}

// TestDecideRouteBodyRegexUndecidable: a route's when.body_regex that cannot be judged
// makes the request invalid rather than pick or skip the route.
func TestDecideRouteBodyRegexUndecidable(t *testing.T) {
	cfg := &config.Config{Routes: []config.Route{
		{Name: "safe-writes", Match: config.Match{Methods: []string{"POST"}, Path: "/w",
			When: &config.When{BodyRegex: `"mode":"safe"`}}, Upstream: "u", Allow: groups("everyone")},
		{Name: "other-writes", Match: match("/w", "POST"), Upstream: "u", Allow: groups("crm-admins")},
	}}
	tb := compile(t, cfg)
	tests := []struct {
		name string
		body string
		want want
	}{
		{"matches", `{"mode":"safe"}`, want{Allow, "safe-writes", ""}},
		{"matches in UTF-16", testkit.EncodeText(`{"mode":"safe"}`, 2, false, true), want{Allow, "safe-writes", ""}},
		{"does not match", `{"mode":"purge"}`, want{Forbid, "other-writes", ""}},
		{"undecodable UTF-16", testkit.EncodeText(`{"mode":"safe"}`, 2, false, true) + "!", want{Invalid, "safe-writes", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tb, req("POST", "/w", "", tt.body), reader, tt.want)
		})
	}
}
