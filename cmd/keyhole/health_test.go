package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// TestServeOpsListener runs serve with ops.listen and checks that the operations
// listener answers the probes and the same metrics as the admin listener, serves
// nothing else (no admin API, no profiles even with --pprof), and that keyhole health
// reads it: exit 1 with /readyz's reason while the issuer's keys are missing, 0 once
// they are fetched, with the URL derived from --config.
func TestServeOpsListener(t *testing.T) {
	iss := testkit.NewIssuer(t)
	iss.FailDiscovery(testkit.Fail500)
	up := testkit.NewUpstream(t)
	data, adm, ops := freeAddr(t), freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	cfg := fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + fmt.Sprintf("ops: { listen: %q }\n", ops)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	srv := runBackground(t, func(string) string { return "k" }, io.Discard, &logs, "serve", "--config", path, "--pprof")
	waitFor(t, "ops listener up", func() bool { s, _ := get("http://"+ops+"/healthz", ""); return s == 200 })

	health := func(args ...string) (stdout, stderr string, err error) {
		var out, errOut bytes.Buffer
		err = run(context.Background(), append([]string{"keyhole", "health"}, args...), os.Getenv, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	if s, b := get("http://"+ops+"/readyz", ""); s != 503 || !strings.Contains(b, "signing keys not yet fetched") {
		t.Errorf("ops /readyz while the issuer is down = %d %s, want 503 naming the missing keys", s, b)
	}
	_, stderr, err := health("--config", path)
	if !errors.Is(err, errReported) || !strings.Contains(stderr, "http://"+ops+"/readyz: 503 Service Unavailable not_ready: signing keys not yet fetched for every issuer") {
		t.Errorf("health --config while not ready = %v, stderr %q; want exit 1 with the URL, status and reason", err, stderr)
	}

	iss.FailDiscovery(testkit.Serve)
	waitFor(t, "ready", func() bool { s, _ := get("http://"+ops+"/readyz", ""); return s == 200 })
	stdout, stderr, err := health("--config", path)
	if err != nil || stdout != "http://"+ops+"/readyz: ready\n" {
		t.Errorf("health --config when ready = %v, stdout %q, stderr %q; want exit 0 and ready", err, stdout, stderr)
	}

	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, b := get("http://"+data+"/customers/1", tok); s != 200 {
		t.Fatalf("GET /customers/1 = %d %s, want 200", s, b)
	}
	const counted = `keyhole_requests_total{code="200",decision="allowed",method="GET",route="read"} 1`
	for _, addr := range []string{ops, adm} {
		if _, m := get("http://"+addr+"/metrics", ""); !strings.Contains(m, counted) {
			t.Errorf("GET http://%s/metrics lacks %s:\n%s", addr, counted, grepLines(m, "keyhole_requests_total"))
		}
	}
	for _, c := range []struct {
		path           string
		onAdmin, onOps int
	}{
		{"/healthz", 200, 200},
		{"/readyz", 200, 200},
		{"/api/v1/exchanges", 401, 404},
		{"/api/v1/approvals", 401, 404},
		{"/debug/pprof/", 200, 404},
		{"/customers/1", 404, 404},
	} {
		if s, _ := get("http://"+adm+c.path, ""); s != c.onAdmin {
			t.Errorf("admin listener: GET %s = %d, want %d", c.path, s, c.onAdmin)
		}
		if s, _ := get("http://"+ops+c.path, ""); s != c.onOps {
			t.Errorf("ops listener: GET %s = %d, want %d", c.path, s, c.onOps)
		}
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("serve returned %v", err)
	}
	if !strings.Contains(logs.String(), `"ops":"`+ops+`"`) {
		t.Errorf("the startup log does not name the ops listener %s:\n%s", ops, logs.String())
	}
	if s, _ := get("http://"+ops+"/healthz", ""); s != 0 {
		t.Errorf("ops listener still answers after shutdown: %d", s)
	}
}

// TestHealth checks keyhole health against answers a gateway (or something else on its
// port) can give: exit 0 only on a 200, and otherwise a line that says why.
func TestHealth(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ready":
			io.WriteString(w, `{"status":"ready"}`)
		case "/not-ready":
			w.WriteHeader(503)
			io.WriteString(w, `{"status":"not_ready","reason":"record store unreachable: sqlite: disk I/O error"}`)
		case "/text":
			io.WriteString(w, "fine")
		case "/redirect":
			http.Redirect(w, r, "/ready", http.StatusFound)
		case "/hang":
			<-hang
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hang) }) // runs first: the hung handler returns, so Close does not wait on it
	closed := freeAddr(t)
	for _, c := range []struct {
		name, url string
		ok        bool
		out       string
	}{
		{"ready", srv.URL + "/ready", true, srv.URL + "/ready: ready\n"},
		{"ready without JSON", srv.URL + "/text", true, srv.URL + "/text: 200 OK\n"},
		{"not ready", srv.URL + "/not-ready", false, "keyhole health: " + srv.URL + "/not-ready: 503 Service Unavailable not_ready: record store unreachable: sqlite: disk I/O error\n"},
		{"redirect not followed", srv.URL + "/redirect", false, "keyhole health: " + srv.URL + "/redirect: 302 Found\n"},
		{"not found", srv.URL + "/nothing", false, "keyhole health: " + srv.URL + "/nothing: 404 Not Found\n"},
		{"nobody listening", "http://" + closed + "/readyz", false, "connection refused\n"},
		{"timeout", srv.URL + "/hang", false, "context deadline exceeded\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			start := time.Now()
			err := run(context.Background(), []string{"keyhole", "health", "--url", c.url, "--timeout", "300ms"}, os.Getenv, &stdout, &stderr)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("health took %v, want it bounded by --timeout 300ms", took)
			}
			if c.ok {
				if err != nil || stdout.String() != c.out {
					t.Errorf("health = %v, stdout %q, stderr %q; want nil and %q", err, stdout.String(), stderr.String(), c.out)
				}
				return
			}
			if !errors.Is(err, errReported) || !strings.HasSuffix(stderr.String(), c.out) {
				t.Errorf("health = %v, stderr %q; want exit 1 with a line ending %q", err, stderr.String(), c.out)
			}
		})
	}
}

