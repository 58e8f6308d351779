package connlimit_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/connlimit"
)

// TestListener holds a peer to its limit of unauthenticated connections, refuses the next
// one at once, and frees a place when one authenticates or closes.
func TestListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{}, 16)
	l := connlimit.NewListener(ln, 2, func() { refused <- struct{}{} })
	srv := &http.Server{
		ConnContext: connlimit.ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/login" {
				connlimit.Authenticated(r.Context())
			}
		}),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedAtOnce reports whether the server closed c without answering.
	closedAtOnce := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF || isReset(err)
	}
	a, b := dial(), dial()
	waitFor(t, func() bool { return l.Unauthenticated("127.0.0.1") == 2 })
	if c := dial(); !closedAtOnce(c) {
		t.Fatal("third unauthenticated connection was not closed")
	}
	<-refused

	// One connection authenticates: it no longer counts, a new one is accepted.
	if _, err := io.WriteString(a, "GET /login HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.Unauthenticated("127.0.0.1") == 1 })
	dial()
	waitFor(t, func() bool { return l.Unauthenticated("127.0.0.1") == 2 })

	// One closes: its place is free again.
	b.Close()
	waitFor(t, func() bool { return l.Unauthenticated("127.0.0.1") == 1 })
	if got := len(refused); got != 0 {
		t.Errorf("refused %d more connections, want 0", got)
	}
}

// isReset reports whether err ended the connection (a reset), rather than timing out.
func isReset(err error) bool { return err != nil && !os.IsTimeout(err) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met within 5s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
