package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

func testEnv(k string) string {
	return map[string]string{"CRM_API_KEY": "k", "BILLING_API_TOKEN": "t", "KEYHOLE_MASK_HASH_KEY": "placeholder-0123456789"}[k]
}

// runCmd runs the CLI as main would, with the given environment, and returns its output.
func runCmd(t *testing.T, getenv func(string) string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut testkit.Buffer
	err = run(context.Background(), append([]string{"keyhole"}, args...), getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestValidate(t *testing.T) {
	// The demo's variables, as `keyhole demo` fills them in.
	demoEnv := func(k string) string {
		return map[string]string{"KEYHOLE_DEMO_API_URL": "http://127.0.0.1:1", "KEYHOLE_DEMO_API_KEY": "k",
			"KEYHOLE_DEMO_MCP_URL": "http://127.0.0.1:2", "KEYHOLE_DEMO_MCP_RESOURCE": "http://127.0.0.1:8080/crm/mcp",
			"KEYHOLE_DEMO_MASK_KEY": "placeholder-0123456789", "KEYHOLE_DEMO_STORE": "sqlite://demo.db",
			"KEYHOLE_DEMO_ADMIN_URL": "http://127.0.0.1:9090", "KEYHOLE_DEMO_SESSION_KEY": "placeholder-session-key-0123456789abcdef"}[k]
	}
	for _, c := range []struct {
		file string
		env  func(string) string
	}{{"keyhole.yaml", testEnv}, {"demo.yaml", demoEnv}} {
		out, errOut, err := runCmd(t, c.env, "validate", "--config", "../../configs/"+c.file)
		if err != nil || !strings.Contains(out, "ok (") {
			t.Fatalf("validate %s = %v\nstdout: %s\nstderr: %s", c.file, err, out, errOut)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`identity:
  issuers:
    - issuer: https://acme.okta.com/oauth2/default
      audiences: [api://default]
upstreams:
  crm: { url: "http://crm:8080", credential: { header: X-Api-Key, value: "${MISSING_KEY}" } }
routes:
  - name: r1
    match: { metods: [GET], path: /a }
    upstream: crm
    allow: { groups: [g] }
  - name: r2
    match: { methods: [GET], path: /b }
    upstream: crn
    allow: { groups: [g] }
`), 0o600)
	_, errOut, err := runCmd(t, func(string) string { return "" }, "validate", "--config", bad)
	if !errors.Is(err, errReported) {
		t.Fatalf("validate bad.yaml = %v, want errReported", err)
	}
	for _, want := range []string{"line 6: upstreams.crm.credential.value:", "MISSING_KEY", "line 9: routes[0].match: unknown key \"metods\"", "line 14: routes[1].upstream: unknown upstream \"crn\""} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
}

func TestCheckExplainsDecision(t *testing.T) {
	out, errOut, err := runCmd(t, testEnv, "check", "--config", "../../configs/keyhole.yaml",
		"--method", "DELETE", "--path", "/crm/customers/42", "--sub", "0oa1", "--client-id", "0oa1", "--scopes", "crm.read")
	if err != nil {
		t.Fatalf("check = %v: %s", err, errOut)
	}
	for _, want := range []string{"route:     crm-delete-customer (pattern /crm/customers/{id}, upstream crm, forwards /customers/42)",
		"decision:  forbidden (403 forbidden)", "reason:    route crm-delete-customer requires group crm-writers"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestPolicyTests(t *testing.T) {
	out, errOut, err := runCmd(t, testEnv, "test", "../../configs/keyhole.policy.yaml")
	if err != nil {
		t.Fatalf("test keyhole.policy.yaml = %v\n%s%s", err, out, errOut)
	}
	failing := filepath.Join(t.TempDir(), "failing.policy.yaml")
	os.WriteFile(failing, []byte(`cases:
  - name: readers may delete
    request: { method: DELETE, path: /crm/customers/1 }
    identity: { sub: x, scopes: [crm.read] }
    expect: { decision: allow }
  - name: bulk is denied
    request: { method: POST, path: /crm/customers/bulk/x }
    identity: { sub: x }
    expect: { decision: denied, route: never-bulk-delete }
`), 0o600)
	out, _, err = runCmd(t, testEnv, "test", "--config", "../../configs/keyhole.yaml", failing)
	if !errors.Is(err, errReported) {
		t.Fatalf("test failing.policy.yaml = %v, want errReported", err)
	}
	if !strings.Contains(out, "FAIL "+failing+": readers may delete: decision forbidden, want allow") ||
		!strings.Contains(out, "pass "+failing+": bulk is denied") || !strings.Contains(out, "FAIL: 1 of 2 policy cases failed") {
		t.Errorf("output:\n%s", out)
	}
}

// background runs the CLI as main would until Stop is called or the test ends.
type background struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	once   sync.Once
}

func runBackground(t *testing.T, getenv func(string) string, stdout, stderr io.Writer, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- run(ctx, append([]string{"keyhole"}, args...), getenv, stdout, stderr) }()
	t.Cleanup(func() { b.Stop() })
	return b
}

// Stop cancels the command's context (as SIGTERM does) and returns what run returned.
func (b *background) Stop() error {
	b.once.Do(func() {
		b.cancel()
		b.err = <-b.done
	})
	return b.err
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url, token string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const serveConfig = `
listen: "%s"
admin: { listen: "%s" }
identity:
  issuers:
    - { issuer: "%s", audiences: [api://keyhole] }
upstreams:
  crm:
    url: "%s"
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
routes:
  - name: read
    match: { methods: [GET], path: "/customers/{id}" }
    upstream: crm
    allow: { groups: [%s] }
`

func TestServeReloads(t *testing.T) {
	const secret = "crm-PLANTED-secret-value-0d9e"
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	data, adm := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	write := func(group string) {
		os.WriteFile(path, []byte(fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, group)), 0o600)
	}
	write("readers")
	env := func(k string) string {
		if k == "CRM_KEY" {
			return secret
		}
		return ""
	}
	var stderr testkit.Buffer
	srv := runBackground(t, env, io.Discard, &stderr, "serve", "--config", path, "--watch-interval", "50ms")
	defer func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("serve returned %v", err)
		}
		for _, s := range []string{secret} {
			if strings.Contains(stderr.String(), s) {
				t.Errorf("logs contain the planted credential")
			}
		}
	}()
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })

	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, b := get("http://"+data+"/customers/1", tok); s != 200 {
		t.Fatalf("before reload: %d %s", s, b)
	}
	if h := up.Requests()[0].Header.Get("X-Api-Key"); h != secret {
		t.Errorf("upstream X-Api-Key = %q, want the configured credential", h)
	}

	write("writers")
	waitFor(t, "new rules", func() bool { s, _ := get("http://"+data+"/customers/1", tok); return s == 403 })

	os.WriteFile(path, []byte("routes: [ {name: broken"), 0o600)
	waitFor(t, "reload error metric", func() bool {
		_, m := get("http://"+adm+"/metrics", "")
		return strings.Contains(m, `keyhole_config_reloads_total{result="error"} 1`)
	})
	if s, _ := get("http://"+data+"/customers/1", tok); s != 403 {
		t.Errorf("after a bad file: %d, want the previous config's 403", s)
	}

	write("readers")
	waitFor(t, "recovered config", func() bool { s, _ := get("http://"+data+"/customers/1", tok); return s == 200 })
	_, m := get("http://"+adm+"/metrics", "")
	if !strings.Contains(m, `keyhole_config_reloads_total{result="success"} 2`) {
		t.Errorf("metrics lack two successful reloads:\n%s", grepLines(m, "keyhole_config_reloads_total"))
	}
	if strings.Contains(m, secret) {
		t.Error("metrics contain the planted credential")
	}

	// A reload to rules that read a claim: a token verified (and cached, with only the
	// claims the old rules read) before it must now be judged with that claim.
	tenantTok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "bob", "tenant": "acme"})
	if s, _ := get("http://"+data+"/customers/1", tenantTok); s != 403 {
		t.Fatalf("tenant token under the group rule: %d, want 403", s)
	}
	byClaim := strings.Replace(fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers"),
		"allow: { groups: [readers] }", "allow: { claims: { tenant: acme } }", 1)
	os.WriteFile(path, []byte(byClaim), 0o600)
	waitFor(t, "rules on a claim", func() bool { s, _ := get("http://"+data+"/customers/1", tenantTok); return s == 200 })
	if s, _ := get("http://"+data+"/customers/1", tok); s != 403 {
		t.Errorf("token without the claim under the claim rule: %d, want 403", s)
	}
}

