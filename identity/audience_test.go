package identity_test

import (
	"context"
	"slices"
	"testing"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
)

func TestWithAudience(t *testing.T) {
	iss := testkit.NewIssuer(t)
	v := newVerifier(t, iss.Config(), identity.Options{})
	const resource = "https://keyhole.example.com/crm/mcp"
	forResource := iss.Token(t, map[string]any{"aud": resource})
	ctx := context.Background()

	// Refused first without the resource, then accepted with it, then refused again
	// without it: acceptance for one resource must not be cached for every route.
	_, err := v.Verify(ctx, forResource)
	checkRefusal(t, forResource, err, identity.ReasonBadAudience)
	p, err := v.Verify(identity.WithAudience(ctx, resource), forResource)
	if err != nil {
		t.Fatalf("token for the resource under WithAudience: got %v, want accepted", err)
	}
	if p.Resource != resource {
		t.Errorf("Resource: got %q, want %q", p.Resource, resource)
	}
	_, err = v.Verify(ctx, forResource)
	checkRefusal(t, forResource, err, identity.ReasonBadAudience)
	_, err = v.Verify(identity.WithAudience(ctx, "https://keyhole.example.com/other/mcp"), forResource)
	checkRefusal(t, forResource, err, identity.ReasonBadAudience)

	// A token for the configured audience is accepted under WithAudience too, and is
	// not marked as a resource token.
	plain := iss.Token(t, nil)
	p, err = v.Verify(identity.WithAudience(ctx, resource), plain)
	if err != nil || p.Resource != "" {
		t.Fatalf("token for the configured audience: got %+v, %v, want accepted with no Resource", p, err)
	}
	if got, want := v.Issuers(), []string{iss.URL}; !slices.Equal(got, want) {
		t.Errorf("Issuers: got %v, want %v", got, want)
	}
}
