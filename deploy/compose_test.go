package deploy

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/keyholehq/keyhole/config"
)

// replicas are the Keyhole services of deploy/compose.
var replicas = []string{"keyhole-1", "keyhole-2"}

// composeEnv is what a user puts in deploy/compose/.env (see .env.example).
var composeEnv = map[string]string{
	"KEYHOLE_ISSUER":            "https://acme.okta.com/oauth2/default",
	"KEYHOLE_AUDIENCE":          "api://keyhole",
	"KEYHOLE_CONSOLE_CLIENT_ID": "0oaConsole",
}

// composeCopy copies deploy/compose into a temporary directory and runs make-secrets.sh
// there, as a user does before `docker compose up`. It returns the copy's directory.
func composeCopy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "compose")
	if err := os.CopyFS(dir, os.DirFS("compose")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "secrets")) // a developer's own, if any
	cmd := exec.Command("sh", filepath.Join(dir, "make-secrets.sh"), "console-client-secret-from-okta")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make-secrets.sh: %v\n%s", err, out)
	}
	return dir
}

// loadCompose loads dir/compose.yaml as `docker compose` does, with composeEnv as .env.
// With resolveEnv, each service's environment includes its env files.
func loadCompose(t *testing.T, dir string, resolveEnv bool) *types.Project {
	t.Helper()
	env := make([]string, 0, len(composeEnv))
	for k, v := range composeEnv {
		env = append(env, k+"="+v)
	}
	opts := []cli.ProjectOptionsFn{cli.WithWorkingDirectory(dir), cli.WithEnv(env), cli.WithName("keyhole")}
	if !resolveEnv {
		opts = append(opts, cli.WithoutEnvironmentResolution)
	}
	po, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := po.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t, composeCopy(t), false)
	want := []string{"crm", "keyhole-1", "keyhole-2", "lb", "postgres", "prometheus"}
	if got := p.ServiceNames(); !slices.Equal(sortedCopy(got), want) {
		t.Fatalf("services = %v, want %v", sortedCopy(got), want)
	}
	healthchecks := map[string]string{
		"keyhole-1":  "/usr/local/bin/keyhole health --url http://127.0.0.1:9091/readyz",
		"keyhole-2":  "/usr/local/bin/keyhole health --url http://127.0.0.1:9091/readyz",
		"postgres":   "pg_isready -U keyhole -d keyhole",
		"lb":         "wget -q -O /dev/null http://127.0.0.1:8081/lb-health",
		"prometheus": "wget -q -O /dev/null http://127.0.0.1:9090/-/ready",
	}
	for name, want := range healthchecks {
		hc := service(t, p, name).HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] != "CMD" {
			t.Errorf("%s: healthcheck = %+v, want CMD %s", name, hc, want)
			continue
		}
		if got := strings.Join(hc.Test[1:], " "); got != want {
			t.Errorf("%s: healthcheck runs %q, want %q", name, got, want)
		}
	}
	deps := map[string]map[string]string{
		"keyhole-1": {"postgres": types.ServiceConditionHealthy, "crm": types.ServiceConditionStarted},
		"keyhole-2": {"postgres": types.ServiceConditionHealthy, "crm": types.ServiceConditionStarted},
		"lb":        {"keyhole-1": types.ServiceConditionHealthy, "keyhole-2": types.ServiceConditionHealthy},
	}
	for name, want := range deps {
		got := map[string]string{}
		for dep, d := range service(t, p, name).DependsOn {
			got[dep] = d.Condition
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: depends_on = %v, want %v", name, got, want)
		}
	}
	mounts := map[string]string{"postgres": "pgdata:/var/lib/postgresql/data", "prometheus": "prometheus:/prometheus"}
	for name, want := range mounts {
		var got []string
		for _, v := range service(t, p, name).Volumes {
			got = append(got, v.Source+":"+v.Target)
		}
		if !slices.Contains(got, want) {
			t.Errorf("%s: volumes = %v, want %s", name, got, want)
		}
		if vol, _, _ := strings.Cut(want, ":"); p.Volumes[vol].Name == "" {
			t.Errorf("volume %s is not declared at the top level", vol)
		}
	}
	// Only the load balancer and Prometheus are reachable from the host, on loopback.
	for _, s := range p.Services {
		for _, port := range s.Ports {
			if s.Name != "lb" && s.Name != "prometheus" {
				t.Errorf("%s publishes port %s: only lb and prometheus should", s.Name, port.Published)
			}
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s on %q, want 127.0.0.1", s.Name, port.Published, port.HostIP)
			}
		}
	}
}

