package main

import (
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/config"
)

// TestDockerfile reads the Dockerfile (no Docker engine runs here) and checks what the
// image promises and what other files assume of it: the config it bakes in and runs, the
// volume, the user, the ports of configs/container.yaml's listeners, a HEALTHCHECK by
// keyhole health, the stamped variables that exist in this package, and the OCI labels.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// One instruction per entry: continuation lines joined, comments dropped.
	var instr []string
	var cur string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		cont := strings.HasSuffix(line, "\\")
		cur += " " + strings.TrimSpace(strings.TrimSuffix(line, "\\"))
		if !cont {
			if s := strings.Join(strings.Fields(cur), " "); s != "" {
				instr = append(instr, s)
			}
			cur = ""
		}
	}
	has := func(s string) bool { return slices.Contains(instr, s) }
	find := func(prefix string) string {
		for _, s := range instr {
			if strings.HasPrefix(s, prefix) {
				return s
			}
		}
		return ""
	}

	cfg, err := config.Load("../../configs/container.yaml", func(k string) string {
		return map[string]string{"KEYHOLE_ISSUER": "https://acme.okta.com/oauth2/default", "KEYHOLE_AUDIENCE": "api://default",
			"KEYHOLE_UPSTREAM_URL": "http://api.internal", "KEYHOLE_UPSTREAM_API_KEY": "k", "KEYHOLE_MASK_HASH_KEY": "0123456789abcdef"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, addr := range []string{cfg.Listen, cfg.Admin.Listen, cfg.Ops.Listen} {
		_, port, _ := net.SplitHostPort(addr)
		ports = append(ports, port)
	}
	for _, want := range []string{
		"COPY configs/container.yaml /etc/keyhole/keyhole.yaml",
		`CMD ["serve", "--config", "/etc/keyhole/keyhole.yaml"]`,
		"VOLUME /var/lib/keyhole",
		"USER 65532:65532",
		"COPY --from=build --chown=65532:65532 /out/var/lib/keyhole /var/lib/keyhole",
		"EXPOSE " + strings.Join(ports, " "),
	} {
		if !has(want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !strings.HasPrefix(cfg.Recorder.Store, "sqlite:///var/lib/keyhole/") {
		t.Errorf("container.yaml's store %q is not on the image's volume /var/lib/keyhole", cfg.Recorder.Store)
	}
	if hc := find("HEALTHCHECK "); !strings.Contains(hc, `CMD ["/usr/local/bin/keyhole", "health", "--config", "/etc/keyhole/keyhole.yaml"`) {
		t.Errorf("Dockerfile HEALTHCHECK = %q, want keyhole health on the baked config", hc)
	}
	// -X names a variable by its package path and name, and a wrong name is silently
	// ignored: these are the variables version.go reads (TestVersionStamp sets them).
	build := find("RUN CGO_ENABLED=0 go build")
	for _, want := range []string{"-trimpath", "-X main.buildVersion=${VERSION}", "-X main.buildCommit=${COMMIT}", "./cmd/keyhole"} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile's go build %q lacks %s", build, want)
		}
	}
	labels := find("LABEL ")
	for _, k := range []string{"source", "version", "revision", "licenses", "title"} {
		if !strings.Contains(labels, "org.opencontainers.image."+k+"=") {
			t.Errorf("Dockerfile has no org.opencontainers.image.%s label", k)
		}
	}
	for _, want := range []string{"ARG GO_IMAGE=", "ARG RUNTIME_IMAGE=", "FROM ${GO_IMAGE} AS build", "FROM ${RUNTIME_IMAGE}"} {
		if find(want) == "" {
			t.Errorf("Dockerfile lacks %q: base images are chosen (and pinned by digest) through build args", want)
		}
	}
}

// TestVersionStamp checks that what the build stamps is what keyhole version prints and
// what HAR exports, traces and the startup log name.
func TestVersionStamp(t *testing.T) {
	defer func(v, c string) { buildVersion, buildCommit = v, c }(buildVersion, buildCommit)
	buildVersion, buildCommit = "", ""
	if release() == "(devel)" || release() == "" {
		t.Errorf("release() of an unstamped build = %q, want devel or a module version", release())
	}
	buildVersion, buildCommit = "v1.4.2", "3f2a1b9c0d4e5f60718293a4b5c6d7e8f9a0b1c2"
	if got, want := version(), "v1.4.2 (3f2a1b9c0d4e5f60718293a4b5c6d7e8f9a0b1c2)"; got != want {
		t.Errorf("version() = %q, want %q", got, want)
	}
	if got, want := versionLine(), "keyhole v1.4.2 (commit 3f2a1b9c0d4e5f60718293a4b5c6d7e8f9a0b1c2, "+runtime.Version()+")"; got != want {
		t.Errorf("versionLine() = %q, want %q", got, want)
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"keyhole", "version"}, os.Getenv, &out, &out); err != nil || out.String() != versionLine()+"\n" {
		t.Errorf("keyhole version = %v, %q; want %q", err, out.String(), versionLine())
	}
}
