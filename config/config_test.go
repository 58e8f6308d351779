package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Planted secrets: no error, print or JSON may ever contain them.
const (
	plantedEnv  = "sk-live-planted-1"
	plantedFile = "file-secret-7f3a"
)

// testGetenv returns a getenv over the variables the testdata files use, plus extra.
func testGetenv(extra map[string]string) func(string) string {
	env := map[string]string{
		"CRM_API_KEY": plantedEnv,
		"AUDIENCE":    "api://extra",
		"INSECURE":    "false",
		"COUNT":       "3",
		"WS":          "true",
		"APPROVALS":   "2",
		"INJECT":      "planted-env-secret\r\nX-Evil: yes",
		"SHORT_KEY":   "planted",
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

// errorTexts returns the texts of the *FieldErrors joined in err.
func errorTexts(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not an errors.Join: %v", err, err)
	}
	var out []string
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("error %T is not a *FieldError: %v", e, e)
		}
		out = append(out, e.Error())
	}
	return out
}

func lines(s []string) string { return "\t" + strings.Join(s, "\n\t") }

func TestLoadGood(t *testing.T) {
	cfg, err := Load("testdata/good.yaml", testGetenv(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	td := func(p string) string { return filepath.Join("testdata", p) }
	want := &Config{
		Listen: "127.0.0.1:8443",
		Admin: Admin{
			Listen: "127.0.0.1:9191",
			Allow:  &Allow{Groups: []string{"keyhole-admins"}},
			Roles: map[string]*Allow{
				"auditors":  {Groups: []string{"sec-audit"}},
				"approvers": {Scopes: []string{"keyhole.approve"}},
				"admins":    {Subjects: []string{"0oa-root"}},
			},
		},
		TLS: &TLS{CertFile: td("tls/cert.pem"), KeyFile: td("tls/key.pem")},
		Identity: Identity{Issuers: []Issuer{
			{
				Issuer:      "https://acme.okta.com/oauth2/default",
				Audiences:   []string{"api://default"},
				GroupsClaim: "groups",
				ScopesClaim: "scp",
				Algorithms:  []string{"RS256", "ES256"},
				MaxTokenAge: Duration(DefaultMaxTokenAge),
			},
			{
				Issuer:      "http://127.0.0.1:5556/dex",
				Audiences:   []string{"keyhole", "api://extra"},
				GroupsClaim: "roles",
				ScopesClaim: "scope",
				Algorithms:  []string{"ES384", "PS256"},
				JWKSURL:     "http://localhost:5556/dex/keys",
				MaxTokenAge: Duration(DefaultMaxTokenAge),
			},
		}},
		Upstreams: map[string]*Upstream{
			"crm": {
				URL:        "http://crm.internal:8080/api",
				Timeout:    Duration(5 * time.Second),
				Credential: &Credential{Header: "Authorization", Value: "Bearer " + plantedEnv},
			},
			"billing": {
				URL:        "https://billing.internal",
				Timeout:    Duration(DefaultUpstreamTimeout),
				Credential: &Credential{Header: "X-Api-Key", Value: "Bearer " + plantedFile, ValueFile: td("secrets/billing.token")},
				TLS:        &ClientTLS{CAFile: td("tls/cert.pem")},
			},
			"ledger.v2": {
				URL:     "https://ledger.internal:8443",
				Timeout: Duration(DefaultUpstreamTimeout),
				TLS:     &ClientTLS{InsecureSkipVerify: true},
			},
		},
		Guards: []Route{{
			Name: "no-sql-drop",
			Match: Match{Methods: []string{"*"}, Path: "/*", When: &When{
				BodyRegex: `(?i)\bdrop\s+(table|database)\b`,
			}},
			Deny: "destructive SQL is never forwarded",
		}},
		Routes: []Route{
			{
				Name: "crm-read-customer",
				Match: Match{
					Methods: []string{"GET", "HEAD"},
					Path:    "/crm/customers/{id}",
					When: &When{
						Query: map[string]Scalars{
							"expand": {{"profile", String}},
							"fields": {{"name", String}, {"email", String}},
						},
						Headers: map[string]Scalars{"X-Tenant": {{"acme", String}}},
						Body: map[string]Scalars{
							"method":       {{"tools/call", String}},
							"params.name":  {{"lookup_customer", String}},
							"params.count": {{"3", Number}}, // ${COUNT}, re-resolved after expansion
							"params.label": {{"3", String}}, // "${COUNT}", quoted: stays a string
							"params.since": {{"2024-01-31", String}},
							"params.dry":   {{"false", Bool}},
							"params.extra": {{"null", Null}},
						},
					},
				},
				Upstream: "crm",
				Rewrite:  &Rewrite{StripPrefix: "/crm", AddPrefix: "/v1"},
				Allow: &Allow{
					Groups:   []string{"crm-readers"},
					Scopes:   []string{"crm.read"},
					Subjects: []string{"0oa1svc"},
					Claims: map[string]Scalars{
						"tenant": {{"acme", String}},
						"level":  {{"1", Number}, {"2", Number}},
					},
				},
			},
			{
				Name:      "billing-stream",
				Match:     Match{Methods: []string{"GET"}, Path: "/billing/stream"},
				Upstream:  "billing",
				Websocket: true, // ${WS}
				Allow:     &Allow{Groups: []string{"billing"}},
			},
			{
				Name:     "price-${literal}", // $${ is a literal ${
				Match:    Match{Methods: []string{"POST"}, Path: "/ledger/*"},
				Upstream: "ledger.v2",
				Allow:    &Allow{Scopes: []string{"ledger.write"}},
			},
			{
				Name:  "never-bulk-delete",
				Match: Match{Methods: []string{"DELETE", "POST"}, Path: "/crm/customers/bulk/*"},
				Deny:  "bulk deletion is not allowed through the gateway",
			},
		},
		Recorder:  &Recorder{Store: "sqlite://testdata/data/keyhole.db", Mode: "strict", BodyLimit: DefaultRecorderBodyLimit},
		Approvals: &Approvals{MaxPendingPerSubject: DefaultMaxPendingPerSubject},
		Limits: Limits{MaxRequestBody: 1 << 20, MaxResponseBodyMasked: 2000000,
			RequestBodyIdleTimeout: Duration(DefaultRequestBodyIdleTimeout), RequestBodyTimeout: Duration(DefaultRequestBodyTimeout),
			ResponseWriteIdleTimeout: Duration(DefaultResponseWriteIdleTimeout), MaxMaskedBytesHeld: DefaultMaxMaskedBytesHeld,
			MaxUnauthenticatedConnsPerPeer: DefaultMaxUnauthenticatedConnsPerPeer},
		Path: "testdata/good.yaml",
	}
	want.lines, want.written = cfg.lines, cfg.written
	if !reflect.DeepEqual(cfg, want) {
		g, _ := json.MarshalIndent(cfg, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Errorf("Load(good.yaml) =\n%s\nwant\n%s", g, w)
		for name, u := range want.Upstreams {
			if got := cfg.Upstreams[name]; got != nil && got.Credential != nil && u.Credential != nil && got.Credential.Value != u.Credential.Value {
				t.Errorf("upstream %s: credential value differs", name)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
identity:
  issuers:
    - issuer: https://acme.okta.com
      audiences: [a]
upstreams:
  crm: { url: "http://crm" }
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	is := cfg.Identity.Issuers[0]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, DefaultListen},
		{"admin.listen", cfg.Admin.Listen, DefaultAdminListen},
		{"ops", cfg.Ops, (*Ops)(nil)},
		{"groups_claim", is.GroupsClaim, DefaultGroupsClaim},
		{"scopes_claim", is.ScopesClaim, DefaultScopesClaim},
		{"algorithms", is.Algorithms, DefaultAlgorithms},
		{"max_token_age", is.MaxTokenAge, Duration(DefaultMaxTokenAge)},
		{"timeout", cfg.Upstreams["crm"].Timeout, Duration(DefaultUpstreamTimeout)},
		{"max_request_body", cfg.Limits.MaxRequestBody, ByteSize(DefaultMaxRequestBody)},
		{"max_response_body_masked", cfg.Limits.MaxResponseBodyMasked, ByteSize(DefaultMaxResponseBodyMasked)},
		{"request_body_idle_timeout", cfg.Limits.RequestBodyIdleTimeout, Duration(DefaultRequestBodyIdleTimeout)},
		{"request_body_timeout", cfg.Limits.RequestBodyTimeout, Duration(DefaultRequestBodyTimeout)},
		{"response_write_idle_timeout", cfg.Limits.ResponseWriteIdleTimeout, Duration(DefaultResponseWriteIdleTimeout)},
		{"max_masked_bytes_held", cfg.Limits.MaxMaskedBytesHeld, ByteSize(DefaultMaxMaskedBytesHeld)},
		{"max_unauthenticated_conns_per_peer", cfg.Limits.MaxUnauthenticatedConnsPerPeer, DefaultMaxUnauthenticatedConnsPerPeer},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// The default algorithms are a copy: changing one config's cannot change another's.
	is.Algorithms[0] = "PS512"
	if DefaultAlgorithms[0] != "RS256" {
		t.Errorf("DefaultAlgorithms changed through a Config")
	}
}

// TestTelemetryDefaults checks that traces are off without telemetry.otlp, and that an
// otlp section gets the default ratio and timeout but keeps a ratio of 0 as written.
func TestTelemetryDefaults(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       *OTLP
	}{
		{"off", "", nil},
		{"defaults", "telemetry: { otlp: { endpoint: http://collector:4318 } }\n",
			&OTLP{Endpoint: "http://collector:4318", SampleRatio: DefaultOTLPSampleRatio, Timeout: DefaultOTLPTimeout}},
		{"as written", "telemetry: { otlp: { endpoint: https://c/otlp, sample_ratio: 0, timeout: 2s, headers: { X-Key: k } } }\n",
			&OTLP{Endpoint: "https://c/otlp", Timeout: Duration(2 * time.Second), Headers: map[string]Secret{"X-Key": "k"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal+c.yaml), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Telemetry.OTLP; !reflect.DeepEqual(got, c.want) {
				t.Errorf("telemetry.otlp = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestExportDefaults checks that nothing is pushed without recorder.export, and that an
// export section gets the default format, batch, interval and timeout but keeps what is
// written, its webhook and header values as secrets.
func TestExportDefaults(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       *Export
	}{
		{"off", "", nil},
		{"defaults", "recorder: { export: { webhook: https://siem.internal/ingest } }\n",
			&Export{Webhook: "https://siem.internal/ingest", Format: "ocsf", Batch: 100, Interval: Duration(5 * time.Second), Timeout: Duration(10 * time.Second)}},
		{"as written", "recorder: { export: { webhook: \"http://127.0.0.1:8088/raw?token=${SIEM_TOKEN}\", format: jsonl, batch: 1, interval: 250ms, timeout: 2s, headers: { Authorization: \"Splunk ${SIEM_TOKEN}\" } } }\n",
			&Export{Webhook: "http://127.0.0.1:8088/raw?token=t0k", Format: "jsonl", Batch: 1, Interval: Duration(250 * time.Millisecond),
				Timeout: Duration(2 * time.Second), Headers: map[string]Secret{"Authorization": "Splunk t0k"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal+c.yaml), "", func(string) string { return "t0k" })
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Recorder.Export; !reflect.DeepEqual(got, c.want) {
				t.Errorf("recorder.export = %+v, want %+v", got, c.want)
			}
			if got := fmt.Sprintf("%v %+v", cfg.Recorder.Export, cfg.Recorder); strings.Contains(got, "t0k") || strings.Contains(got, "siem.internal") {
				t.Errorf("printed export config holds a secret: %s", got)
			}
		})
	}
}

// minimal is a valid config that tests add to.
const minimal = `
identity:
  issuers:
    - issuer: https://acme.okta.com
      audiences: [a]
upstreams:
  crm:
    url: http://crm.internal
`

func TestLine(t *testing.T) {
	cfg, err := Load("testdata/good.yaml", testGetenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want int
	}{
		{"listen", 2},
		{"routes[0].match.path", 57},
		{`routes[0].match.when.body["params.name"]`, 63},
		{`routes[0].match.when.body["params.name"].nothing[3]`, 63}, // nearest ancestor
		{"routes[0].match.when.query.fields[1]", 59},
		{`upstreams["ledger.v2"].url`, 42},
		{`upstreams["ledger.v2"].timeout`, 41}, // defaulted, so the upstream's line
		{"upstreams.crm.credential.value", 32},
		{"recorder.store", 0},
		{"", 0},
	} {
		if got := cfg.Line(c.path); got != c.want {
			t.Errorf("Line(%q) = %d, want %d", c.path, got, c.want)
		}
	}
	for _, c := range []struct{ path, value, want string }{
		{"upstreams.crm.credential.value", "Bearer " + plantedEnv, `"Bearer ${CRM_API_KEY}"`},
		{`routes[0].match.when.body["params.count"]`, "3", `"${COUNT}"`},
		{"routes[2].name", "price-${literal}", `"price-${literal}"`},
		{"routes[0].match.path", "/crm/customers/{id}", `"/crm/customers/{id}"`},
	} {
		if got := cfg.Quote(c.path, c.value); got != c.want {
			t.Errorf("Quote(%q) = %s, want %s", c.path, got, c.want)
		}
	}
	e := cfg.Errorf("routes[0].match.path", "bad pattern %q", "{x")
	if got, want := e.Error(), `line 57: routes[0].match.path: bad pattern "{x"`; got != want {
		t.Errorf("Errorf = %q, want %q", got, want)
	}
}

func TestParentPath(t *testing.T) {
	for _, c := range []struct {
		path, want string
		ok         bool
	}{
		{"routes[2].match.path", "routes[2].match", true},
		{"routes[2]", "routes", true},
		{"listen", "", false},
		{"", "", false},
		{`a.b["x.y[0]"]`, "a.b", true},
		{`a.b["x.y[0]"].c`, `a.b["x.y[0]"]`, true},
		{`a["q\"]."]`, "a", true},
		{`["a.b"]`, "", true},
	} {
		got, ok := parentPath(c.path)
		if got != c.want || ok != c.ok {
			t.Errorf("parentPath(%q) = %q, %v, want %q, %v", c.path, got, ok, c.want, c.ok)
		}
	}
}

func TestExpand(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"A": "1", "B": "${A}", "LONG_name_2": "x"}[k]
	}
	for _, c := range []struct {
		in, want string
		subst    bool
		errs     []string
	}{
		{"plain", "plain", false, nil},
		{"${A}", "1", true, nil},
		{"a${A}b${LONG_name_2}c", "a1bxc", true, nil},
		{"${B}", "${A}", true, nil}, // no recursive expansion
		{"$${A}", "${A}", false, nil},
		{"$$${A}", "$${A}", false, nil},
		{"$A $ {A} $$", "$A $ {A} $$", false, nil},
		{"${UNSET}", "", false, []string{"${UNSET} is not set"}},
		{"${UNSET} ${A} ${NOPE}", "", false, []string{"${UNSET} is not set", "${NOPE} is not set"}},
		{"${A", "", false, []string{"unterminated ${ (write $${ for a literal ${)"}},
		{"${}", "", false, []string{`bad variable reference "${}": want ${NAME} with letters, digits and _ (write $${ for a literal ${)`}},
		{"${A:-x}", "", false, []string{`bad variable reference "${A:-x}": want ${NAME} with letters, digits and _ (write $${ for a literal ${)`}},
	} {
		got, subst, errs := expand(c.in, env)
		if got != c.want || subst != c.subst || !reflect.DeepEqual(errs, c.errs) {
			t.Errorf("expand(%q) = %q, %v, %q, want %q, %v, %q", c.in, got, subst, errs, c.want, c.subst, c.errs)
		}
	}
}

// TestExpandTypes checks that an expanded plain scalar takes the type of its new value.
func TestExpandTypes(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"int", map[string]string{"N": "2"}, nil},
		{"not an int", map[string]string{"N": "two-planted"}, []string{
			`line 15: routes[0].approval.min_approvals: want a whole number, got "${N}"`,
		}},
		{"zero", map[string]string{"N": "0"}, []string{
			"line 15: routes[0].approval.min_approvals: min_approvals must be at least 1",
		}},
		{"unset", nil, []string{
			"line 15: routes[0].approval.min_approvals: ${N} is not set",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal+`routes:
  - name: held
    match: { methods: [DELETE], path: /crm/* }
    upstream: crm
    approval:
      approvers: { groups: [admins] }
      min_approvals: ${N}
      hold: 1m
      ttl: 1h
`), "", func(k string) string { return c.env[k] })
			got := errorTexts(t, err)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", lines(got), lines(c.want))
			}
		})
	}
}

func TestValueFile(t *testing.T) {
	for _, c := range []struct {
		name, content, want string
	}{
		{"newline", "tok\n", "tok"},
		{"crlf", "tok\r\n", "tok"},
		{"none", "tok", "tok"},
		{"only one newline", "tok\n\n", "tok\n"}, // and so refused below
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "conf", "secrets"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "conf", "secrets", "crm"), []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "conf", "keyhole.yaml")
			data := minimal + "    credential: { header: X-Api-Key, value_file: secrets/crm }\n"
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(path, nil)
			if strings.ContainsAny(c.want, "\r\n") {
				want := "line 9: upstreams.crm.credential.value_file: the credential holds a control character (CR, LF, NUL or other), which would corrupt or inject request headers"
				if got := fmt.Sprint(err); got != want {
					t.Errorf("Load = %v, want %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cr := cfg.Upstreams["crm"].Credential
			if got := cr.Value.Reveal(); got != c.want {
				t.Errorf("value = %q, want %q", got, c.want)
			}
			if got, want := cr.ValueFile, filepath.Join(dir, "conf", "secrets", "crm"); got != want {
				t.Errorf("value_file = %q, want %q", got, want)
			}
		})
	}
}

