package configs_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/rules"
)

// env stands in for the deployment's environment: every variable the shipped configs name.
func env(k string) string {
	return map[string]string{
		"CRM_API_KEY": "placeholder", "BILLING_API_TOKEN": "placeholder", "KEYHOLE_MASK_HASH_KEY": "placeholder-0123456789",
		"KEYHOLE_DEMO_API_URL": "http://127.0.0.1:1", "KEYHOLE_DEMO_API_KEY": "placeholder",
		"KEYHOLE_DEMO_MCP_URL": "http://127.0.0.1:2", "KEYHOLE_DEMO_MCP_RESOURCE": "http://127.0.0.1:8080/crm/mcp",
		"KEYHOLE_DEMO_MASK_KEY":  "placeholder-mask-key-0123456789",
		"KEYHOLE_DEMO_STORE":     "sqlite://demo.db", // parsed, never opened
		"KEYHOLE_DEMO_ADMIN_URL": "http://127.0.0.1:9090", "KEYHOLE_DEMO_SESSION_KEY": "placeholder-session-key-0123456789abcdef",
		"KEYHOLE_ISSUER": "https://acme.okta.com/oauth2/default", "KEYHOLE_AUDIENCE": "api://default",
		"KEYHOLE_UPSTREAM_URL": "http://api.internal:8080", "KEYHOLE_UPSTREAM_API_KEY": "placeholder",
	}[k]
}

// TestShippedConfigsLoad loads every configs/*.yaml except policy test files, so none can rot.
func TestShippedConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if filepath.Ext(f[:len(f)-len(".yaml")]) == ".policy" {
			continue
		}
		n++
		t.Run(f, func(t *testing.T) {
			cfg, err := config.Load(f, env)
			if err != nil {
				t.Fatalf("config.Load(%s): %v", f, err)
			}
			if _, err := rules.Compile(cfg); err != nil {
				t.Fatalf("rules.Compile(%s): %v", f, err)
			}
		})
	}
	if n < 2 {
		t.Errorf("found %d configs, want keyhole.yaml and demo.yaml at least", n)
	}
}

// TestContainerConfig checks what the image is built around: listeners reachable from
// outside the container on the ports the Dockerfile exposes, the store on its volume at
// an absolute path (the config directory is read-only), and every deployment value from
// the environment, so an unset one stops the start.
func TestContainerConfig(t *testing.T) {
	cfg, err := config.Load("container.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops == nil {
		t.Fatal("container.yaml: ops is not set, want ops.listen for the probes")
	}
	for _, c := range []struct{ name, got, want string }{
		{"listen", cfg.Listen, "0.0.0.0:8080"},
		{"admin.listen", cfg.Admin.Listen, "0.0.0.0:9090"},
		{"ops.listen", cfg.Ops.Listen, "0.0.0.0:9091"},
		{"recorder.store", cfg.Recorder.Store, "sqlite:///var/lib/keyhole/keyhole.db"},
		{"identity.issuers[0].issuer", cfg.Identity.Issuers[0].Issuer, env("KEYHOLE_ISSUER")},
		{"upstreams.api.url", cfg.Upstreams["api"].URL, env("KEYHOLE_UPSTREAM_URL")},
	} {
		if c.got != c.want {
			t.Errorf("container.yaml: %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	for _, name := range []string{"KEYHOLE_ISSUER", "KEYHOLE_AUDIENCE", "KEYHOLE_UPSTREAM_URL", "KEYHOLE_UPSTREAM_API_KEY", "KEYHOLE_MASK_HASH_KEY"} {
		_, err := config.Load("container.yaml", func(k string) string {
			if k == name {
				return ""
			}
			return env(k)
		})
		if err == nil || !strings.Contains(err.Error(), "${"+name+"} is not set") {
			t.Errorf("container.yaml without %s: err = %v, want ${%s} is not set", name, err, name)
		}
	}
}
