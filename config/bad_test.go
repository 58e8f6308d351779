package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// badFiles maps each testdata/*.bad.yaml, one class of mistake per file (many.bad.yaml:
// one of each section), to the exact errors Load must report for it, all at once and
// in line order. Every file there must be listed here, and every error it causes.
var badFiles = []struct {
	file string
	want []string
}{
	{
		"algorithms.bad.yaml",
		[]string{
			`line 5: identity.issuers[0].algorithms[0]: algorithm "HS256" is refused: HMAC needs a secret shared with the issuer, and a token signed with the issuer's public key as that secret would verify`,
			`line 5: identity.issuers[0].algorithms[1]: algorithm "none" is refused: an unsigned token proves nothing`,
			`line 5: identity.issuers[0].algorithms[3]: unknown algorithm "rs256": want one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512`,
			`line 5: identity.issuers[0].algorithms[4]: algorithm "RS256" is listed twice`,
			`line 5: identity.issuers[0].algorithms[5]: unknown algorithm "EdDSA": want one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512`,
			"line 8: identity.issuers[1].algorithms: algorithms is empty; leave it out for the default [RS256, ES256]",
		},
	},
	{
		"aliases.bad.yaml",
		[]string{
			"line 18: routes[2].match: alias *self refers to a value that contains it",
			"line 22: routes[3].match: << merges a mapping or a list of mappings, got a number",
			`line 26: routes[4].match: key "path" is already set at line 26`,
		},
	},
	{
		"allow_empty.bad.yaml",
		[]string{
			"line 12: routes[0].allow: allow must set at least one of groups, scopes, subjects or claims",
			`line 16: routes[1].allow.claims[""]: empty claim name`,
			"line 16: routes[1].allow.groups: groups is empty",
			"line 16: routes[1].allow.scopes[0]: empty scope",
			"line 18: admin.allow: allow must set at least one of groups, scopes, subjects or claims",
			"line 20: admin.roles.auditors: role auditors must set at least one of groups, scopes, subjects or claims",
			`line 21: admin.roles.owners: unknown role "owners": want admins, auditors, approvers`,
			"line 22: admin.roles.approvers.subjects[0]: empty subject",
		},
	},
	{
		"mcp.bad.yaml",
		[]string{
			`line 10: routes[0].match.methods[2]: an mcp route takes only POST, GET and DELETE, not "PUT"`,
			`line 17: routes[0].mcp.tools[0].mask[0].action: unknown action "shred": want redact, remove, hash, last4`,
			`line 19: routes[0].mcp.tools[1].when.arguments[""]: empty key (escape a literal dot as \.)`,
			`line 19: routes[0].mcp.tools[1].when.arguments["a.*"]: glob and gjson syntax (* ? # | @) is not allowed: a path names one value`,
			`line 21: routes[0].mcp.tools[2].name: bad glob "drop_[": syntax error in pattern`,
			"line 22: routes[0].mcp.tools[3].allow: an entry with deny refuses every caller, so it must not set allow",
			"line 23: routes[0].mcp.tools[4].allow.groups: groups is empty",
			`line 23: routes[0].mcp.tools[4].name: name is required: exact, or a glob such as "drop_*"`,
			`line 24: routes[0].mcp.tools[5]: unknown key "colour"`,
			"line 25: routes[0].mcp.resources[0].deny: deny needs a message: the reason the model is given",
			`line 25: routes[0].mcp.resources[0].uri: uri is required: exact, or a glob such as "drop_*"`,
			"line 26: routes[0].mcp.prompts[0].allow: allow must set at least one of groups, scopes, subjects or claims",
			`line 27: routes[0].mcp.methods[1]: method "tools/call" is always allowed or decided by tools, resources and prompts; it cannot be listed here`,
			`line 27: routes[0].mcp.methods[2]: method "notifications/message" is always allowed or decided by tools, resources and prompts; it cannot be listed here`,
			`line 27: routes[0].mcp.methods[3]: bad glob "logging/[": syntax error in pattern`,
			"line 31: routes[1].mcp: a route with deny never forwards a request, so it must not set mcp",
			"line 32: routes[2].upstream: upstream is required: the upstream that allowed requests are forwarded to",
			"line 35: routes[2].approval: route-level approval (it would bind the JSON-RPC id, so no retry could use it) is not yet supported on mcp routes",
			"line 37: routes[2].mask: an mcp route masks per tool: set mask on its mcp.tools entries (detect applies to every answer)",
		},
	},
	{
		"mcp_resource.bad.yaml",
		[]string{
			`line 13: routes[0].mcp.resource: resource must be an absolute URL such as https://keyhole.example.com/crm/mcp, not "crm/mcp"`,
			`line 18: routes[1].mcp.resource: resource must be an https URL (http only on a loopback host), not "http://keyhole.example.com/b/mcp"`,
			"line 23: routes[2].mcp.resource: resource must not carry user info, a query or a fragment (RFC 9728)",
			`line 28: routes[3].mcp.resource: a route with resource must match one exact path, not the pattern "/d/{tenant}/mcp"`,
			`line 33: routes[4].mcp.resource: the path of resource ("/mcp") must be the route's match.path "/e/mcp"`,
			`line 43: routes[6].mcp.resource: resource "https://keyhole.example.com/f/mcp" is already the resource of route first`,
		},
	},
	{
		"mcp_approval.bad.yaml",
		[]string{
			"line 16: routes[0].mcp.tools[0].approval.approvers: approvers must set at least one of groups, scopes, subjects or claims",
			"line 16: routes[0].mcp.tools[0].approval.min_approvals: min_approvals must be at least 1",
			"line 16: routes[0].mcp.tools[0].approval.ttl: ttl must not be shorter than hold",
			"line 17: routes[0].mcp.tools[1].approval: an entry with deny refuses every caller, so it must not set approval",
			"line 19: routes[0].mcp.tools[2].approval.pending_status: a held tool call is always answered as an MCP result (HTTP 200), so pending_status does not apply",
		},
	},
	{
		"approval.bad.yaml",
		[]string{
			"line 21: routes[1].approval.approvers: approvers must set at least one of groups, scopes, subjects or claims",
			"line 22: routes[1].approval.min_approvals: min_approvals must be at least 1",
			"line 24: routes[1].approval.ttl: ttl must not be shorter than hold",
			"line 25: routes[1].approval.pending_status: pending_status must be 403 or 202",
			"line 29: routes[2].websocket: a websocket route cannot need approval: an approval would cover the handshake, not the messages after it",
		},
	},
	{
		"clients.bad.yaml",
		[]string{
			"line 5: identity.issuers[0].client_id_claim: client_id_claim must not be empty; leave it out for cid, then azp, then client_id, then appid",
			"line 6: identity.issuers[0].max_token_age: max_token_age must be greater than 0",
			"line 8: admin.clients[1]: empty client id",
			`line 8: admin.clients[2]: client id "0oaConsole" is listed twice`,
		},
	},
	{
		"clients_empty.bad.yaml",
		[]string{
			"line 6: admin.clients: clients is empty, which would refuse every token; leave it out to accept any client",
		},
	},
	{
		"console.bad.yaml",
		[]string{
			"line 6: admin.console.client_id: client_id is required: the console's OIDC client at the issuer",
			`line 7: admin.console.issuer: issuer "https://other.okta.com/oauth2/default" is not one of identity.issuers`,
			"line 8: admin.console.client_secret: client_secret is empty",
			`line 9: admin.console.redirect_url: redirect_url "http://keyhole.internal:9090/ui/callback" must use https (http only for a loopback host): the session cookie would travel in clear`,
			"line 10: admin.console.session_key: session_key is 9 bytes: it must be at least 32 (openssl rand -hex 32)",
			"line 11: admin.console.idle_timeout: idle_timeout 13h0m0s is longer than max_age 12h0m0s",
			`line 12: admin.console: unknown key "colour"`,
		},
	},
	{
		"console_shape.bad.yaml",
		[]string{
			"line 6: admin.console: set client_secret or client_secret_file, not both",
			"line 6: admin.console: session_key or session_key_file is required: a secret of at least 32 bytes shared by every replica",
			`line 10: admin.console.redirect_url: redirect_url "https://keyhole.internal:9090/console/cb?x=1" must be an absolute http(s) URL without query or fragment`,
			"line 11: admin.console.max_age: max_age must be greater than 0",
		},
	},
	{
		"console_empty.bad.yaml",
		[]string{
			`line 8: admin.console.redirect_url: redirect_url "https://keyhole.internal:9090/ui/logincb" must end in /ui/callback, where the console takes the login's answer`,
			`line 9: admin.console.session_key_file: cannot read session_key_file "/nonexistent/key": no such file or directory`,
		},
	},
	{
		"approvals.bad.yaml",
		[]string{
			"line 12: approvals.max_pending_per_subject: max_pending_per_subject must be at least 1",
		},
	},
	{
		"approvals_shape.bad.yaml",
		[]string{
			"line 10: approvals.notify.webhook: webhook must be an absolute http or https URL",
			`line 11: approvals.public_url: public_url "keyhole.internal" must be an absolute http or https URL`,
		},
	},
	{
		"bad_duration.bad.yaml",
		[]string{
			`line 8: upstreams.crm.timeout: bad duration "30": want a number with a unit (ms, s, m, h, d)`,
			`line 11: upstreams.erp.timeout: bad duration "1 minute": want a number with a unit (ms, s, m, h, d)`,
			`line 14: upstreams.ledger.timeout: bad duration "-5s": must not be negative`,
			"line 17: upstreams.billing.timeout: timeout must be greater than 0",
		},
	},
	{
		"bad_issuer.bad.yaml",
		[]string{
			`line 3: identity.issuers[0].issuer: issuer "http://acme.okta.com/oauth2/default" must use https (http only for a loopback host)`,
			`line 5: identity.issuers[1].issuer: issuer "acme.okta.com" must be an absolute URL such as https://acme.okta.com/oauth2/default`,
			`line 7: identity.issuers[2].issuer: issuer "https://acme.okta.com/oauth2/default?x=1" must not have a user name, query or fragment`,
			`line 9: identity.issuers[3].issuer: issuer "https://acme.okta.com/oauth2/default#frag" must not have a user name, query or fragment`,
			"line 12: identity.issuers[4].audiences: audiences is required: tokens are accepted only for one of them",
			`line 13: identity.issuers[4].jwks_url: jwks_url "http://keys.acme.com/jwks" must use https (http only for a loopback host)`,
			`line 14: identity.issuers[5].issuer: issuer "https://acme.okta.com/oauth2/default" is already listed at line 11`,
			"line 15: identity.issuers[5].audiences[0]: empty audience",
			"line 16: identity.issuers[5].groups_claim: groups_claim must not be empty",
			"line 17: identity.issuers[6].issuer: issuer is required",
			`line 18: identity.issuers[6].jwks_url: jwks_url "/keys" must be an absolute https URL`,
		},
	},
	{
		"limits.bad.yaml",
		[]string{
			"line 10: limits.request_body_idle_timeout: request_body_idle_timeout must be greater than 0",
			"line 11: limits.request_body_timeout: request_body_timeout must be greater than 0",
			"line 12: limits.response_write_idle_timeout: response_write_idle_timeout must be greater than 0",
			"line 13: limits.max_masked_bytes_held: max_masked_bytes_held must be at least twice max_response_body_masked (33554432 bytes), or the largest masked response could never be served",
			"line 14: limits.max_unauthenticated_conns_per_peer: max_unauthenticated_conns_per_peer must be at least 1",
		},
	},
	{
		"bad_size.bad.yaml",
		[]string{
			`line 9: limits.max_request_body: bad size "10XB": want a whole number with an optional unit (KiB, MiB, GiB, KB, MB, GB)`,
			"line 10: limits.max_response_body_masked: max_response_body_masked must be greater than 0",
		},
	},
	{
		"credential_both.bad.yaml",
		[]string{
			"line 8: upstreams.crm.credential: set value or value_file, not both",
			"line 14: upstreams.erp.credential: value or value_file is required",
		},
	},
	{
		"credential_header.bad.yaml",
		[]string{
			`line 9: upstreams.crm.credential.header: header "Connection" is hop-by-hop: proxies drop it, so it would never reach the upstream`,
			`line 14: upstreams.erp.credential.header: header "X Api Key" is not a valid header name`,
			`line 19: upstreams.billing.credential.header: header "host" cannot carry a credential`,
			"line 23: upstreams.ledger.credential.header: header is required",
		},
	},
	{
		"credential_injection.bad.yaml",
		[]string{
			"line 10: upstreams.crm.credential.value: the credential holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers",
			"line 15: upstreams.erp.credential.value: the credential holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers",
			"line 20: upstreams.billing.credential.value: value is empty",
		},
	},
	{
		"deny_forwards.bad.yaml",
		[]string{
			"line 12: routes[0].upstream: a route with deny never forwards a request, so it must not set upstream",
			"line 13: routes[0].allow: a route with deny never forwards a request, so it must not set allow",
			"line 14: routes[0].rewrite: a route with deny never forwards a request, so it must not set rewrite",
			"line 17: routes[1].deny: deny needs a message: the reason a matching request is refused with",
		},
	},
	{
		"detect.bad.yaml",
		[]string{
			`line 13: routes[0].detect[8]: unknown detector "passport": want credit_card, us_ssn, email, phone, iban, bearer_token, aws_access_key, private_key`,
			`line 13: routes[0].detect[9]: detector "email" is listed twice`,
		},
	},
	{
		"dev_default_listen.bad.yaml",
		[]string{
			`listen: ":8080" (the default) is not a loopback address, and identity.dev serves a built-in issuer whose tokens anyone can mint: listen on 127.0.0.1 or localhost`,
		},
	},
	{
		"dev_non_loopback.bad.yaml",
		[]string{
			`line 3: listen: "0.0.0.0:8080" is not a loopback address, and identity.dev serves a built-in issuer whose tokens anyone can mint: listen on 127.0.0.1 or localhost`,
		},
	},
	{
		"duplicate_key.bad.yaml",
		[]string{
			`line 8: key "upstreams" is already set at line 5`,
		},
	},
	{
		"duplicate_name.bad.yaml",
		[]string{
			`line 13: routes[0].name: name "read" is already used by guards[0] at line 9; route and guard names must be unique`,
			`line 21: routes[2].name: name "write" is already used by routes[1] at line 17; route and guard names must be unique`,
			"line 25: routes[3].name: name is required",
		},
	},
	{
		"guard_extra_keys.bad.yaml",
		[]string{
			"line 11: guards[0].upstream: guards take only name, match and deny",
			"line 12: guards[0].allow: guards take only name, match and deny",
			"line 13: guards[0].websocket: guards take only name, match and deny",
			"line 15: guards[1].deny: deny is required: the message a matching request is refused with",
			`line 16: guards[1].match.methods: methods is required (use ["*"] for any method)`,
		},
	},
	{
		"listen.bad.yaml",
		[]string{
			`line 8: listen: "localhost" is not host:port (want an address such as "127.0.0.1:8080")`,
			`line 10: admin.listen: ":9090" has no host: write 127.0.0.1:9090, or 0.0.0.0:9090 to serve the admin plane on every interface`,
		},
	},
	{
		"ops.bad.yaml",
		[]string{
			`line 9: ops.listen: ":9091" has no host: write 127.0.0.1:9091, or 0.0.0.0:9091 to serve /healthz, /readyz and /metrics on every interface`,
		},
	},
	{
		"ops_empty.bad.yaml",
		[]string{
			`line 8: ops.listen: listen is required (an address such as "0.0.0.0:9091"); remove ops for no operations listener`,
		},
	},
	{
		"listen_port.bad.yaml",
		[]string{
			`line 8: listen: port of ":http" must be a number from 0 to 65535`,
			`line 10: admin.listen: port of "127.0.0.1:70000" must be a number from 0 to 65535`,
		},
	},
	{
		"many.bad.yaml",
		[]string{
			`line 2: listen: port of "0.0.0.0:80800" must be a number from 0 to 65535`,
			`line 4: admin.listen: ":9090" has no host: write 127.0.0.1:9090, or 0.0.0.0:9090 to serve the admin plane on every interface`,
			`line 5: admin.roles.owners: unknown role "owners": want admins, auditors, approvers`,
			`line 9: identity.issuers[0].issuer: issuer "http://acme.okta.com" must use https (http only for a loopback host)`,
			"line 10: identity.issuers[0].audiences: audiences is required: tokens are accepted only for one of them",
			`line 11: identity.issuers[0].algorithms[0]: algorithm "HS256" is refused: HMAC needs a secret shared with the issuer, and a token signed with the issuer's public key as that secret would verify`,
			`line 12: identity.issuers[0]: unknown key "claims_group"`,
			"line 16: upstreams.crm.url: url must not hold a user name or password; put credentials in credential",
			`line 17: upstreams.crm.timeout: bad duration "soon": want a number with a unit (ms, s, m, h, d)`,
			`line 19: upstreams.crm.credential.header: header "Transfer-Encoding" is hop-by-hop: proxies drop it, so it would never reach the upstream`,
			"line 20: upstreams.crm.credential.value: ${CRM_TOKEN} is not set",
			"line 25: guards[0].upstream: guards take only name, match and deny",
			`line 29: routes[0].name: name "no-drop" is already used by guards[0] at line 23; route and guard names must be unique`,
			`line 30: routes[0].match: unknown key "metods" (did you mean "methods"?)`,
			`line 30: routes[0].match.path: path "crm/*" must start with "/"`,
			"line 32: routes[0].allow.groups: groups is empty",
			`line 34: routes[1].match.methods[0]: method "post" must be upper case, "POST": methods are case-sensitive`,
			`line 35: routes[1].upstream: unknown upstream "erp": want one of crm`,
			`line 39: routes[1].mask[0].action: unknown action "shred": want redact, remove, hash, last4`,
			"line 40: routes[2]: a route needs allow, deny or approval: the default is deny, so a route without them would refuse every request",
			`line 46: recorder.body_limit: bad size "lots": want a whole number with an optional unit (KiB, MiB, GiB, KB, MB, GB)`,
			`line 49: limits.max_request_body: bad size "10 MiBs": want a whole number with an optional unit (KiB, MiB, GiB, KB, MB, GB)`,
		},
	},
	{
		"hash_key.bad.yaml",
		[]string{"line 6: masking.hash_key: hash_key must be at least 16 bytes"},
	},
	{
		"mask.bad.yaml",
		[]string{
			"line 15: routes[0].mask[0].action: action hash needs masking.hash_key, a per-deployment secret of at least 16 bytes",
			"line 22: routes[1].mask[0].action: action hash needs masking.hash_key, a per-deployment secret of at least 16 bytes",
			`line 27: routes[2].mask[0].case_insensitive: want true or false, got "maybe"`,
		},
	},
	{
		"mask_headers.bad.yaml",
		[]string{
			"line 12: guards[0].mask_headers: guards take only name, match and deny",
			`line 18: routes[0].mask_headers[1]: "bad name" is not a header name`,
			`line 18: routes[0].mask_headers[2]: "content-length" cannot be masked: the gateway or the client needs it to read the response`,
			`line 18: routes[0].mask_headers[3]: header "set-cookie" is listed twice`,
			"line 23: routes[1].mask_headers: mask_headers is empty; leave it out to mask no header",
		},
	},
	{
		"mask_shape.bad.yaml",
		[]string{
			"line 13: routes[0].websocket: a websocket route cannot be masked: its messages are not JSON responses",
			`line 16: routes[0].mask[0].action: unknown action "scramble": want redact, remove, hash, last4`,
			"line 16: routes[0].mask[0].field: field is required",
			"line 19: routes[0].mask[1].with: with applies only to action redact",
			"line 20: routes[0].mask[2].action: action is required: redact, remove, hash, last4",
			"line 25: routes[1].pass_non_json: pass_non_json applies only to a route with mask or detect",
		},
	},
	{
		"methods.bad.yaml",
		[]string{
			`line 10: routes[0].match.methods[0]: method "get" must be upper case, "GET": methods are case-sensitive`,
			`line 10: routes[0].match.methods[2]: method "GET" is listed twice`,
			`line 10: routes[0].match.methods[3]: unknown method "FETCH": want GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or "*"`,
			`line 10: routes[0].match.path: path "crm/*" must start with "/"`,
			`line 14: routes[1].match.methods[0]: "*" matches every method: list it alone`,
			`line 18: routes[2].match.methods: methods is required (use ["*"] for any method)`,
			"line 18: routes[2].match.path: path is required",
		},
	},
	{
		"multi_document.bad.yaml",
		[]string{
			"line 2: a second YAML document: the file must hold exactly one",
		},
	},
	{
		"no_decision.bad.yaml",
		[]string{
			"line 9: routes[0]: a route needs allow, deny or approval: the default is deny, so a route without them would refuse every request",
		},
	},
	{
		"no_issuer.bad.yaml",
		[]string{
			"identity.issuers: at least one issuer is required (or identity.dev: true, for local use only)",
		},
	},
	{
		"no_upstreams.bad.yaml",
		[]string{
			`line 8: routes[0].upstream: unknown upstream "crm": no upstreams are configured`,
		},
	},
	{
		"not_a_mapping.bad.yaml",
		[]string{
			"line 1: want a mapping, got a list",
		},
	},
	{
		"recorder.bad.yaml",
		[]string{
			"line 8: upstreams.crm.replay_targets[0]: replay target must be an absolute http or https URL without credentials, query or fragment",
			"line 8: upstreams.crm.replay_targets[1]: replay target must be an absolute http or https URL without credentials, query or fragment",
		},
	},
	{
		"record_mode.bad.yaml",
		[]string{
			`line 7: routes[0].record: unknown record mode "bodies": want full, metadata or none`,
			"line 8: routes[1].record: a route that needs approval is always recorded: its records are the evidence of who approved what",
			"line 9: routes[2].record: a route with deny never forwards a request, so it must not set record",
		},
	},
	{
		"recorder_shape.bad.yaml",
		[]string{
			"line 9: recorder.store: store must start with sqlite://, postgres:// or postgresql://",
			`line 10: recorder.mode: unknown mode "paranoid": want strict or best_effort`,
			"line 11: recorder.body_limit: body_limit must be greater than 0",
			`line 12: recorder.redact_headers[0]: "Bad Header" is not a valid header name`,
			`line 13: recorder.retention: bad duration "90 days": want a number with a unit (ms, s, m, h, d)`,
		},
	},
	{
		"rewrite.bad.yaml",
		[]string{
			`line 12: routes[0].rewrite.add_prefix: add_prefix "/" must start with "/" and not end with "/"`,
			`line 12: routes[0].rewrite.strip_prefix: strip_prefix "crm/" must start with "/" and not end with "/"`,
			"line 17: routes[1].rewrite: rewrite needs strip_prefix or add_prefix",
		},
	},
	{
		"export.bad.yaml",
		[]string{
			"line 10: recorder.export.webhook: webhook must be an absolute http or https URL without a fragment",
			`line 11: recorder.export.format: unknown format "cef": want ocsf or jsonl`,
			"line 12: recorder.export.batch: batch must be between 1 and 10000",
			"line 13: recorder.export.interval: interval must be greater than 0",
			"line 14: recorder.export.timeout: timeout must be greater than 0",
			`line 15: recorder.export.headers.Content-Type: header "Content-Type" is set by the gateway`,
			`line 15: recorder.export.headers.X-Token: the value holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers`,
			`line 15: recorder.export.headers["Bad Header"]: "Bad Header" is not a valid header name`,
		},
	},
	{
		"export_shape.bad.yaml",
		[]string{
			"line 9: recorder.export.webhook: webhook is required: the URL the SIEM takes newline-delimited JSON at",
			"line 11: recorder.export.batch: batch must be between 1 and 10000",
			`line 12: recorder.export.interval: bad duration "soon": want a number with a unit (ms, s, m, h, d)`,
			`line 13: recorder.export: unknown key "retries"`,
		},
	},
	{
		"syntax.bad.yaml",
		[]string{
			"line 9: YAML syntax: did not find expected ',' or '}'",
		},
	},
	{
		"telemetry.bad.yaml",
		[]string{
			"line 10: telemetry.otlp.endpoint: endpoint must be an absolute http or https URL without credentials, query or fragment, such as http://collector:4318",
			"line 11: telemetry.otlp.sample_ratio: sample_ratio must be between 0 and 1",
			`line 12: telemetry.otlp.headers["Bad Header"]: "Bad Header" is not a valid header name`,
			"line 13: telemetry.otlp.timeout: timeout must be greater than 0",
		},
	},
	{
		"telemetry_shape.bad.yaml",
		[]string{
			"line 9: telemetry.otlp.endpoint: endpoint is required: the collector's base URL, such as http://collector:4318",
			`line 10: telemetry.otlp.sample_ratio: want a value of type float64, got "lots"`,
			`line 11: telemetry.otlp.timeout: bad duration "soon": want a number with a unit (ms, s, m, h, d)`,
			`line 12: telemetry.otlp: unknown key "exporter"`,
		},
	},
	{
		"tls.bad.yaml",
		[]string{
			"line 8: tls.key_file: key_file is required",
		},
	},
	{
		"tls_pair.bad.yaml",
		[]string{
			`line 8: tls: cert_file "tls/cert.pem" and key_file "secrets/billing.token" are not a certificate and its key: tls: failed to find any PEM data in key input`,
		},
	},
	{
		"unknown_key.bad.yaml",
		[]string{
			`line 10: routes[0].match: unknown key "metods" (did you mean "methods"?)`,
			`line 13: routes[0]: unknown key "alow" (did you mean "allow"?)`,
			`line 14: unknown key "colour"`,
		},
	},
	{
		"unknown_upstream.bad.yaml",
		[]string{
			`line 11: routes[0].upstream: unknown upstream "crmm": want one of crm`,
			"line 13: routes[1].upstream: upstream is required: the upstream that allowed requests are forwarded to",
		},
	},
	{
		"unset_var.bad.yaml",
		[]string{
			"line 10: upstreams.crm.credential.value: ${CRM_EXTRA} is not set",
			"line 11: listen: unterminated ${ (write $${ for a literal ${)",
			`line 13: admin.listen: bad variable reference "${1BAD}": want ${NAME} with letters, digits and _ (write $${ for a literal ${)`,
		},
	},
	{
		"upstream_url.bad.yaml",
		[]string{
			"line 7: upstreams.crm.url: url must not hold a user name or password; put credentials in credential",
			"line 9: upstreams.erp.url: url must not have a query",
			"line 9: upstreams.erp.url: url must not have a fragment",
			"line 11: upstreams.ftp.url: url must be an absolute http or https URL with a host, such as http://crm.internal:8080",
			"line 13: upstreams.rel.url: url must be an absolute http or https URL with a host, such as http://crm.internal:8080",
			"line 14: upstreams.nourl.url: url is required",
			"line 16: upstreams.nothing.url: url is required",
			"line 19: upstreams.tlsplain.tls: tls is set, but url is not https",
			`line 22: upstreams.badca.tls.ca_file: ca_file "secrets/billing.token" holds no PEM certificate`,
		},
	},
	{
		"value_file_missing.bad.yaml",
		[]string{
			`line 10: upstreams.crm.credential.value_file: cannot read value_file "secrets/missing.token": no such file or directory`,
			`line 15: upstreams.erp.credential.value_file: value_file "secrets/empty.token" is empty`,
			`line 20: upstreams.dirs.credential.value_file: cannot read value_file "secrets": not a regular file`,
		},
	},
	{
		"when.bad.yaml",
		[]string{
			"line 10: routes[0].match.when: when is empty: remove it or add a condition",
			"line 18: routes[1].match.when.query: query is empty: remove it or add a condition",
			`line 19: routes[1].match.when.headers.x-tenant: header "x-tenant" is also listed as "X-Tenant": header names are case-insensitive`,
			`line 19: routes[1].match.when.headers["X Tenant"]: "X Tenant" is not a valid header name`,
			`line 20: routes[1].match.when.body[""]: empty gjson path`,
			"line 21: routes[1].match.when.body_regex: body_regex is empty",
			"line 29: routes[2].match.when.query.a: want at least one value",
			"line 29: routes[2].match.when.query.b: want a value or a list of values",
			`line 37: routes[3].match.when.headers.Authorization: header "Authorization" cannot be a condition: the client's Authorization is the token the gateway verifies and removes; use allow`,
			`line 37: routes[3].match.when.headers.Connection: header "Connection" cannot be a condition: hop-by-hop headers never reach the upstream`,
			`line 37: routes[3].match.when.headers.X-Forwarded-Proto: header "X-Forwarded-Proto" cannot be a condition: the gateway removes it from every client request`,
			`line 37: routes[3].match.when.headers.X_Tenant: header "X_Tenant" cannot be a condition: the gateway removes it from every client request`,
		},
	},
	{
		"wrong_type.bad.yaml",
		[]string{
			"line 8: listen: want a string, got a list",
			"line 11: routes[0].match.methods: want a list, got a string",
			`line 13: routes[0].websocket: want true or false, got "yes"`,
			"line 14: routes[0].allow.groups: want a list, got a string",
		},
	},
}

func TestLoadBad(t *testing.T) {
	listed := make(map[string]bool)
	for _, tc := range badFiles {
		listed[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := Load(filepath.Join("testdata", tc.file), testGetenv(nil))
			if cfg != nil {
				t.Errorf("Load returned a config with errors")
			}
			got := errorTexts(t, err)
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", lines(got), lines(tc.want))
			}
			// Secrets planted in the files and the environment all contain "planted".
			for _, e := range got {
				if strings.Contains(e, "planted") {
					t.Errorf("error holds a planted secret: %s", e)
				}
			}
		})
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no entry in badFiles", f)
		}
	}
}