// TestSecretsNeverPrinted plants secrets in credentials and in fields that fail
// validation, then looks for them in every way a Config or its errors get printed.
func TestSecretsNeverPrinted(t *testing.T) {
	cfg, err := Load("testdata/good.yaml", testGetenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, name := range []string{"crm", "billing"} {
		cr := cfg.Upstreams[name].Credential
		fmt.Fprintf(&out, "%v %+v %#v %s %q %x ", cr, cr, cr, cr.Value, cr.Value, cr.Value)
		fmt.Fprintf(&out, "%v %+v %#v ", *cr, *cr, *cr)
		slog.New(slog.NewTextHandler(&out, nil)).Info("x", "credential", cr.Value, "cr", cr)
		slog.New(slog.NewJSONHandler(&out, nil)).Info("x", "credential", cr.Value, "cr", cr)
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	for _, s := range []string{plantedEnv, plantedFile} {
		if strings.Contains(out.String(), s) {
			t.Errorf("printed config holds the secret %q:\n%s", s, out.String())
		}
	}

	const secret = "planted-9c1e x"
	getenv := testGetenv(map[string]string{
		"SECRET":      secret,
		"SECRET_URL":  "http://svc:" + secret + "@crm.internal?" + secret,
		"SECRET_CRLF": "Bearer " + secret + "\r\n",
		"SECRET_DSN":  "mysql://root:" + secret + "@db/x",
	})
	_, err = Parse([]byte(`
listen: ${SECRET}
admin: { listen: "${SECRET}" }
identity:
  issuers:
    - issuer: ${SECRET}
      audiences: [a]
      algorithms: ["${SECRET}"]
      jwks_url: ${SECRET_URL}
upstreams:
  crm:
    url: ${SECRET_URL}
    timeout: ${SECRET}
    credential: { header: "${SECRET}", value: "${SECRET_CRLF}" }
    tls:
      ca_file: "${SECRET}"
      insecure_skip_verify: ${SECRET}
routes:
  - name: r
    match:
      methods: ["${SECRET}"]
      path: "${SECRET}"
      when: { query: { q: ["${SECRET}", { a: b }] } }
    upstream: ${SECRET}
    websocket: ${SECRET}
    rewrite: { strip_prefix: "${SECRET}" }
    allow: { groups: [g] }
    detect: ["${SECRET}"]
    mask: [{ field: f, action: "${SECRET}" }]
    approval:
      approvers: { groups: [a] }
      min_approvals: ${SECRET}
      hold: ${SECRET}
      ttl: 1m
recorder:
  store: ${SECRET_DSN}
  mode: ${SECRET}
  body_limit: ${SECRET}
  retention: ${SECRET}
  export: { webhook: "${SECRET_URL}", format: "${SECRET}", batch: "${SECRET}", headers: { "${SECRET}": x, X-Key: "${SECRET_CRLF}" } }
approvals:
  notify: { webhook: "${SECRET}" }
  public_url: ${SECRET}
limits: { max_request_body: "${SECRET}" }
`), "", getenv)
	texts := errorTexts(t, err)
	if len(texts) < 25 {
		t.Errorf("got %d errors, want one for each planted field:\n%s", len(texts), lines(texts))
	}
	if testing.Verbose() {
		t.Logf("errors:\n%s", lines(texts))
	}
	for _, e := range texts {
		if strings.Contains(e, secret) {
			t.Errorf("error holds the secret: %s", e)
		}
	}
}

func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal + "routes:\n  - &r\n    name: r\n    upstream: crm\n    allow: { groups: [g] }\n    match:\n      path: /\n      methods: [")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("GET")
	}
	b.WriteString("]\n")
	for range 1000 {
		b.WriteString("  - *r\n")
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()), "", nil)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Parse took %v", d)
	}
	got := errorTexts(t, err)
	if len(got) == 0 || !strings.Contains(got[len(got)-1], "the document expands to too many values") {
		t.Errorf("Parse = %d errors ending %q, want one about too many values", len(got), got[max(0, len(got)-1):])
	}
}

