package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// The fault tests of the record store, the upstream's body and the issuer, on a real
// keyhole process (fault_harness_test.go).

// strictStore is the recorder section of a fault test's config: strict mode on dsn.
func strictStore(dsn string) string {
	return fmt.Sprintf("recorder: { store: %q, mode: strict }\n", dsn)
}

// loadGen sends GETs through the gateway from a few workers until stopped, counting the
// answers by status (0: no answer).
type loadGen struct {
	mu     sync.Mutex
	status map[int]int
	n      atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	client *http.Client
}

func startLoad(data, tok string, workers int, path func(w, i int) string) *loadGen {
	return startLoadOn([]string{data}, tok, workers, path)
}

// startLoadOn is startLoad spread over several gateways: worker w's i-th request goes to
// addrs[(w+i)%len(addrs)].
func startLoadOn(addrs []string, tok string, workers int, path func(w, i int) string) *loadGen {
	l := &loadGen{status: map[int]int{}, stop: make(chan struct{}), client: &http.Client{Timeout: 5 * time.Second}}
	client := l.client
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+addrs[(w+i)%len(addrs)]+path(w, i), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				code := 0
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				} else {
					time.Sleep(10 * time.Millisecond) // a killed gateway refuses at once
				}
				l.mu.Lock()
				l.status[code]++
				l.mu.Unlock()
				l.n.Add(1)
			}
		}()
	}
	return l
}

// Stop stops the workers and returns the answers by status.
func (l *loadGen) Stop() map[int]int {
	close(l.stop)
	l.wg.Wait()
	l.client.CloseIdleConnections() // the gateway's fds are compared after
	return l.status
}

func customers(w, i int) string { return fmt.Sprintf("/customers/%d-%d", w, i) }

// TestFaultStoreGone deletes (rm records.db*) or replaces the store's file under load:
// strict mode must refuse with 503 recorder_unavailable instead of recording into an
// unlinked file, /readyz must say not ready, the log must say so once, and nothing may
// leak. Before, requests went on answering 200 and the records were lost at restart.
func TestFaultStoreGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(t *testing.T, db string)
	}{
		{"deleted", func(t *testing.T, db string) {
			for _, s := range []string{"", "-wal", "-shm"} {
				os.Remove(db + s)
			}
		}},
		{"replaced", func(t *testing.T, db string) {
			if err := os.WriteFile(db+".new", nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(db+".new", db); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := testkit.NewIssuer(t)
			up := testkit.NewUpstream(t)
			p := startFault(t, func(data, adm string) string {
				return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore("sqlite://records.db")
			}, "CRM_KEY=fault-key-0001")
			tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
			if s, _ := get("http://"+p.Data+"/customers/warm", tok); s != 200 {
				t.Fatalf("warm-up GET = %d, want 200", s)
			}
			base := p.Usage()
			l := startLoad(p.Data, tok, 4, customers)
			waitFor(t, "load", func() bool { return l.n.Load() >= 100 })
			tc.fault(t, filepath.Join(p.Dir, "records.db"))
			waitFor(t, "readyz 503", func() bool { s, _ := get("http://"+p.Admin+"/readyz", ""); return s == 503 })
			forwarded := len(up.Requests())
			for i := range 10 {
				s, body := get(fmt.Sprintf("http://%s/customers/after-%d", p.Data, i), tok)
				if s != 503 || !strings.Contains(body, `"recorder_unavailable"`) {
					t.Fatalf("GET after the store went = %d %s, want 503 recorder_unavailable", s, body)
				}
			}
			status := l.Stop()
			// Requests already past the record stage may still reach the upstream.
			if n := len(up.Requests()) - forwarded; n > 4 {
				t.Errorf("%d requests forwarded after the gateway said not ready, want at most the 4 in flight", n)
			}
			if n := strings.Count(p.Stderr.String(), "record store cannot be written"); n != 1 {
				t.Errorf("the unwritable store was logged %d times, want once", n)
			}
			t.Logf("answers by status: %v", status)
			p.CheckSettled(base, 5*time.Second, 32<<20)
		})
	}
}

