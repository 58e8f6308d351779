package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
	"github.com/tidwall/gjson"
)

// writeFile writes data to name in a new temporary directory and returns its path.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidateOneErrorPerMistake checks that validate reports each mistake once: a bad
// mask action not again as a bad field, a bad detector once and with the valid names, a
// misspelt key not again as a missing one.
func TestValidateOneErrorPerMistake(t *testing.T) {
	bad := writeFile(t, "bad.yaml", `listen: 127.0.0.1:8080
identity: { dev: true }
upstreams: { crm: { url: "http://127.0.0.1:1" } }
routes:
  - name: r
    match: { method: [GET], path: /x }
    upstream: crm
    allow: { groups: [g] }
    mask:
      - { field: a.b, action: zap }
    detect: [credit_cardz]
`)
	_, errOut, err := runCmd(t, testEnv, "validate", "--config", bad)
	if !errors.Is(err, errReported) {
		t.Fatalf("validate = %v, want errReported", err)
	}
	want := bad + `: 3 error(s):
  line 6: routes[0].match: unknown key "method" (did you mean "methods"?)
  line 10: routes[0].mask[0].action: unknown action "zap": want redact, remove, hash, last4
  line 11: routes[0].detect[0]: unknown detector "credit_cardz": want credit_card, us_ssn, email, phone, iban, bearer_token, aws_access_key, private_key
`
	if errOut != want {
		t.Errorf("validate printed\n%s\nwant\n%s", errOut, want)
	}
}

// TestValidateSays checks the line a successful validate prints: counts, and the dev
// issuer only when it is on.
func TestValidateSays(t *testing.T) {
	for _, c := range []struct{ dev, want string }{
		{"false", "ok (1 route, 0 guards, 1 upstream, 1 issuer)\n"},
		{"true", "ok (1 route, 0 guards, 1 upstream, 1 issuer, and the dev issuer)\n"},
	} {
		cfg := writeFile(t, "k.yaml", `listen: 127.0.0.1:8080
identity:
  dev: `+c.dev+`
  issuers: [{ issuer: "https://idp.example/oauth2/default", audiences: [a] }]
upstreams: { crm: { url: "http://127.0.0.1:1" } }
routes:
  - { name: r, match: { methods: [GET], path: /x }, upstream: crm, allow: { groups: [g] } }
`)
		out, errOut, err := runCmd(t, testEnv, "validate", "--config", cfg)
		if err != nil || out != cfg+": "+c.want {
			t.Errorf("validate (dev %s) = %v, printed %q (stderr %s), want %q", c.dev, err, out, errOut, cfg+": "+c.want)
		}
	}
}

// TestPolicyFileTypo checks that a misspelt key of a policy file is reported with its
// line, field path and the key it is likely a typo of, like a config error.
func TestPolicyFileTypo(t *testing.T) {
	abs, _ := filepath.Abs("../../configs/keyhole.yaml")
	file := writeFile(t, "typo.policy.yaml", "config: "+abs+`
cases:
  - name: a
    request: { method: GET, path: /crm/customers/1 }
    identity: { sub: x, scopes: [crm.read], claims: { tenant: acme } }
    expect: { decison: allow }
  - requst: { method: GET }
    expect: { decision: allow }
colour: blue
`)
	_, errOut, err := runCmd(t, testEnv, "test", file)
	if !errors.Is(err, errReported) {
		t.Fatalf("test = %v, want errReported", err)
	}
	want := file + `: 3 error(s):
  line 6: cases[0].expect: unknown key "decison" (did you mean "decision"?)
  line 7: cases[1]: unknown key "requst" (did you mean "request"?)
  line 9: unknown key "colour"
`
	if errOut != want {
		t.Errorf("test printed\n%s\nwant\n%s", errOut, want)
	}
}

// TestCheckPrints checks check's identity and decision lines: the claims given with
// --claim are echoed, and an allow has no empty code.
func TestCheckPrints(t *testing.T) {
	out, errOut, err := runCmd(t, testEnv, "check", "--config", "../../configs/keyhole.yaml", "--method", "GET",
		"--path", "/crm/customers/1", "--sub", "a", "--scopes", "crm.read", "--claim", "tenant=acme", "--claim", "b=2")
	if err != nil {
		t.Fatalf("check = %v: %s", err, errOut)
	}
	for _, want := range []string{
		"identity:  sub=\"a\" client_id=\"\" groups=[] scopes=[crm.read] claims={b=\"2\" tenant=\"acme\"}\n",
		"decision:  allow (200)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check printed\n%s\nwant a line %q", out, want)
		}
	}
}

