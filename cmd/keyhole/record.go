package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/postgres"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// store is where a gateway keeps its exchange records and its approvals.
type store interface {
	recorder.Store
	approvals.Store
}

// openStore opens the store rc names, creating it if need be. A PostgreSQL store opens
// even while its server cannot be reached (the gateway starts, /readyz says why, strict
// mode refuses what it cannot record) and connects and migrates once it can; it is
// refused only when its DSN is malformed, its password file unreadable, or its schema
// newer than this build's.
func openStore(ctx context.Context, rc *config.Recorder) (store, error) {
	if isPostgres(rc.Store) {
		s, err := postgres.Open(ctx, rc.Store, postgresOptions(rc.Postgres, true))
		if err != nil {
			return nil, fmt.Errorf("recorder.store: %w", err)
		}
		return s, nil
	}
	s, err := sqlite.Open(ctx, rc.Store)
	if err != nil {
		return nil, fmt.Errorf("recorder.store: %w", err)
	}
	return s, nil
}

// openStoreReadOnly opens an existing record store for reading only: a SQLite file, or
// a PostgreSQL database (a role with SELECT on its tables is enough; the password in
// the DSN, PGPASSWORD or ~/.pgpass).
func openStoreReadOnly(ctx context.Context, dsn string) (recorder.Store, error) {
	if isPostgres(dsn) {
		s, err := postgres.OpenReadOnly(ctx, dsn, postgresOptions(nil, false))
		if err != nil {
			return nil, fmt.Errorf("--store: %w", err)
		}
		return s, nil
	}
	if !strings.HasPrefix(dsn, "sqlite://") {
		return nil, fmt.Errorf("--store: want sqlite://PATH or postgres://user@host/db")
	}
	s, err := sqlite.OpenReadOnly(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	return s, nil
}

// isPostgres reports whether dsn names a PostgreSQL store.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// postgresOptions returns the store options recorder.postgres gives (nil: the defaults).
func postgresOptions(pg *config.Postgres, lazy bool) postgres.Options {
	o := postgres.Options{Lazy: lazy}
	if pg != nil {
		o.MaxConns, o.PasswordFile = int32(pg.MaxConns), pg.PasswordFile
		o.ConnectTimeout, o.StatementTimeout = time.Duration(pg.ConnectTimeout), time.Duration(pg.StatementTimeout)
	}
	return o
}

// storePassword returns the password of a PostgreSQL store, from its DSN or its
// password file, so that records redact it should a backend ever echo it; "" for none.
func storePassword(rc *config.Recorder) string {
	if !isPostgres(rc.Store) {
		return ""
	}
	if rc.Postgres != nil && rc.Postgres.PasswordFile != "" {
		b, err := os.ReadFile(rc.Postgres.PasswordFile)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if u, err := url.Parse(rc.Store); err == nil {
		p, _ := u.User.Password()
		return p
	}
	return ""
}

// recorderPolicy returns what cfg says about recording: its mode and body limit, and a
// redactor for the configured headers plus every upstream's credential header and value,
// in cfg and in each of also (the configurations it replaces).
func recorderPolicy(cfg *config.Config, also ...*config.Config) recorder.Policy {
	rc := cfg.Recorder
	headers := slices.Clone(rc.RedactHeaders)
	var secrets []string
	for _, c := range append([]*config.Config{cfg}, also...) {
		for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
			if cr := c.Upstreams[name].Credential; cr != nil {
				headers = append(headers, cr.Header)
				secrets = append(secrets, cr.Value.Reveal())
			}
		}
		if c.Masking != nil {
			secrets = append(secrets, c.Masking.HashKey.Reveal())
		}
		if p := storePassword(c.Recorder); p != "" {
			secrets = append(secrets, p)
		}
	}
	return recorder.Policy{Mode: rc.Mode, BodyLimit: int64(rc.BodyLimit), Redactor: recorder.NewRedactor(headers, secrets)}
}

// retentionOf is cfg's recorder.retention with the routes' own.
func retentionOf(cfg *config.Config) recorder.Retention {
	t := recorder.Retention{Keep: time.Duration(cfg.Recorder.Retention)}
	for _, r := range cfg.Routes {
		addRouteRetention(&t, r.Name, r.Retention)
	}
	return t
}

// addRouteRetention adds route's own retention d to t, unless d is 0 (the route takes
// recorder.retention).
func addRouteRetention(t *recorder.Retention, route string, d config.Duration) {
	if d <= 0 {
		return
	}
	if t.Routes == nil {
		t.Routes = map[string]time.Duration{}
	}
	t.Routes[route] = time.Duration(d)
}

// newRecorder starts the recorder for cfg on store s.
func newRecorder(cfg *config.Config, s recorder.Store, m *metrics.Metrics, log *slog.Logger) *recorder.Recorder {
	return recorder.New(s, recorderPolicy(cfg), recorder.Options{
		Retention: retentionOf(cfg),
		Metrics: recorder.Metrics{QueueDepth: m.RecorderQueueDepth, WriteSeconds: m.RecorderWriteSeconds,
			Errors: m.RecorderErrors, Dropped: m.RecorderDropped},
		Log: log,
	})
}

// newApprovals returns the approvals service on s and the notifier it announces new
// approvals with, configured from cfg.
func newApprovals(cfg *config.Config, s approvals.Store, m *metrics.Metrics, log *slog.Logger) (*approvals.Service, *approvals.Notifier) {
	n := approvals.NewNotifier(notifyConfig(cfg), approvals.NotifierOptions{Log: log})
	svc := approvals.New(s, approvals.Options{Notify: n.Notify, Log: log,
		Metrics: approvals.Metrics{Pending: m.ApprovalsPending, Total: m.ApprovalsTotal, Wait: m.ApprovalWaitSeconds}})
	return svc, n
}

// notifyConfig returns where cfg says approval requests are announced.
func notifyConfig(cfg *config.Config) approvals.NotifyConfig {
	if cfg.Approvals == nil {
		return approvals.NotifyConfig{}
	}
	return approvals.NotifyConfig{Webhook: cfg.Approvals.Notify.Webhook, PublicURL: cfg.Approvals.PublicURL,
		Console: cfg.Admin.Console != nil}
}
