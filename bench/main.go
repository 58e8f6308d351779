// Command bench is Keyhole's load harness: it starts a small JSON backend, an MCP server,
// Keyhole with a realistic configuration, nginx, and two plain Go reverse proxies, all on 127.0.0.1,
// drives each with wrk in interleaved rounds (and, in the open-loop scenario, with vegeta's
// library at a fixed rate), and prints one table of medians with each
// figure as a ratio to a direct call and to nginx. Run it from the repository root:
//
//	go run ./bench [-rounds 3] [-duration 5s] [-json bench-results.json]
//
// It needs wrk and nginx (Debian: apt-get install -y wrk nginx-light). Every process it
// starts is stopped when it ends, and every load run stops by itself.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/identity"
)

// benchAPIKey is the credential every proxy injects; the backend does not check it.
const benchAPIKey = "bench-api-key-0123456789"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == roleBackend || os.Args[1] == roleMCPBackend || os.Args[1] == roleGoProxy) {
		if err := runRole(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of every run")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of each load run")
	flag.StringVar(&o.jsonOut, "json", "bench-results.json", "write the results here too")
	flag.IntVar(&o.tokens, "tokens", 15000, "distinct tokens per round for the token-per-request run")
	flag.StringVar(&o.only, "only", "", "run only scenarios whose name contains this")
	flag.StringVar(&o.recordMode, "record-mode", "strict", "Keyhole's recorder.mode (strict, best_effort), to see what recording costs")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of Keyhole during each scenario's first round into this directory")
	flag.StringVar(&o.store, "store", "", `also run Keyhole on this PostgreSQL store ("keyhole pg", beside Keyhole on SQLite): a postgres:// DSN of an empty database, or "local" to start a throw-away server with .ci/postgres`)
	flag.Parse()
	if o.duration < time.Second {
		fmt.Fprintln(os.Stderr, "bench: -duration must be at least 1s (wrk counts whole seconds)")
		os.Exit(2)
	}
	// Ctrl-C ends the run, and run's deferred stops end every process it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds     int
	duration   time.Duration
	jsonOut    string
	tokens     int
	only       string
	recordMode string
	profile    string
	store      string // "" or a postgres:// DSN, or "local"
}

// target is one thing under load: a process, its base URL, the path prefix that
// selects what it does (Keyhole's masked route), and headers it needs (the MCP server's
// key, which a proxy would inject).
type target struct {
	name   string
	proc   *proc
	base   string
	prefix string
	header map[string]string
}

// scenario is one row group of the table.
type scenario struct {
	name        string
	path        string
	conns       int
	targets     []string
	perRequest  bool // a new token for every request
	forbidEvery int
	rounds      int           // 0: the harness's rounds
	mcp         bool          // POST mcpCall to the MCP targets (direct: the MCP server itself)
	rate        int           // > 0: an open loop of this many requests a second (vegeta), not wrk's closed loop
	duration    time.Duration // 0: the harness's -duration
}

// openLoopScenario is the condition of agentgateway's published benchmark: a fixed 3,000
// req/s of a ~1 KB JSON GET for 10 s over 32 connections, sent open-loop.
const openLoopScenario = "open-loop 3000 rps 1KB"

// pgTarget is Keyhole recording to PostgreSQL, run only with -store.
const pgTarget = "keyhole pg"

var scenarios = []scenario{
	{name: "small GET c=32", path: "/small", conns: 32, targets: []string{"direct", "nginx", "go-proxy", "go-proxy+rs256", "keyhole", pgTarget}},
	{name: "small GET c=1", path: "/small", conns: 1, targets: []string{"direct", "nginx", "go-proxy", "go-proxy+rs256", "keyhole", pgTarget}},
	{name: "100KB GET c=8", path: "/big", conns: 8, targets: []string{"direct", "nginx", "go-proxy", "keyhole", "keyhole masked", pgTarget}},
	{name: "10% forbidden c=32", path: "/small", conns: 32, forbidEvery: 10, targets: []string{"direct", "nginx", "go-proxy", "keyhole"}},
	{name: "new token per request c=32", path: "/small", conns: 32, perRequest: true, targets: []string{"go-proxy+rs256", "keyhole"}},
	{name: "1MB masked c=50", path: "/huge", conns: 50, rounds: 1, targets: []string{"keyhole masked"}},
	{name: openLoopScenario, path: "/1kb", conns: 32, rate: 3000, duration: 10 * time.Second, targets: []string{"direct", "go-proxy", "keyhole", pgTarget}},
	{name: "MCP tools/call c=32", path: "/mcp", conns: 32, mcp: true, targets: []string{"direct", "keyhole"}},
}

