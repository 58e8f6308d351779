package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/metrics"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// store is where a gateway keeps its exchange records and its approvals.
type store interface {
	recorder.Store
	approvals.Store
}

// openStore opens the store a DSN names, creating it if need be.
func openStore(ctx context.Context, dsn string) (store, error) {
	if !strings.HasPrefix(dsn, "sqlite://") {
		return nil, fmt.Errorf("recorder.store: only sqlite:// stores are supported by this build")
	}
	s, err := sqlite.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("recorder.store: %w", err)
	}
	return s, nil
}

// openStoreReadOnly opens an existing record store for reading only.
func openStoreReadOnly(ctx context.Context, dsn string) (recorder.Store, error) {
	if !strings.HasPrefix(dsn, "sqlite://") {
		return nil, fmt.Errorf("--store: only sqlite:// stores are supported by this build")
	}
	s, err := sqlite.OpenReadOnly(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	return s, nil
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
	}
	return recorder.Policy{Mode: rc.Mode, BodyLimit: int64(rc.BodyLimit), Redactor: recorder.NewRedactor(headers, secrets)}
}

// newRecorder starts the recorder for cfg on store s.
func newRecorder(cfg *config.Config, s recorder.Store, m *metrics.Metrics, log *slog.Logger) *recorder.Recorder {
	return recorder.New(s, recorderPolicy(cfg), recorder.Options{
		Retention: time.Duration(cfg.Recorder.Retention),
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