// TestFaultDiskFull fills the store's disk (a small tmpfs) under load: strict mode
// refuses, /readyz says not ready (it said ready while 337 of 400 requests were
// refused), and both recover once space is free. The disk holds several times the
// WAL's checkpoint size (1000 pages, ~4 MiB): on a disk the WAL alone can fill, the
// WAL's pages cannot be checkpointed into the database file, so freeing the filler's
// few blocks gives SQLite nothing to recover with (the test failed one run in three so).
func TestFaultDiskFull(t *testing.T) {
	dir := testkit.Tmpfs(t, 16<<20)
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore("sqlite://"+filepath.Join(dir, "records.db"))
	}, "CRM_KEY=fault-key-0001")
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, _ := get("http://"+p.Data+"/customers/warm", tok); s != 200 {
		t.Fatalf("warm-up GET = %d, want 200", s)
	}
	base := p.Usage()
	l := startLoad(p.Data, tok, 4, customers)
	waitFor(t, "load", func() bool { return l.n.Load() >= 100 })
	fill := testkit.Fill(t, dir)
	waitFor(t, "readyz 503", func() bool { s, _ := get("http://"+p.Admin+"/readyz", ""); return s == 503 })
	status := l.Stop()
	if status[503] == 0 {
		t.Errorf("no request refused on a full disk: %v", status)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "readyz 200", func() bool { s, _ := get("http://"+p.Admin+"/readyz", ""); return s == 200 })
	if s, b := get("http://"+p.Data+"/customers/after", tok); s != 200 {
		t.Errorf("GET once space is free = %d %s, want 200", s, b)
	}
	t.Logf("answers by status while the disk filled: %v", status)
	p.CheckSettled(base, 5*time.Second, 32<<20)
}

