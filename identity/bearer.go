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
//     other than Bearer ("Basic x") — there is no bearer token to judge;
//   - ReasonMalformed: scheme Bearer but no token ("Bearer"), more than one part
//     ("Bearer a b"), other than one space after the scheme, or a token with
//     characters outside RFC 6750's b64token.
func BearerToken(h http.Header) (string, *Error) {
	vals := h["Authorization"]
	switch {
	case len(vals) == 0 || (len(vals) == 1 && vals[0] == ""):
		return "", errNoToken
	case len(vals) > 1:
		return "", errTwoHeaders
	}
	v := vals[0]
	scheme, token, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", errNotBearer
	}
	if !isB64Token(token) {
		return "", errBearerFormat
	}
	return token, nil
}

// isB64Token reports whether s is an RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for i < len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' {
			i++
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}