func TestParseEdges(t *testing.T) {
	for _, c := range []struct {
		name, data string
		want       []string
	}{
		{"empty", "", []string{"identity.issuers: at least one issuer is required (or identity.dev: true, for local use only)"}},
		{"comment only", "# nothing\n", []string{"identity.issuers: at least one issuer is required (or identity.dev: true, for local use only)"}},
		{"scalar", "hello\n", []string{"line 1: want a mapping, got a string"}},
		{"tab indent", "listen:\n\t- x\n", []string{"line 2: YAML syntax: found character that cannot start any token"}},
		{"unknown anchor", "listen: *nope\n", []string{"YAML syntax: unknown anchor 'nope' referenced"}},
		{"non-string key", minimal + "[a]: 1\n", []string{"line 9: a key must be a string, got a list"}},
		{"duration from env", minimal + "    timeout: ${T}\n", []string{`line 9: upstreams.crm.timeout: bad duration "${T}": want a number with a unit (ms, s, m, h, d)`}},
		{"condition null", minimal + "routes:\n  - name: r\n    match: { methods: [GET], path: /, when: { body: { x: } } }\n    upstream: crm\n    allow: { groups: [g] }\n", nil},
		{"dev", "identity: { dev: true }\nlisten: localhost:8080\n", nil},
		// The ops listener serves no token: identity.dev leaves it free to face the network.
		{"dev with ops", "identity: { dev: true }\nlisten: localhost:8080\nops: { listen: \"0.0.0.0:9091\" }\n", nil},
		{"ops not host:port", minimal + "ops: { listen: \"9091\" }\n", []string{`line 9: ops.listen: "9091" is not host:port (want an address such as "127.0.0.1:9091")`}},
		{"merge scalar", minimal + "limits: { <<: 3 }\n", []string{"line 9: limits: << merges a mapping or a list of mappings, got a number"}},
		{"merge null", minimal + "limits:\n  <<:\n", []string{"line 10: limits: << merges a mapping or a list of mappings, got null"}},
		{"merge", minimal + "routes:\n  - name: a\n    match: &m { methods: [GET], path: /a }\n    upstream: crm\n    allow: &g { groups: [g] }\n  - { name: b, match: { <<: *m, path: /b }, upstream: crm, allow: *g }\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.data), "", func(k string) string { return map[string]string{"T": "ninety"}[k] })
			got := errorTexts(t, err)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", lines(got), lines(c.want))
			}
			if (err == nil) != (cfg != nil) {
				t.Errorf("Parse = %v, %v: want exactly one of a config and an error", cfg != nil, err)
			}
		})
	}
}

