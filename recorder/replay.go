package recorder

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
)

// ReplayError is a replay refused for a reason the auditor can act on (an unknown
// target, an upstream no longer configured); Status and Code are what the API answers.
type ReplayError struct {
	Status int
	Code   string
	Msg    string
}

// Error returns the code and message.
func (e *ReplayError) Error() string { return e.Code + ": " + e.Msg }

// Replayable refuses what no configuration makes replayable: a request that never
// reached an upstream, a replay (its identity is the auditor's; replay the original),
// and a request whose recorded form is not what was sent — a truncated body, or a
// credential redacted out of anything the replay would send or be judged by (method,
// path, query, body, a header that is not wholly redacted, the caller's identity). Its
// error is a *ReplayError (409 not_replayable).
func Replayable(x *Exchange) error {
	switch {
	case x.ReplayOf != "":
		return notReplayable("this exchange is a replay; replay the original exchange " + x.ReplayOf)
	case x.Upstream == "" || x.Request.ForwardPath == "":
		return notReplayable("this exchange was never forwarded to an upstream")
	case x.Record == RecordMetadata && x.Request.Body.Size > 0:
		return notReplayable("the route records metadata only: the request body was not kept, so it cannot be replayed")
	case x.Request.Body.Truncated:
		return notReplayable("the recorded request body was truncated at the body limit; it cannot be replayed faithfully")
	}
	redacted := func(s string) bool { return strings.Contains(s, Redacted) }
	where := ""
	switch {
	case redacted(x.Request.Method) || redacted(x.Request.Path) || redacted(x.Request.ForwardPath):
		where = "path"
	case redacted(x.Request.Query):
		where = "query"
	case redacted(x.Request.Body.Text) || x.Request.Body.Encoding == "base64" && bytes.Contains(x.Request.Body.Bytes(), []byte(Redacted)):
		where = "body"
	case x.Identity != nil && (redacted(x.Identity.Issuer) || redacted(x.Identity.Subject) || redacted(x.Identity.ClientID) ||
		redacted(strings.Join(x.Identity.Groups, "\x00")) || redacted(strings.Join(x.Identity.Scopes, "\x00")) ||
		redacted(fmt.Sprint(x.Identity.Claims))):
		where = "caller's identity"
	}
	for k, vs := range x.Request.Header {
		if redacted(k) {
			where = "headers"
		}
		whole := 0
		for _, v := range vs {
			switch {
			case v == Redacted:
				whole++
			case redacted(v):
				where = "header " + k
			}
		}
		if whole > 0 && whole < len(vs) {
			// Some values of the header were redacted by name and some not: dropping it
			// or sending it would both change the request.
			where = "header " + k
		}
	}
	if where != "" {
		return notReplayable("a credential was redacted from the recorded " + where + "; the request cannot be replayed faithfully")
	}
	return nil
}

func notReplayable(msg string) *ReplayError {
	return &ReplayError{Status: http.StatusConflict, Code: "not_replayable", Msg: msg}
}
