package configs_test

import (
	"path/filepath"
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