func TestManyErrorsInLineOrder(t *testing.T) {
	_, err := Load("testdata/many.bad.yaml", testGetenv(nil))
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Load = %v, want joined errors", err)
	}
	errs := j.Unwrap()
	if len(errs) < 20 {
		t.Errorf("got %d errors, want every mistake of the file (at least 20)", len(errs))
	}
	last := 0
	for _, e := range errs {
		fe := e.(*FieldError)
		if fe.Line < last {
			t.Errorf("error %q comes after line %d", fe, last)
		}
		last = fe.Line
	}
}

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false},
		{"1h30m", 90 * time.Minute, false},
		{"90d", 90 * 24 * time.Hour, false},
		{"0", 0, false},
		{"d", 0, true},
		{"-1d", 0, true},
		{"1.5d", 0, true},
		{"-1s", 0, true},
		{"30", 0, true},
	} {
		got, err := ParseDuration(c.in)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("ParseDuration(%q) = %v, %v, want %v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("routes: [{<<: &m {<<: *m}}]\n"))
	getenv := testGetenv(nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "testdata", getenv)
		if (err == nil) == (cfg == nil) {
			t.Fatalf("Parse = %v, %v: want exactly one of a config and an error", cfg != nil, err)
		}
		if err == nil {
			return
		}
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *FieldError
			if !errors.As(e, &fe) {
				t.Fatalf("error %T is not a *FieldError: %v", e, e)
			}
			if strings.Contains(fe.Msg, plantedEnv) && !bytes.Contains(data, []byte(plantedEnv)) {
				t.Fatalf("error holds the planted secret: %v", fe)
			}
		}
	})
}

