package identity_test

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"unsafe"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
)

// benchToken returns a ready verifier and an Okta-shaped user token (about 900 bytes)
// that it has verified once.
func benchToken(b *testing.B, opts identity.Options) (*identity.Verifier, string) {
	iss := testkit.NewIssuer(b)
	v := newVerifier(b, iss.Config(), opts)
	raw := iss.Mint(b, identity.TokenRequest{
		Subject: "alice.example@acme.com",
		Groups:  []string{"Everyone", "crm-readers", "crm-writers", "engineering", "keyhole-admins"},
		Scopes:  []string{"openid", "profile", "email", "crm.read", "crm.write"},
	})
	if _, err := v.Verify(context.Background(), raw); err != nil {
		b.Fatalf("Verify: %v", err)
	}
	return v, raw
}

func BenchmarkVerifyCached(b *testing.B) {
	v, raw := benchToken(b, identity.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(raw)), "token-bytes")
}

func BenchmarkVerifyCachedParallel(b *testing.B) {
	v, raw := benchToken(b, identity.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(ctx, raw); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCacheKey is the share of a cache hit spent hashing the token.
func BenchmarkCacheKey(b *testing.B) {
	_, raw := benchToken(b, identity.Options{})
	for b.Loop() {
		_ = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	v, raw := benchToken(b, identity.Options{CacheSize: -1})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBearerToken(b *testing.B) {
	// The length of the Okta-shaped token above; BearerToken's cost is per byte.
	tok := "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9." + strings.Repeat("eyJzdWIiOiJhbGljZSIsImV4cCI6MX0", 18) + "." + strings.Repeat("c2lnbmF0dXJl", 28)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, e := identity.BearerToken(h); e != nil {
			b.Fatal(e)
		}
	}
	b.ReportMetric(float64(len(tok)), "token-bytes")
}
