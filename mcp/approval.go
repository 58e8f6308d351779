package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/config"
)

// ProgressToken returns params._meta.progressToken of body, one JSON-RPC request, raw
// (a JSON string or number), or nil when the request asks for no progress. Keys match
// exactly, as the MCP SDKs read them: a "_Meta" is not a _meta.
func ProgressToken(body []byte) json.RawMessage {
	var msg struct {
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(body, &msg) != nil {
		return nil
	}
	tok := memberValue(memberValue(msg.Params, "_meta"), "progressToken")
	if len(tok) == 0 || tok[0] != '"' && tok[0] != '-' && (tok[0] < '0' || tok[0] > '9') {
		return nil // absent, or not a string or number: no token the client will recognise
	}
	return tok
}

// memberValue returns the value of key in the JSON object raw, matched exactly, nil when raw
// is not an object or has no such member.
func memberValue(raw json.RawMessage, key string) json.RawMessage {
	var obj map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &obj) != nil {
		return nil
	}
	// encoding/json matches keys without regard to case; a map does not.
	return obj[key]
}

// progressParams are the params of notifications/progress.
type progressParams struct {
	ProgressToken json.RawMessage `json:"progressToken"`
	Progress      int             `json:"progress"`
	Message       string          `json:"message"`
}

// Progress returns a notifications/progress message for token: progress (which must grow
// with each notification of one request) and a message for the person watching.
func Progress(token json.RawMessage, progress int, message string) []byte {
	b, _ := json.Marshal(struct {
		JSONRPC string         `json:"jsonrpc"`
		Method  string         `json:"method"`
		Params  progressParams `json:"params"`
	}{"2.0", "notifications/progress", progressParams{token, progress, message}})
	return b
}

// SSEEvent frames one JSON-RPC message as a Streamable HTTP server-sent event. A message
// that spans lines becomes one data line per line, which the client joins back with
// newlines.
func SSEEvent(msg []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: message\n")
	for _, l := range bytes.Split(bytes.TrimRight(msg, "\r\n"), []byte("\n")) {
		b.WriteString("data: ")
		b.Write(bytes.TrimSuffix(l, []byte("\r")))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// Approvers describes who may approve under a: "group crm-admins", "groups a or b and
// subject alice@example.com", for the model and the person waiting.
func Approvers(a *config.Allow) string {
	var parts []string
	for _, l := range []struct {
		one  string
		vals []string
	}{{"group", a.Groups}, {"scope", a.Scopes}, {"subject", a.Subjects}} {
		switch len(l.vals) {
		case 0:
		case 1:
			parts = append(parts, l.one+" "+l.vals[0])
		default:
			parts = append(parts, l.one+"s "+strings.Join(l.vals, " or "))
		}
	}
	if len(a.Claims) > 0 {
		parts = append(parts, "the configured claims")
	}
	if len(parts) == 0 {
		return "the configured approvers"
	}
	return strings.Join(parts, " and ")
}

// WaitingText is the progress message of a call held for approval.
func WaitingText(approvalID, approvers string, left time.Duration) string {
	return fmt.Sprintf("waiting for approval %s by %s (%s left in this hold)", approvalID, approvers, left.Round(time.Second))
}

// DeniedText is what the model reads when an approver denied m: who denied it (by
// comment, when one was given), the approval id, that nothing was done and that the same
// call will be refused again until the denial lapses at until.
func DeniedText(m *Message, approvalID, comment, requestID string, until time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Keyhole refused %s %s: an approver denied it (approval id %s)", m.Method, m.Name, approvalID)
	if comment != "" {
		fmt.Fprintf(&b, ", saying %q", comment)
	}
	fmt.Fprintf(&b, ". Nothing was done. Do not retry the same call: it stays denied until %s. Request id: %s.",
		until.UTC().Format(time.RFC3339), requestID)
	return b.String()
}

// ExpiredText is what the model reads when the approval of m expired before it was
// decided or used: nothing was done, and calling again asks for a new approval.
func ExpiredText(m *Message, approvalID, requestID string) string {
	return fmt.Sprintf("Keyhole refused %s %s: approval %s expired before it was decided or used. Nothing was done. "+
		"Call again with the same arguments to ask for a new approval. Request id: %s.", m.Method, m.Name, approvalID, requestID)
}
