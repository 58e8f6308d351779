package identity

import "context"

type audienceKey struct{}

// WithAudience returns ctx under which Verify also accepts a token whose aud holds aud,
// besides its issuer's configured audiences: the public URL of one protected resource
// (RFC 8707 resource indicators, RFC 9728), which an OAuth client asks its token for.
// A token accepted only for aud has Principal.Resource set, and is not cached, so that a
// token minted for one resource is never accepted where the context does not name it.
func WithAudience(ctx context.Context, aud string) context.Context {
	return context.WithValue(ctx, audienceKey{}, aud)
}

func audienceFrom(ctx context.Context) string {
	aud, _ := ctx.Value(audienceKey{}).(string)
	return aud
}

// Issuers returns the issuer identifiers the Verifier trusts, in configuration order:
// the authorization servers a protected resource names in its metadata (RFC 9728).
func (v *Verifier) Issuers() []string {
	out := make([]string, len(v.list))
	for i, is := range v.list {
		out[i] = is.name
	}
	return out
}
