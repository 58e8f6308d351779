package identity

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

func cacheKey(i int) *[32]byte {
	k := sha256.Sum256(fmt.Appendf(nil, "token-%d", i))
	return &k
}

func TestTokenCacheBound(t *testing.T) {
	for _, size := range []int{1, 3, 10, 100, 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := newTokenCache(size)
			ks := &keySet{}
			for i := range 5 * size {
				c.put(cacheKey(i), cacheEntry{p: &Principal{}, exp: 100, keys: ks}, 0)
				if n := c.len(); n > size {
					t.Fatalf("after %d puts the cache holds %d entries, bound %d", i+1, n, size)
				}
			}
			if n := c.len(); n < size/2 {
				t.Errorf("cache of %d holds only %d entries when full", size, n)
			}
		})
	}
}

func TestTokenCacheEvictsExpiredFirst(t *testing.T) {
	c := newTokenCache(1) // one shard: eviction is deterministic apart from the victim
	c.perShard = 4
	ks := &keySet{}
	live := &Principal{Subject: "live"}
	for i := range 3 {
		c.put(cacheKey(i), cacheEntry{p: &Principal{}, exp: 10, keys: ks}, 0) // expire at 10
	}
	c.put(cacheKey(100), cacheEntry{p: live, exp: 1000, keys: ks}, 0)
	// At time 20 the three expired entries go, the live one stays.
	c.put(cacheKey(200), cacheEntry{p: &Principal{}, exp: 1000, keys: ks}, 20)
	if got := c.get(cacheKey(100), 20, nil); got != live {
		t.Errorf("live entry evicted while expired ones were present")
	}
	if n := c.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
}

func TestTokenCacheGeneration(t *testing.T) {
	c := newTokenCache(10)
	ks := &keySet{}
	p := &Principal{}
	c.put(cacheKey(1), cacheEntry{p: p, exp: 100, keys: ks, gen: ks.gen.Load()}, 0)
	if got := c.get(cacheKey(1), 50, nil); got != p {
		t.Fatalf("get = %v, want the entry", got)
	}
	if got := c.get(cacheKey(1), 100, nil); got != nil {
		t.Errorf("get at exp = %v, want nil", got)
	}
	ks.gen.Add(1) // a refresh removed a key
	if got := c.get(cacheKey(1), 50, nil); got != nil {
		t.Errorf("get after key removal = %v, want nil", got)
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	body := []byte(`{"keys":[
		{"kty":"oct","kid":"sym","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
		{"kty":"EC","kid":"enc","use":"enc","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
		{"kty":"EC","kid":"k256","alg":"ES256K","crv":"secp256k1","x":"x","y":"y"},
		{"kty":"OKP","kid":"x448","crv":"X448","x":"x"},
		{"kty":"EC","kid":"ok","alg":"ES256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
	]}`)
	keys, err := parseJWKS(body)
	if err != nil {
		t.Fatalf("parseJWKS: %v", err)
	}
	if len(keys) != 1 || keys[0].kid != "ok" {
		t.Errorf("parseJWKS kept %v, want only kid ok", keys)
	}
	if _, err := parseJWKS([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)); err == nil {
		t.Error("parseJWKS of a set without usable keys succeeded, want an error")
	}
	if _, err := parseJWKS([]byte(`<html>`)); err == nil {
		t.Error("parseJWKS of HTML succeeded, want an error")
	}
}
