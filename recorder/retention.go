package recorder

import (
	"context"
	"maps"
	"slices"
	"time"
)

// Retention is how long exchange records are kept: Keep for every route (0 keeps them
// all), Routes for the routes whose own retention overrides it (config's per-route
// retention).
//
// The chain can lose only its prefix (Prune), so entries are deleted once they are
// older than the longest retention in force; records that a shorter retention covers
// are made stubs before that (Expire): their index row and Data go, a stub of their
// hash and the Data's SHA-256 stays until Prune deletes it with the prefix.
type Retention struct {
	Keep   time.Duration
	Routes map[string]time.Duration
}

// plan returns what retention t does at now: the expiry rules, and the cutoff of Prune,
// zero when nothing is ever deleted from the prefix.
func (t Retention) plan(now time.Time) (rules []ExpiryRule, prune time.Time) {
	horizon := t.Keep // the longest retention in force; 0 is forever
	if horizon > 0 {
		for _, d := range t.Routes {
			horizon = max(horizon, d)
		}
	}
	byKeep := map[time.Duration][]string{}
	var own []string
	for route, d := range t.Routes {
		if d <= 0 {
			continue
		}
		own = append(own, route)
		if horizon == 0 || d < horizon {
			byKeep[d] = append(byKeep[d], route)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(byKeep)) {
		routes := byKeep[d]
		slices.Sort(routes)
		rules = append(rules, ExpiryRule{Before: now.Add(-d), Routes: routes})
	}
	if t.Keep > 0 && t.Keep < horizon {
		slices.Sort(own)
		rules = append(rules, ExpiryRule{Before: now.Add(-t.Keep), Routes: own, OtherRoutes: true})
	}
	if horizon > 0 {
		prune = now.Add(-horizon)
	}
	return rules, prune
}

// SetRetention makes t the retention from the next run of the retention loop on (at
// start, then hourly).
func (r *Recorder) SetRetention(t Retention) {
	r.retention.Store(&t)
}

// retain applies the retention at start and then hourly: the expiry rules first, then
// Prune. A run under way when Close is called is cancelled (stores work in bounded
// transactions, so what it did stays consistent).
func (r *Recorder) retain() {
	defer close(r.pruned)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		r.retainOnce(ctx)
		select {
		case <-t.C:
		case <-r.stop:
			return
		}
	}
}

// retainOnce runs the retention once, within ten minutes.
func (r *Recorder) retainOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	rules, cutoff := r.retention.Load().plan(time.Now())
	for _, rule := range rules {
		n, err := r.store.Expire(ctx, rule)
		switch {
		case err != nil && ctx.Err() == nil:
			r.opts.Log.Error("retention: expire exchange records", "routes", rule.Routes, "other_routes", rule.OtherRoutes, "error", err.Error())
		case n > 0:
			r.opts.Log.Info("retention: expired exchange records", "routes", rule.Routes, "other_routes", rule.OtherRoutes, "entries", n)
		}
	}
	if cutoff.IsZero() {
		return
	}
	n, err := r.store.Prune(ctx, cutoff)
	switch {
	case err != nil && ctx.Err() == nil:
		r.opts.Log.Error("retention: prune exchange records", "error", err.Error())
	case n > 0:
		r.opts.Log.Info("retention: pruned exchange records", "entries", n)
	}
}
