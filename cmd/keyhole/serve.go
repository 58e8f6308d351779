package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyholehq/keyhole/admin"
	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/console"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/connlimit"
	"github.com/keyholehq/keyhole/internal/logbuf"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/proxy"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/rules"
	"github.com/keyholehq/keyhole/telemetry"
)

// defaultConfig is the config file serve, validate and check read without --config.
const defaultConfig = "configs/keyhole.yaml"

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("config", defaultConfig, "config file")
	watch := fs.Duration("watch-interval", 2*time.Second, "how often to check the config file (and the files it names) for changes; 0: only on SIGHUP")
	issuerWait := fs.Duration("reload-issuer-wait", 10*time.Second, "how long a reload that changes identity.issuers waits for their keys before it is refused")
	pprof := fs.Bool("pprof", false, "serve Go's profiles under /debug/pprof/ on the admin listener (for load tests; keep the admin listener private)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, logs := newLogger(stderr)
	defer logs.Close()
	src := source{path: *path, load: func() ([]byte, error) { return os.ReadFile(*path) }, getenv: getenv}
	g, err := start(ctx, src, log, startOptions{})
	if err != nil {
		return reportLoad(stderr, *path, err)
	}
	g.issuerWait, g.pprof = *issuerWait, *pprof
	return g.serve(ctx, *watch)
}

// newLogger returns the JSON logger every serving command writes to stderr, and the
// buffer behind it, which the command closes last. Lines go out in blocks at least every
// 100 ms (the access log would otherwise cost a write system call per request);
// warnings and errors go out at once.
func newLogger(w io.Writer) (*slog.Logger, *logbuf.Writer) {
	buf := logbuf.New(w, 64<<10, 100*time.Millisecond)
	return slog.New(logbuf.Urgent(slog.NewJSONHandler(buf, nil), buf, slog.LevelWarn)), buf
}

// reportLoad prints a config loading error, one line per error, and returns errReported.
func reportLoad(w io.Writer, path string, err error) error {
	errs := flatten(err)
	fmt.Fprintf(w, "%s: %d error(s):\n", path, len(errs))
	for _, e := range errs {
		fmt.Fprintf(w, "  %s\n", e)
	}
	return errReported
}

// flatten unpacks errors.Join trees into their leaves.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// source is where a serving gateway reads its configuration, on start and on every reload.
type source struct {
	path   string // file name, for messages and relative paths; "" for an embedded config
	dir    string // base of relative paths when path is ""
	load   func() ([]byte, error)
	getenv func(string) string
	// judgeOnly: the command judges requests and forwards none (check, test), so an
	// unset ${VAR} in a secret is no error.
	judgeOnly bool
}

// compile parses data and builds its route table, returning every error of both.
func (s source) compile(data []byte) (*config.Config, *rules.Table, error) {
	dir := s.dir
	if s.path != "" {
		dir = filepath.Dir(s.path)
	}
	var table *rules.Table
	cfg, err := config.ParseWith(data, dir, s.getenv, config.Options{SecretsOptional: s.judgeOnly}, func(c *config.Config) (err error) {
		table, err = rules.Compile(c)
		return err
	}, proxy.CheckMasks)
	if err != nil {
		return nil, nil, err
	}
	cfg.Path = s.path
	return cfg, table, nil
}

// startOptions are what the demo changes of a start: data and admin replace the config's
// listen addresses when set, and devKeyFile keeps the dev issuer's signing key in that
// file (a new key each start when empty).
type startOptions struct{ data, admin, devKeyFile string }