// mcpCall is the MCP scenario's request: one JSON-RPC tools/call of a tool whose result
// Keyhole masks (two field rules on structuredContent and on the JSON text), sent without
// a session to the stateless MCP server.
const mcpCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":1}}}`

// mcpHeader are the headers of every MCP request.
var mcpHeader = map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

// run is the whole harness. It stops when ctx ends, stopping what it started.
func run(ctx context.Context, o options, out io.Writer) error {
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: apt-get install -y wrk nginx-light", tool)
		}
	}
	dir, err := os.MkdirTemp("", "keyhole-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	launch := func(name string, args ...string) (*proc, error) {
		p, err := start(name, args...)
		if err == nil {
			procs = append(procs, p)
		}
		return p, err
	}

	// The issuer: Keyhole's dev issuer, in this process, as a regular OIDC issuer.
	issLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	issuerURL := "http://" + issLn.Addr().String()
	dev, err := identity.NewDevIssuer(issuerURL)
	if err != nil {
		return err
	}
	issSrv := &http.Server{Handler: dev.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go issSrv.Serve(issLn)
	defer issSrv.Close()
	token, err := dev.Mint(identity.TokenRequest{ClientID: "bench-agent", Scopes: []string{"api.read"}, TTL: 8 * time.Hour})
	if err != nil {
		return err
	}
	auth := http.Header{"Authorization": {"Bearer " + token}}

	addrs := map[string]string{}
	for _, n := range []string{"backend", "mcp-backend", "keyhole", "keyhole-admin", "keyhole-pg", "keyhole-pg-admin", "nginx", "go-proxy", "go-proxy+rs256"} {
		if addrs[n], err = freePort(); err != nil {
			return err
		}
	}
	backendURL := "http://" + addrs["backend"]
	backendProc, err := launch(self, roleBackend, "-listen", addrs["backend"])
	if err != nil {
		return err
	}
	if err := waitHTTP(backendProc, backendURL+"/small", nil); err != nil {
		return err
	}
	mcpURL := "http://" + addrs["mcp-backend"]
	mcpProc, err := launch(self, roleMCPBackend, "-listen", addrs["mcp-backend"])
	if err != nil {
		return err
	}
	if err := waitHTTP(mcpProc, mcpURL+"/mcp", nil); err != nil {
		return err
	}

	fmt.Fprintln(out, "building keyhole ...")
	khBin := filepath.Join(dir, "keyhole")
	if b, err := exec.Command("go", "build", "-o", khBin, "./cmd/keyhole").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/keyhole (run the harness from the repository root): %w\n%s", err, b)
	}
	cfg := filepath.Join(dir, "keyhole.yaml")
	if err := os.WriteFile(cfg, []byte(keyholeConfig(addrs["keyhole"], addrs["keyhole-admin"], dev.Config(), backendURL, mcpURL, "sqlite://"+filepath.Join(dir, "records.db"), o.recordMode)), 0o600); err != nil {
		return err
	}
	khProc, err := launch(khBin, "serve", "--config", cfg, "--watch-interval", "0", "--pprof="+fmt.Sprint(o.profile != ""))
	if err != nil {
		return err
	}
	if err := waitHTTP(khProc, "http://"+addrs["keyhole-admin"]+"/readyz", nil); err != nil {
		return err
	}

	var pgProc *proc
	if o.store != "" {
		dsn := o.store
		if dsn == "local" {
			var stopPG func()
			if dsn, stopPG, err = localPostgres(); err != nil {
				return err
			}
			defer stopPG()
		}
		pgCfg := filepath.Join(dir, "keyhole-pg.yaml")
		if err := os.WriteFile(pgCfg, []byte(keyholeConfig(addrs["keyhole-pg"], addrs["keyhole-pg-admin"], dev.Config(), backendURL, mcpURL, dsn, o.recordMode)), 0o600); err != nil {
			return err
		}
		if pgProc, err = launch(khBin, "serve", "--config", pgCfg, "--watch-interval", "0"); err != nil {
			return err
		}
		if err := waitHTTP(pgProc, "http://"+addrs["keyhole-pg-admin"]+"/readyz", nil); err != nil {
			return err
		}
	}

	nginxProc, err := startNginx(dir, addrs["nginx"], addrs["backend"], launch)
	if err != nil {
		return err
	}
	goProc, err := launch(self, roleGoProxy, "-listen", addrs["go-proxy"], "-upstream", backendURL)
	if err != nil {
		return err
	}
	rsProc, err := launch(self, roleGoProxy, "-listen", addrs["go-proxy+rs256"], "-upstream", backendURL,
		"-issuer", issuerURL, "-jwks", dev.Config().JWKSURL, "-audience", identity.DevAudience)
	if err != nil {
		return err
	}
	targets := map[string]target{
		"direct":         {name: "direct", proc: backendProc, base: backendURL},
		"nginx":          {name: "nginx", proc: nginxProc, base: "http://" + addrs["nginx"]},
		"go-proxy":       {name: "go-proxy", proc: goProc, base: "http://" + addrs["go-proxy"]},
		"go-proxy+rs256": {name: "go-proxy+rs256", proc: rsProc, base: "http://" + addrs["go-proxy+rs256"]},
		"keyhole":        {name: "keyhole", proc: khProc, base: "http://" + addrs["keyhole"]},
		"keyhole masked": {name: "keyhole masked", proc: khProc, base: "http://" + addrs["keyhole"], prefix: "/masked"},
	}
	if pgProc != nil {
		targets[pgTarget] = target{name: pgTarget, proc: pgProc, base: "http://" + addrs["keyhole-pg"]}
	}
	for _, t := range targets {
		if err := waitHTTP(t.proc, t.base+t.prefix+"/small", auth); err != nil {
			return err
		}
	}
	mcpTargets := map[string]target{
		"direct":  {name: "direct", proc: mcpProc, base: mcpURL, header: map[string]string{"X-Api-Key": benchAPIKey}},
		"keyhole": {name: "keyhole", proc: khProc, base: "http://" + addrs["keyhole"]},
	}
	// MCP refusals and mask failures are HTTP 200s, so wrk's non-2xx count cannot catch
	// them: each target must answer the call as expected before it is measured.
	for name, want := range map[string]string{"direct": `\"ssn\":\"078-05-1120\"`, "keyhole": `\"ssn\":\"[REDACTED]\"`} {
		if err := probeMCP(mcpTargets[name], token, want); err != nil {
			return err
		}
	}

	rep := report{Machine: machine(), Commit: commit(), Started: time.Now().UTC(), Rounds: o.rounds, Duration: o.duration.String(),
		RecordMode: o.recordMode}
	fmt.Fprintf(out, "warming up ...\n")
	for _, name := range []string{"direct", "nginx", "go-proxy", "go-proxy+rs256", "keyhole", pgTarget} {
		t, ok := targets[name]
		if !ok {
			continue // keyhole pg without -store
		}
		if _, err := runWrk(ctx, dir, load{url: t.base, path: "/small", conns: 32, duration: time.Second, token: token}); err != nil {
			return err
		}
	}
	for _, sc := range scenarios {
		if o.only != "" && !strings.Contains(sc.name, o.only) {
			continue
		}
		rounds := o.rounds
		if sc.rounds > 0 {
			rounds = sc.rounds
		}
		for round := 1; round <= rounds; round++ {
			tokensFile := ""
			if sc.perRequest {
				fmt.Fprintf(out, "minting %d tokens for %s, round %d ...\n", o.tokens, sc.name, round)
				if tokensFile, err = mintTokens(dev, dir, o.tokens, round); err != nil {
					return err
				}
			}
			for _, name := range sc.targets {
				t, ok := targets[name]
				if !ok {
					continue // keyhole pg without -store
				}
				duration := cmp.Or(sc.duration, o.duration)
				l := load{url: t.base, path: t.prefix + sc.path, conns: sc.conns, duration: duration, token: token,
					tokensFile: tokensFile, forbidEvery: sc.forbidEvery, forbidPath: "/forbidden", rate: sc.rate}
				if sc.mcp {
					t = mcpTargets[name]
					l.url, l.method, l.body, l.header = t.base, http.MethodPost, mcpCall, maps.Clone(mcpHeader)
					maps.Copy(l.header, t.header)
				}
				t.proc.resetPeak()
				before := t.proc.cpuTicks()
				var profiled chan error
				if o.profile != "" && round == 1 && t.proc == khProc {
					profiled = make(chan error, 1)
					go func() {
						profiled <- cpuProfile(ctx, "http://"+addrs["keyhole-admin"], duration-time.Second,
							filepath.Join(o.profile, strings.NewReplacer(" ", "-", "=", "", "%", "pct").Replace(sc.name+" "+name)+".pprof"))
					}()
				}
				var r result
				if l.rate > 0 {
					r, err = runOpenLoop(ctx, l)
					if err == nil && r.SentPerSec < 0.97*float64(l.rate) {
						fmt.Fprintf(out, "  warning: %s: the generator sent %.0f req/s of %d: it fell behind\n", name, r.SentPerSec, l.rate)
					}
				} else {
					r, err = runWrk(ctx, dir, l)
				}
				if err != nil {
					return fmt.Errorf("%s, %s: %w", sc.name, name, err)
				}
				// A target that answers fast because it refuses or drops would look good:
				// only the mixed scenario may see non-2xx answers (its forbidden share), and
				// no run more than 1% socket errors.
				if sc.forbidEvery == 0 && r.Non2xx > 0 || r.Errors*100 > r.Requests {
					return fmt.Errorf("%s, %s: %d non-2xx answers and %d socket errors of %d requests", sc.name, name, r.Non2xx, r.Errors, r.Requests)
				}
				if sc.perRequest && r.Requests > int64(o.tokens) {
					r.TokensReused = true
					fmt.Fprintf(out, "  warning: %s sent %d requests with %d tokens: tokens were reused (raise -tokens)\n", name, r.Requests, o.tokens)
				}
				if profiled != nil {
					if err := <-profiled; err != nil {
						return fmt.Errorf("profile %s, %s: %w", sc.name, name, err)
					}
				}
				if r.Requests > 0 {
					r.CPUusPerReq = float64(t.proc.cpuTicks()-before) * (1e6 / clockTick) / float64(r.Requests)
				}
				r.PeakRSSMB = float64(t.proc.peakRSS()) / (1 << 20)
				rep.Runs = append(rep.Runs, run1{Scenario: sc.name, Target: name, Round: round, Result: r})
				fmt.Fprintf(out, "  %-28s %-15s round %d: %9.0f req/s  p50 %6.2f ms  p90 %6.2f ms  p99 %7.2f ms  %6.1f µs/req  %5.1f MB\n",
					sc.name, name, round, r.ReqPerSec, r.P50ms, r.P90ms, r.P99ms, r.CPUusPerReq, r.PeakRSSMB)
			}
		}
	}
	rep.summarise()
	rep.print(out)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(o.jsonOut, append(b, '\n'), 0o644)
}

