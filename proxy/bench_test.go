package proxy_test

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyAllowed measures one whole allowed request through the gateway over real
// loopback connections: canonical path, cached token verification, rules, credential
// injection, forwarding to an httptest upstream and copying the answer back.
func BenchmarkProxyAllowed(b *testing.B) {
	h := newHarness(b)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":42,"name":"Ada Lovelace","email":"ada@example.com"}`)
	}
	tok := h.token(b, map[string]any{"sub": "ada", "groups": []string{"crm-readers"}, "scp": []string{"crm.read"}})
	client := h.srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	req, _ := http.NewRequest("GET", h.srv.URL+"/crm/customers/42", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkDirect is the same request sent straight to the upstream, for comparison.
func BenchmarkDirect(b *testing.B) {
	h := newHarness(b)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":42,"name":"Ada Lovelace","email":"ada@example.com"}`)
	}
	client := h.crm.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(h.crm.URL + "/api/customers/42")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
