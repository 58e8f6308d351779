package identity

import "strings"

// appToken reports whether claims are those of a token an application holds for
// itself (the client-credentials grant: no person behind it), not one it holds for a
// person. sub and clientID are the token's subject and client id (Principal.Subject and
// Principal.ClientID).
//
// Providers mark such tokens differently, and each marker below is one provider's:
// none appears in a token a person holds, since a person's token that looked like an
// app's would keep that person from approving what others asked through the same app
// (approvals.IsRequester).
//
//   - Okta and RFC 9068 §2.2: sub is the client id.
//   - Entra ID: idtyp is "app" (an optional claim), or oid, the caller's object id, is
//     sub: for an application the subject is its service principal's object id, for a
//     person it is an identifier pairwise to the app, never the person's oid.
//   - Auth0: gty is "client-credentials", or sub is the client id followed by "@clients".
//   - Keycloak: preferred_username is the service-account user's name,
//     "service-account-" and the client id, or the legacy clientId claim of the service
//     account's mappers is the client id.
func appToken(claims map[string]any, sub, clientID string) bool {
	str := func(name string) string { s, _ := claims[name].(string); return s }
	if sub == "" {
		return false
	}
	if clientID != "" {
		switch {
		case sub == clientID, // Okta, RFC 9068
			sub == clientID+"@clients", // Auth0
			strings.EqualFold(str("preferred_username"), keycloakServiceAccount+clientID), // Keycloak
			str("clientId") == clientID: // older Keycloak
			return true
		}
	}
	return str("idtyp") == "app" || str("oid") == sub || str("gty") == "client-credentials"
}

// keycloakServiceAccount prefixes the username of a Keycloak client's service account.
const keycloakServiceAccount = "service-account-"