// TestChecksReportWithValidationErrors checks that a Check's errors are merged, in line
// order, with validation errors, and that a field validation reported is not repeated.
func TestChecksReportWithValidationErrors(t *testing.T) {
	data := []byte(`identity:
  issuers: [{ issuer: "https://idp.example/oauth2/default", audiences: [a] }]
upstreams: { crm: { url: "http://crm" } }
routes:
  - name: r1
    match: { methods: [GET], path: "/a" }
    upstream: crn
    allow: { groups: [g] }
  - name: r2
    match: { methods: [GET], path: "/b" }
    upstream: crm
    allow: { groups: [g] }
`)
	check := func(c *Config) error {
		return errors.Join(c.Errorf("routes[1].match.path", "bad pattern"), c.Errorf("routes[0].upstream", "repeated"))
	}
	cfg, err := Parse(data, t.TempDir(), nil, check)
	if cfg != nil || err == nil {
		t.Fatalf("Parse = %v, %v; want an error", cfg, err)
	}
	want := "line 7: routes[0].upstream: unknown upstream \"crn\": want one of crm\nline 10: routes[1].match.path: bad pattern"
	if err.Error() != want {
		t.Errorf("Parse error =\n%s\nwant\n%s", err, want)
	}
	if _, err := Parse(data[:strings.Index(string(data), "  - name: r2")], t.TempDir(), nil, func(*Config) error { panic("boom") }); err == nil {
		t.Error("a panicking check on an invalid config must not hide the config's errors")
	}
}

