package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/pgtest"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/postgres"
)

// replicaRoutes adds to serveConfig a route whose deletes wait for an approver.
const replicaRoutes = `  - name: purge
    match: { methods: [DELETE], path: "/customers/{id}" }
    upstream: crm
    allow: { groups: [readers] }
    approval: { approvers: { groups: [approvers] }, hold: 30s }
`

// TestReplicas runs three `keyhole serve` processes on one PostgreSQL and one upstream,
// with traffic spread over them: an approval requested on one replica and decided
// through another releases the request held on the first; one replica is killed with
// SIGKILL and PostgreSQL is restarted under load; the others recover by themselves.
// Then the one chain verifies, every request the upstream received has its record, and
// no exchange is recorded twice.
func TestReplicas(t *testing.T) {
	pg := pgtest.NewServer(t)
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	var gws []*faultProc
	for range 3 {
		gws = append(gws, startFault(t, func(data, adm string) string {
			return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + replicaRoutes +
				strictStore(pg.DSN)
		}, "CRM_KEY=replica-key-0001"))
	}
	agent := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "agent-7", "groups": []string{"readers"}})
	approver := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "alice", "groups": []string{"approvers"}})
	var addrs []string
	for _, g := range gws {
		addrs = append(addrs, g.Data)
	}
	l := startLoadOn(addrs, agent, 6, customers)
	waitFor(t, "load on every replica", func() bool { return l.n.Load() >= 150 })

	// Held on replica 0, seen on replica 1, approved through replica 2.
	held := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("DELETE", "http://"+gws[0].Data+"/customers/42", nil)
		req.Header.Set("Authorization", "Bearer "+agent)
		resp, err := (&http.Client{Timeout: 40 * time.Second}).Do(req)
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	var id string
	waitFor(t, "the approval, listed on another replica", func() bool {
		_, body := get("http://"+gws[1].Admin+"/api/v1/approvals?state=pending", approver)
		var list struct {
			Approvals []struct {
				ID string `json:"id"`
			} `json:"approvals"`
		}
		if json.Unmarshal([]byte(body), &list) == nil && len(list.Approvals) == 1 {
			id = list.Approvals[0].ID
		}
		return id != ""
	})
	req, _ := http.NewRequest("POST", "http://"+gws[2].Admin+"/api/v1/approvals/"+id+"/approve", strings.NewReader(`{"comment":"ok"}`))
	req.Header.Set("Authorization", "Bearer "+approver)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("approve through replica 2 = %v %v", resp, err)
	}
	resp.Body.Close()
	decided := time.Now()
	select {
	case s := <-held:
		if s != 200 {
			t.Fatalf("the held DELETE answered %d after the approval, want 200", s)
		}
		t.Logf("released on replica 0 %v after the decision on replica 2", time.Since(decided).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the DELETE held on replica 0 was not released by the approval given through replica 2")
	}

	gws[2].Kill()
	before := l.n.Load()
	waitFor(t, "load after the kill", func() bool { return l.n.Load() >= before+100 })
	pg.Restart(t)
	for _, g := range gws[:2] {
		waitFor(t, "a replica recovering from the restart by itself", func() bool {
			s, _ := get("http://"+g.Data+"/customers/after-restart", agent)
			return s == 200
		})
	}
	before = l.n.Load()
	waitFor(t, "load after the restart", func() bool { return l.n.Load() >= before+100 })
	status := l.Stop()
	t.Logf("answers by status: %v", status)

	ctx := context.Background()
	st, err := postgres.OpenReadOnly(ctx, pg.DSN, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := recorder.Verify(ctx, st, nil)
	if err != nil || !rep.OK {
		t.Fatalf("Verify of the chain three replicas wrote = %+v, %v", rep, err)
	}
	received := up.Requests()
	missing := 0
	for _, r := range received {
		id := r.Header.Get("X-Request-Id")
		if _, err := st.Get(ctx, id); err != nil {
			if missing++; missing <= 5 {
				t.Errorf("request %s %s reached the upstream but has no record: %v", r.Method, r.RequestURI, err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d forwarded requests have no record", missing, len(received))
	}
	if n := pgtest.QueryInt(t, pg.DSN, `SELECT COUNT(*) FROM (SELECT exchange_id FROM entries WHERE kind = 'request'
		GROUP BY exchange_id HAVING COUNT(*) > 1) AS twice`); n != 0 {
		t.Errorf("%d exchanges have their request recorded twice", n)
	}
	if status[200] > len(received) {
		t.Errorf("clients got %d answers 200, the upstream saw %d requests", status[200], len(received))
	}
	t.Logf("upstream received %d; %d chain entries verify", len(received), rep.Entries)
}

// TestFaultPostgresDownAtStart starts a gateway while its PostgreSQL is down: it starts,
// /readyz says why, strict mode refuses at once with 503 recorder_unavailable (no
// hang, nothing forwarded), and once the server is up the gateway recovers by itself.
func TestFaultPostgresDownAtStart(t *testing.T) {
	pg := pgtest.NewServer(t)
	pg.Down(t)
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	p := launchFault(t, func(data, adm string) string {
		return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore(pg.DSN)
	}, "CRM_KEY=down-key-0001")
	var reason string
	waitFor(t, "readyz saying why", func() bool {
		s, body := get("http://"+p.Admin+"/readyz", "")
		reason = body
		return s == 503 && strings.Contains(body, "record store unreachable")
	})
	host := strings.TrimPrefix(pg.DSN[strings.Index(pg.DSN, "@"):], "@")
	host = host[:strings.Index(host, "/")]
	if !strings.Contains(reason, host) {
		t.Errorf("readyz = %s, want it to name the server %s", reason, host)
	}
	if _, pw, _ := strings.Cut(strings.TrimPrefix(pg.DSN, "postgres://keyhole:"), "@"); strings.Contains(reason+p.Stderr.String(), pw) {
		t.Errorf("the store's password is in readyz or the log")
	}
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	for i := range 5 {
		start := time.Now()
		s, body := get(fmt.Sprintf("http://%s/customers/down-%d", p.Data, i), tok)
		if s != 503 || !strings.Contains(body, `"recorder_unavailable"`) {
			t.Fatalf("GET while PostgreSQL is down = %d %s, want 503 recorder_unavailable", s, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the refusal took %v, want it at once", d)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("%d requests reached the upstream unrecorded", n)
	}
	pg.Up(t)
	p.WaitReady()
	if s, body := get("http://"+p.Data+"/customers/up", tok); s != 200 {
		t.Fatalf("GET once PostgreSQL is up = %d %s, want 200", s, body)
	}
}

// TestPostgresCLI applies the schema by hand with `keyhole migrate`, records through a
// gateway on it, and reads the records with `keyhole records --store` as a role that
// may only SELECT, as an auditor would.
func TestPostgresCLI(t *testing.T) {
	dsn := pgtest.DSN(t)
	out, errOut, err := runCmd(t, testEnv, "migrate", "--store", dsn)
	if err != nil || !strings.Contains(out, "applied 0001_init.sql") {
		t.Fatalf("migrate = %q %q %v, want it to say what it applied", out, errOut, err)
	}
	if out, _, err := runCmd(t, testEnv, "migrate", "--store", dsn); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate again = %q %v, want up to date", out, err)
	}
	if _, errOut, err := runCmd(t, testEnv, "migrate", "--store", "sqlite://x.db"); err == nil || !strings.Contains(errOut, "PostgreSQL") {
		t.Errorf("migrate on a SQLite store = %q %v, want a usage error", errOut, err)
	}

	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore(dsn)
	}, "CRM_KEY=cli-key-0001")
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, _ := get("http://"+p.Data+"/customers/77", tok); s != 200 {
		t.Fatalf("GET = %d, want 200", s)
	}
	p.Kill() // strict mode: the request part is durable before forwarding

	auditor, pw := pgtest.Role(t, dsn)
	pgtest.Exec(t, dsn, `GRANT SELECT ON schema_migrations, entries, exchanges, approvals, approval_decisions TO "`+auditor+`"`)
	ro := pgtest.WithUser(t, dsn, auditor, pw)
	out, errOut, err = runCmd(t, testEnv, "records", "list", "--store", ro)
	if err != nil || !strings.Contains(out, "/customers/77") {
		t.Fatalf("records list --store as auditor = %q %q %v", out, errOut, err)
	}
	if out, errOut, err := runCmd(t, testEnv, "records", "verify", "--store", ro); err != nil || !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("records verify --store as auditor = %q %q %v", out, errOut, err)
	}
	if strings.Contains(out+errOut, pw) {
		t.Error("the role's password is in the command's output")
	}
}

// TestReplicasShareSettings: a replica whose masking.hash_key differs from the one the
// replicas of its store last ran warns at start (and still serves); one that agrees
// does not.
func TestReplicasShareSettings(t *testing.T) {
	dsn := pgtest.DSN(t)
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	const warning = "every replica must share them"
	written := func() int {
		return pgtest.QueryInt(t, dsn, "SELECT COALESCE(MAX(updated_ns) % 1000000000, -1)::int FROM settings")
	}
	// Each replica compares and writes once it serves: wait for its write before the next.
	replica := func(key string) *faultProc {
		before := -2
		if pgtest.QueryInt(t, dsn, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'settings'") == 1 {
			before = written()
		}
		p := startFault(t, func(data, adm string) string {
			return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore(dsn) +
				fmt.Sprintf("masking: { hash_key: %q }\n", key)
		}, "CRM_KEY=shared-key-0001")
		waitFor(t, "the replica's settings written", func() bool { return written() != before })
		return p
	}
	first := replica("hash-key-one-0123456789")
	agrees := replica("hash-key-one-0123456789")
	differs := replica("hash-key-two-0123456789")
	waitFor(t, "the warning of the replica that differs", func() bool { return strings.Contains(differs.Stderr.String(), warning) })
	for name, p := range map[string]*faultProc{"first": first, "agreeing": agrees} {
		if strings.Contains(p.Stderr.String(), warning) {
			t.Errorf("the %s replica warned: %s", name, p.Stderr)
		}
	}
	if strings.Contains(differs.Stderr.String(), "hash-key-two") {
		t.Error("the warning quotes the hash key")
	}
}

// TestDemoAPI serves the demo API alone, as deploy/compose runs it: the key from the
// file opens it, anything else is 401.
func TestDemoAPI(t *testing.T) {
	keyFile := t.TempDir() + "/key"
	if err := os.WriteFile(keyFile, []byte("demo-api-key-0001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	b := runBackground(t, testEnv, io.Discard, io.Discard, "demo-api", "--listen", addr, "--api-key-file", keyFile)
	defer b.Stop()
	call := func(key string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/customers", nil)
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "the demo API", func() bool { return call("demo-api-key-0001") == 200 })
	if s := call("wrong"); s != 401 {
		t.Errorf("a wrong key = %d, want 401", s)
	}
}