// TestComposeReplicasShare checks that both replicas are one gateway: the same image,
// config, secrets and hash key, on the PostgreSQL that service postgres serves.
func TestComposeReplicasShare(t *testing.T) {
	dir := composeCopy(t)
	p := loadCompose(t, dir, true)
	pg := service(t, p, "postgres")
	pgPasswordFile := pg.Environment["POSTGRES_PASSWORD_FILE"]
	if pgPasswordFile == nil || !strings.HasPrefix(*pgPasswordFile, "/run/secrets/") {
		t.Fatalf("postgres: POSTGRES_PASSWORD_FILE = %v, want a secret under /run/secrets", pgPasswordFile)
	}
	pgSecret := strings.TrimPrefix(*pgPasswordFile, "/run/secrets/")

	var hashKeys []string
	for _, name := range replicas {
		s := service(t, p, name)
		if s.Image != "keyhole:compose" || s.Build == nil || s.Build.Dockerfile != "Dockerfile" ||
			filepath.Clean(s.Build.Context) != filepath.Join(dir, "..", "..") {
			t.Errorf("%s: image %q built from %+v, want keyhole:compose from the repository's Dockerfile", name, s.Image, s.Build)
		}
		if len(s.Configs) != 1 || s.Configs[0].Source != "keyhole" || s.Configs[0].Target != "/etc/keyhole/keyhole.yaml" {
			t.Errorf("%s: configs = %+v, want keyhole.yaml at /etc/keyhole/keyhole.yaml", name, s.Configs)
		}
		if !slices.ContainsFunc(s.Secrets, func(c types.ServiceSecretConfig) bool { return c.Source == pgSecret }) {
			t.Errorf("%s: does not mount secret %s, the password postgres is started with", name, pgSecret)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: read_only %v, cap_drop %v, want a read-only root and every capability dropped", name, s.ReadOnly, s.CapDrop)
		}
		hk := s.Environment["KEYHOLE_MASK_HASH_KEY"]
		if hk == nil || len(*hk) < 16 {
			t.Fatalf("%s: KEYHOLE_MASK_HASH_KEY = %v, want the env file's key", name, hk)
		}
		hashKeys = append(hashKeys, *hk)

		cfg := parseComposeConfig(t, dir, s)
		u, err := url.Parse(cfg.Recorder.Store)
		if err != nil || u.Scheme != "postgres" || u.Hostname() != "postgres" || strings.TrimPrefix(u.Path, "/") != *pg.Environment["POSTGRES_DB"] ||
			u.User.Username() != *pg.Environment["POSTGRES_USER"] {
			t.Errorf("%s: recorder.store = %s, want the database postgres creates (%s as %s)", name, cfg.Recorder.Store,
				*pg.Environment["POSTGRES_DB"], *pg.Environment["POSTGRES_USER"])
		}
		if want := filepath.Join(dir, "secrets", pgSecret); cfg.Recorder.Postgres.PasswordFile != want {
			t.Errorf("%s: recorder.postgres.password_file = %s, want secret %s", name, cfg.Recorder.Postgres.PasswordFile, pgSecret)
		}
		if string(cfg.Masking.HashKey) != *hk {
			t.Errorf("%s: masking.hash_key is not the env file's KEYHOLE_MASK_HASH_KEY", name)
		}
	}
	if hashKeys[0] != hashKeys[1] {
		t.Errorf("the replicas have different hash keys: hashed values would not join across them")
	}
	// The demo API checks the key Keyhole injects: both read the same secret.
	crm := service(t, p, "crm")
	if !slices.Contains([]string(crm.Command), "/run/secrets/crm_api_key") ||
		!slices.ContainsFunc(crm.Secrets, func(c types.ServiceSecretConfig) bool { return c.Source == "crm_api_key" }) {
		t.Errorf("crm: command %v, secrets %+v, want the API key from secret crm_api_key", crm.Command, crm.Secrets)
	}
}

