package deploy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyholehq/keyhole/config"
)

// helmModule is the Helm CLI the tests and .ci/run use, built with `go run`.
const helmModule = "helm.sh/helm/v3/cmd/helm@v3.22.0"

const chart = "helm/keyhole"

// helm runs the Helm CLI with args and returns its standard output.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	// The first build of Helm takes minutes; the build cache keeps it for later runs.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", helmModule}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, errors.Join(err, errors.New(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// manifest is the part of a rendered Kubernetes object the tests read.
type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable int `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot   bool `yaml:"runAsNonRoot"`
		RunAsUser      int  `yaml:"runAsUser"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		TopologyKey string `yaml:"topologyKey"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string         `yaml:"name"`
		EmptyDir  map[string]any `yaml:"emptyDir"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string  `yaml:"name"`
		Value     *string `yaml:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             bool  `yaml:"runAsNonRoot"`
		RunAsUser                int   `yaml:"runAsUser"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
}

// render runs helm template on the chart with set and decodes every manifest.
func render(t *testing.T, set ...string) []manifest {
	t.Helper()
	args := []string{"template", "kh", chart}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var ms []manifest
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode rendered manifests: %v", err)
		}
		if m.Kind != "" {
			ms = append(ms, m)
		}
	}
	return ms
}

func kinds(ms []manifest) []string {
	var ks []string
	for _, m := range ms {
		ks = append(ks, m.Kind+"/"+m.Metadata.Name)
	}
	slices.Sort(ks)
	return ks
}

func TestHelmLint(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", chart); err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
}

// TestHelmManifests renders the chart with its defaults and with the optional objects,
// and checks which objects it makes: never a Secret.
func TestHelmManifests(t *testing.T) {
	base := []string{"ConfigMap/kh-keyhole", "Deployment/kh-keyhole", "PodDisruptionBudget/kh-keyhole",
		"Service/kh-keyhole", "Service/kh-keyhole-admin", "Service/kh-keyhole-ops"}
	for _, tc := range []struct {
		name string
		set  []string
		want []string
	}{
		{"defaults", nil, base},
		{"servicemonitor and networkpolicy", []string{"serviceMonitor.enabled=true", "networkPolicy.enabled=true"},
			append([]string{"NetworkPolicy/kh-keyhole", "ServiceMonitor/kh-keyhole"}, base...)},
		{"no pdb", []string{"podDisruptionBudget.enabled=false"}, slices.DeleteFunc(slices.Clone(base), func(k string) bool { return strings.HasPrefix(k, "PodDisruptionBudget") })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := kinds(render(t, tc.set...))
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("objects = %v, want %v", got, want)
			}
		})
	}
}

func deployment(t *testing.T, ms []manifest) manifest {
	t.Helper()
	for _, m := range ms {
		if m.Kind == "Deployment" {
			return m
		}
	}
	t.Fatal("no Deployment rendered")
	return manifest{}
}

func TestHelmDeployment(t *testing.T) {
	d := deployment(t, render(t))
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	if s := d.Spec.Strategy; s.Type != "RollingUpdate" || s.RollingUpdate.MaxUnavailable != 0 {
		t.Errorf("strategy = %+v, want a rolling update that keeps every replica serving", s)
	}
	pod := d.Spec.Template.Spec
	if sc := pod.SecurityContext; !sc.RunAsNonRoot || sc.RunAsUser != 65532 || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot, uid 65532, seccomp RuntimeDefault", sc)
	}
	var spread []string
	for _, c := range pod.TopologySpreadConstraints {
		spread = append(spread, c.TopologyKey)
	}
	if !slices.Contains(spread, "kubernetes.io/hostname") {
		t.Errorf("topologySpreadConstraints over %v, want kubernetes.io/hostname", spread)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if !sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		!sc.RunAsNonRoot || sc.RunAsUser != 65532 || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext = %+v, want read-only root, no privilege escalation, uid 65532, drop ALL", sc)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 8080 || ports["admin"] != 9090 || ports["ops"] != 9091 {
		t.Errorf("ports = %v, want http 8080, admin 9090, ops 9091", ports)
	}
	for _, tc := range []struct {
		name string
		p    *probe
		path string
	}{
		{"startupProbe", c.StartupProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if tc.p == nil || tc.p.HTTPGet.Path != tc.path || tc.p.HTTPGet.Port != "ops" {
			t.Errorf("%s = %+v, want GET %s on port ops", tc.name, tc.p, tc.path)
		}
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if m.SubPath != "" {
			t.Errorf("mount %s uses subPath: a rotated Secret or a changed ConfigMap would never reach it", m.MountPath)
		}
	}
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v.EmptyDir != nil
	}
	if name := mounts["/tmp"]; name == "" || !volumes[name] {
		t.Errorf("/tmp is not an emptyDir (mounts %v)", mounts)
	}
}

