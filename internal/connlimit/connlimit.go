// Package connlimit bounds the connections a peer may hold open before any request on
// them has authenticated.
//
// Every connection costs the gateway a goroutine, a descriptor and buffers before a single
// token has been checked; a peer that opens connections and never authenticates could take
// them all. A Listener counts, per peer, the connections not yet marked authenticated,
// and closes a new one at once, before reading a byte of it, when its peer already holds
// the maximum. A peer is an IPv4 address, or an IPv6 /64: an IPv6 client is routed a
// whole /64 and can take a new address from it for every connection.
package connlimit

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Listener is a net.Listener that refuses a peer's connection beyond Max unauthenticated
// ones. A peer is an IPv4 address (an IPv4-mapped IPv6 address is the IPv4 one), or the
// /64 of an IPv6 address. It is safe for concurrent use.
type Listener struct {
	net.Listener
	max     atomic.Int64
	refused func() // called for each refused connection; may be nil

	mu    sync.Mutex
	peers map[string]int // unauthenticated connections by peer (peerOf)
}

// NewListener wraps ln with a limit of max unauthenticated connections per peer
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
		peer := peerOf(c.RemoteAddr())
		max := l.max.Load()
		l.mu.Lock()
		if max > 0 && int64(l.peers[peer]) >= max {
			l.mu.Unlock()
			// Refused fast: no byte read, no goroutine started, no TLS handshake.
			c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		l.peers[peer]++
		l.mu.Unlock()
		return &Conn{Conn: c, l: l, peer: peer}, nil
	}
}

// release forgets one unauthenticated connection of peer.
func (l *Listener) release(peer string) {
	l.mu.Lock()
	if l.peers[peer]--; l.peers[peer] <= 0 {
		delete(l.peers, peer)
	}
	l.mu.Unlock()
}

// Unauthenticated returns how many connections of the peer of IP address ip (for an
// IPv6 address, of any address in its /64) count against the limit.
func (l *Listener) Unauthenticated(ip string) int {
	peer := ip
	if a, err := netip.ParseAddr(ip); err == nil {
		peer = peerOfAddr(a)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peers[peer]
}

// Conn is a connection a Listener accepted. It counts against its peer's limit until
// Authenticated or Close.
type Conn struct {
	net.Conn
	l    *Listener
	peer string
	once sync.Once
}

// Authenticated stops counting c against its peer's limit: a request on it presented a
// valid token.
func (c *Conn) Authenticated() { c.once.Do(func() { c.l.release(c.peer) }) }

// Close closes the connection and stops counting it.
func (c *Conn) Close() error {
	c.Authenticated()
	return c.Conn.Close()
}

// peerOf returns the peer a connection from a counts against (peerOfAddr); an address
// that is not an IP one counts as itself.
func peerOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return peerOfAddr(ip)
		}
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return peerOfAddr(ip)
	}
	return host
}

// peerOfAddr returns the peer of ip: "192.0.2.1" for an IPv4 address, or one mapped to
// IPv6 (a dual-stack listener sees its IPv4 clients so), and "2001:db8:1:2::/64" for any
// IPv6 address in that /64. An ISP routes a whole /64 (often more) to one IPv6 client,
// which can then use a fresh address for each connection: counted per address, one
// client would pass any limit.
func peerOfAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64) // never fails for an IPv6 address; the zone is dropped
	return p.String()
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