// TestSubcommandHelp checks that COMMAND --help prints that command's usage with its
// own flags only, and exits as help does (flag.ErrHelp, status 2).
func TestSubcommandHelp(t *testing.T) {
	for _, c := range []struct {
		args     []string
		want     []string
		dontWant []string
	}{
		{[]string{"records", "--help"}, []string{"list", "show ID", "export --format", "tail", "verify"}, []string{"Usage of"}},
		{[]string{"records", "show", "--help"}, []string{"-server", "-store"}, []string{"-since", "-format", "-json", "-after"}},
		{[]string{"records", "list", "--help"}, []string{"-since", "-json"}, []string{"-format", "-after", "-har", "-o "}},
		{[]string{"records", "tail", "--help"}, []string{"-after", "-format"}, []string{"-json", "-har"}},
		{[]string{"approvals", "--help"}, []string{"list [--state", "approve ID", "deny ID"}, []string{"Usage of"}},
		{[]string{"approvals", "list", "--help"}, []string{"-state", "-server"}, []string{"-comment"}},
		{[]string{"approvals", "approve", "--help"}, []string{"usage: keyhole approvals approve ID", "-comment", "-server"}, []string{"-state", "-json"}},
		{[]string{"approvals", "deny", "-h"}, []string{"usage: keyhole approvals deny ID", "-comment", "-server"}, []string{"-state", "-json"}},
		{[]string{"approvals", "show", "help"}, []string{"usage: keyhole approvals show ID", "-json", "-server"}, []string{"-state", "-comment"}},
		{[]string{"records", "show", "-h"}, []string{"usage: keyhole records show ID", "-server"}, []string{"-since"}},
		{[]string{"replay", "--help"}, []string{"usage: keyhole replay ID", "-allow-unsafe", "-dry-run", "-target", "-server"}, []string{"-since", "-decision", "-store", "-limit"}},
		{[]string{"replay", "help"}, []string{"usage: keyhole replay ID", "-allow-unsafe"}, []string{"-since"}},
		{[]string{"replay", "01JDX", "-h"}, []string{"usage: keyhole replay ID", "-allow-unsafe"}, []string{"-since"}},
		{[]string{"token", "--help"}, []string{"-issuer URL", `(default "http://127.0.0.1:9090/dev")`}, []string{"-issuer keyhole"}},
	} {
		name := strings.Join(c.args, " ")
		_, errOut, err := runCmd(t, testEnv, c.args...)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s = %v, want flag.ErrHelp", name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s printed\n%s\nwant %q in it", name, errOut, w)
			}
		}
		for _, w := range c.dontWant {
			if strings.Contains(errOut, w) {
				t.Errorf("%s printed\n%s\nwhich names %q, not one of its flags", name, errOut, w)
			}
		}
	}
}

// TestApprovalsListHint checks that the hint under the approvals table is a command that
// runs as printed: with the --server the list was read from.
func TestApprovalsListHint(t *testing.T) {
	var out strings.Builder
	page := `{"approvals":[{"id":"01JDX","route":"crm-delete","method":"DELETE","path":"/crm/customers/1","state":"pending"}]}`
	if err := approvalTable(&out, json.RawMessage(page), "keyhole", "http://127.0.0.1:9090"); err != nil {
		t.Fatal(err)
	}
	if want := "keyhole approvals show ID --server http://127.0.0.1:9090\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("approvals list printed\n%s\nwant it to end with %q", out.String(), want)
	}
}

// TestRecordsListAligns checks that every column of records list starts where its
// heading does, whatever the length of a row's decision (approval_pending) or route.
func TestRecordsListAligns(t *testing.T) {
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "keyhole.db")
	st, err := sqlite.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(st, recorder.Policy{Mode: recorder.Strict, BodyLimit: 512, Redactor: recorder.NewRedactor(nil, nil)}, recorder.Options{})
	for i, d := range []string{"approval_pending", "allowed", "forbidden"} {
		x := &recorder.Exchange{ID: fmt.Sprintf("01JDX00000000000000000000%d", i), ReceivedAt: time.Now(),
			Route: strings.Repeat("r", 5+10*i), Decision: d, Request: recorder.Request{Method: "DELETE", Path: "/crm/customers/1"},
			Identity: &recorder.Identity{Subject: "alice@example.com"}}
		rec.Refused(x)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	out, errOut, err := runCmd(t, testEnv, "records", "list", "--store", dsn)
	if err != nil {
		t.Fatalf("records list = %v %s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("records list printed\n%s\nwant a heading and 3 rows", out)
	}
	for _, col := range []string{"DECISION", "ROUTE", "SUBJECT"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if len(l) <= at || l[at] == ' ' || l[at-1] != ' ' {
				t.Errorf("column %s starts at %d, but not in row\n%s\nof\n%s", col, at, l, out)
			}
		}
	}
}

