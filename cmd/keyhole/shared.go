package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/keyholehq/keyhole/config"
)

// settingsStore is a store that replicas share and that keeps a few settings for them
// to compare (store/postgres).
type settingsStore interface {
	SwapSetting(ctx context.Context, name, value string) (string, error)
}

// sharedSetting is the setting under which replicas keep their sharedDigest.
const sharedSetting = "config_fingerprint"

// sharedDigest returns a digest of what every replica sharing a store must agree on: the
// masking hash key (keyed with itself, so the digest does not reveal it: hashed values
// must be joinable across replicas) and the approval settings (the global ones and each
// route's and tool's: an approval taken on one replica is consumed on another).
func sharedDigest(cfg *config.Config) string {
	doc := struct {
		HashKey   string                     `json:"hash_key"`
		Pending   int                        `json:"max_pending_per_subject"`
		PublicURL string                     `json:"public_url"`
		Approvals map[string]config.Approval `json:"approvals"`
	}{Approvals: map[string]config.Approval{}}
	if cfg.Masking != nil {
		if k := cfg.Masking.HashKey.Reveal(); k != "" {
			m := hmac.New(sha256.New, []byte(k))
			m.Write([]byte("keyhole config fingerprint"))
			doc.HashKey = hex.EncodeToString(m.Sum(nil))
		}
	}
	if a := cfg.Approvals; a != nil {
		doc.Pending, doc.PublicURL = a.MaxPendingPerSubject, a.PublicURL
	}
	for _, r := range cfg.Routes {
		if r.Approval != nil {
			doc.Approvals[r.Name] = *r.Approval
		}
		if r.MCP != nil {
			for _, t := range r.MCP.Tools {
				if t.Approval != nil {
					doc.Approvals[r.Name+" tool "+t.Name] = *t.Approval
				}
			}
		}
	}
	b, _ := json.Marshal(doc) // plain data: it cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// sharedCheck compares each configuration a replica runs with what the replicas sharing
// its store last ran, and warns when they differ: every replica must share the masking
// hash key and the approval settings. It warns and does not refuse, since a rollout
// runs both for a while.
type sharedCheck struct {
	st  settingsStore
	log *slog.Logger

	mu   sync.Mutex
	mine string // the digest this process last wrote
}

// newSharedCheck returns the check for store s, or nil when s keeps no settings (a
// SQLite store has one process).
func newSharedCheck(s any, log *slog.Logger) *sharedCheck {
	st, ok := s.(settingsStore)
	if !ok {
		return nil
	}
	return &sharedCheck{st: st, log: log}
}

// run compares cfg's digest with the store's and writes its own, retrying every 5 s
// while the store cannot be reached, until ctx ends.
func (c *sharedCheck) run(ctx context.Context, cfg *config.Config) {
	if c == nil {
		return
	}
	digest := sharedDigest(cfg)
	for {
		if err := c.swap(ctx, digest); err == nil || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func (c *sharedCheck) swap(ctx context.Context, digest string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, err := c.st.SwapSetting(ctx, sharedSetting, digest)
	if err != nil {
		return err
	}
	if old != "" && old != digest && old != c.mine {
		c.log.Warn("another replica of this store runs a different masking.hash_key or approval settings: every replica must share them (expected only while a change rolls out)")
	}
	c.mine = digest
	return nil
}
