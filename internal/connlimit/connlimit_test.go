package connlimit_test

import (
	"context"
	"fmt"
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

// TestIPv6PeerIsItsSlash64 counts an IPv6 client by its /64: new addresses from the same
// /64 do not buy it more unauthenticated connections, while the next /64 is another peer.
// The connections are real TCP ones over 127.0.0.1; only the peer addresses the
// listener reports are set by the test, as no host can hold a /64 of its own here.
func TestIPv6PeerIsItsSlash64(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan string, 1)
	l := connlimit.NewListener(&remoteAs{Listener: inner, next: next}, 2, nil)
	srv := &http.Server{ConnContext: connlimit.ConnContext, Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	for _, c := range []struct {
		from    string
		refused bool
		peer    string // any address of the peer's
		want    int    // its unauthenticated connections afterwards
	}{
		{"[2001:db8:1:2::a]:40000", false, "2001:db8:1:2::1", 1},
		{"[2001:db8:1:2:ffff:ffff:ffff:fffe]:40001", false, "2001:db8:1:2:abcd::", 2},
		{"[2001:db8:1:2:1234:5678:9abc:def0]:40002", true, "2001:db8:1:2::a", 2},
		{"[2001:db8:1:3::a]:40003", false, "2001:db8:1:3::ffff", 1},
		{"[2001:db8:1:3::b]:40004", false, "2001:db8:1:3::a", 2},
		{"[2001:db8:1:3::c]:40005", true, "2001:db8:1:3::c", 2},
	} {
		next <- c.from
		conn, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if c.refused {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
				t.Errorf("connection from %s: read = %v, want it closed at once", c.from, err)
			}
		}
		waitCount(t, l, c.peer, c.want)
	}
	if got := l.Unauthenticated("2001:db8:1:4::a"); got != 0 {
		t.Errorf("2001:db8:1:4::/64 holds %d connections, want 0", got)
	}
}

// remoteAs is a listener whose connections report, as their peer, the addresses received
// from next, one per connection.
type remoteAs struct {
	net.Listener
	next chan string
}

func (l *remoteAs) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	a, err := net.ResolveTCPAddr("tcp", <-l.next)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &remoteConn{Conn: c, remote: a}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c *remoteConn) RemoteAddr() net.Addr { return c.remote }

// TestIPv4MappedPeerIsIPv4: a dual-stack listener sees its IPv4 clients as IPv4-mapped
// IPv6 addresses (::ffff:127.0.0.1); each counts as its own IPv4 address, not all of them
// as one IPv6 /64 (::/64), and apart from the IPv6 clients.
func TestIPv4MappedPeerIsIPv4(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener here: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	l := connlimit.NewListener(ln, 1, nil)
	srv := &http.Server{ConnContext: connlimit.ConnContext, Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	dialFrom := func(local, remote string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", net.JoinHostPort(remote, fmt.Sprint(port)))
		if err != nil {
			t.Skipf("dial %s from %s: %v", remote, local, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dialFrom("127.0.0.1", "127.0.0.1")
	waitCount(t, l, "127.0.0.1", 1)
	if got := l.Unauthenticated("::ffff:127.0.0.1"); got != 1 {
		t.Errorf("::ffff:127.0.0.1 holds %d connections, want 1 (it is 127.0.0.1)", got)
	}
	dialFrom("127.0.0.2", "127.0.0.1")
	waitCount(t, l, "127.0.0.2", 1)
	dialFrom("::1", "::1")
	waitCount(t, l, "::1", 1)

	// 127.0.0.1 is at its limit: its next connection is closed at once.
	c := dialFrom("127.0.0.1", "127.0.0.1")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("second connection from 127.0.0.1: read = %v, want it closed at once", err)
	}
}

// waitCount waits up to 5s for the peer of address ip to hold want unauthenticated
// connections.
func waitCount(t *testing.T, l *connlimit.Listener, ip string, want int) {
	t.Helper()
	got := l.Unauthenticated(ip)
	for deadline := time.Now().Add(5 * time.Second); got != want && time.Now().Before(deadline); got = l.Unauthenticated(ip) {
		time.Sleep(5 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("the peer of %s holds %d unauthenticated connections, want %d", ip, got, want)
	}
}
