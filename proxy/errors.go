package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/keyholehq/keyhole/identity"
)

// Decision labels of keyhole_requests_total.
const (
	labelAllowed         = "allowed"
	labelDenied          = "denied"
	labelForbidden       = "forbidden"
	labelUnauthenticated = "unauthenticated"
	labelNoRoute         = "no_route"
	labelError           = "error"
)

// refusal is a request the gateway answers itself. Its code and message go to the client;
// cause, if any, is internal detail for the log line only.
type refusal struct {
	status   int
	code     string // the spec's error code: forbidden, no_route, ...
	msg      string
	decision string // decision label for metrics and the log
	cause    error
	header   http.Header // extra response headers (WWW-Authenticate, Allow)
	body     any         // the JSON body when not the spec's error body (a 202 approval_pending)
}

func (r *refusal) Error() string { return r.code + ": " + r.msg }

// clientClosed is the outcome of a request whose client went away before it had its
// answer: nobody is left to send a refusal to, but the log and the record say why.
func clientClosed(cause error) *refusal {
	return &refusal{status: 499, code: "client_closed", msg: "client closed the request", decision: labelError, cause: cause}
}

func badRequest(msg string) *refusal {
	return &refusal{status: http.StatusBadRequest, code: "bad_request", msg: msg, decision: labelError}
}

// statusFor maps any error met while serving a request to the refusal the client sees.
// It is the only place that chooses statuses and client-facing messages for errors, so
// internal detail (upstream addresses, stack traces, secrets) never reaches a body.
func statusFor(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	var ie *identity.Error
	if errors.As(err, &ie) {
		h := http.Header{}
		if ie.Reason == identity.ReasonMissing {
			h.Set("WWW-Authenticate", `Bearer realm="keyhole"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer realm="keyhole", error="invalid_token", error_description=`+quote(ie.Msg))
		}
		return &refusal{status: http.StatusUnauthorized, code: "unauthenticated", msg: ie.Msg,
			decision: labelUnauthenticated, header: h}
	}
	var me *maskError
	if errors.As(err, &me) {
		return &refusal{status: http.StatusBadGateway, code: "mask_failed", msg: me.msg, decision: labelError, cause: err}
	}
	var ue *upstreamBodyError
	if errors.As(err, &ue) && ue.kind == kindStalled {
		return &refusal{status: http.StatusGatewayTimeout, code: "upstream_timeout",
			msg: "the upstream stopped sending its response", decision: labelError, cause: err}
	}
	if errors.As(err, &ue) {
		return &refusal{status: http.StatusBadGateway, code: "upstream_truncated",
			msg: "the upstream's response ended before it was complete", decision: labelError, cause: err}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &refusal{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			msg: "request body is larger than the gateway accepts", decision: labelError, cause: err}
	}
	if upstreamTimedOut(err) {
		return &refusal{status: http.StatusGatewayTimeout, code: "upstream_timeout",
			msg: "the upstream did not answer in time", decision: labelError, cause: err}
	}
	return &refusal{status: http.StatusBadGateway, code: "upstream_error",
		msg: "the upstream could not be reached or answered badly", decision: labelError, cause: err}
}

func upstreamTimedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// upstreamErrorKind is the kind label of keyhole_upstream_errors_total.
func upstreamErrorKind(err error) string {
	var op *net.OpError
	var ue *upstreamBodyError
	switch {
	case errors.As(err, &ue):
		return ue.kind
	case upstreamTimedOut(err):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &op) && op.Op == "dial":
		return "connect"
	}
	return "protocol"
}

// quote returns s as an RFC 9110 quoted-string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

type errorBody struct {
	Error     string `json:"error"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// writeRefusal writes the spec's JSON error body.
func writeRefusal(w http.ResponseWriter, rf *refusal, requestID string) {
	h := w.Header()
	for k, v := range rf.header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(rf.status)
	if rf.body != nil {
		_ = json.NewEncoder(w).Encode(rf.body)
		return
	}
	_ = json.NewEncoder(w).Encode(errorBody{Error: rf.code, Message: rf.msg, RequestID: requestID})
}
