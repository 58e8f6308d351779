package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const consoleBase = `
identity:
  issuers:
    - issuer: https://acme.okta.com/oauth2/default
      audiences: [api://default]
    - issuer: https://login.example.com
      audiences: [keyhole]
upstreams:
  crm: { url: "http://crm.internal:8080" }
routes:
  - { name: read, match: { methods: [GET], path: "/crm/*" }, upstream: crm, allow: { groups: [readers] } }
admin:
  console:
    client_id: 0oaConsole
    redirect_url: https://keyhole.internal:9090/ui/callback
`

// TestConsole checks what admin.console becomes after load: the defaults, the secrets
// read from the environment or a file, and the issuer chosen.
func TestConsole(t *testing.T) {
	dir := t.TempDir()
	key := strings.Repeat("k", 40)
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, extra       string
		issuer, secret    string
		idle, maxAge      time.Duration
		wantKey, wantFile string
	}{
		{name: "defaults, key from the environment", extra: "    session_key: ${SESSION_KEY}\n",
			issuer: "https://acme.okta.com/oauth2/default", idle: 30 * time.Minute, maxAge: 12 * time.Hour, wantKey: key},
		{name: "key file, second issuer, secret, timeouts",
			extra:  "    session_key_file: key\n    issuer: https://login.example.com\n    client_secret: ${CLIENT_SECRET}\n    idle_timeout: 5m\n    max_age: 1h\n",
			issuer: "https://login.example.com", secret: "shh", idle: 5 * time.Minute, maxAge: time.Hour, wantKey: key,
			wantFile: filepath.Join(dir, "key")},
	}
	env := testGetenv(map[string]string{"SESSION_KEY": key, "CLIENT_SECRET": "shh"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(consoleBase+tt.extra), dir, env)
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Admin.Console
			if c.Issuer != tt.issuer || c.ClientSecret.Reveal() != tt.secret || time.Duration(c.IdleTimeout) != tt.idle ||
				time.Duration(c.MaxAge) != tt.maxAge || c.SessionKey.Reveal() != tt.wantKey || c.SessionKeyFile != tt.wantFile {
				t.Errorf("console = %+v, want issuer %s, secret %q, idle %s, max_age %s, key file %q", c, tt.issuer, tt.secret, tt.idle, tt.maxAge, tt.wantFile)
			}
		})
	}
}

// TestConsoleKeyNeverPrinted plants a short session key from the environment: the
// error says how long it is, never what it is.
func TestConsoleKeyNeverPrinted(t *testing.T) {
	_, err := Parse([]byte(consoleBase+"    session_key: ${SESSION_KEY}\n"), t.TempDir(), testGetenv(map[string]string{"SESSION_KEY": "planted-secret"}))
	if err == nil || !strings.Contains(err.Error(), "session_key is 14 bytes") || strings.Contains(err.Error(), "planted-secret") {
		t.Errorf("error = %v, want the key's length and not the key", err)
	}
}

// TestConsoleDevIssuer: with identity.dev and no issuer listed, the console logs in
// through the dev issuer, so issuer may be left out.
func TestConsoleDevIssuer(t *testing.T) {
	data := `
listen: 127.0.0.1:8080
identity: { dev: true }
upstreams:
  crm: { url: "http://127.0.0.1:8081" }
routes:
  - { name: read, match: { methods: [GET], path: "/crm/*" }, upstream: crm, allow: { groups: [readers] } }
admin:
  console:
    client_id: keyhole-demo-console
    redirect_url: http://127.0.0.1:9090/ui/callback
    session_key: ` + strings.Repeat("x", 32) + "\n"
	cfg, err := Parse([]byte(data), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Admin.Console; c.Issuer != "" || c.ClientID != "keyhole-demo-console" {
		t.Errorf("console = %+v, want the dev issuer (issuer empty)", c)
	}
}