func TestServeReloadsOnSIGHUP(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	data, adm := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	write := func(group string) {
		os.WriteFile(path, []byte(fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, group)), 0o600)
	}
	write("readers")
	runBackground(t, func(string) string { return "k" }, io.Discard, io.Discard, "serve", "--config", path, "--watch-interval", "0")
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	write("writers")
	time.Sleep(100 * time.Millisecond)
	if s, _ := get("http://"+data+"/customers/1", tok); s != 200 {
		t.Fatalf("without SIGHUP (watch off) the old config must serve: %d", s)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "reload on SIGHUP", func() bool { s, _ := get("http://"+data+"/customers/1", tok); return s == 403 })
}

// demoRun is a running `keyhole demo`: its addresses, store, what it printed and the
// tokens it printed.
type demoRun struct {
	data, adm, store string
	stdout           *testkit.Buffer
	tokens           map[string]string
	stop             func() error // stops the demo (the test's end does too)
}

// startDemo runs `keyhole demo` on free loopback ports until the test ends.
func startDemo(t *testing.T) demoRun {
	t.Helper()
	return startDemoAt(t, freeAddr(t), freeAddr(t), "sqlite://"+filepath.Join(t.TempDir(), "demo.db"))
}

// startDemoAt runs `keyhole demo` on the given addresses and store until the test ends.
func startDemoAt(t *testing.T, data, adm, store string) demoRun {
	t.Helper()
	d := demoRun{data: data, adm: adm, store: store, stdout: &testkit.Buffer{}, tokens: map[string]string{}}
	demo := runBackground(t, func(string) string { return "" }, d.stdout, io.Discard, "demo", "--listen", d.data, "--admin", d.adm, "--store", d.store)
	d.stop = demo.Stop
	t.Cleanup(func() {
		if err := demo.Stop(); err != nil {
			t.Errorf("demo returned %v", err)
		}
	})
	waitFor(t, "demo tokens", func() bool { return strings.Contains(d.stdout.String(), "curl -si") })
	for _, m := range regexp.MustCompile(`export (\w+)=(\S+)`).FindAllStringSubmatch(d.stdout.String(), -1) {
		d.tokens[m[1]] = m[2]
	}
	if len(d.tokens) != 4 {
		t.Fatalf("demo printed %d tokens, want 4:\n%s", len(d.tokens), d.stdout.String())
	}
	return d
}

