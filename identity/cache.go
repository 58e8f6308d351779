package identity

import (
	"encoding/binary"
	"sync"
)

// maxCacheShards bounds the lock striping of the token cache.
const maxCacheShards = 64

// tokenCache maps sha256(raw token) to its verified Principal until the token's exp.
// It is bounded, safe for concurrent use, and striped so that hits on many cores do
// not contend on one lock. Keys are hashes: the cache holds no bearer token.
type tokenCache struct {
	shards   []cacheShard
	mask     uint32
	perShard int
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]cacheEntry
	_  [40]byte // keeps neighbouring shards' locks off one cache line
}

// cacheEntry is one verified token. It is served while now < exp and the issuer's
// key-set generation still equals gen: a refresh that removes a key moves the
// generation, so tokens verified before it are verified again (and refused if their
// key is gone).
type cacheEntry struct {
	p      *Principal
	exp    int64 // Unix nanoseconds
	keys   *keySet
	gen    uint64
	claims *claimSet // the claim set p.Claims was trimmed to
}

func (e *cacheEntry) live(now int64) bool {
	return now < e.exp && e.gen == e.keys.gen.Load()
}

// newTokenCache returns a cache of at most size entries (size > 0).
func newTokenCache(size int) *tokenCache {
	n := 1
	for n < maxCacheShards && 2*n <= size {
		n *= 2
	}
	c := &tokenCache{shards: make([]cacheShard, n), mask: uint32(n - 1), perShard: size / n}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]cacheEntry)
	}
	return c
}

func (c *tokenCache) shard(k *[32]byte) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint32(k[:4])&c.mask]
}

// get returns the live Principal cached under k whose claims were trimmed to cs, or nil.
func (c *tokenCache) get(k *[32]byte, now int64, cs *claimSet) *Principal {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[*k]
	s.mu.RUnlock()
	if !ok || !e.live(now) || e.claims != cs {
		return nil
	}
	return e.p
}

// put stores e under k. A full shard first drops its dead entries (expired, or of an
// older key-set generation), then, if still full, an arbitrary one.
func (c *tokenCache) put(k *[32]byte, e cacheEntry, now int64) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.perShard {
		for key, old := range s.m {
			if !old.live(now) {
				delete(s.m, key)
			}
		}
		for key := range s.m {
			if len(s.m) < c.perShard {
				break
			}
			delete(s.m, key) // map iteration order is random: an arbitrary victim
		}
	}
	s.m[*k] = e
}

// len returns the number of entries, live or not.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
