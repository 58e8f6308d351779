package proxy_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"testing"
)

// TestRequestTricks sends requests that try to make the gateway judge one thing and the
// upstream read another, over raw TCP so nothing cleans them on the way.
func TestRequestTricks(t *testing.T) {
	h := newHarness(t)
	tok := h.token(t, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"note":"drop table customers"}`))
	zw.Close()
	mcpBody := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer"}}`
	auth := "Authorization: Bearer " + tok + "\r\n"
	tests := []struct {
		name     string
		req      string
		want     int
		wantCode string
	}{
		{"header condition holds", "GET /tenant/1 HTTP/1.1\r\nHost: x\r\n" + auth + "X-Tenant: acme\r\n\r\n", 200, ""},
		{"Connection strips a judged header", "GET /tenant/1 HTTP/1.1\r\nHost: x\r\n" + auth + "X-Tenant: acme\r\nConnection: X-Tenant\r\n\r\n", 404, "no_route"},
		{"underscored spelling of a judged header", "GET /tenant/1 HTTP/1.1\r\nHost: x\r\n" + auth + "X_Tenant: acme\r\n\r\n", 404, "no_route"},
		{"identity then gzip Content-Encoding", "POST /crm/customers HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Encoding: identity\r\nContent-Encoding: gzip\r\nContent-Length: " + fmt.Sprint(gz.Len()) + "\r\n\r\n" + gz.String(), 400, "bad_request"},
		{"gzip listed second in one field", "POST /crm/customers HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Encoding: identity, gzip\r\nContent-Length: " + fmt.Sprint(gz.Len()) + "\r\n\r\n" + gz.String(), 400, "bad_request"},
		{"token in the query next to the header", "GET /crm/customers/1?access_token=" + tok + " HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n", 400, "bad_request"},
		{"fragment in the query", "GET /crm/customers/1?x#/../../admin HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n", 400, "bad_request"},
		{"Mcp-Name differs from the body", "POST /mcp HTTP/1.1\r\nHost: x\r\n" + auth + "Mcp-Method: tools/call\r\nMcp-Name: delete_customer\r\nContent-Length: " +
			fmt.Sprint(len(mcpBody)) + "\r\n\r\n" + mcpBody, 400, "bad_request"},
		{"Mcp headers agree with the body", "POST /mcp HTTP/1.1\r\nHost: x\r\n" + auth + "Mcp-Method: tools/call\r\nMcp-Name: lookup_customer\r\nContent-Length: " +
			fmt.Sprint(len(mcpBody)) + "\r\n\r\n" + mcpBody, 200, ""},
		{"JSON escape hides SQL from a byte regex", "POST /crm/customers HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length: 36\r\n\r\n" + `{"note":"DROP\u0020TABLE customers"}`, 403, "denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.crm.Reset()
			status, body := h.raw(t, tt.req)
			if status != tt.want || !strings.Contains(body, tt.wantCode) {
				t.Fatalf("status %d %s, want %d %s", status, body, tt.want, tt.wantCode)
			}
			if n := len(h.crm.Requests()); (tt.want == 200) != (n == 1) {
				t.Errorf("upstream received %d requests", n)
			}
		})
	}
	t.Run("client Host does not become X-Forwarded-Host", func(t *testing.T) {
		h.crm.Reset()
		status, _ := h.raw(t, "GET /crm/customers/1 HTTP/1.1\r\nHost: evil.example\r\n"+auth+"\r\n")
		reqs := h.crm.Requests()
		if status != 200 || len(reqs) != 1 {
			t.Fatalf("status %d, %d upstream requests", status, len(reqs))
		}
		if v := reqs[0].Header.Values("X-Forwarded-Host"); len(v) != 0 {
			t.Errorf("upstream X-Forwarded-Host = %q, want none", v)
		}
	})
	t.Run("two Authorization headers get an invalid_request challenge", func(t *testing.T) {
		status, _ := h.raw(t, "GET /crm/customers/1 HTTP/1.1\r\nHost: x\r\n"+auth+auth+"\r\n")
		if status != 401 {
			t.Errorf("status %d, want 401", status)
		}
	})
}
