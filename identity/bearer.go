package identity

import (
	"net/http"
	"strings"
)

var (
	errTwoHeaders   = &Error{Reason: ReasonMissing, Msg: "more than one Authorization header"}
	errNotBearer    = &Error{Reason: ReasonMissing, Msg: "authorization scheme is not Bearer"}
	errBearerFormat = &Error{Reason: ReasonMalformed, Msg: "malformed bearer token"}
)

// BearerToken returns the token of the request's single "Authorization: Bearer <token>"
// header (RFC 6750 §2.1; the scheme is case-insensitive).
//
// Refusals:
//   - ReasonMissing: no Authorization header, an empty one, more than one (a proxy
//     would forward both, and which one counts would be ambiguous), or a scheme
//     other than Bearer ("Basic x", and "Bearer\tx" or "Bearerx", whose scheme is not
//     followed by one space) — there is no bearer token to judge;
//   - ReasonMalformed: scheme Bearer but no token ("Bearer", "Bearer "), more than
//     one part ("Bearer a b"), or more than one space.
//
// The token's characters are not checked here: Verify decodes every segment as strict
// base64url and refuses anything else as malformed, so checking them twice would only
// cost time on every request.
func BearerToken(h http.Header) (string, *Error) {
	vals := h["Authorization"]
	switch {
	case len(vals) == 0 || (len(vals) == 1 && vals[0] == ""):
		return "", errNoToken.copy()
	case len(vals) > 1:
		return "", errTwoHeaders.copy()
	}
	scheme, token, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", errNotBearer.copy()
	}
	if token == "" || strings.IndexByte(token, ' ') >= 0 || strings.IndexByte(token, '\t') >= 0 {
		return "", errBearerFormat.copy()
	}
	return token, nil
}