// TestHelmSecretsReferenced checks that every secret reaches the pods from a Secret the
// values name, as an env secretKeyRef or a mounted volume, and that none is written in
// the rendered manifests.
func TestHelmSecretsReferenced(t *testing.T) {
	ms := render(t)
	for _, m := range ms {
		if m.Kind == "Secret" {
			t.Errorf("the chart renders Secret %s: secrets must only be referenced", m.Metadata.Name)
		}
	}
	d := deployment(t, ms)
	c := d.Spec.Template.Spec.Containers[0]
	var hashKey bool
	for _, e := range c.Env {
		if e.Name == "KEYHOLE_MASK_HASH_KEY" {
			hashKey = e.Value == nil && e.ValueFrom.SecretKeyRef.Name == "keyhole-hash-key" && e.ValueFrom.SecretKeyRef.Key == "hash-key"
		}
	}
	if !hashKey {
		t.Errorf("KEYHOLE_MASK_HASH_KEY is not read from Secret keyhole-hash-key key hash-key: env %+v", c.Env)
	}
	secretAt := map[string]string{} // mount path → Secret name
	volSecret := map[string]string{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			volSecret[v.Name] = v.Secret.SecretName
		}
	}
	for _, m := range c.VolumeMounts {
		if s, ok := volSecret[m.Name]; ok {
			secretAt[m.MountPath] = s
		}
	}
	want := map[string]string{
		"/run/secrets/keyhole/postgres":      "keyhole-postgres",
		"/run/secrets/keyhole/console":       "keyhole-console",
		"/run/secrets/keyhole/upstreams/crm": "keyhole-upstream-crm",
	}
	for path, name := range want {
		if secretAt[path] != name {
			t.Errorf("%s mounts Secret %q, want %s (mounted: %v)", path, secretAt[path], name, secretAt)
		}
	}

	// The ConfigMap's keyhole.yaml reads those files, and is a valid configuration.
	var data string
	for _, m := range ms {
		if m.Kind == "ConfigMap" {
			data = m.Data["keyhole.yaml"]
		}
	}
	dir := t.TempDir()
	files := map[string]string{
		"/run/secrets/keyhole/postgres/password":     "pg-password",
		"/run/secrets/keyhole/console/client-secret": "console-client-secret",
		"/run/secrets/keyhole/console/session-key":   strings.Repeat("s", 32),
		"/run/secrets/keyhole/upstreams/crm/api-key": "crm-api-key-value",
	}
	cfgText := data
	for path, content := range files {
		local := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cfgText, path) {
			t.Errorf("keyhole.yaml does not read %s", path)
		}
		if dirOf := filepath.Dir(path); secretAt[dirOf] == "" {
			t.Errorf("keyhole.yaml reads %s, but no Secret is mounted at %s", path, dirOf)
		}
		cfgText = strings.ReplaceAll(cfgText, path, local)
	}
	cfg, err := config.Parse([]byte(cfgText), dir, func(k string) string {
		if k == "KEYHOLE_MASK_HASH_KEY" {
			return "hash-key-from-the-secret"
		}
		return ""
	})
	if err != nil {
		t.Fatalf("the ConfigMap's keyhole.yaml: %v", err)
	}
	if cfg.Upstreams["crm"].Credential.Value != "crm-api-key-value" || string(cfg.Masking.HashKey) != "hash-key-from-the-secret" {
		t.Errorf("keyhole.yaml does not take the credential and the hash key from the mounted Secret and the env")
	}
	// The probes and the ServiceMonitor use the ops port.
	if cfg.Ops == nil || cfg.Ops.Listen != "0.0.0.0:9091" {
		t.Errorf("keyhole.yaml: ops = %+v, want listen 0.0.0.0:9091 (the probes' and the ServiceMonitor's port)", cfg.Ops)
	}
}

// TestHelmRefusesReplicasOnSQLite checks that the chart refuses to run several replicas
// on a store they cannot share.
func TestHelmRefusesReplicasOnSQLite(t *testing.T) {
	_, err := helm(t, "template", "kh", chart, "--set", "config.recorder.store=sqlite:///var/lib/keyhole/keyhole.db")
	if err == nil || !strings.Contains(err.Error(), "replicaCount > 1 needs config.recorder.store: postgres://") {
		t.Errorf("helm template with 2 replicas on SQLite: %v, want the chart to refuse", err)
	}
	if _, err := helm(t, "template", "kh", chart, "--set", "replicaCount=1", "--set", "config.recorder.store=sqlite:///var/lib/keyhole/keyhole.db"); err != nil {
		t.Errorf("helm template with 1 replica on SQLite: %v", err)
	}
}
