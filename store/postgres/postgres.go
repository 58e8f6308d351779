// Package postgres stores exchange records and approvals in PostgreSQL: a recorder.Store
// and an approvals.Store that any number of gateway replicas share.
//
// Every replica appends to one hash chain. An append locks the chain's head row in its
// transaction before it writes, so appends from every replica are serialised in the
// database, once per batch, and the chain stays one gap-free line. A batch takes one
// round trip to the server while the replica's own last append left the head, two
// otherwise (see Store.Append).
// Approvals are consumed with one conditional UPDATE, so of many replicas racing for
// one approval exactly one wins. Every statement runs under a deadline: a slow or dead
// database is an error, never a hang.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
)

// Defaults of Options.
const (
	DefaultMaxConns         = 10
	DefaultConnectTimeout   = 5 * time.Second
	DefaultStatementTimeout = 10 * time.Second
)

// Options tune a Store. Zero fields take the defaults.
type Options struct {
	// MaxConns is the most connections the store's pool opens (DefaultMaxConns).
	MaxConns int32
	// ConnectTimeout bounds dialling and authenticating one connection (DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// StatementTimeout bounds each statement, waits for locks included
	// (DefaultStatementTimeout); the server ends a statement that outlasts it. A call
	// whose context has no earlier deadline gets ConnectTimeout + StatementTimeout.
	StatementTimeout time.Duration
	// PasswordFile, when set, names a file holding the password (surrounding white
	// space trimmed); it replaces a password in the DSN.
	PasswordFile string
	// Lazy makes Open return a store even when the database cannot be reached or
	// migrated yet, as a gateway started while PostgreSQL is down needs: each call
	// tries again (at most once a second) and fails with the reason until one succeeds.
	// Open still fails on an invalid DSN, an unreadable password file, or a schema newer
	// than this build's.
	Lazy bool
}

func (o Options) withDefaults() Options {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = DefaultStatementTimeout
	}
	return o
}

// Store is a recorder.Store and an approvals.Store in a PostgreSQL database. It is
// safe for concurrent use, and any number of Stores, in one process or in many, may
// write to one database. The zero value is not usable: make one with Open or
// OpenReadOnly.
type Store struct {
	pool     *pgxpool.Pool
	opts     Options
	where    string // host:port/db as user, for errors: never the password
	password string // cut out of every error text, should a driver quote it
	readOnly bool

	ready     atomic.Pointer[readiness] // see usable
	preparing sync.Mutex                // held by the one call preparing the store

	// pruneChunk is the most entries one Prune transaction deletes; see Prune.
	pruneChunk int

	guessed headGuess // where this Store's last append left the chain head; see appendBatch
}

var (
	_ recorder.Store            = (*Store)(nil)
	_ recorder.UnsyncedAppender = (*Store)(nil)
	_ recorder.Prober           = (*Store)(nil)
	_ approvals.Store           = (*Store)(nil)
	_ export.CursorStore        = (*Store)(nil)
)

// errReadOnly is what a store opened with OpenReadOnly answers to a write.
var errReadOnly = errors.New("postgres: store was opened read-only")

// Open connects to the database dsn names (postgres://user@host:port/db?sslmode=...,
// or the key=value form; TLS is what sslmode and sslrootcert say), brings its schema up
// to date under an advisory lock, so that replicas starting together migrate once, and
// returns the store. It refuses a database whose schema is newer than this build knows.
// Errors name the host, port, database and user, never the password. The caller must
// Close the store. See Options.Lazy for a store that may open before its database is up.
func Open(ctx context.Context, dsn string, o Options) (*Store, error) {
	return openStore(ctx, dsn, o, false)
}