// parseComposeConfig parses deploy/compose/keyhole.yaml as `keyhole validate` would
// inside service s: with s's environment, and s's secrets where /run/secrets has them.
func parseComposeConfig(t *testing.T, dir string, s types.ServiceConfig) *config.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "keyhole.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range s.Secrets {
		data = bytes.ReplaceAll(data, []byte("/run/secrets/"+sec.Source), []byte(filepath.Join(dir, "secrets", sec.Source)))
	}
	if bytes.Contains(data, []byte("/run/secrets/")) {
		t.Fatalf("%s: keyhole.yaml reads a secret the service does not mount:\n%s", s.Name, data)
	}
	getenv := func(k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	cfg, err := config.Parse(data, filepath.Join(dir), getenv)
	if err != nil {
		t.Fatalf("%s: keyhole.yaml: %v", s.Name, err)
	}
	// /readyz and /metrics on 9091 are what the healthchecks and Prometheus use.
	if cfg.Ops == nil || cfg.Ops.Listen != "0.0.0.0:9091" {
		t.Errorf("%s: keyhole.yaml: ops = %+v, want listen 0.0.0.0:9091 (the healthchecks' and Prometheus' port)", s.Name, cfg.Ops)
	}
	return cfg
}

// TestComposeNoInlineSecret checks that no secret is written in compose.yaml or the
// configs it mounts: secrets are Compose secrets (files) or the env file make-secrets.sh
// writes, never values in the repository.
func TestComposeNoInlineSecret(t *testing.T) {
	dir := composeCopy(t)
	p := loadCompose(t, dir, false)
	secretName := regexp.MustCompile(`(?i)(^|_)(password|secret|key|token)(_|$)`)
	for _, s := range p.Services {
		for k, v := range s.Environment {
			if !secretName.MatchString(k) {
				continue
			}
			if v == nil || !strings.HasSuffix(k, "_FILE") || !strings.HasPrefix(*v, "/run/secrets/") {
				t.Errorf("%s: environment %s is set in compose.yaml: a secret must come from a secret file or secrets/keyhole.env", s.Name, k)
			}
		}
		for _, ef := range s.EnvFiles {
			if rel, err := filepath.Rel(filepath.Join(dir, "secrets"), ef.Path); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s: env file %s is outside secrets/", s.Name, ef.Path)
			}
		}
	}
	for name, sec := range p.Secrets {
		if sec.File == "" || sec.Content != "" || sec.Environment != "" || filepath.Dir(sec.File) != filepath.Join(dir, "secrets") {
			t.Errorf("secret %s: file %q, want a file under secrets/ (not content or environment)", name, sec.File)
		}
	}
	var secrets [][]byte
	entries, err := os.ReadDir(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "secrets", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, v, _ := bytes.Cut(bytes.TrimSpace(b), []byte("=")) // keyhole.env's value
		secrets = append(secrets, bytes.TrimSpace(b), v)
	}
	for _, f := range []string{"compose.yaml", "keyhole.yaml", "nginx.conf", "prometheus.yml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if len(s) >= 8 && bytes.Contains(b, s) {
				t.Errorf("%s holds a secret make-secrets.sh wrote", f)
			}
		}
	}
	gi, err := os.ReadFile(filepath.Join(dir, ".gitignore"))
	if err != nil || !regexp.MustCompile(`(?m)^secrets/$`).Match(gi) {
		t.Errorf(".gitignore does not keep secrets/ out of git")
	}
	if fi, err := os.Stat(filepath.Join(dir, "secrets")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("secrets/ mode = %v, want 0700: other users of the machine must not reach it", fi.Mode().Perm())
	}
}

// TestComposeScrapesAndBalancesEveryReplica checks that Prometheus scrapes each
// replica's ops listener and nginx balances over each replica's data and admin listener.
func TestComposeScrapesAndBalancesEveryReplica(t *testing.T) {
	var prom struct {
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("compose/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("metrics_path = %q, want /metrics", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	nginx, err := os.ReadFile("compose/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if !slices.Contains(targets, r+":9091") {
			t.Errorf("prometheus scrapes %v, not %s:9091", targets, r)
		}
		for _, port := range []string{"8080", "9090"} {
			if !regexp.MustCompile(`(?m)^\s*server ` + regexp.QuoteMeta(r+":"+port) + `\b`).Match(nginx) {
				t.Errorf("nginx.conf does not balance over %s:%s", r, port)
			}
		}
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