// TestSecretsOptional checks that Options.SecretsOptional lets unset ${VAR}s in secrets
// stand for placeholders, and only in secrets.
func TestSecretsOptional(t *testing.T) {
	const cfg = `
identity:
  issuers: [ { issuer: https://acme.okta.com/oauth2/default, audiences: [api://default] } ]
upstreams:
  crm:
    url: ${CRM_URL}
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
masking: { hash_key: "${HASH_KEY}" }
recorder:
  export: { webhook: "${SIEM_URL}", headers: { Authorization: "Splunk ${HEC_TOKEN}" } }
routes:
  - { name: r, match: { methods: [GET], path: /x }, upstream: crm, allow: { groups: [g] } }
`
	env := func(k string) string { return map[string]string{"CRM_URL": "http://crm.internal"}[k] }
	if _, err := Parse([]byte(cfg), "", env); err == nil || !strings.Contains(err.Error(), "${CRM_KEY} is not set") {
		t.Fatalf("Parse: %v, want unset secrets refused", err)
	}
	c, err := ParseWith([]byte(cfg), "", env, Options{SecretsOptional: true})
	if err != nil {
		t.Fatalf("ParseWith SecretsOptional: %v", err)
	}
	if c.Upstreams["crm"].Credential.Value == "" || len(c.Masking.HashKey) < 16 {
		t.Errorf("placeholders: credential %q, hash key length %d", c.Upstreams["crm"].Credential.Value.Reveal(), len(c.Masking.HashKey))
	}
	if _, err := ParseWith([]byte(cfg), "", func(string) string { return "" }, Options{SecretsOptional: true}); err == nil || !strings.Contains(err.Error(), "${CRM_URL} is not set") {
		t.Errorf("an unset variable outside a secret: %v, want it refused", err)
	}
}