func TestDemo(t *testing.T) {
	d := startDemo(t)
	data, adm, store, stdout, tokens := d.data, d.adm, d.store, d.stdout, d.tokens
	// Every curl line the demo prints must do what its comment says.
	// So must the approver's commands, run in between.
	approverEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": tokens["APPROVER"]}[k] }
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	var comment, approvalID string
	checked, approved := 0, false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "# ") {
			comment = line
			continue
		}
		if strings.HasPrefix(line, "KEYHOLE_TOKEN=$APPROVER keyhole approvals ") {
			args := strings.Fields(strings.TrimPrefix(line, "KEYHOLE_TOKEN=$APPROVER keyhole "))
			for i, a := range args {
				switch {
				case a == "ID":
					args[i] = approvalID
				case strings.HasPrefix(a, "http://"):
					args[i] = "http://" + adm
				}
			}
			args = regroupQuoted(args)
			out, errOut, err := runCmd(t, approverEnv, args...)
			if err != nil || !strings.Contains(out, approvalID) {
				t.Errorf("%s = %v %s\n%s", line, err, errOut, out)
			}
			approved = approved || args[1] == "approve"
			continue
		}
		// SESSION=$(curl ...) keeps the MCP session its initialize opens, for the lines after it.
		session := strings.HasPrefix(line, "SESSION=$(curl ")
		if !strings.HasPrefix(line, "curl ") && !session {
			continue
		}
		status, header := curlLike(t, line, tokens)
		if session {
			if tokens["SESSION"] = header.Get("Mcp-Session-Id"); tokens["SESSION"] == "" {
				t.Errorf("%s\nanswered no Mcp-Session-Id", line)
			}
		}
		if strings.HasPrefix(comment, "# approval pending") {
			approvalID = header.Get("X-Keyhole-Approval")
		}
		want := map[string]int{"# allowed": 200, "# forbidden": 403, "# denied": 403, "# no route": 404, "# unauthenticated": 401, "# approval pending": 403}
		matched := false
		if m := regexp.MustCompile(`\((\d{3})\b`).FindStringSubmatch(comment); m != nil {
			// The comment names the status: that is the one to get.
			code, _ := strconv.Atoi(m[1])
			want = map[string]int{comment: code}
		}
		for prefix, code := range want {
			if strings.HasPrefix(comment, prefix) {
				matched = true
				if status != code {
					t.Errorf("%s\n%s\n= %d, want %d", comment, line, status, code)
				}
			}
		}
		if !matched {
			t.Errorf("curl line without a known outcome comment: %s", comment)
		}
		checked++
	}
	if checked < 5 {
		t.Errorf("checked %d curl lines, want at least 5", checked)
	}
	if approvalID == "" || !approved {
		t.Errorf("the demo's approval walk-through did not run: approval %q, approved %v", approvalID, approved)
	}

	s, b := get("http://"+data+"/crm/customers/1", tokens["READER"])
	for _, want := range []string{`"ssn":"[REDACTED]"`, `"card_number":"************4242"`, `"email":"[EMAIL]"`} {
		if !strings.Contains(b, want) {
			t.Errorf("demo customer read = %d %s, lacks %s", s, b, want)
		}
	}
	_, b = get("http://"+data+"/crm/customers", tokens["READER"])
	for _, planted := range []string{"078-05-1120", "4242424242424242", "ada@example.com"} {
		if strings.Contains(b, planted) {
			t.Errorf("demo customer list leaks %s: %s", planted, b)
		}
	}
	if !strings.Contains(b, `"email":"sha256:`) {
		t.Errorf("demo customer list does not hash emails: %s", b)
	}

	// The auditor's commands the demo prints work, against the gateway and the store file.
	auditorEnv := func(k string) string { return map[string]string{"KEYHOLE_TOKEN": tokens["KEYHOLE_TOKEN"]}[k] }
	out, errOut, err := runCmd(t, auditorEnv, "records", "list", "--server", "http://"+adm)
	if err != nil || !strings.Contains(out, "crm-read-customer") || !strings.Contains(out, "forbidden") {
		t.Errorf("records list --server = %v %s\n%s", err, errOut, out)
	}
	id := regexp.MustCompile(`(?m)^([0-9A-Z]{26})\s+\S+ \S+\s+GET\s+/crm/customers/1\s+200`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("records list shows no allowed read of customer 1:\n%s", out)
	}
	if out, errOut, err = runCmd(t, auditorEnv, "replay", id[1], "--server", "http://"+adm); err != nil || !strings.Contains(out, `"same": true`) {
		t.Errorf("replay %s = %v %s\n%s", id[1], err, errOut, out)
	}
	if out, errOut, err = runCmd(t, auditorEnv, "records", "verify", "--server", "http://"+adm); err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("records verify --server = %v %s %s", err, errOut, out)
	}
	noEnv := func(string) string { return "" }
	if out, errOut, err = runCmd(t, noEnv, "records", "verify", "--store", store); err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("records verify --store = %v %s %s", err, errOut, out)
	}
	missing := filepath.Join(t.TempDir(), "typo.db")
	if _, errOut, err = runCmd(t, noEnv, "records", "list", "--store", "sqlite://"+missing); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("records list --store on a missing file = %v %s, want an error", err, errOut)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("records list --store created %s", missing)
	}
	harFile := filepath.Join(t.TempDir(), "demo.har")
	if _, errOut, err = runCmd(t, noEnv, "records", "export", "--har", "--store", store, "--decision", "forbidden", "-o", harFile); err != nil {
		t.Errorf("records export --har --store = %v %s", err, errOut)
	}
	var har struct {
		Log struct{ Entries []json.RawMessage }
	}
	// The reader's DELETE, and its delete_customer over MCP.
	if b, _ := os.ReadFile(harFile); json.Unmarshal(b, &har) != nil || len(har.Log.Entries) != 2 {
		t.Errorf("exported HAR of forbidden exchanges has %d entries, want 2", len(har.Log.Entries))
	}
	if out, errOut, err = runCmd(t, noEnv, "records", "show", id[1], "--store", store); err != nil || !strings.Contains(out, `"route": "crm-read-customer"`) {
		t.Errorf("records show --store = %v %s %s", err, errOut, out)
	}
	if _, m := get("http://"+adm+"/metrics", ""); !strings.Contains(m, "keyhole_recorder_write_seconds_count") || !strings.Contains(m, "keyhole_recorder_dropped_total 0") {
		t.Errorf("metrics lack the recorder's:\n%s", grepLines(m, "keyhole_recorder"))
	}

	out, errOut, err = runCmd(t, nil, "token", "--issuer", "http://"+adm+"/dev", "--sub", "agent-x", "--client-id", "agent-x", "--scopes", "crm.read")
	if err != nil {
		t.Fatalf("token = %v %s", err, errOut)
	}
	if s, b := get("http://"+data+"/crm/customers/2", strings.TrimSpace(out)); s != 200 || !strings.Contains(b, "Grace Hopper") {
		t.Errorf("minted token: GET customer 2 = %d %s", s, b)
	}
}