// TestCommandForm checks that printed hints use the command the user ran: the name found
// on PATH, a path as typed, or go run for a binary go run built.
func TestCommandForm(t *testing.T) {
	for _, c := range []struct{ arg0, want string }{
		{"keyhole", "keyhole"},
		{"./keyhole", "./keyhole"},
		{"/usr/local/bin/keyhole", "/usr/local/bin/keyhole"},
		{"bin/keyhole-1.4", "bin/keyhole-1.4"},
		{"/opt/my tools/keyhole", `'/opt/my tools/keyhole'`},
		{"/tmp/go-build3046458343/b001/exe/keyhole", "go run ./cmd/keyhole"},
		{"/root/.cache/go-build/7b/7b1f5b46c45af263109d85478b81f20c3ed47f3561c4fbed0e5a75ae6441fb90-d/keyhole", "go run ./cmd/keyhole"},
		{"/home/ada/go-build/keyhole", "/home/ada/go-build/keyhole"},
	} {
		if got := commandForm(c.arg0); got != c.want {
			t.Errorf("commandForm(%q) = %q, want %q", c.arg0, got, c.want)
		}
	}
	// Each hint, run as ./keyhole.
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, `Run "./keyhole COMMAND --help"`},
		{[]string{"records", "--help"}, `Run "./keyhole records SUBCOMMAND --help"`},
		{[]string{"approvals", "--help"}, `Run "./keyhole approvals SUBCOMMAND --help"`},
		{[]string{"token", "--issuer", "http://127.0.0.1:1/dev", "--sub", "ada"}, "start `./keyhole demo`, or `./keyhole serve`"},
	} {
		var out, errOut testkit.Buffer
		err := run(context.Background(), append([]string{"./keyhole"}, c.args...), testEnv, &out, &errOut)
		if got := fmt.Sprint(out.String(), errOut.String(), err); !strings.Contains(got, c.want) {
			t.Errorf("./keyhole %s printed\n%s\nwant %q in it", strings.Join(c.args, " "), got, c.want)
		}
	}
	var out strings.Builder
	page := `{"approvals":[{"id":"01JDX","route":"crm-delete","method":"DELETE","path":"/crm/customers/1","state":"pending"}]}`
	if err := approvalTable(&out, json.RawMessage(page), "go run ./cmd/keyhole", "http://127.0.0.1:9090"); err != nil {
		t.Fatal(err)
	}
	if want := "go run ./cmd/keyhole approvals show ID --server http://127.0.0.1:9090\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("approvals list printed\n%s\nwant it to end with %q", out.String(), want)
	}
}

// TestDemoTokensSurviveRestart checks that the tokens a demo prints stay valid after it
// restarts on the same store — the dev issuer's key is kept beside the store (mode
// 0600) — and that hashed fields stay joinable: the hash key derives from that key.
func TestDemoTokensSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	data, adm, store := freeAddr(t), freeAddr(t), "sqlite://"+filepath.Join(dir, "demo.db")
	first := startDemoAt(t, data, adm, store)
	reader := first.tokens["READER"]
	if s, b := get("http://"+data+"/crm/customers/1", reader); s != 200 {
		t.Fatalf("first demo: GET /crm/customers/1 with its READER token = %d %s", s, b)
	}
	hashed := func(run string) string {
		s, b := get("http://"+data+"/crm/customers", reader)
		email := gjson.Get(b, "customers.0.email").String()
		if s != 200 || email == "" || strings.Contains(email, "@") {
			t.Fatalf("%s demo: GET /crm/customers = %d, first email %q; want 200 and a hashed email", run, s, email)
		}
		return email
	}
	firstHash := hashed("first")
	if err := first.stop(); err != nil {
		t.Fatalf("first demo returned %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "dev-issuer.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev-issuer.key beside the store: %v, %v; want a file of mode 0600", fi, err)
	}
	startDemoAt(t, data, adm, store)
	if s, b := get("http://"+data+"/crm/customers/1", reader); s != 200 {
		t.Errorf("second demo: GET /crm/customers/1 with the first demo's READER token = %d %s, want 200", s, b)
	}
	if h := hashed("second"); h != firstHash {
		t.Errorf("the first customer's hashed email = %q after the restart, %q before; want the same (joinable)", h, firstHash)
	}
}
