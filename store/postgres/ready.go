package postgres

import (
	"context"
	"errors"
	"time"
)

// retryEvery is how often a store that has not reached its database yet tries again;
// calls in between fail at once with the last attempt's error.
const retryEvery = time.Second

// readiness is whether a store has reached its database and found (or brought) its
// schema up to date: err nil once it has, for good; otherwise the last attempt's error
// and when it was made.
type readiness struct {
	err error
	at  time.Time
}

// errConnecting is what a call gets while another is already trying to reach the
// database for the first time.
var errConnecting = errors.New("postgres: connecting to the database")

// usable returns nil when the store may serve a call now: it was opened for writing if
// write is set, and it has reached its database and prepared its schema. A store opened
// with Options.Lazy that has not yet done so tries again (at most once per retryEvery,
// one caller at a time), so a gateway started while PostgreSQL is down recovers by
// itself; until then every call fails with the reason.
func (s *Store) usable(ctx context.Context, write bool) error {
	if write {
		if err := s.writable(); err != nil {
			return err
		}
	}
	r := s.ready.Load()
	if r != nil && r.err == nil {
		return nil
	}
	if r != nil && time.Since(r.at) < retryEvery {
		return r.err
	}
	if !s.preparing.TryLock() {
		if r != nil {
			return r.err
		}
		return errConnecting
	}
	defer s.preparing.Unlock()
	if r := s.ready.Load(); r != nil && (r.err == nil || time.Since(r.at) < retryEvery) {
		return r.err
	}
	err := s.prepare(ctx)
	if err != nil {
		err = s.errorf("open", err)
	}
	s.ready.Store(&readiness{err: err, at: time.Now()})
	return err
}

// prepare checks that the database answers and holds this build's schema: it migrates
// a store opened for writing, and only checks a read-only one.
func (s *Store) prepare(ctx context.Context) error {
	pctx, cancel := s.bounded(ctx)
	defer cancel()
	if err := s.pool.Ping(pctx); err != nil {
		return err
	}
	if s.readOnly {
		return s.checkSchema(ctx)
	}
	_, err := s.migrate(ctx)
	return err
}