// gateway is one running Keyhole process: its listeners, the data plane, the admin plane,
// the verifier and the reload machinery. Reloads are serialised by mu.
type gateway struct {
	src     source
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	proxy   *proxy.Gateway
	dev     *identity.DevIssuer
	ctx     context.Context // the process context, for the verifier's background work
	dataLn  net.Listener
	adminLn net.Listener
	opsLn   net.Listener // nil: ops.listen is not set
	// connLimit is dataLn's limit of unauthenticated connections per peer.
	connLimit *connlimit.Listener
	verifier  atomic.Pointer[identity.Verifier]
	store     store
	rec       *recorder.Recorder
	ap        *approvals.Service
	notifier  *approvals.Notifier
	tel       *telemetry.Tracer           // nil: telemetry.otlp is not set
	shared    *sharedCheck                // nil: the store has one process
	table     atomic.Pointer[rules.Table] // the running route table, for admin roles

	mu          sync.Mutex
	cfg         *config.Config
	state       *proxy.State
	lastSum     [32]byte        // fingerprint of the configuration last tried
	lastReadErr string          // the last error reading the file, reported once
	issuerWait  time.Duration   // how long a reload waits for changed issuers' keys
	pprof       bool            // serve /debug/pprof/ on the admin listener
	bg          context.Context // background work's context, set by serve (under mu)
}

// start loads the configuration, opens the listeners and builds the data plane. It does
// not serve yet: serve does.
func start(ctx context.Context, src source, log *slog.Logger, over startOptions) (*gateway, error) {
	data, err := src.load()
	if err != nil {
		return nil, err
	}
	cfg, table, err := src.compile(data)
	if err != nil {
		return nil, err
	}
	if over.data != "" {
		cfg.Listen = over.data
	}
	if over.admin != "" {
		cfg.Admin.Listen = over.admin
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg.Recorder)
	if err != nil {
		return nil, err
	}
	if err := st.Ping(ctx); err != nil {
		log.Warn("record store not reachable yet: the gateway starts, /readyz says why, and strict mode refuses requests until it is",
			"error", err.Error())
	}
	rec := newRecorder(cfg, st, m, log)
	ap, notifier := newApprovals(cfg, st, m, log)
	g := &gateway{src: src, log: log, reg: reg, metrics: m, proxy: proxy.New(log, m, rec, ap), ctx: ctx,
		cfg: cfg, issuerWait: 10 * time.Second, store: st, rec: rec, ap: ap, notifier: notifier,
		shared: newSharedCheck(st, log)}
	g.store = g.startExport(st)
	if g.tel, err = newTracer(ctx, cfg, log); err != nil {
		g.closeRecorder()
		return nil, err
	}
	g.proxy.SetTracer(g.tel)
	g.lastSum = g.fingerprint(data)
	if g.adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
		g.closeRecorder()
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	if cfg.Ops != nil {
		if g.opsLn, err = net.Listen("tcp", cfg.Ops.Listen); err != nil {
			g.close()
			return nil, fmt.Errorf("ops.listen: %w", err)
		}
	}
	if g.dataLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		g.close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	g.connLimit = connlimit.NewListener(g.dataLn, cfg.Limits.MaxUnauthenticatedConnsPerPeer, m.ConnsRefused.Inc)
	g.dataLn = g.connLimit
	if cfg.Identity.Dev {
		issuerURL := "http://" + g.adminLn.Addr().String() + "/dev"
		if over.devKeyFile != "" {
			g.dev, err = identity.OpenDevIssuer(issuerURL, over.devKeyFile)
		} else {
			g.dev, err = identity.NewDevIssuer(issuerURL)
		}
		if err != nil {
			g.close()
			return nil, err
		}
	}
	v, err := g.newVerifier(cfg)
	if err != nil {
		g.close()
		return nil, err
	}
	v.SetClaims(table.ClaimNames())
	g.verifier.Store(v)
	g.table.Store(table)
	if g.state, err = g.proxy.NewState(cfg, table, v, nil); err != nil {
		g.close()
		v.Close()
		return nil, err
	}
	g.proxy.Swap(g.state)
	m.ConfigLastReloadSuccess.SetToCurrentTime()
	return g, nil
}

func (g *gateway) close() {
	g.adminLn.Close()
	if g.opsLn != nil {
		g.opsLn.Close()
	}
	if g.dataLn != nil {
		g.dataLn.Close()
	}
	g.closeRecorder()
	g.closeTracer()
}

