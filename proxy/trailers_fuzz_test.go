package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRequestTrailers sends chunked requests whose trailer section the fuzzer writes
// (names, values, the Trailer header announcing them, the body) on a streamed route: the
// upstream never receives a trailer, a Trailer header, or a trailer's value as a header,
// whatever the gateway answers (issue 11, item 4).
func FuzzRequestTrailers(f *testing.F) {
	f.Add("Authorization", "Bearer planted", "X-Api-Key", "body")
	f.Add("X-Tenant", "evil", "X-Forwarded-For", "")
	f.Add("x-keyhole-approval", "01JD", "Trailer", "a\r\nb")
	f.Add("Content-Length", "0", "Transfer-Encoding", "zz")
	f.Add("X-A", "v:w", "", "é")
	h := newHarness(f)
	h.load(f, strings.Replace(testConfig, guardBlock, "", 1))
	tok := h.token(f, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read", "crm.write"}})
	f.Fuzz(func(t *testing.T, name, value, announced, body string) {
		line := func(s string) string { return strings.NewReplacer("\r", "", "\n", "").Replace(s) }
		name, value, announced = line(name), line(value), line(announced)
		if name == "" || value == "" {
			return
		}
		marker := "fz-" + value
		h.crm.Reset()
		req := "POST /crm/customers HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + tok + "\r\n" +
			"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: " + name + ", " + announced + "\r\nConnection: close\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n", len(body), body) +
			name + ": " + marker + "\r\nX-Tenant: " + marker + "\r\nAuthorization: " + marker + "\r\n\r\n"
		conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, req)
		if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for _, got := range h.crm.Requests() {
			if len(got.Trailer) != 0 {
				t.Errorf("upstream got trailers %v", got.Trailer)
			}
			if v := got.Header.Values("Trailer"); len(v) != 0 {
				t.Errorf("upstream got Trailer header %q", v)
			}
			for k, vs := range got.Header {
				for _, v := range vs {
					if strings.Contains(v, marker) {
						t.Errorf("upstream got the trailer value in header %s: %q", k, v)
					}
				}
			}
		}
	})
}