func openStore(ctx context.Context, dsn string, o Options, readOnly bool) (*Store, error) {
	s, err := connect(dsn, o, readOnly)
	if err != nil {
		return nil, err
	}
	if err := s.usable(ctx, false); err != nil && (!o.Lazy || errors.Is(err, errSchemaTooNew)) {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly connects for reading only, as auditors' tools do: nothing is created or
// migrated, every session is read-only (default_transaction_read_only), and Append,
// Prune, Sync, Probe and every approval write fail. A role with SELECT on the store's
// tables is enough. The database's schema must be the one this build writes.
func OpenReadOnly(ctx context.Context, dsn string, o Options) (*Store, error) {
	return openStore(ctx, dsn, o, true)
}

// Migrate applies to the database dsn names every migration it lacks, as Open does,
// and returns the names of those it applied (none when it was up to date), for
// `keyhole migrate`.
func Migrate(ctx context.Context, dsn string, o Options) ([]string, error) {
	s, err := connect(dsn, o, false)
	if err != nil {
		return nil, err
	}
	defer s.pool.Close()
	pctx, cancel := s.bounded(ctx)
	defer cancel()
	if err := s.pool.Ping(pctx); err != nil {
		return nil, s.errorf("migrate", err)
	}
	applied, err := s.migrate(ctx)
	if err != nil {
		return applied, s.errorf("migrate", err)
	}
	return applied, nil
}

// connect parses dsn and makes the pool, which connects on first use.
func connect(dsn string, o Options, readOnly bool) (*Store, error) {
	o = o.withDefaults()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password of the DSN it quotes; the DSN is left out
		// altogether, in case a malformed one hides it elsewhere.
		return nil, errors.New("postgres: the DSN is not a valid PostgreSQL connection string (postgres://user@host:port/db?sslmode=...)")
	}
	cc := cfg.ConnConfig
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("postgres: password file: %w", err)
		}
		cc.Password = strings.TrimSpace(string(b))
	}
	s := &Store{opts: o, readOnly: readOnly, pruneChunk: defaultPruneChunk, password: cc.Password,
		where: fmt.Sprintf("%s:%d/%s as %s", cc.Host, cc.Port, cc.Database, cc.User)}
	cfg.MaxConns = o.MaxConns
	cc.ConnectTimeout = o.ConnectTimeout
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	cc.RuntimeParams["statement_timeout"] = ms(o.StatementTimeout)
	// A replica that stops talking inside a transaction (a network partition: the
	// server sees no reset) would hold the chain head's lock for every other replica;
	// the server ends such a session.
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = ms(3 * o.StatementTimeout)
	cc.RuntimeParams["application_name"] = "keyhole"
	// The chain's appends re-read the head row they lock, as READ COMMITTED does; under
	// a database whose default is REPEATABLE READ or SERIALIZABLE, two replicas' appends
	// fail each other with serialization errors. Transactions that need a snapshot ask
	// for it (readTx).
	cc.RuntimeParams["default_transaction_isolation"] = "read committed"
	if readOnly {
		cc.RuntimeParams["default_transaction_read_only"] = "on"
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, s.errorf("open", err)
	}
	s.pool = pool
	return s, nil
}

// errorf wraps err with the operation and where the database is. pgx's own messages
// name the host, user and database, never the password; the password, were it to
// appear, is cut out all the same.
func (s *Store) errorf(op string, err error) error {
	msg := fmt.Sprintf("postgres: %s %s: %s", op, s.where, err)
	if s.password != "" {
		msg = strings.ReplaceAll(msg, s.password, "<secret>")
	}
	return &storeError{msg: msg, err: err}
}

// storeError is an error whose text is written once, without secrets, and that
// still unwraps to its cause for errors.Is (context.DeadlineExceeded, the sentinels).
type storeError struct {
	msg string
	err error
}

func (e *storeError) Error() string { return e.msg }
func (e *storeError) Unwrap() error { return e.err }

// bounded returns ctx with a deadline no later than a connection and a statement
// take, so that a call whose caller set no deadline still ends.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	limit := s.opts.ConnectTimeout + s.opts.StatementTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= limit {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, limit)
}

// writable returns errReadOnly for a store opened read-only.
func (s *Store) writable() error {
	if s.readOnly {
		return errReadOnly
	}
	return nil
}

// Ping reports whether the database answers and holds a keyhole store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.usable(ctx, false); err != nil {
		return err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var v *int64
	if err := s.pool.QueryRow(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return s.errorf("ping", err)
	}
	return nil
}

// probeWrite is a synchronously committed write that changes nothing a reader sees.
// Its commit flushes the write-ahead log up to its own commit record, which lies after
// every commit made before it, unsynced ones included.
const probeWrite = "UPDATE probe SET probed_ns = $1"

// Probe reports whether the store can write now, without writing a record: a
// synchronously committed update of the probe row must succeed (it fails on a server
// that is down, read-only, out of disk, or a role that may not write). The recorder
// probes when it has written nothing for a second.
func (s *Store) Probe(ctx context.Context) error {
	if err := s.usable(ctx, true); err != nil {
		return err
	}
	if err := s.probe(ctx); err != nil {
		return s.errorf("probe", err)
	}
	return nil
}

func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, probeWrite, time.Now().UnixNano())
	return err
}

// Sync makes every entry committed so far durable: it commits a write synchronously,
// and PostgreSQL flushes its write-ahead log in order, so every earlier commit of any
// session, AppendUnsynced's included, is on disk once it returns.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.usable(ctx, true); err != nil {
		return err
	}
	if err := s.probe(ctx); err != nil {
		return s.errorf("sync", err)
	}
	return nil
}

// Close closes the store's connections, waiting for those in use. Calls made after
// Close fail.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// inTx runs fn in a transaction on a bounded context and commits it; fn's error, or
// the commit's, rolls it back.
func (s *Store) inTx(ctx context.Context, opts pgx.TxOptions, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	return pgx.BeginTxFunc(ctx, s.pool, opts, func(tx pgx.Tx) error { return fn(ctx, tx) })
}