// newTracer returns the Tracer of cfg's telemetry.otlp, nil when it is not set.
func newTracer(ctx context.Context, cfg *config.Config, log *slog.Logger) (*telemetry.Tracer, error) {
	o := cfg.Telemetry.OTLP
	if o == nil {
		return nil, nil
	}
	headers := make(map[string]string, len(o.Headers))
	for k, v := range o.Headers {
		headers[k] = v.Reveal()
	}
	return telemetry.New(ctx, telemetry.Options{Endpoint: o.Endpoint, SampleRatio: o.SampleRatio, Headers: headers,
		Timeout: time.Duration(o.Timeout), Version: version(), Log: log})
}

// closeTracer exports the spans still queued, the last requests' among them.
func (g *gateway) closeTracer() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.tel.Shutdown(ctx); err != nil {
		g.log.Error("telemetry: spans still queued at shutdown were lost", "error", err.Error())
	}
}

// closeRecorder writes what the recorder still holds and closes the store.
func (g *gateway) closeRecorder() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.rec.Close(ctx); err != nil {
		g.log.Error("recorder: records still queued at shutdown were lost", "error", err.Error())
	}
	if err := g.store.Close(); err != nil {
		g.log.Error("recorder: close store", "error", err.Error())
	}
}

// issuers returns the configured issuers, with the dev issuer when it is enabled.
func (g *gateway) issuers(cfg *config.Config) []config.Issuer {
	iss := append([]config.Issuer(nil), cfg.Identity.Issuers...)
	if g.dev != nil {
		iss = append(iss, g.dev.Config())
	}
	return iss
}

func (g *gateway) newVerifier(cfg *config.Config) (*identity.Verifier, error) {
	return identity.New(g.ctx, g.issuers(cfg), identity.Options{
		Logger: g.log,
		OnRefresh: func(issuer string, err error) {
			result := "success"
			if err != nil {
				result = "error"
			}
			g.metrics.JWKSRefresh.WithLabelValues(issuer, result).Inc()
		},
	})
}

