package main

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/keyholehq/keyhole/export"
)

// startExport starts the push export (recorder.export) on st and returns the store the
// gateway keeps: closing it stops the export first, so that the export's last write (the
// release of its lease, which lets another replica take over at once) comes before the
// store closes. The export follows the configuration in force: a reload may turn it on,
// change it or turn it off.
func (g *gateway) startExport(st store) store {
	ps, ok := st.(export.PushStore)
	if !ok {
		if g.pushConfig() != nil {
			g.log.Error("export: this record store keeps no export cursor; recorder.export pushes nothing")
		}
		return st
	}
	host, _ := os.Hostname()
	p := export.NewPusher(ps, g.pushConfig, export.PushOptions{
		Product: export.Product{Version: version(), Hostname: host},
		Metrics: export.PushMetrics{Lag: g.metrics.ExportLag, Active: g.metrics.ExportActive,
			Delivered: g.metrics.ExportDelivered, Errors: g.metrics.ExportErrors},
		Log: g.log,
	})
	ctx, cancel := context.WithCancel(context.WithoutCancel(g.ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	return &exporting{store: st, stop: sync.OnceFunc(func() { cancel(); <-done })}
}

// exporting is the gateway's store while the push export runs on it.
type exporting struct {
	store
	stop func()
}

// Close stops the export, then closes the store.
func (e *exporting) Close() error {
	e.stop()
	return e.store.Close()
}

// pushConfig returns recorder.export as the running configuration says, nil when it
// is not set.
func (g *gateway) pushConfig() *export.PushConfig {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.cfg.Recorder.Export
	if e == nil {
		return nil
	}
	headers := make(map[string]string, len(e.Headers))
	for k, v := range e.Headers {
		headers[k] = v.Reveal()
	}
	return &export.PushConfig{URL: e.Webhook.Reveal(), Format: e.Format, Batch: e.Batch,
		Interval: time.Duration(e.Interval), Timeout: time.Duration(e.Timeout), Headers: headers}
}