// TestOneErrorPerMistake checks that a mistake validation reports is not reported again
// by a Check under a neighbouring field (a bad mask action again as a bad mask field), nor
// as a consequence (a misspelt key again as a missing one).
func TestOneErrorPerMistake(t *testing.T) {
	data := []byte(`identity:
  issuers: [{ issuer: "https://idp.example/oauth2/default", audiences: [a] }]
upstreams: { crm: { url: "http://crm" } }
routes:
  - name: r1
    match: { metods: [GET], path: "/a" }
    upstream: crm
    allow: { groups: [g] }
    mask:
      - { field: a.b, action: zap }
      - { field: "a|b", action: redact }
`)
	check := func(c *Config) error {
		return errors.Join(
			c.Errorf("routes[0].mask[0].field", "unknown action %q", "zap"),
			c.Errorf("routes[0].mask[1].field", "unsupported gjson path"),
			c.Errorf("routes[0].match.methods", "no methods"))
	}
	_, err := Parse(data, t.TempDir(), nil, check)
	want := `line 6: routes[0].match: unknown key "metods" (did you mean "methods"?)
line 10: routes[0].mask[0].action: unknown action "zap": want redact, remove, hash, last4
line 11: routes[0].mask[1].field: unsupported gjson path`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error =\n%v\nwant\n%s", err, want)
	}
}

func TestByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ByteSize
		err  bool
	}{
		{"1048576", 1 << 20, false},
		{"64KiB", 64 << 10, false},
		{"1MiB", 1 << 20, false},
		{"1 MiB", 1 << 20, false},
		{"1MB", 1000 * 1000, false},
		{"2GiB", 2 << 30, false},
		{"10B", 10, false},
		{"1mb", 0, true},
		{"1.5MB", 0, true},
		{"10M", 0, true},
		{"1k", 0, true},
		{"-1", 0, true},
		{"1e6", 0, true},
		{"9999999999GiB", 0, true},
		{"MiB", 0, true},
	} {
		var got ByteSize
		err := yaml.Unmarshal([]byte("v: "+c.in), &struct {
			V *ByteSize `yaml:"v"`
		}{&got})
		if got != c.want || (err != nil) != c.err {
			t.Errorf("size %q = %d, %v, want %d, error %v", c.in, got, err, c.want, c.err)
		}
	}
}
