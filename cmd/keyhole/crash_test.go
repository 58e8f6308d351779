package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// TestMain lets a test run this test binary as the keyhole command itself, in a child
// process that can be killed.
func TestMain(m *testing.M) {
	if os.Getenv("KEYHOLE_TEST_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCrashKeepsEveryForwardedRecord kills the gateway with SIGKILL under concurrent load
// and checks that every request the upstream received is in the store (strict mode
// commits before forwarding) and that the chain still verifies.
func TestCrashKeepsEveryForwardedRecord(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + "recorder: { store: \"sqlite://records.db\", mode: strict }\n"
	}, "CRM_KEY=crash-test-key-0001")
	data, dir := p.Data, p.Dir
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})

	var answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/customers/%d-%d", data, w, i), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					continue // the gateway is gone
				}
				resp.Body.Close()
				answered.Add(1)
			}
		}()
	}
	waitFor(t, "load", func() bool { return answered.Load() >= 200 })
	t.Logf("under load: %v", p.Usage())
	p.Kill()
	close(stop)
	wg.Wait()

	st, err := sqlite.Open(context.Background(), "sqlite://"+filepath.Join(dir, "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	received := up.Requests()
	if len(received) < 200 {
		t.Fatalf("upstream received %d requests, want at least 200", len(received))
	}
	missing := 0
	for _, r := range received {
		id := r.Header.Get("X-Request-Id")
		if _, err := st.Get(context.Background(), id); err != nil {
			missing++
			if missing <= 5 {
				t.Errorf("request %s reached the upstream but is not in the store: %v", id, err)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d forwarded requests have no record", missing, len(received))
	}
	rep, err := recorder.Verify(context.Background(), st, nil)
	if err != nil || !rep.OK {
		t.Errorf("Verify after kill -9 = %+v, %v", rep, err)
	}
	t.Logf("killed after %d answers; upstream received %d; %d chain entries verify", answered.Load(), len(received), rep.Entries)
}