// TestHealthURL checks the URL keyhole health derives from a config file.
func TestHealthURL(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, config, want, err string
	}{
		{"ops", "admin: { listen: \"0.0.0.0:9090\" }\nops: { listen: \"0.0.0.0:9091\" }\n", "http://127.0.0.1:9091/readyz", ""},
		{"admin only", "admin: { listen: \"10.0.0.5:9000\" }\n", "http://10.0.0.5:9000/readyz", ""},
		{"admin default", "listen: \":8080\"\n", "http://127.0.0.1:9090/readyz", ""},
		{"IPv6 wildcard", "ops: { listen: \"[::]:9091\" }\n", "http://[::1]:9091/readyz", ""},
		{"no host", "ops: { listen: \":9091\" }\n", "http://127.0.0.1:9091/readyz", ""},
		{"variable", "ops: { listen: \"${OPS}\" }\n", "", "ops.listen is written with a ${VAR}"},
		{"not host:port", "admin: { listen: \"9090\" }\n", "", `admin.listen "9090" is not host:port`},
		{"not YAML", "admin: [\n", "", "yaml:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			if err := os.WriteFile(path, []byte(c.config), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := healthURL(path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("healthURL = %q, %v; want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("healthURL = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"keyhole", "health", "--config", filepath.Join(dir, "missing.yaml")}, os.Getenv, io.Discard, &stderr)
	if !errors.Is(err, errReported) || !strings.Contains(stderr.String(), "missing.yaml: no such file or directory (or pass --url)") {
		t.Errorf("health --config missing.yaml = %v, stderr %q; want exit 1 naming the file", err, stderr.String())
	}
}