// keyholeConfig is the gateway under test: verification (with its token cache), route
// rules, credential injection, strict recording to store (SQLite or PostgreSQL), a route
// that masks two fields and runs detectors, and an mcp route whose one tool's results are
// masked.
func keyholeConfig(listen, admin string, iss config.Issuer, backendURL, mcpURL, store, recordMode string) string {
	return fmt.Sprintf(`listen: %q
admin: { listen: %q }
identity:
  issuers:
    - issuer: %q
      audiences: [%q]
      jwks_url: %q
upstreams:
  api:
    url: %q
    timeout: 10s
    credential: { header: X-Api-Key, value: %[7]q }
  mcp:
    url: %[8]q
    timeout: 10s
    credential: { header: X-Api-Key, value: %[7]q }
routes:
  - name: api-read
    match: { methods: [GET], path: "/{doc}" }
    upstream: api
    allow: { scopes: [api.read] }
  - name: api-read-masked
    match: { methods: [GET], path: "/masked/{doc}" }
    upstream: api
    rewrite: { strip_prefix: /masked }
    allow: { scopes: [api.read] }
    mask:
      - { field: customers.#.ssn, action: redact }
      - { field: customers.#.card, action: last4 }
    detect: [email, credit_card]
  - name: admin-only
    match: { methods: [GET], path: /forbidden }
    upstream: api
    allow: { groups: [api-admins] }
  - name: mcp
    match: { methods: [POST, GET, DELETE], path: /mcp }
    upstream: mcp
    allow: { scopes: [api.read] }
    mcp:
      tools:
        - name: lookup_customer
          mask:
            - { field: ssn, action: redact }
            - { field: card.number, action: last4 }
        - { name: "drop_*", deny: "schema changes never go through the gateway" }
recorder:
  store: %[9]q
  mode: %[10]s
  body_limit: 64KiB
limits:
  max_response_body_masked: 4MiB
`, listen, admin, iss.Issuer, iss.Audiences[0], iss.JWKSURL, backendURL, benchAPIKey, mcpURL, store, recordMode)
}

