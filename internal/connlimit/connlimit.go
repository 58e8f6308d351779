// Package connlimit bounds the connections a peer may hold open before any request on
// them has authenticated.
//
// Every connection costs the gateway a goroutine, a descriptor and buffers before a single
// token has been checked; a peer that opens connections and never authenticates could take
// them all. A Listener counts, per peer IP, the connections not yet marked authenticated,
// and closes a new one at once, before reading a byte of it, when its peer already holds
// the maximum.
package connlimit

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
)

// Listener is a net.Listener that refuses a peer's connection beyond Max unauthenticated
// ones. It is safe for concurrent use.
type Listener struct {
	net.Listener
	max     atomic.Int64
	refused func() // called for each refused connection; may be nil

	mu    sync.Mutex
	peers map[string]int // unauthenticated connections by peer IP
}

// NewListener wraps ln with a limit of max unauthenticated connections per peer IP
// (max < 1: no limit). refused, when not nil, is called for each connection refused.
func NewListener(ln net.Listener, max int, refused func()) *Listener {
	l := &Listener{Listener: ln, refused: refused, peers: map[string]int{}}
	l.SetMax(max)
	return l
}

// SetMax changes the limit for connections accepted from now on (a reload).
func (l *Listener) SetMax(max int) { l.max.Store(int64(max)) }

// Accept returns the next connection within the limit, closing those beyond it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerIP(c.RemoteAddr())
		max := l.max.Load()
		l.mu.Lock()
		if max > 0 && int64(l.peers[ip]) >= max {
			l.mu.Unlock()
			// Refused fast: no byte read, no goroutine started, no TLS handshake.
			c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		l.peers[ip]++
		l.mu.Unlock()
		return &Conn{Conn: c, l: l, ip: ip}, nil
	}
}

// release forgets one unauthenticated connection of ip.
func (l *Listener) release(ip string) {
	l.mu.Lock()
	if l.peers[ip]--; l.peers[ip] <= 0 {
		delete(l.peers, ip)
	}
	l.mu.Unlock()
}

// Unauthenticated returns how many connections of the peer with IP ip count against the limit.
func (l *Listener) Unauthenticated(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peers[ip]
}

// Conn is a connection a Listener accepted. It counts against its peer's limit until
// Authenticated or Close.
type Conn struct {
	net.Conn
	l    *Listener
	ip   string
	once sync.Once
}

// Authenticated stops counting c against its peer's limit: a request on it presented a
// valid token.
func (c *Conn) Authenticated() { c.once.Do(func() { c.l.release(c.ip) }) }

// Close closes the connection and stops counting it.
func (c *Conn) Close() error {
	c.Authenticated()
	return c.Conn.Close()
}

func peerIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type connKey struct{}

// ConnContext is an http.Server ConnContext: it puts c's Conn (under TLS, the connection
// beneath it) in the connection's context, for Authenticated.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if lc, ok := c.(*Conn); ok {
			return context.WithValue(ctx, connKey{}, lc)
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = u.NetConn()
	}
}

// Authenticated marks the connection of a request context (see ConnContext) as
// authenticated. Without one in ctx it does nothing.
func Authenticated(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(*Conn); ok {
		c.Authenticated()
	}
}