// TestFaultStoreReadOnlyAtStart starts the gateway on a store it cannot write: it must
// refuse to start, naming recorder.store. (A disk cannot be made read-only under a
// running store: the remount is refused while files are open for writing; a full disk
// is the fault that takes writes away from a running one.)
func TestFaultStoreReadOnlyAtStart(t *testing.T) {
	var dir string
	if os.Geteuid() == 0 {
		dir = testkit.Tmpfs(t, 1<<20)
		testkit.Remount(t, dir, true)
		t.Cleanup(func() { testkit.Remount(t, dir, false) })
	} else {
		dir = t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
	}
	iss := testkit.NewIssuer(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	cfg := fmt.Sprintf(serveConfig, freeAddr(t), freeAddr(t), iss.Config().Issuer, "http://127.0.0.1:1", "readers") +
		strictStore("sqlite://"+filepath.Join(dir, "records.db"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stderr testkit.Buffer
	err := run(ctx, []string{"keyhole", "serve", "--config", path, "--watch-interval", "0"}, func(string) string { return "k" }, io.Discard, &stderr)
	if err == nil || ctx.Err() != nil || !strings.Contains(stderr.String(), "recorder.store") {
		t.Errorf("serve on a read-only store = %v (context %v), stderr %q; want a recorder.store error at start", err, ctx.Err(), stderr.String())
	}
}

// cutResponder is an upstream that sends headers and part of a body, then does what
// the path's last element says: "short" closes short of the Content-Length, "chunked"
// closes inside a chunked body, "reset" resets the connection, "stall" sends nothing
// more for two seconds. Anything else answers whole.
func cutResponder(w http.ResponseWriter, r *http.Request) {
	what := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	what, _, _ = strings.Cut(what, "-")
	const part = `{"name":"Ada","notes":"`
	switch what {
	case "short", "chunked", "reset", "stall":
	default:
		io.WriteString(w, `{"name":"Ada"}`)
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if what == "chunked" {
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n17\r\n" + part + "\r\n")
	} else {
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + part)
	}
	buf.Flush()
	switch what {
	case "reset":
		conn.(*net.TCPConn).SetLinger(0)
	case "stall":
		time.Sleep(2 * time.Second)
	}
}

// TestFaultUpstreamCutMidBody sends concurrent requests to an upstream that cuts,
// resets or stalls its bodies after the headers: each is counted by kind in
// keyhole_upstream_errors_total and recorded with its error code and what the client
// got (before: 499, as if the client had left), and no goroutine or connection stays.
func TestFaultUpstreamCutMidBody(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	up.Respond = cutResponder
	p := startFault(t, func(data, adm string) string {
		cfg := fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore("sqlite://records.db")
		return strings.Replace(cfg, "credential:", "timeout: 300ms\n    credential:", 1)
	}, "CRM_KEY=fault-key-0001")
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, _ := get("http://"+p.Data+"/customers/warm", tok); s != 200 {
		t.Fatalf("warm-up GET = %d, want 200", s)
	}
	base := p.Usage()
	const each = 10
	kinds := []string{"short", "chunked", "reset", "stall"}
	var wg sync.WaitGroup
	for _, k := range kinds {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				get(fmt.Sprintf("http://%s/customers/%s-%d", p.Data, k, i), tok)
			}()
		}
	}
	wg.Wait()
	_, metrics := get("http://"+p.Admin+"/metrics", "")
	for kind, want := range map[string]int{"truncated": 3 * each, "stalled": each} {
		line := fmt.Sprintf(`keyhole_upstream_errors_total{kind=%q,upstream="crm"} %d`, kind, want)
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %s:\n%s", line, grepLines(metrics, "keyhole_upstream_errors_total"))
		}
	}
	p.CheckSettled(base, 5*time.Second, 32<<20)

	st, err := sqlite.OpenReadOnly(context.Background(), "sqlite://"+filepath.Join(p.Dir, "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The gateway appends a response's record once the client has its answer, and
	// indexes it for other processes' reads some milliseconds later.
	var codes map[string]int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		recs, _, err := st.List(context.Background(), recorder.Filter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		codes = map[string]int{}
		for _, rec := range recs {
			x, err := recorder.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			if x.Error != "" && (x.Response == nil || !x.Response.Incomplete || x.Response.Status != 200) {
				t.Errorf("record %s %s: error %s with response %+v, want the 200 marked incomplete", x.ID, x.Request.Path, x.Error, x.Response)
			}
			codes[x.Error]++
		}
		if codes["upstream_truncated"] == 3*each && codes["upstream_timeout"] == each || time.Now().After(deadline) {
			break
		}
	}
	if codes["upstream_truncated"] != 3*each || codes["upstream_timeout"] != each {
		t.Errorf("recorded error codes %v, want %d upstream_truncated and %d upstream_timeout", codes, 3*each, each)
	}
}

// TestFaultIssuerDown starts the gateway while its issuer is down, then takes the
// issuer down again mid-run: not ready until the keys are fetched, then tokens signed
// with the keys it holds keep working while the issuer is down, and nothing leaks.
func TestFaultIssuerDown(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	iss.FailDiscovery(testkit.Fail500)
	iss.FailJWKS(testkit.Fail500)
	time.AfterFunc(1500*time.Millisecond, func() {
		iss.FailDiscovery(testkit.Serve)
		iss.FailJWKS(testkit.Serve)
	})
	started := time.Now()
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") + strictStore("sqlite://records.db")
	}, "CRM_KEY=fault-key-0001")
	if el := time.Since(started); el < 1400*time.Millisecond {
		t.Errorf("ready after %v, before the issuer came back (1.5 s)", el)
	}
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	if s, _ := get("http://"+p.Data+"/customers/warm", tok); s != 200 {
		t.Fatalf("GET once the issuer is up = %d, want 200", s)
	}
	base := p.Usage()
	iss.FailDiscovery(testkit.Fail500)
	iss.FailJWKS(testkit.Fail500)
	l := startLoad(p.Data, tok, 4, customers)
	waitFor(t, "load", func() bool { return l.n.Load() >= 200 })
	status := l.Stop()
	if status[200] != int(l.n.Load()) {
		t.Errorf("answers with the issuer down mid-run: %v, want all 200 (the keys are held)", status)
	}
	if s, _ := get("http://"+p.Admin+"/readyz", ""); s != 200 {
		t.Errorf("readyz with the issuer down mid-run = %d, want 200: the keys it holds still verify", s)
	}
	iss.FailDiscovery(testkit.Serve)
	iss.FailJWKS(testkit.Serve)
	p.CheckSettled(base, 5*time.Second, 32<<20)
}
