// Package config loads, expands and validates the Keyhole configuration file.
//
// Load reads one YAML file strictly: unknown keys, wrong types, bad durations and sizes,
// unset ${VAR} references and every semantic error are collected and returned together,
// each as a *FieldError that names its YAML line and field path. Nothing in the returned
// Config needs validating again on the hot path.
package config

import (
	"strconv"
	"time"
)

// Default values applied by Parse when a key is absent.
const (
	DefaultListen                = ":8080"
	DefaultAdminListen           = "127.0.0.1:9090"
	DefaultGroupsClaim           = "groups"
	DefaultScopesClaim           = "scp"
	DefaultMaxTokenAge           = 24 * time.Hour
	DefaultUpstreamTimeout       = 30 * time.Second
	DefaultMaxRequestBody        = 10 << 20
	DefaultMaxResponseBodyMasked = 32 << 20
	DefaultRecorderStore         = "sqlite://data/keyhole.db" // relative to the config file's directory
	DefaultRecorderBodyLimit     = 1 << 20
	// DefaultRequestBodyIdleTimeout and the rest are the defaults of limits.*: see Limits.
	DefaultRequestBodyIdleTimeout         = 30 * time.Second
	DefaultRequestBodyTimeout             = 5 * time.Minute
	DefaultResponseWriteIdleTimeout       = 30 * time.Second
	DefaultMaxMaskedBytesHeld             = 256 << 20
	DefaultMaxUnauthenticatedConnsPerPeer = 64
)

// DefaultAlgorithms are the token signing algorithms accepted when an issuer lists none.
var DefaultAlgorithms = []string{"RS256", "ES256"}

// Config is one parsed and validated configuration file.
// A Config is immutable once Parse returns it; share it freely between goroutines.
type Config struct {
	Listen    string               `yaml:"listen"`
	Admin     Admin                `yaml:"admin"`
	Ops       *Ops                 `yaml:"ops"`
	TLS       *TLS                 `yaml:"tls"`
	Identity  Identity             `yaml:"identity"`
	Upstreams map[string]*Upstream `yaml:"upstreams"`
	Guards    []Route              `yaml:"guards"`
	Routes    []Route              `yaml:"routes"`
	Recorder  *Recorder            `yaml:"recorder"`
	Approvals *Approvals           `yaml:"approvals"`
	Masking   *Masking             `yaml:"masking"`
	Limits    Limits               `yaml:"limits"`
	Telemetry Telemetry            `yaml:"telemetry"`

	// Path is the file the config was loaded from, "" when parsed from bytes.
	Path string `yaml:"-"`
	// lines maps a field path such as "routes[2].match.path" to its YAML line.
	lines map[string]int
	// written maps the field path of a value that had a ${VAR} substituted to the value
	// as written, "${VAR}" rather than what may be a secret.
	written map[string]string
}

// Quote returns v, the value at field path p, quoted for an error message as it is
// written in the file: a value that came from the environment may be a secret, so one
// that had a ${VAR} substituted is shown in its ${VAR} form.
func (c *Config) Quote(p, v string) string {
	if s, ok := c.written[p]; ok {
		return strconv.Quote(s)
	}
	return strconv.Quote(v)
}

// Line returns the YAML line of the value at field path p ("routes[2].match.path"),
// or of its nearest ancestor that has one; 0 if none is known.
func (c *Config) Line(p string) int {
	for {
		if n, ok := c.lines[p]; ok {
			return n
		}
		parent, ok := parentPath(p)
		if !ok {
			return 0
		}
		p = parent
	}
}

// parentPath returns the path of p's parent ("routes[2].match" for "routes[2].match.path",
// "upstreams" for `upstreams["a.b"]`), and false when p is a top-level key or "".
// A quoted key may itself hold '.' or '[', so it is skipped whole.
func parentPath(p string) (string, bool) {
	last := -1
	for i := 0; i < len(p); {
		switch p[i] {
		case '.':
			last = i
			i++
		case '[':
			last = i
			i++
			if i < len(p) && p[i] == '"' {
				q, err := strconv.QuotedPrefix(p[i:])
				if err != nil {
					return p[:last], true
				}
				i += len(q)
			}
		default:
			i++
		}
	}
	if last < 0 {
		return "", false
	}
	return p[:last], true
}

