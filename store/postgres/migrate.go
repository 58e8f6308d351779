package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// migrationFiles holds the schema, one file per version: NNNN_name.sql, numbered from
// 0001 without gaps. A released file is never edited; a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLock is the key of the session advisory lock Open holds while it migrates, so
// that replicas starting together apply each migration once. pruneLock is Prune's.
// Both are "keyhole" in ASCII followed by a number.
const (
	migrateLock int64 = 0x6b6579686f6c6501
	pruneLock   int64 = 0x6b6579686f6c6502
)

// errSchemaTooNew is returned by Open for a database written by a newer build, whose
// schema this build would misread.
var errSchemaTooNew = errors.New("upgrade keyhole")

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

// tooNew is the error for a database at schema version have when this build knows known.
func tooNew(have, known int) error {
	return fmt.Errorf("database schema version %d is newer than this keyhole (knows %d): %w", have, known, errSchemaTooNew)
}

const createMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT PRIMARY KEY,
	name       TEXT   NOT NULL,
	applied_ns BIGINT NOT NULL
)`

// migrate applies, in order, each migration the database lacks, each in its own
// transaction together with its row in schema_migrations, while one connection holds
// migrateLock. It returns the names of the migrations it applied.
func (s *Store) migrate(ctx context.Context) ([]string, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	// A migration may take longer than a statement; the lock wait and each statement
	// are still bounded by the caller's context, or by this one.
	ctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout+10*s.opts.StatementTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLock); err != nil {
			// The lock would outlive this call on a pooled connection: drop the connection.
			conn.Hijack().Close(context.WithoutCancel(ctx))
		}
	}()
	// Created only when missing: a writer role without CREATE on the schema opens a
	// database that an owner role migrated (keyhole migrate), and CREATE TABLE IF NOT
	// EXISTS would be refused to it.
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, createMigrations); err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
	}
	have, err := version(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	if have > len(ms) {
		return nil, tooNew(have, len(ms))
	}
	var applied []string
	for _, m := range ms[have:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)",
				m.version, m.name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
	}
	return applied, nil
}

// querier is a connection, a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// version returns the newest migration the database has, 0 for none.
func version(ctx context.Context, q querier) (int, error) {
	var have int
	if err := q.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&have); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return have, nil
}

// checkSchema makes sure the database's schema is the newest this build knows.
func (s *Store) checkSchema(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	have, err := version(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("not a keyhole record store: %w", err)
	}
	switch known := len(ms); {
	case have > known:
		return tooNew(have, known)
	case have < known:
		return fmt.Errorf("database schema version %d is older than this keyhole's (%d): run `keyhole migrate` or start a gateway on it", have, known)
	}
	return nil
}
