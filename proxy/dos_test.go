package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dosConfig has a streamed upload route, a route whose body a guard reads, and a masked
// route, with short client timeouts so that tests of slow clients end quickly.
const dosConfig = `
identity:
  issuers:
    - issuer: ${ISSUER}
      audiences: [api://keyhole]
upstreams:
  crm:
    url: ${CRM_URL}/api
    timeout: 5s
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
guards:
  - name: no-sql-drop
    match: { methods: [POST], path: /guarded, when: { body_regex: "(?i)\\bdrop\\s+table\\b" } }
    deny: "destructive SQL is never forwarded"
routes:
  - name: upload
    match: { methods: [POST], path: /upload }
    upstream: crm
    allow: { scopes: [crm.write] }
  - name: guarded
    match: { methods: [POST], path: /guarded }
    upstream: crm
    allow: { scopes: [crm.write] }
  - name: masked
    match: { methods: [GET], path: /masked }
    upstream: crm
    allow: { scopes: [crm.read] }
    mask:
      - { field: "customers.#.ssn", action: redact }
limits:
  max_request_body: 1MiB
  max_response_body_masked: 12MiB
  request_body_idle_timeout: 300ms
  request_body_timeout: 3s
  response_write_idle_timeout: 300ms
  max_masked_bytes_held: 30MiB
`

func newDoSHarness(t *testing.T) (*harness, string) {
	t.Helper()
	h := newHarness(t)
	h.load(t, dosConfig)
	return h, h.token(t, map[string]any{"sub": "0oaw", "cid": "0oaw", "scp": []string{"crm.write", "crm.read"}})
}

// rawRequest opens a connection to the gateway and writes head (the request line and
// headers, without the blank line) and then body, and leaves the rest of the body unsent.
func rawRequest(t *testing.T, addr, head, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return c
}

// answerThenClose reads the response on c, then checks that the gateway closes c. Both
// are bounded by within; an answer that does not come in time fails the test.
func answerThenClose(t *testing.T, c net.Conn, within time.Duration) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", within, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if _, err := br.ReadByte(); err != io.EOF && !isReset(err) {
		t.Errorf("connection after the answer: %v, want it closed by the gateway", err)
	}
	return resp, string(body)
}

func isReset(err error) bool { return err != nil && !strings.Contains(err.Error(), "timeout") }

// TestRefusalsDoNotWaitForTheBody sends requests that announce a 200000-byte body, send
// 10 bytes of it, then fall silent. Every refusal must come at once and the connection
// must close: before, the server drained the unread body first (up to 256 KiB), so the
// refusal waited for bytes that never came and the connection was held for ever.
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	h, tok := newDoSHarness(t)
	addr := h.srv.Listener.Addr().String()
	for _, tt := range []struct {
		name, head string
		status     int
		code       string
	}{
		{"no token", "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000", 401, "unauthenticated"},
		{"bad token", "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 200000", 401, "unauthenticated"},
		{"no route", "POST /nowhere HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 200000", 404, "no_route"},
		{"too large", "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 2000000", 413, "body_too_large"},
		{"bad path", "POST /a/../upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000", 400, "bad_request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rawRequest(t, addr, tt.head, "0123456789")
			resp, body := answerThenClose(t, c, 5*time.Second)
			if resp.StatusCode != tt.status || !strings.Contains(body, `"error":"`+tt.code+`"`) {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
			if !resp.Close {
				t.Errorf("refusal without Connection: close: the client may send the rest of the body")
			}
		})
	}
	waitGauge(t, h, "keyhole_requests_in_flight", 0)
}

// TestStalledBodiesAreCutOff stalls a body the gateway reads to judge and one it streams
// to the upstream: both must end with 408 that reaches the client, within the configured
// idle timeout. Before, the judged one answered 400 after a fixed 30 s that the client
// never saw, and the streamed one was held as long as the client liked.
func TestStalledBodiesAreCutOff(t *testing.T) {
	h, tok := newDoSHarness(t)
	addr := h.srv.Listener.Addr().String()
	for _, path := range []string{"/guarded", "/upload"} {
		t.Run(path, func(t *testing.T) {
			c := rawRequest(t, addr, "POST "+path+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\nContent-Length: 200000", "0123456789")
			resp, body := answerThenClose(t, c, 5*time.Second)
			if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, `"error":"request_timeout"`) {
				t.Errorf("got %d %s, want 408 request_timeout", resp.StatusCode, body)
			}
		})
	}
	// A body that trickles in forever is cut off by request_body_timeout, however
	// steadily it comes.
	t.Run("trickle", func(t *testing.T) {
		c := rawRequest(t, addr, "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\nContent-Length: 200000", "0")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for ctx.Err() == nil {
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		resp, _ := answerThenClose(t, c, 10*time.Second)
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("got %d, want 408", resp.StatusCode)
		}
	})
	if n, err := testutil.GatherAndCount(h.reg, "keyhole_upstream_errors_total"); err != nil || n != 0 {
		t.Errorf("a slow client counted as %d upstream error series (%v), want 0", n, err)
	}
	waitGauge(t, h, "keyhole_requests_in_flight", 0)
}

