package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// dosServeConfig is a gateway with a streamed upload route, a route a guard reads the body
// of, and a masked route, with short client timeouts and small bounds.
const dosServeConfig = `
listen: "%s"
admin: { listen: "%s" }
identity:
  issuers:
    - { issuer: "%s", audiences: [api://keyhole] }
upstreams:
  crm:
    url: "%s"
    timeout: 10s
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
guards:
  - name: no-sql-drop
    match: { methods: [POST], path: /guarded, when: { body_regex: "(?i)drop table" } }
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
  max_response_body_masked: 8MiB
  request_body_idle_timeout: 500ms
  request_body_timeout: 3s
  response_write_idle_timeout: 500ms
  max_masked_bytes_held: 32MiB
  max_unauthenticated_conns_per_peer: %d
`

// startDoS starts a gateway on dosServeConfig with a limit of perPeer unauthenticated
// connections per peer, in front of an upstream that answers with respond.
func startDoS(t *testing.T, perPeer int, respond http.HandlerFunc) (*faultProc, string) {
	t.Helper()
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	up.Respond = respond
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(dosServeConfig, data, adm, iss.Config().Issuer, up.URL, perPeer)
	}, "CRM_KEY=dos-test-key-0001")
	return p, iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "0oaw", "cid": "0oaw", "scp": []string{"crm.write", "crm.read"}})
}

// metric returns the value of the unlabelled metric name on p's admin plane, or -1.
func (p *faultProc) metric(name string) float64 {
	_, body := get("http://"+p.Admin+"/metrics", "")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return -1
}

// stall opens a connection to addr, sends head and 10 bytes of a 200000-byte body, and
// goes silent.
func stall(t *testing.T, addr, head string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "%s\r\nHost: x\r\nContent-Length: 200000\r\n\r\n0123456789", head)
	return c
}

// TestFaultStalledBodies: a process facing 120 clients that announce a body and stall
// (unauthenticated, on a judged route, on a streamed route) answers each (401 at once,
// 408 after the idle timeout), closes every connection, refuses idle unauthenticated
// connections beyond the per-peer limit, and comes back to its goroutines, fds and RSS.
func TestFaultStalledBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	p, tok := startDoS(t, 150, nil)
	base := p.Usage()
	heads := map[string]int{
		"POST /upload HTTP/1.1":                                  401,
		"POST /guarded HTTP/1.1\r\nAuthorization: Bearer " + tok: 408,
		"POST /upload HTTP/1.1\r\nAuthorization: Bearer " + tok:  408,
	}
	type client struct {
		c    net.Conn
		want int
	}
	var clients []client
	for range 40 {
		for head, want := range heads {
			clients = append(clients, client{stall(t, p.Data, head), want})
		}
	}
	t.Logf("%d stalled clients: %v", len(clients), p.Usage())
	for i, cl := range clients {
		cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(cl.c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("client %d: no answer within 10 s: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != cl.want {
			t.Errorf("client %d: got %d, want %d", i, resp.StatusCode, cl.want)
		}
		if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Errorf("client %d: connection after the answer: %v, want it closed", i, err)
		}
	}

	// Idle connections that never send a request count against the per-peer limit (150):
	// the ones beyond it are closed at once.
	var idle []net.Conn
	for range 160 {
		c, err := net.Dial("tcp", p.Data)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitFor(t, "refused connections", func() bool { return p.metric("keyhole_connections_refused_total") >= 10 })
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "timeout") {
			closed++
		}
		c.Close()
	}
	if closed != 10 {
		t.Errorf("%d idle connections closed by the gateway, want the 10 beyond the limit", closed)
	}
	p.CheckSettled(base, 15*time.Second, 64<<20)
}

// TestFaultNonReadingClients: ten clients with a 4 KiB receive buffer ask a masked route
// for a 6 MiB JSON and never read. The process holds at most max_masked_bytes_held of
// masked bodies, refuses the rest with 503, gives up on each non-reader after the write
// idle timeout, and comes back to its goroutines and fds. Before, RSS grew by about 80 MB
// per client and stayed until the clients left.
func TestFaultNonReadingClients(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	doc := []byte(largeCustomers(6 << 20))
	p, tok := startDoS(t, 64, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "close") // no idle upstream connections to tell from a leak
		w.Write(doc)
	})
	base := p.Usage()
	const budget = 32 << 20
	var conns []net.Conn
	for range 10 {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}}
		c, err := d.Dial("tcp", p.Data)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /masked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	}
	var peakHeld float64
	var peakRSS int64
	waitFor(t, "every masked request to end", func() bool {
		peakHeld = max(peakHeld, p.metric("keyhole_masked_bytes_held"))
		peakRSS = max(peakRSS, p.Usage().RSS)
		return p.metric("keyhole_requests_in_flight") == 0 && p.metric("keyhole_masked_bytes_held") == 0
	})
	t.Logf("peak masked bytes held %.1f MB, peak RSS %.1f MB (base %.1f MB)", peakHeld/(1<<20), float64(peakRSS)/(1<<20), float64(base.RSS)/(1<<20))
	if peakHeld > budget {
		t.Errorf("masked bytes held peaked at %v, want at most %d", peakHeld, budget)
	}
	// The budget, the masker's working memory, and the garbage collector's headroom
	// (GOGC 100): a bound independent of the number of clients, far under the 80 MB per
	// client seen before.
	rssBound := int64(6 * budget)
	if raceEnabled {
		rssBound = 1 << 40 // logged above, not bounded: the race detector multiplies memory
	}
	if grew := peakRSS - base.RSS; grew > rssBound {
		t.Errorf("RSS grew by %.1f MB, want at most %d MB", float64(grew)/(1<<20), rssBound>>20)
	}
	for _, c := range conns {
		c.Close() // those answered 503 are kept alive, idle, until their client leaves
	}
	p.CheckSettled(base, 15*time.Second, rssBound) // the runtime returns freed heap to the OS lazily
}

// largeCustomers is a JSON document of about n bytes with an ssn in every element.
func largeCustomers(n int) string {
	var b strings.Builder
	b.WriteString(`{"customers":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"ssn":"123-45-%04d","note":"%s"}`, i, i%10000, strings.Repeat("x", 200))
	}
	b.WriteString(`]}`)
	return b.String()
}