// curlLike performs one of the demo's curl lines with Go's client and returns the status.
func curlLike(t *testing.T, line string, tokens map[string]string) (int, http.Header) {
	t.Helper()
	method := "GET"
	if m := regexp.MustCompile(`-X (\w+)`).FindStringSubmatch(line); m != nil {
		method = m[1]
	}
	url := regexp.MustCompile(`http://\S+`).FindString(line)
	var body io.Reader
	if m := regexp.MustCompile(`-d '([^']*)'`).FindStringSubmatch(line); m != nil {
		body = strings.NewReader(m[1])
	}
	req, _ := http.NewRequest(method, url, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// Every -H "Name: value" or -H 'Name: value', with $VAR in double quotes taken from tokens.
	for _, m := range regexp.MustCompile(`-H (?:"([\w-]+): ([^"]*)"|'([\w-]+): ([^']*)')`).FindAllStringSubmatch(line, -1) {
		if m[1] != "" {
			req.Header.Set(m[1], regexp.MustCompile(`\$(\w+)`).ReplaceAllStringFunc(m[2], func(v string) string { return tokens[v[1:]] }))
		} else {
			req.Header.Set(m[3], m[4])
		}
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// regroupQuoted joins shell words split inside double quotes ("ticket 4411") back into
// one argument, without the quotes.
func regroupQuoted(words []string) []string {
	var out []string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, `"`) && !strings.HasSuffix(w, `"`) {
			for i+1 < len(words) {
				i++
				w += " " + words[i]
				if strings.HasSuffix(words[i], `"`) {
					break
				}
			}
		}
		out = append(out, strings.Trim(w, `"`))
	}
	return out
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReloadKeepsKeysWhileIdPIsDown changes the issuers while the IdP is unreachable: the
// reload must be refused (and counted), and the running verifier keep its good keys.
func TestReloadKeepsKeysWhileIdPIsDown(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	data, adm := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	base := fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers")
	os.WriteFile(path, []byte(base), 0o600)
	runBackground(t, func(string) string { return "k" }, io.Discard, io.Discard,
		"serve", "--config", path, "--watch-interval", "50ms", "--reload-issuer-wait", "300ms")
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, _ := get("http://"+data+"/customers/1", tok); s != 200 {
		t.Fatalf("before: %d", s)
	}
	iss.FailDiscovery(testkit.Fail500)
	iss.FailJWKS(testkit.Fail500)
	os.WriteFile(path, []byte(strings.Replace(base, "audiences: [api://keyhole]", "audiences: [api://keyhole, api://other]", 1)), 0o600)
	waitFor(t, "refused reload", func() bool {
		_, m := get("http://"+adm+"/metrics", "")
		return strings.Contains(m, `keyhole_config_reloads_total{result="error"} 1`)
	})
	if s, b := get("http://"+data+"/customers/1", tok); s != 200 {
		t.Errorf("with the IdP down after a refused reload: %d %s, want 200 from the running keys", s, b)
	}
	if s, _ := get("http://"+adm+"/readyz", ""); s != 200 {
		t.Errorf("readyz = %d, want 200", s)
	}
}

// TestValueFileRotationReloads rotates a credential file without touching the config.
func TestValueFileRotationReloads(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	data, adm := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "crm.key")
	os.WriteFile(secretFile, []byte("first-key\n"), 0o600)
	cfg := strings.Replace(fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers"),
		`value: "${CRM_KEY}"`, `value_file: crm.key`, 1)
	path := filepath.Join(dir, "keyhole.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	runBackground(t, func(string) string { return "" }, io.Discard, io.Discard, "serve", "--config", path, "--watch-interval", "50ms")
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	lastKey := func() string {
		get("http://"+data+"/customers/1", tok)
		reqs := up.Requests()
		return reqs[len(reqs)-1].Header.Get("X-Api-Key")
	}
	if k := lastKey(); k != "first-key" {
		t.Fatalf("upstream key = %q, want first-key", k)
	}
	os.WriteFile(secretFile, []byte("second-key\n"), 0o600)
	waitFor(t, "rotated key", func() bool { return lastKey() == "second-key" })
}
