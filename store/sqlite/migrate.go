package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// migrationFiles holds the schema, one file per version: NNNN_name.sql, numbered from
// 0001 without gaps. A released file is never edited; a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// errSchemaTooNew is returned by Open for a file written by a newer build, whose
// schema this build would misread.
var errSchemaTooNew = errors.New("schema is newer than this build knows")

// migration is one version of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	ms := make([]migration, 0, len(names))
	for i, name := range names { // fs.Glob sorts: 0001_ before 0002_
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want version %04d", base, i+1)
		}
		body, err := fs.ReadFile(migrationFiles, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(body)})
	}
	if len(ms) == 0 {
		return nil, errors.New("no migrations")
	}
	return ms, nil
}

// migrate applies, in order, each migration the database lacks, each in its own
// transaction together with its row in schema_migrations. w begins transactions
// IMMEDIATE, so a second process opening the file at the same time waits and then
// finds the migration done.
func migrate(ctx context.Context, w *sql.DB) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := apply(ctx, w, m, len(ms)); err != nil {
			return err
		}
	}
	return nil
}

// apply applies m unless the database already has it. known is the newest version
// this build knows.
func apply(ctx context.Context, w *sql.DB, m migration, known int) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_ns INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&have); err != nil {
		return fmt.Errorf("migrate: schema version: %w", err)
	}
	switch {
	case have > known:
		return fmt.Errorf("schema version %d: %w (%d)", have, errSchemaTooNew, known)
	case have >= m.version:
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_ns) VALUES (?, ?)", m.version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migrate %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s: %w", m.name, err)
	}
	return nil
}
