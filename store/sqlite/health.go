package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// ErrFileGone is the error of every write to a store whose database file, its WAL or
// its chain log, is no longer the file at its path: deleted (rm keyhole.db*), renamed away or
// replaced. SQLite keeps writing to the file it opened, so commits would still
// succeed, into a file nobody can open again: records that are lost at the next
// restart. Only a restart of the gateway, which opens the file at the path, clears it
// (or the file coming back under its name).
var ErrFileGone = errors.New("the database file is no longer the file at its path (deleted or replaced)")

// fileWatch knows which files the store's connections write: the database file, held
// open by the store itself so its identity can be read at any time, and the WAL as
// first seen. A WAL SQLite made again would have another identity too, but SQLite
// removes it only when the last connection to the file closes, and the store holds its
// write connection (and idle readers) open until Close.
type fileWatch struct {
	db   *os.File  // the database file, opened before SQLite opened it
	path string    // its path: the file SQLite opened, links resolved
	log  *chainLog // the chain log, which appends write

	mu  sync.Mutex
	wal os.FileInfo // the WAL as first seen; nil until then
}

// check returns ErrFileGone, wrapped with what changed, if the file at the store's path,
// the chain log or the WAL beside it, is not the one the store writes. It costs five
// stat calls.
func (f *fileWatch) check() error {
	if err := f.checkLog(); err != nil {
		return err
	}
	open, err := f.db.Stat()
	if err != nil {
		return fmt.Errorf("stat open database file: %w", err)
	}
	now, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w: it was deleted or renamed", f.path, ErrFileGone)
	case err != nil:
		return fmt.Errorf("stat %s: %w", f.path, err)
	case !os.SameFile(open, now):
		return fmt.Errorf("%s: %w: another file took its name", f.path, ErrFileGone)
	}
	wal, err := os.Stat(f.path + "-wal")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case errors.Is(err, fs.ErrNotExist) && f.wal != nil:
		return fmt.Errorf("%s-wal: %w: the WAL was deleted or renamed", f.path, ErrFileGone)
	case errors.Is(err, fs.ErrNotExist):
		return nil // not made yet: SQLite makes it at the first transaction
	case err != nil:
		return fmt.Errorf("stat %s-wal: %w", f.path, err)
	case f.wal == nil:
		f.wal = wal
	case !os.SameFile(f.wal, wal):
		return fmt.Errorf("%s-wal: %w: another file took the WAL's name", f.path, ErrFileGone)
	}
	return nil
}

// checkLog is check for the chain log.
func (f *fileWatch) checkLog() error {
	open, err := f.log.f.Stat()
	if err != nil {
		return fmt.Errorf("stat open chain log: %w", err)
	}
	now, err := os.Stat(f.log.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w: it was deleted or renamed", f.log.path, ErrFileGone)
	case err != nil:
		return fmt.Errorf("stat %s: %w", f.log.path, err)
	case !os.SameFile(open, now):
		return fmt.Errorf("%s: %w: another file took its name", f.log.path, ErrFileGone)
	}
	return nil
}

// probeWrite is a write that changes nothing in the end: it negates the newest
// migration's applied_ns and negates it back, in one transaction. SQLite skips an
// UPDATE to the same value, but a changed page stays dirty, so the commit appends it to
// the WAL and syncs it, as a commit of entries does.
const probeWrite = "UPDATE schema_migrations SET applied_ns = -applied_ns WHERE version = (SELECT MAX(version) FROM schema_migrations)"

// Probe reports whether the store can write now, without writing a record: the
// database file and its WAL must still be the files at their paths (see ErrFileGone),
// and a synced write transaction must commit (it fails on a full disk or a file made
// read-only). The recorder probes when it has written nothing for a second, so that
// readiness follows the disk while no traffic comes.
func (s *Store) Probe(ctx context.Context) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.probe(ctx); err != nil {
		return fmt.Errorf("sqlite: probe: %w", err)
	}
	s.chain.mu.Lock()
	logErr, failed := s.chain.logErr, s.chain.failed
	s.chain.mu.Unlock()
	switch {
	case logErr != nil:
		return fmt.Errorf("sqlite: probe: %w", logErr)
	case failed != nil:
		return fmt.Errorf("sqlite: probe: index: %w", failed)
	}
	return nil
}

// writable returns the error every write of the store fails with, without trying it,
// or nil: the store was opened read-only, or its files are not the ones at their paths.
func (s *Store) writable() error {
	if s.w == nil {
		return errReadOnly
	}
	if err := s.files.check(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return nil
}

func (s *Store) probe(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for range 2 {
		if _, err := tx.ExecContext(ctx, probeWrite); err != nil {
			return err
		}
	}
	return tx.Commit()
}
