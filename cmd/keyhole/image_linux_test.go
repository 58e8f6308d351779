package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// imageUID is the user (and group) the image runs as: distroless's nonroot.
const imageUID = 65532

// TestImageStartsAsNonRoot runs keyhole the way the image does: as uid/gid 65532, from /,
// with configs/container.yaml as a read-only /etc/keyhole/keyhole.yaml and the store in
// a directory of its own standing in for the volume /var/lib/keyhole. Only the listeners
// (loopback, free ports) and the volume's path are changed in a copy of the file. It
// checks that keyhole health (run as that user too) exits 1 with /readyz's reason while
// the issuer's keys cannot be fetched, that the gateway then becomes ready, forwards and
// records a request, and writes nowhere but the volume.
func TestImageStartsAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the gateway as uid 65532 (CI runs as root)")
	}
	root, err := os.MkdirTemp("", "keyhole-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	bin := filepath.Join(root, "usr/local/bin/keyhole")
	etc := filepath.Join(root, "etc/keyhole")
	vol := filepath.Join(root, "var/lib/keyhole")
	for _, d := range []string{filepath.Dir(bin), etc, vol} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(root, 0o755); err != nil { // MkdirTemp makes it 0700
		t.Fatal(err)
	}
	copyFile(t, os.Args[0], bin, 0o755) // this test binary is the command (TestMain)

	iss := testkit.NewIssuer(t)
	iss.FailDiscovery(testkit.Fail500)
	up := testkit.NewUpstream(t)
	data, adm, ops := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg, err := os.ReadFile("../../configs/container.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	for _, r := range []struct{ old, new string }{
		{`"0.0.0.0:8080"`, `"` + data + `"`},
		{`"0.0.0.0:9090"`, `"` + adm + `"`},
		{`"0.0.0.0:9091"`, `"` + ops + `"`},
		{`"sqlite:///var/lib/keyhole/`, `"sqlite://` + vol + `/`},
	} {
		if n := strings.Count(text, r.old); n != 1 {
			t.Fatalf("configs/container.yaml holds %s %d times, want once", r.old, n)
		}
		text = strings.Replace(text, r.old, r.new, 1)
	}
	path := filepath.Join(etc, "keyhole.yaml")
	if err := os.WriteFile(path, []byte(text), 0o444); err != nil {
		t.Fatal(err)
	}
	// Read-only for the gateway, as a ConfigMap or the image's own layer is.
	if err := os.Chmod(etc, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(vol, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vol, 0o750); err != nil {
		t.Fatal(err)
	}

	const apiKey = "image-test-upstream-key-5f1c"
	env := []string{
		"KEYHOLE_TEST_AS_MAIN=1",
		"KEYHOLE_ISSUER=" + iss.Config().Issuer, "KEYHOLE_AUDIENCE=api://keyhole",
		"KEYHOLE_UPSTREAM_URL=" + up.URL, "KEYHOLE_UPSTREAM_API_KEY=" + apiKey,
		"KEYHOLE_MASK_HASH_KEY=image-test-hash-key-0123456789",
	}
	asImage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "/"
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID}}
		return cmd
	}
	health := func() (int, string) {
		var out bytes.Buffer
		cmd := asImage("health", "--config", path)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), out.String()
		}
		if err != nil {
			t.Fatalf("keyhole health: %v", err)
		}
		return 0, out.String()
	}

	var logs testkit.Buffer
	serve := asImage("serve", "--config", path)
	serve.Stderr = &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { serve.Wait(); close(exited) }()
	t.Cleanup(func() {
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			serve.Process.Kill()
			<-exited
		}
	})
	waitUp := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			select {
			case <-exited:
				t.Fatalf("keyhole exited before %s; its log:\n%s", what, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("keyhole: no %s after 15 s; its log:\n%s", what, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitUp("ops listener", func() bool { s, _ := get("http://"+ops+"/healthz", ""); return s == 200 })
	if uid := procUID(t, serve.Process.Pid); uid != fmt.Sprint(imageUID) {
		t.Errorf("keyhole serve runs as uid %s, want %d", uid, imageUID)
	}

	code, out := health()
	if code != 1 || !strings.Contains(out, "not_ready: signing keys not yet fetched for every issuer") {
		t.Errorf("keyhole health while the issuer is down = exit %d, %q; want exit 1 with the reason", code, out)
	}
	iss.FailDiscovery(testkit.Serve)
	waitUp("readiness", func() bool { code, _ := health(); return code == 0 })
	if code, out := health(); code != 0 || out != "http://"+ops+"/readyz: ready\n" {
		t.Errorf("keyhole health when ready = exit %d, %q; want exit 0 and ready", code, out)
	}

	agent := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "agent-7", "scp": []string{"api.read"}})
	if s, b := get("http://"+data+"/api/customers/42", agent); s != 200 {
		t.Fatalf("GET /api/customers/42 = %d %s, want 200", s, b)
	}
	if reqs := up.Requests(); len(reqs) != 1 || reqs[0].RequestURI != "/customers/42" || reqs[0].Header.Get("X-Api-Key") != apiKey {
		t.Errorf("upstream received %d requests (first %+v), want one GET /customers/42 with the configured X-Api-Key", len(reqs), reqs)
	}
	auditor := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"keyhole-auditors"}})
	waitUp("record", func() bool {
		s, b := get("http://"+adm+"/api/v1/exchanges?route=api-read", auditor)
		return s == 200 && strings.Contains(b, `"path":"/api/customers/42"`) && strings.Contains(b, `"subject":"agent-7"`)
	})

	if entries, err := os.ReadDir(etc); err != nil || len(entries) != 1 {
		t.Errorf("the config directory holds %v (%v), want only keyhole.yaml: nothing may be written beside it", entries, err)
	}
	db, err := os.Stat(filepath.Join(vol, "keyhole.db"))
	if err != nil {
		t.Fatalf("the store is not on the volume: %v", err)
	}
	if st := db.Sys().(*syscall.Stat_t); st.Uid != imageUID {
		t.Errorf("keyhole.db is owned by uid %d, want %d", st.Uid, imageUID)
	}
	if strings.Contains(logs.String(), apiKey) {
		t.Error("the log contains the upstream's credential")
	}
}

// copyFile copies src to dst with mode perm.
func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// procUID returns the real uid of process pid, from /proc/PID/status.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(v)[0]
		}
	}
	return ""
}