// TestExpectContinueAfterTheDecision: a client that asks "Expect: 100-continue" gets the
// refusal, never 100 Continue first, when the gateway refuses without needing the body
// (no token, no route, too large), and 100 Continue once the request is allowed. (Where
// the decision itself reads the body, a body condition or guard on the path, 100 Continue
// comes after authentication and the path's match: the decision cannot be made sooner.)
func TestExpectContinueAfterTheDecision(t *testing.T) {
	h, tok := newDoSHarness(t)
	addr := h.srv.Listener.Addr().String()
	for _, tt := range []struct {
		name, head string
		first      int
	}{
		{"no token", "POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5", 401},
		{"no route", "POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 5", 404},
		{"too large", "POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 2000000", 413},
		{"allowed", "POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 5", 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rawRequest(t, addr, tt.head, "")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if want := fmt.Sprintf("HTTP/1.1 %d ", tt.first); !strings.HasPrefix(line, want) {
				t.Fatalf("first answer %q, want %q...", strings.TrimSpace(line), want)
			}
			if tt.first != 100 {
				return
			}
			for l := line; l != "\r\n"; {
				if l, err = br.ReadString('\n'); err != nil {
					t.Fatalf("reading 100 Continue: %v", err)
				}
			}
			io.WriteString(c, "hello")
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("after the body: %v %v, want 200", resp, err)
			}
		})
	}
}

// TestExpectContinueOnce: the gateway answers a client's Expect: 100-continue itself and
// does not forward it, and a 100 Continue the upstream sends anyway is not relayed: the
// client, having sent its body, reads the answer next (it read a second 100 under load).
func TestExpectContinueOnce(t *testing.T) {
	h, tok := newDoSHarness(t)
	h.crm.Respond = func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusContinue)
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}
	c := rawRequest(t, h.srv.Listener.Addr().String(),
		"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nAuthorization: Bearer "+tok+"\r\nContent-Length: 5", "")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("first answer %v %v, want 100 Continue", resp, err)
	}
	io.WriteString(c, "hello")
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the body: %v %v, want 200", resp, err)
	}
	for _, r := range h.crm.Requests() {
		if r.Header.Get("Expect") != "" {
			t.Errorf("the upstream was sent Expect: %q", r.Header.Get("Expect"))
		}
	}
}

// bigJSON is a masked route's answer of about n bytes.
func bigJSON(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"customers":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"ssn":"123-45-%04d","note":"%s"}`, i, i%10000, strings.Repeat("x", 200))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// nonReader sends a GET for path with a tiny receive buffer and never reads the answer.
func nonReader(t *testing.T, addr, path, tok string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, tok)
	return c
}

// TestNonReadingClientsAreCutOff: clients that ask a masked route for a large JSON and
// never read must not pin the masked body: the gateway gives up on each after
// response_write_idle_timeout, never holds more than max_masked_bytes_held, and refuses
// what would go beyond it with 503. Before, each was held until the client left.
func TestNonReadingClientsAreCutOff(t *testing.T) {
	h, tok := newDoSHarness(t)
	// Larger than a loopback socket's send buffer can grow to (tcp_wmem's 4 MiB at most):
	// a smaller answer can be absorbed whole by the kernel, and its write completes.
	doc := bigJSON(9 << 20)
	h.crm.Respond = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	}
	addr := h.srv.Listener.Addr().String()
	const budget = 30 << 20 // max_masked_bytes_held in dosConfig
	var (
		mu   sync.Mutex
		peak float64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			v := gauge(h, "keyhole_masked_bytes_held")
			mu.Lock()
			peak = max(peak, v)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	conns := make([]net.Conn, 6)
	for i := range conns {
		conns[i] = nonReader(t, addr, "/masked", tok)
	}
	// Each request ends: written out, refused or cut off. None waits for its client.
	waitGauge(t, h, "keyhole_requests_in_flight", 0)
	waitGauge(t, h, "keyhole_masked_bytes_held", 0)
	close(stop)
	<-sampled
	if peak > budget {
		t.Errorf("masked bytes held peaked at %v, want at most %d", peak, budget)
	}
	overloaded, cut := 0, 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			cut++ // cut off before the headers left the gateway's buffers
			continue
		}
		got, err := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(got), `"error":"overloaded"`):
			overloaded++
		case resp.StatusCode == 200 && err != nil && len(got) < len(doc):
			cut++
		default:
			t.Errorf("got %d with %d bytes (%v), want 503 overloaded or a cut-off 200", resp.StatusCode, len(got), err)
		}
	}
	if overloaded == 0 || cut == 0 {
		t.Errorf("%d overloaded, %d cut off; want some of each", overloaded, cut)
	}
}

// gauge returns the value of the unlabelled metric name.
func gauge(h *harness, name string) float64 {
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// waitGauge waits, at most 10 s, for the metric name to reach want.
func waitGauge(t *testing.T, h *harness, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gauge(h, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 10s, want %v", name, gauge(h, name), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
