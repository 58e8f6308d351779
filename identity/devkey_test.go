package identity_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/identity"
)

// TestOpenDevIssuerKeepsKey checks that a dev issuer opened on a key file a previous one
// created signs with the same key: a token the first minted verifies against the second
// (which alone serves the issuer URL), and the file is the owner's only.
func TestOpenDevIssuerKeepsKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "demo", "dev-issuer.key")
	srv := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + srv.Listener.Addr().String() + "/dev"
	first, err := identity.OpenDevIssuer(issuerURL, keyFile)
	if err != nil {
		t.Fatalf("OpenDevIssuer (creates the key): %v", err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("no key file after OpenDevIssuer: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %s, want -rw-------", fi.Mode())
	}
	tok, err := first.Mint(identity.TokenRequest{Subject: "alice", Groups: []string{"crm-admins"}})
	if err != nil {
		t.Fatal(err)
	}

	second, err := identity.OpenDevIssuer(issuerURL, keyFile)
	if err != nil {
		t.Fatalf("OpenDevIssuer (reads the key): %v", err)
	}
	if second.KeyID() != first.KeyID() {
		t.Errorf("kid %s after a restart, want %s", second.KeyID(), first.KeyID())
	}
	mux := http.NewServeMux()
	mux.Handle("/dev/", http.StripPrefix("/dev", second.Handler()))
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	v := newVerifier(t, second.Config(), identity.Options{})
	if p, err := v.Verify(t.Context(), tok); err != nil || p.Subject != "alice" {
		t.Errorf("Verify(token of the first issuer) by the second = %+v, %v; want alice", p, err)
	}

	// Another file is another key.
	other, err := identity.OpenDevIssuer(issuerURL, filepath.Join(t.TempDir(), "dev-issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	if other.KeyID() == first.KeyID() {
		t.Errorf("two key files gave the same kid %s", other.KeyID())
	}
}

// TestOpenDevIssuerRefuses checks that a key file others may read, or one that holds no
// key, is refused with the reason, not replaced or used.
func TestOpenDevIssuerRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "dev-issuer.key")
	if _, err := identity.OpenDevIssuer("http://127.0.0.1:9090/dev", good); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(good)
	for _, c := range []struct {
		name string
		data []byte
		mode os.FileMode
		want string
	}{
		{"readable.key", key, 0o644, "chmod 600"},
		{"garbage.key", []byte("not a key\n"), 0o600, "no PEM PRIVATE KEY block"},
		{"truncated.key", key[:len(key)/2], 0o600, "delete the file"},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, c.data, c.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, c.mode)
		_, err := identity.OpenDevIssuer("http://127.0.0.1:9090/dev", p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("OpenDevIssuer(%s) = %v, want an error naming the file and %q", c.name, err, c.want)
		}
		if after, _ := os.ReadFile(p); string(after) != string(c.data) {
			t.Errorf("OpenDevIssuer(%s) changed the file", c.name)
		}
	}
}

// TestDevSecret: a secret derived from a kept key is the same on every call, another for
// another purpose or another key file, and creating it creates the key OpenDevIssuer uses.
func TestDevSecret(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a", "dev-issuer.key"), filepath.Join(dir, "b", "dev-issuer.key")
	derive := func(file, purpose string) string {
		t.Helper()
		s, err := identity.DevSecret(file, purpose, 32)
		if err != nil || len(s) != 32 {
			t.Fatalf("DevSecret(%s, %q) = %x, %v; want 32 bytes", file, purpose, s, err)
		}
		return string(s)
	}
	first := derive(a, "mask")
	if derive(a, "mask") != first {
		t.Error("the same key file and purpose derived two secrets")
	}
	if derive(a, "session") == first || derive(b, "mask") == first {
		t.Error("another purpose or another key file derived the same secret")
	}
	if _, err := identity.OpenDevIssuer("https://dev.example", a); err != nil {
		t.Errorf("OpenDevIssuer on the key DevSecret created: %v", err)
	}
}