// ready reports what keeps the gateway from serving, or nil.
func (g *gateway) ready() error {
	if !g.proxy.Loaded() {
		return errors.New("no configuration loaded")
	}
	if !g.verifier.Load().Ready() {
		return errors.New("signing keys not yet fetched for every issuer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.store.Ping(ctx); err != nil {
		// The store's errors name where it is, never a password.
		return fmt.Errorf("record store unreachable: %w", err)
	}
	// Strict mode refuses every request the recorder cannot write: a gateway on a full
	// disk, or whose store file was deleted, must leave the load balancer's rotation.
	// (Best-effort mode still serves; its lost records are counted.)
	if err := g.rec.Health(); err != nil && g.rec.Strict() {
		return errors.New("record store cannot be written now, and strict mode refuses requests it cannot record")
	}
	return nil
}

// serve runs both planes until ctx is cancelled, reloading on SIGHUP and when the config
// file changes, then drains in-flight requests and returns.
func (g *gateway) serve(ctx context.Context, watch time.Duration) error {
	cfg := g.cfg
	// No ReadTimeout or WriteTimeout: they would cut long uploads and SSE streams. Each
	// request's body reads and response writes have their own deadlines instead
	// (limits.request_body_*, limits.response_write_idle_timeout), reset on progress.
	dataSrv := &http.Server{
		Handler:           g.proxy,
		ConnContext:       connlimit.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	api := &admin.API{
		Verifier:  func() admin.Verifier { return g.verifier.Load() },
		Roles:     func() admin.Roles { return g.table.Load() },
		Store:     g.store,
		Replayer:  g.proxy,
		Approvals: g.ap,
		Version:   version(),
		Log:       g.log,
	}
	opts := admin.Options{Gatherer: g.reg, Ready: g.ready, Pprof: g.pprof, API: api}
	if g.dev != nil {
		opts.DevIssuer, opts.DevPath = g.dev.Handler(), "/dev"
	}
	if cc := cfg.Admin.Console; cc != nil {
		issuer := cc.Issuer
		if issuer == "" && g.dev != nil {
			issuer = g.dev.Config().Issuer
		}
		c, err := console.New(console.Options{Config: cc, IssuerURL: issuer, Context: g.ctx, Verifier: opts.API.Verifier,
			Roles: opts.API.Roles, Approvals: g.ap, Store: g.store, Replayer: g.proxy, Version: api.Version, Log: g.log})
		if err != nil {
			return err
		}
		opts.Console = c
	}
	adminH := admin.New(opts)
	// admin.New bounds body reads and response writes per request (no global timeouts: a
	// 30 s CPU profile or a long HAR export must finish).
	adminSrv := &http.Server{
		Handler:           adminH,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	// Live exports never go idle by themselves: Shutdown ends them rather than wait.
	adminSrv.RegisterOnShutdown(api.CloseStreams)
	// The ops listener (ops.listen) serves the probes and /metrics only, with the admin
	// plane's bounds; the admin listener keeps serving them too.
	opsSrv := &http.Server{
		Handler:           admin.NewOps(g.reg, g.ready),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 3)
	go func() {
		var err error
		if cfg.TLS != nil {
			dataSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			err = dataSrv.ServeTLS(g.dataLn, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		} else {
			err = dataSrv.Serve(g.dataLn)
		}
		errc <- err
	}()
	go func() { errc <- adminSrv.Serve(g.adminLn) }()
	opsAddr := ""
	if g.opsLn != nil {
		opsAddr = g.opsLn.Addr().String()
		go func() { errc <- opsSrv.Serve(g.opsLn) }()
	}
	// Background work of approvals: sweeping expired ones, sending notifications. It
	// stops after the servers, so a request still draining can be held and announced.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go g.ap.Run(bg)
	go g.notifier.Run(bg)
	g.mu.Lock()
	g.bg = bg
	g.mu.Unlock()
	go g.shared.run(bg, cfg)
	g.log.Info("keyhole serving", "listen", g.dataLn.Addr().String(), "admin", g.adminLn.Addr().String(), "ops", opsAddr,
		"tls", cfg.TLS != nil, "dev_issuer", g.dev != nil, "version", release(), "commit", commit())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if watch > 0 && g.src.path != "" {
		t := time.NewTicker(watch)
		defer t.Stop()
		tick = t.C
	}
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case <-hup:
			g.reload(true)
		case <-tick:
			g.reload(false)
		}
	}
	g.log.Info("keyhole shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.ap.Close() // held requests answer approval_pending now rather than hold up the drain
	// Shutdown of a server that never served (no ops.listen) returns at once.
	shutErr := errors.Join(dataSrv.Shutdown(sctx), adminSrv.Shutdown(sctx), opsSrv.Shutdown(sctx))
	stopBG()
	g.verifier.Load().Close()
	g.closeRecorder()
	g.closeTracer()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return shutErr
}

// reload reads the configuration again and, if it is valid, swaps it in atomically. When
// force is false (a timer tick) an unchanged file is not reloaded. A bad file is logged
// and counted, and the running configuration keeps serving.
func (g *gateway) reload(force bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	data, err := g.src.load()
	if err != nil {
		// A file being replaced can be missing for a moment: say so once, not every tick.
		if force || err.Error() != g.lastReadErr {
			g.reloadFailed(err)
		}
		g.lastReadErr = err.Error()
		return
	}
	g.lastReadErr = ""
	sum := g.fingerprint(data)
	if !force && sum == g.lastSum {
		return
	}
	// Remembered even when the reload fails, so a bad file is reported once, not every tick.
	g.lastSum = sum
	cfg, table, err := g.src.compile(data)
	if err != nil {
		g.reloadFailed(err)
		return
	}
	old := g.cfg
	if cfg.Recorder.Store != old.Recorder.Store || !reflect.DeepEqual(cfg.Recorder.Postgres, old.Recorder.Postgres) {
		g.reloadFailed(errors.New("recorder.store: the record store and its recorder.postgres settings cannot change on reload; restart the gateway to use them"))
		return
	}
	if !reflect.DeepEqual(cfg.Telemetry, old.Telemetry) {
		g.log.Warn("config reload: telemetry takes effect only after a restart")
		cfg.Telemetry = old.Telemetry
	}
	if cfg.Listen != old.Listen || cfg.Admin.Listen != old.Admin.Listen || !reflect.DeepEqual(cfg.TLS, old.TLS) ||
		cfg.Identity.Dev != old.Identity.Dev || !reflect.DeepEqual(cfg.Admin.Console, old.Admin.Console) ||
		!reflect.DeepEqual(cfg.Ops, old.Ops) {
		g.log.Warn("config reload: listen, admin.listen, admin.console, ops.listen, tls and identity.dev take effect only after a restart")
		cfg.Listen, cfg.Admin.Listen, cfg.TLS, cfg.Identity.Dev = old.Listen, old.Admin.Listen, old.TLS, old.Identity.Dev
		cfg.Admin.Console, cfg.Ops = old.Admin.Console, old.Ops
	}
	v := g.verifier.Load()
	newVerifier := !reflect.DeepEqual(cfg.Identity.Issuers, old.Identity.Issuers)
	if newVerifier {
		if v, err = g.newVerifier(cfg); err != nil {
			g.reloadFailed(err)
			return
		}
		// Swap only a verifier that can verify: with the IdP down, the new one would
		// refuse every token while the running one still holds good keys.
		wctx, cancel := context.WithTimeout(g.ctx, g.issuerWait)
		err = v.WaitReady(wctx)
		cancel()
		if err != nil {
			v.Close()
			g.reloadFailed(fmt.Errorf("identity: the changed issuers' signing keys could not be fetched within %s; keeping the running configuration", g.issuerWait))
			return
		}
	}
	state, err := g.proxy.NewState(cfg, table, v, g.state)
	if err != nil {
		if newVerifier {
			v.Close()
		}
		g.reloadFailed(err)
		return
	}
	// Principals keep the claims both the old and the new rules read: requests still in
	// flight under the old rules must not find a claim missing.
	v.SetClaims(slices.Concat(g.table.Load().ClaimNames(), table.ClaimNames()))
	if newVerifier {
		g.verifier.Swap(v).Close()
	}
	// The new policy redacts the old credentials too: requests still in flight under the
	// old configuration carry them, and a rotated key must not reach a record either way.
	g.rec.SetPolicy(recorderPolicy(cfg, old))
	g.rec.SetRetention(retentionOf(cfg))
	g.notifier.Set(notifyConfig(cfg))
	g.proxy.Swap(state)
	g.connLimit.SetMax(cfg.Limits.MaxUnauthenticatedConnsPerPeer)
	g.table.Store(table)
	g.cfg, g.state = cfg, state
	g.lastSum = g.fingerprint(data)
	g.metrics.ConfigReloads.WithLabelValues("success").Inc()
	g.metrics.ConfigLastReloadSuccess.SetToCurrentTime()
	if g.bg != nil {
		go g.shared.run(g.bg, cfg)
	}
	g.log.Info("config reloaded", "routes", len(cfg.Routes), "guards", len(cfg.Guards), "upstreams", len(cfg.Upstreams))
}

// fingerprint identifies the configuration as it would load now: the file and every file
// the running configuration reads (credential value files, CA files, TLS pair), so that a
// rotated secret or CA file reloads as a changed config does.
func (g *gateway) fingerprint(data []byte) [32]byte {
	h := sha256.New()
	h.Write(data)
	for _, f := range referencedFiles(g.cfg) {
		b, _ := os.ReadFile(f)
		fmt.Fprintf(h, "\x00%s\x00%x", f, sha256.Sum256(b))
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// referencedFiles lists the files cfg reads at load.
func referencedFiles(cfg *config.Config) []string {
	var files []string
	if cfg.TLS != nil {
		files = append(files, cfg.TLS.CertFile, cfg.TLS.KeyFile)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		u := cfg.Upstreams[name]
		if u.Credential != nil && u.Credential.ValueFile != "" {
			files = append(files, u.Credential.ValueFile)
		}
		if u.TLS != nil && u.TLS.CAFile != "" {
			files = append(files, u.TLS.CAFile)
		}
	}
	return files
}

func (g *gateway) reloadFailed(err error) {
	g.metrics.ConfigReloads.WithLabelValues("error").Inc()
	var msgs bytes.Buffer
	for i, e := range flatten(err) {
		if i > 0 {
			msgs.WriteString("; ")
		}
		msgs.WriteString(e.Error())
	}
	g.log.Error("config reload refused; the previous configuration keeps serving", "errors", msgs.String())
}
