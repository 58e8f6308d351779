// Package identity verifies OAuth 2.0 access tokens (Okta custom authorization servers,
// or any OIDC issuer that signs JWTs) and turns them into a Principal.
//
// A Verifier holds one go-oidc verifier per configured issuer, each backed by this
// package's own key set: keys live in an atomic snapshot, an unknown kid triggers at
// most one JWKS refetch per MinRefetchInterval, keys are refreshed every
// RefreshInterval, and a failed fetch keeps the last good keys. Verified tokens are
// cached until they expire; a refresh that removes a key invalidates the cached
// tokens of that issuer.
//
// Every refusal is an *Error whose Reason is the reason label of
// keyhole_auth_failures_total and whose message is safe to show to the client.
//
// DevIssuer is a local issuer for `keyhole demo` and `keyhole token`.
package identity