// probeMCP sends the MCP scenario's call to t once and checks that the answer is a
// result (not a refusal or an error) containing want.
func probeMCP(t target, token, want string) error {
	req, err := http.NewRequest(http.MethodPost, t.base+"/mcp", strings.NewReader(mcpCall))
	if err != nil {
		return err
	}
	for k, v := range mcpHeader {
		req.Header.Set(k, v)
	}
	for k, v := range t.header {
		req.Header.Set(k, v)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := probeClient.Do(req)
	if err != nil {
		return fmt.Errorf("MCP %s: %w", t.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("MCP %s: %w", t.name, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) || strings.Contains(string(b), `"isError":true`) {
		return fmt.Errorf("MCP %s answered %s %s, want a result with %s", t.name, resp.Status, b, want)
	}
	return nil
}

// startNginx runs nginx in front of the backend with a keep-alive upstream and the
// injected key: its job, like the others', is to forward and add one header.
func startNginx(dir, listen, backend string, launch func(string, ...string) (*proc, error)) (*proc, error) {
	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would otherwise run as nobody, without access to the temp dir
	}
	conf := fmt.Sprintf(`%s
worker_processes auto;
error_log %s/logs/error.log warn;
pid %s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[4]s/body;
  proxy_temp_path %[4]s/proxy;
  fastcgi_temp_path %[4]s/fastcgi;
  uwsgi_temp_path %[4]s/uwsgi;
  scgi_temp_path %[4]s/scgi;
  upstream backend { server %s; keepalive 64; }
  server {
    listen %s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Api-Key %q;
    }
  }
}
`, user, prefix, prefix, prefix, backend, listen, benchAPIKey)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return launch("nginx", "-p", prefix, "-c", path, "-g", "daemon off;")
}

// mintTokens writes n distinct tokens, one per line, for a token-per-request round.
func mintTokens(dev *identity.DevIssuer, dir string, n, round int) (string, error) {
	tokens := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, runtime.NumCPU())
	per := (n + runtime.NumCPU() - 1) / runtime.NumCPU()
	for w := 0; w < n; w += per {
		wg.Add(1)
		go func(from, to int) {
			defer wg.Done()
			for i := from; i < to; i++ {
				t, err := dev.Mint(identity.TokenRequest{ClientID: fmt.Sprintf("bench-agent-%d-%d", round, i), Scopes: []string{"api.read"}, TTL: time.Hour})
				if err != nil {
					errs <- err
					return
				}
				tokens[i] = t
			}
		}(w, min(w+per, n))
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("tokens-%d.txt", round))
	return path, os.WriteFile(path, []byte(strings.Join(tokens, "\n")+"\n"), 0o600)
}

// machine describes where the figures were taken.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s", runtime.NumCPU(), model, runtime.Version())
}

func commit() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// cpuProfile fetches a CPU profile of d from Keyhole's admin listener into path.
func cpuProfile(ctx context.Context, admin string, d time.Duration, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, max(1, int(d.Seconds()))), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: d + 30*time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof answered %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// localPostgres starts a throw-away PostgreSQL with the repository's .ci/postgres (run
// the harness from the repository root) and returns its DSN and the function that stops
// and removes it.
func localPostgres() (dsn string, stop func(), err error) {
	cmd := exec.Command(".ci/postgres", "start")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", nil, fmt.Errorf(".ci/postgres start (run the harness from the repository root): %w", err)
	}
	var dir string
	for line := range strings.SplitSeq(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		switch v = strings.Trim(v, "'"); k {
		case "KEYHOLE_TEST_POSTGRES":
			dsn = v
		case "KEYHOLE_TEST_POSTGRES_DIR":
			dir = v
		}
	}
	if dsn == "" || dir == "" {
		return "", nil, fmt.Errorf(".ci/postgres start printed no DSN: %q", out)
	}
	return dsn, func() { exec.Command(".ci/postgres", "stop", dir).Run() }, nil
}
