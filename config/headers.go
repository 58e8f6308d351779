package config

import (
	"net/http"
	"strings"
)

// StrippedRequestHeader reports whether the gateway removes the header name from every
// client request before judging or forwarding it: identity and routing are the gateway's
// to say (the token, the route), so none of these may tell an upstream otherwise. A
// when.headers condition on such a header could never hold, and is a config error.
func StrippedRequestHeader(name string) bool {
	k := http.CanonicalHeaderKey(name)
	switch k {
	case "Cookie", "Proxy-Authorization",
		"Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip",
		"X-Http-Method-Override", "X-Method-Override", "X-Http-Method",
		"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri":
		return true
	}
	// Underscored names are dropped as nginx does by default: CGI-style backends (PHP,
	// Django) read X_Api_Key and X-Api-Key as one header.
	return strings.HasPrefix(k, "X-Forwarded-") || strings.HasPrefix(k, "X-Keyhole-") || strings.Contains(k, "_")
}

// unjudgeableHeader returns why a when.headers condition on name can never be judged, or "".
func unjudgeableHeader(name string) string {
	switch http.CanonicalHeaderKey(name) {
	case "Authorization":
		return "the client's Authorization is the token the gateway verifies and removes; use allow"
	case "Host":
		return "Host is not a header condition"
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return "hop-by-hop headers never reach the upstream"
	}
	if StrippedRequestHeader(name) {
		return "the gateway removes it from every client request"
	}
	return ""
}
