package identity

import (
	"context"
	"time"
)

// Principal is the verified caller of one request, read from its access token.
// A Principal is never modified after Verify returns it, and Verify returns the same
// Principal for every request that presents the same token (the cache): treat it,
// its slices and its map as read-only.
//
// Claims holds every claim of the token as encoding/json decodes it: numbers are
// float64, arrays []any, objects map[string]any. Expiry is the exp claim.
type Principal struct {
	Issuer   string
	Subject  string
	ClientID string   // the OAuth client (app) the token was issued to: the issuer's client_id_claim, "" when absent
	Groups   []string // from the issuer's groups claim; empty for client-credentials tokens
	Scopes   []string // from scp (array) or scope (space-separated string)
	Claims   map[string]any
	Expiry   time.Time
	// Resource is set when the token was accepted only because its aud names the
	// protected resource of WithAudience, not one of its issuer's audiences.
	Resource string
	// App is set when the token is one the app ClientID holds for itself (a
	// client-credentials token: no person behind it), by its provider's marker: Okta's
	// and RFC 9068's sub == client id, Entra ID's idtyp "app" or oid == sub, Auth0's
	// gty "client-credentials" or sub "<client id>@clients", Keycloak's
	// "service-account-<client id>" username.
	App bool
}

// Reason classifies why a token was refused. Its values are the reason label of
// keyhole_auth_failures_total and never carry token content.
type Reason string

// Reasons for refusing a token.
const (
	ReasonMissing      Reason = "missing"       // no bearer token, or more than one
	ReasonMalformed    Reason = "malformed"     // not a parseable JWS/JWT
	ReasonExpired      Reason = "expired"       // outside its exp/nbf validity window, or no exp
	ReasonBadSignature Reason = "bad_signature" // signature or algorithm not accepted
	ReasonBadAudience  Reason = "bad_audience"  // aud holds none of the configured audiences
	ReasonBadIssuer    Reason = "bad_issuer"    // iss is not a configured issuer
	ReasonUnknownKey   Reason = "unknown_key"   // kid not in the issuer's key set, even after a refetch
)

// Reasons lists every Reason, for pre-initialising metrics.
var Reasons = []Reason{ReasonMissing, ReasonMalformed, ReasonExpired, ReasonBadSignature,
	ReasonBadAudience, ReasonBadIssuer, ReasonUnknownKey}

// Error is a refused token. Its message is safe to show to the client: it never
// includes the token or key material.
type Error struct {
	Reason Reason
	Msg    string
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

func (e *Error) copy() *Error {
	c := *e
	return &c
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal stored by NewContext, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