// Admin configures the admin plane: health, metrics and the admin API.
type Admin struct {
	Listen string `yaml:"listen"`
	// Allow names who may use the admin API in addition to Roles.
	Allow *Allow `yaml:"allow"`
	// Roles maps a role name (admins, auditors, approvers) to who holds it.
	Roles map[string]*Allow `yaml:"roles"`
	// Clients, when set, are the only client ids (the apps people log in through, such
	// as the CLI's and the console's) whose tokens the admin plane accepts, so a token an
	// agent's app holds for a person can never list records or decide an approval.
	Clients []string `yaml:"clients"`
	// Console, when set, serves the web console at /ui/ on the admin listener, with
	// OpenID Connect login.
	Console *Console `yaml:"console"`
}

// Ops configures the optional operations listener, which serves only /healthz, /readyz
// and /metrics, so that probes and Prometheus never need the admin listener (which
// serves the admin API and the console). nil: no operations listener; the admin
// listener serves those three paths either way.
type Ops struct {
	// Listen is the listener's address, host:port with the host written
	// ("0.0.0.0:9091" for every interface).
	Listen string `yaml:"listen"`
}

// Console configures the web console's login (OpenID Connect authorization code flow
// with PKCE) and its sessions.
type Console struct {
	// Issuer is the identity.issuers entry people log in with; empty: the first one, or
	// the dev issuer when identity.dev is on and no issuer is listed.
	Issuer string `yaml:"issuer"`
	// ClientID is the console's OIDC client (app) at the issuer.
	ClientID string `yaml:"client_id"`
	// ClientSecret, or the content of ClientSecretFile, authenticates a confidential
	// client; neither makes the console a public client, protected by PKCE alone.
	ClientSecret     Secret `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is the console's callback as the browser reaches it: it ends in
	// /ui/callback and is registered with the issuer.
	RedirectURL string `yaml:"redirect_url"`
	// SessionKey (or the content of SessionKeyFile), at least 32 bytes, seals the session
	// cookies; every replica must share it, so that each can read the others' sessions.
	SessionKey     Secret `yaml:"session_key"`
	SessionKeyFile string `yaml:"session_key_file"`
	// IdleTimeout ends a session not used for this long; MaxAge ends every session this
	// long after its login.
	IdleTimeout Duration `yaml:"idle_timeout"`
	MaxAge      Duration `yaml:"max_age"`
}

// Defaults and bounds of the console.
const (
	DefaultConsoleIdleTimeout = Duration(30 * time.Minute)
	DefaultConsoleMaxAge      = Duration(12 * time.Hour)
	// MinSessionKey is the shortest session key: 256 bits.
	MinSessionKey = 32
)

// TLS is a certificate and key for a listener.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Identity configures token verification.
type Identity struct {
	Issuers []Issuer `yaml:"issuers"`
	// Dev enables the built-in local issuer used by `keyhole demo` and `keyhole token`.
	// It is refused unless every listener is on a loopback address.
	Dev bool `yaml:"dev"`
}

// Issuer is one trusted OIDC issuer (an Okta custom authorization server, for instance).
type Issuer struct {
	Issuer      string   `yaml:"issuer"`
	Audiences   []string `yaml:"audiences"`
	GroupsClaim string   `yaml:"groups_claim"`
	ScopesClaim string   `yaml:"scopes_claim"`
	// ClientIDClaim names the claim that holds the client id (the OAuth app the token
	// was issued to). Empty: cid (Okta), then azp (OIDC, Entra v2), then client_id (RFC
	// 9068), then appid (Entra v1).
	ClientIDClaim string `yaml:"client_id_claim"`
	// MaxTokenAge is the longest lifetime (exp - iat, or exp - now without iat) of a
	// token the issuer's tokens may have: a token minted to live for a year is refused.
	MaxTokenAge Duration `yaml:"max_token_age"`
	Algorithms  []string `yaml:"algorithms"`
	// JWKSURL, when set, skips OIDC discovery and fetches keys from this URL.
	JWKSURL string `yaml:"jwks_url"`
}

// Upstream is a backend API that routes forward to.
type Upstream struct {
	URL        string      `yaml:"url"`
	Timeout    Duration    `yaml:"timeout"`
	Credential *Credential `yaml:"credential"`
	TLS        *ClientTLS  `yaml:"tls"`
	// ReplayTargets are the other origins (a staging copy) to which an auditor may
	// replay this upstream's recorded requests, with this upstream's credential.
	ReplayTargets []string `yaml:"replay_targets"`
}

// Credential is a header the gateway sets on every request it forwards to an upstream.
type Credential struct {
	Header string `yaml:"header"`
	// Value is the header value after ${VAR} expansion, or the content of ValueFile.
	Value     Secret `yaml:"value"`
	ValueFile string `yaml:"value_file"`
}

// ClientTLS configures TLS towards an upstream.
type ClientTLS struct {
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Route is one entry of routes or guards. Guards use only Name, Match and Deny.
type Route struct {
	Name        string     `yaml:"name"`
	Match       Match      `yaml:"match"`
	Upstream    string     `yaml:"upstream"`
	Rewrite     *Rewrite   `yaml:"rewrite"`
	Allow       *Allow     `yaml:"allow"`
	Deny        string     `yaml:"deny"`
	Websocket   bool       `yaml:"websocket"`
	Mask        []MaskRule `yaml:"mask"`
	Detect      []string   `yaml:"detect"`
	PassNonJSON bool       `yaml:"pass_non_json"`
	// MaskHeaders names response headers (Set-Cookie, X-Debug-User) whose values the
	// client gets as [REDACTED]; the record holds what the client got.
	MaskHeaders []string  `yaml:"mask_headers"`
	Approval    *Approval `yaml:"approval"`
	// Record is what the recorder keeps of the route's forwarded exchanges: RecordFull
	// (also when empty), RecordMetadata (no bodies) or RecordNone (nothing; refused
	// requests and errors are recorded all the same).
	Record string `yaml:"record"`
	// Retention overrides recorder.retention for the route's records ("7d"); 0 takes
	// recorder.retention. See recorder.Retention for how a shorter and a longer one apply.
	Retention Duration `yaml:"retention"`
	// MCP makes the route an MCP route: POST bodies are JSON-RPC messages judged per
	// tool, resource and prompt; see package mcp.
	MCP *MCP `yaml:"mcp"`
}

// Values of a route's record.
const (
	RecordFull     = "full"
	RecordMetadata = "metadata"
	RecordNone     = "none"
)

// MCP is the policy of an MCP route. Tools, resources and prompts it does not list are
// refused and left out of list answers; initialize, ping, notifications and responses to
// the server's own requests are always allowed for a caller the route allows.
type MCP struct {
	// Resource is the route's public URL: its OAuth protected resource metadata (RFC
	// 9728) is served, and tokens whose audience is this URL are accepted on this route
	// only (RFC 8707). Empty: no discovery, and only the issuers' audiences.
	Resource  string        `yaml:"resource"`
	Tools     []MCPTool     `yaml:"tools"`
	Resources []MCPResource `yaml:"resources"`
	Prompts   []MCPPrompt   `yaml:"prompts"`
	// Methods are further protocol methods (completion/complete, logging/setLevel) the
	// server may be sent; globs allowed.
	Methods []string `yaml:"methods"`
}

// MCPTool is one entry of mcp.tools: the first entry whose name (exact or glob) matches
// and whose when holds decides a tools/call.
type MCPTool struct {
	Name string `yaml:"name"`
	// Allow has the keys of a route's allow; nil means the route's allow.
	Allow *Allow `yaml:"allow"`
	// Deny refuses the call with this reason.
	Deny string   `yaml:"deny"`
	When *MCPWhen `yaml:"when"`
	// Mask masks the call's result: structuredContent and every content text that is
	// JSON, with the same rules (see proxy/mcp_mask.go).
	Mask []MaskRule `yaml:"mask"`
	// Approval holds a matching call for a human's decision; the approval binds the
	// requester, route, tool name and canonical arguments. Hold defaults to
	// DefaultMCPApprovalHold.
	Approval *Approval `yaml:"approval"`
}

// MCPWhen is a condition on a tool call.
type MCPWhen struct {
	// Arguments maps a dotted path in params.arguments to accepted values, as when.body.
	Arguments map[string]Scalars `yaml:"arguments"`
}

// MCPResource is one entry of mcp.resources, matched by URI glob.
type MCPResource struct {
	URI   string `yaml:"uri"`
	Allow *Allow `yaml:"allow"`
	Deny  string `yaml:"deny"`
}

// MCPPrompt is one entry of mcp.prompts, matched by name glob.
type MCPPrompt struct {
	Name  string `yaml:"name"`
	Allow *Allow `yaml:"allow"`
	Deny  string `yaml:"deny"`
}

// Match selects requests by method, path pattern and optional conditions.
type Match struct {
	// Methods lists HTTP methods; "*" matches any. HEAD is judged as GET.
	Methods []string `yaml:"methods"`
	// Path is a chi pattern: {name} matches one segment, a trailing /* any suffix.
	Path string `yaml:"path"`
	When *When  `yaml:"when"`
}

// When holds extra conditions of a Match; all that are set must hold.
type When struct {
	// Query maps a query parameter to accepted values: the parameter must be present
	// and every value it has must be one of them.
	Query map[string]Scalars `yaml:"query"`
	// Headers maps a header name to accepted values, with the same rule as Query.
	Headers map[string]Scalars `yaml:"headers"`
	// Body maps a gjson path in the JSON request body to accepted values.
	Body map[string]Scalars `yaml:"body"`
	// BodyRegex is an RE2 expression matched against the raw request body.
	BodyRegex string `yaml:"body_regex"`
}

// Rewrite changes the path forwarded upstream after matching.
type Rewrite struct {
	StripPrefix string `yaml:"strip_prefix"`
	AddPrefix   string `yaml:"add_prefix"`
}

// Allow lists what a principal must hold: any one value within a key, every key that is set.
type Allow struct {
	Groups   []string           `yaml:"groups"`
	Scopes   []string           `yaml:"scopes"`
	Subjects []string           `yaml:"subjects"`
	Claims   map[string]Scalars `yaml:"claims"`
}

// MaskRule masks one gjson path of a JSON response.
type MaskRule struct {
	Field  string `yaml:"field"`
	Action string `yaml:"action"`
	With   string `yaml:"with"`
	// CaseInsensitive matches the keys of Field under Unicode simple case folding (as Go's
	// encoding/json matches struct fields): field ssn then masks "SSN" and "Ssn" too.
	CaseInsensitive bool `yaml:"case_insensitive"`
}

// Approval holds a request for a human decision.
type Approval struct {
	Approvers    Allow    `yaml:"approvers"`
	MinApprovals int      `yaml:"min_approvals"`
	Hold         Duration `yaml:"hold"`
	TTL          Duration `yaml:"ttl"`
	// PendingStatus is the HTTP status of an approval_pending answer: 403 (the default)
	// or 202, for clients that hide every 4xx body from the model. A request asks for
	// 202 itself with Prefer: respond-async (RFC 7240).
	PendingStatus int `yaml:"pending_status"`
}

// Recorder configures the exchange recorder. Parse always sets it, with defaults when
// the file has no recorder section: every gateway records.
type Recorder struct {
	// Store is the store's DSN; a relative sqlite:// path is resolved against the
	// config file's directory.
	Store         string   `yaml:"store"`
	Mode          string   `yaml:"mode"`
	BodyLimit     ByteSize `yaml:"body_limit"`
	RedactHeaders []string `yaml:"redact_headers"`
	Retention     Duration `yaml:"retention"`
	// Postgres tunes a postgres:// store; Parse sets it, with defaults, for one.
	Postgres *Postgres `yaml:"postgres"`
	// Export pushes every completed exchange to a SIEM's webhook; nil (the default)
	// pushes none.
	Export *Export `yaml:"export"`
}

// Export configures the push of completed exchanges, in chain order and in batches, to
// an HTTP endpoint that takes newline-delimited JSON (Splunk HEC raw, Vector's or Fluent
// Bit's http source, Cribl, a data lake's collector). Delivery is at least once: the
// store keeps a cursor of what the endpoint acknowledged.
type Export struct {
	// Webhook is the endpoint's URL. It is a secret, as it may carry a token: never
	// quoted in errors, logs or metrics.
	Webhook Secret `yaml:"webhook"`
	// Format is ocsf (the default) or jsonl, as the stream's format= takes.
	Format string `yaml:"format"`
	// Batch is the most exchanges one POST carries (default 100).
	Batch int `yaml:"batch"`
	// Interval is how often the store is read for new exchanges (default 5s): the delay
	// of an exchange on its way out while the endpoint is up.
	Interval Duration `yaml:"interval"`
	// Timeout bounds one POST (default 10s).
	Timeout Duration `yaml:"timeout"`
	// Headers are sent with every POST (Authorization: "Splunk ${HEC_TOKEN}"): values
	// are secrets.
	Headers map[string]Secret `yaml:"headers"`
}

// Defaults and bounds of recorder.export.
const (
	DefaultExportFormat   = "ocsf"
	DefaultExportBatch    = 100
	MaxExportBatch        = 10000
	DefaultExportInterval = Duration(5 * time.Second)
	DefaultExportTimeout  = Duration(10 * time.Second)
)

// Postgres tunes the PostgreSQL store shared by replicas.
type Postgres struct {
	// PasswordFile holds the password when the DSN has none (a mounted secret); a
	// relative path is resolved against the config file's directory.
	PasswordFile string `yaml:"password_file"`
	// MaxConns bounds each replica's pool.
	MaxConns int `yaml:"max_conns"`
	// ConnectTimeout bounds opening a connection; StatementTimeout every statement.
	ConnectTimeout   Duration `yaml:"connect_timeout"`
	StatementTimeout Duration `yaml:"statement_timeout"`
}

// Defaults of recorder.postgres.
const (
	DefaultPostgresMaxConns         = 10
	DefaultPostgresConnectTimeout   = Duration(5 * time.Second)
	DefaultPostgresStatementTimeout = Duration(10 * time.Second)
)

// Telemetry configures what the gateway reports to observability backends. Its zero
// value reports nothing.
type Telemetry struct {
	// OTLP exports traces over OTLP/HTTP; nil (the default) exports none.
	OTLP *OTLP `yaml:"otlp"`
}

// OTLP configures the export of traces with OTLP over HTTP (protobuf).
type OTLP struct {
	// Endpoint is the collector's base URL (http://collector:4318); /v1/traces is
	// appended to its path. It is not quoted in errors: it may carry a token.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of traces started here that are sampled, 0 to 1 (default
	// 1). A request that carries a traceparent follows its parent's sampling decision.
	SampleRatio float64 `yaml:"sample_ratio"`
	// Headers are sent with every export (a vendor's API key): values are secrets.
	Headers map[string]Secret `yaml:"headers"`
	// Timeout bounds one export request (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// Defaults of telemetry.otlp.
const (
	DefaultOTLPSampleRatio = 1.0
	DefaultOTLPTimeout     = Duration(10 * time.Second)
)

// Approvals configures approvals across routes. Parse always sets it, with defaults.
type Approvals struct {
	Notify Notify `yaml:"notify"`
	// PublicURL is the admin plane's address as approvers reach it, for links.
	PublicURL string `yaml:"public_url"`
	// MaxPendingPerSubject bounds the pending approvals one requester may have open;
	// beyond it requests are answered 429, so a looping agent cannot flood approvers.
	MaxPendingPerSubject int `yaml:"max_pending_per_subject"`
}

// Defaults of approvals.
const (
	DefaultApprovalHold = Duration(60 * time.Second)
	// DefaultMCPApprovalHold is the hold of an mcp tool's approval: below the 30 s and
	// 60 s request timeouts of common MCP clients, so the client reads the answer.
	DefaultMCPApprovalHold      = Duration(20 * time.Second)
	DefaultApprovalTTL          = Duration(15 * time.Minute)
	DefaultMaxPendingPerSubject = 20
)

// Notify configures where approval requests are announced.
type Notify struct {
	Webhook string `yaml:"webhook"`
}

// Masking holds deployment-wide settings of response masking.
type Masking struct {
	// HashKey keys the HMAC of mask action hash, so hashed values stay joinable across
	// responses and replicas but cannot be guessed by hashing candidates. At least 16 bytes.
	HashKey Secret `yaml:"hash_key"`
}

// Limits bounds what the gateway buffers, and for how long a client may keep it waiting.
type Limits struct {
	MaxRequestBody        ByteSize `yaml:"max_request_body"`
	MaxResponseBodyMasked ByteSize `yaml:"max_response_body_masked"`
	// RequestBodyIdleTimeout is the longest a request body may pause between two reads,
	// and RequestBodyTimeout the longest all of it may take to arrive, whether the gateway
	// judges, records or streams it to the upstream. A slower client gets 408.
	RequestBodyIdleTimeout Duration `yaml:"request_body_idle_timeout"`
	RequestBodyTimeout     Duration `yaml:"request_body_timeout"`
	// ResponseWriteIdleTimeout is the longest one write of a response may wait on a
	// client that does not read; reset on progress, so slow readers of long streams live.
	ResponseWriteIdleTimeout Duration `yaml:"response_write_idle_timeout"`
	// MaxMaskedBytesHeld bounds the bytes of masked response bodies the gateway holds at
	// once, across all requests; a masked response beyond it is refused with 503.
	MaxMaskedBytesHeld ByteSize `yaml:"max_masked_bytes_held"`
	// MaxUnauthenticatedConnsPerPeer bounds the data-plane connections one peer IP may
	// hold before a request on them authenticates; further ones are closed on accept.
	MaxUnauthenticatedConnsPerPeer int `yaml:"max_unauthenticated_conns_per_peer"`
}
