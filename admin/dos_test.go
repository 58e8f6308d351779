package admin_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRefusalsDoNotWaitForTheBody: the admin plane answers a refused request that
// announced a large body and sent 10 bytes of it at once, and closes the connection.
// Before, the server drained the unread body first and the 401 never came.
func TestRefusalsDoNotWaitForTheBody(t *testing.T) {
	h := newAPIHarness(t, 1)
	nobody := h.iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "nobody"})
	for _, tt := range []struct {
		name, path, auth string
		status           int
	}{
		{"no token", "/api/v1/approvals/x/approve", "", 401},
		{"no role", "/api/v1/exchanges/01JD0000000000000000000000/replay", "Authorization: Bearer " + nobody + "\r\n", 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "POST "+tt.path+" HTTP/1.1\r\nHost: x\r\n"+tt.auth+"Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n{\"comment\"")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer within 5s: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tt.status || !resp.Close {
				t.Errorf("got %d (close %v), want %d with Connection: close", resp.StatusCode, resp.Close, tt.status)
			}
			if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
				t.Errorf("connection after the answer: %v, want it closed", err)
			}
		})
	}
}
