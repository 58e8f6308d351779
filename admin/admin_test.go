package admin_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/identity"
)

func TestAdminPlane(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "keyhole_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	srv := httptest.NewServer(nil)
	defer srv.Close()
	dev, err := identity.NewDevIssuer(srv.URL + "/dev")
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = admin.New(admin.Options{
		Gatherer: reg,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("signing keys not yet fetched")
			}
			return nil
		},
		DevIssuer: dev.Handler(), DevPath: "/dev",
	})
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, path string
		ready      bool
		want       int
		contains   string
	}{
		{"healthz while not ready", "/healthz", false, 200, `"ok"`},
		{"readyz not ready", "/readyz", false, 503, "signing keys not yet fetched"},
		{"readyz ready", "/readyz", true, 200, `"ready"`},
		{"metrics", "/metrics", true, 200, "keyhole_test_total 3"},
		{"dev discovery", "/dev/.well-known/openid-configuration", true, 200, `"jwks_uri":"` + srv.URL + `/dev/keys"`},
		{"dev keys", "/dev/keys", true, 200, `"keys"`},
		{"unknown path", "/api/v1/nothing", true, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.ready)
			status, body := get(tt.path)
			if status != tt.want || !strings.Contains(body, tt.contains) {
				t.Errorf("GET %s = %d %s, want %d containing %q", tt.path, status, body, tt.want, tt.contains)
			}
		})
	}
	resp, err := http.Post(srv.URL+"/dev/token", "application/json", strings.NewReader(`{"sub":"a","client_id":"a","scopes":["x"]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 || strings.Count(tok.AccessToken, ".") != 2 {
		t.Errorf("POST /dev/token = %d %v %q, want a JWT", resp.StatusCode, err, tok.AccessToken)
	}
}

// TestPprof checks that Go's profiles are served only when asked for.
func TestPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		srv := httptest.NewServer(admin.New(admin.Options{Gatherer: prometheus.NewRegistry(), Ready: func() error { return nil }, Pprof: on}))
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1"} {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := map[bool]int{false: 404, true: 200}[on]; resp.StatusCode != want {
				t.Errorf("pprof %v: GET %s = %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}

// TestOps checks that the operations handler answers the probes and metrics as the admin
// plane does, and nothing else.
func TestOps(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "keyhole_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(2)
	var ready atomic.Bool
	srv := httptest.NewServer(admin.NewOps(reg, func() error {
		if !ready.Load() {
			return errors.New("record store unreachable")
		}
		return nil
	}))
	defer srv.Close()
	for _, tt := range []struct {
		method, path string
		ready        bool
		want         int
		contains     string
	}{
		{"GET", "/healthz", false, 200, `{"status":"ok"}`},
		{"GET", "/readyz", false, 503, `{"reason":"record store unreachable","status":"not_ready"}`},
		{"GET", "/readyz", true, 200, `{"status":"ready"}`},
		{"GET", "/metrics", true, 200, "keyhole_test_total 2"},
		{"GET", "/api/v1/exchanges", true, 404, ""},
		{"GET", "/ui/", true, 404, ""},
		{"GET", "/debug/pprof/", true, 404, ""},
		{"GET", "/dev/keys", true, 404, ""},
		{"POST", "/readyz", true, 405, ""},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			ready.Store(tt.ready)
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.contains) {
				t.Errorf("%s %s = %d %s, want %d containing %q", tt.method, tt.path, resp.StatusCode, b, tt.want, tt.contains)
			}
		})
	}
}
