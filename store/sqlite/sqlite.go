// Package sqlite stores exchange records and approvals in one SQLite file: a
// recorder.Store and an approvals.Store for a single gateway process.
//
// Append writes sealed entries to the chain log beside the file (its name plus
// "-chain") with one fdatasync per batch, so an entry is on disk once Append returns and
// survives a killed process or a lost machine; a goroutine inserts them into SQLite in
// large transactions off the request path, and reads wait for what was appended before
// them. One process writes a file: the chain log is locked (flock) while a store is
// open for writing, and every Store of the process on one file shares it. Other writes
// (approvals) are synchronous SQLite transactions, in WAL mode with synchronous=FULL.
// Reads use their own pool of connections and do not wait for writes.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Parameters of the driver (modernc.org/sqlite) for each pool. The writer begins
// every transaction with BEGIN IMMEDIATE: a deferred transaction that reads the chain
// head and then writes could find, in WAL mode, that another process wrote in
// between, and fail with SQLITE_BUSY_SNAPSHOT instead of waiting. journal_mode is
// a property of the file; synchronous=FULL makes each commit fsync the WAL.
// busy_timeout is how long, in milliseconds, a connection waits for another one's lock
// before SQLite gives up with SQLITE_BUSY: a batch of 256 entries commits in
// milliseconds, and a Prune transaction is bounded (pruneChunk) to stay well below it.
// The readers are query_only, so no read path can write by mistake.
const (
	writeParams = "_txlock=immediate&_busy_timeout=5000&_foreign_keys=1&_journal_mode=WAL&_synchronous=FULL"
	readParams  = "_busy_timeout=5000&_foreign_keys=1&_query_only=1"
)

// Store is a recorder.Store and an approvals.Store in an SQLite file. It is safe for
// concurrent use, and several Stores of one process may write to one file (they share
// its chain); a store of another process cannot be opened for writing while one is.
// The zero value is not usable: make one with Open or OpenPath.
type Store struct {
	chain *chain  // the file's chain: appends; nil for a store opened read-only
	w     *sql.DB // one connection: SQLite has one writer per file
	path  string  // the database file SQLite opened: absolute, links resolved (read-only: as given, absolute)
	r     *sql.DB // readers, concurrent with the writer in WAL mode
	// stmts are the append statements, prepared once on the write connection; each
	// transaction uses them through Tx.StmtContext instead of preparing its own.
	stmts *writer

	// files tells whether the files SQLite writes are still the ones at their paths;
	// nil for a store opened read-only.
	files *fileWatch

	// pruneChunk is the most entries one Prune transaction deletes; see Prune.
	pruneChunk int

	closeChain sync.Once // Close releases the chain once

	// tail is, for a store opened read-only, the entries its chain log held beyond the
	// database's when it was opened; Entries and Count read them after the database's.
	tail []logged
}

var (
	_ recorder.Store     = (*Store)(nil)
	_ export.CursorStore = (*Store)(nil)
)

// Open opens the store dsn names. dsn is "sqlite://PATH", PATH relative to the
// working directory (sqlite://data/keyhole.db) or absolute (sqlite:///var/lib/keyhole.db).
// See OpenPath.
func Open(ctx context.Context, dsn string) (*Store, error) {
	path, ok := strings.CutPrefix(dsn, "sqlite://")
	if !ok || path == "" {
		return nil, errors.New("sqlite: open: dsn must be sqlite://PATH")
	}
	return OpenPath(ctx, path)
}

// OpenPath opens the store in the file at path. It creates the file (mode 0600) and
// its missing parent directories (0700), brings the schema up to date, and inserts the
// entries the chain log holds that the file does not (what a killed gateway left). It
// refuses a file whose schema is newer than this build knows, a file that cannot be
// put in WAL mode, a file another process has open for writing, and a chain log that
// does not continue the file's chain. The caller must Close the store.
func OpenPath(ctx context.Context, path string) (*Store, error) {
	s, err := openPath(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

func openPath(ctx context.Context, path string) (*Store, error) {
	if strings.ContainsRune(path, '?') {
		// The driver reads everything after '?' as its own parameters.
		return nil, errors.New("path must not contain '?'")
	}
	// An absolute path also keeps the driver from reading a name that begins with
	// "file:" as a URI, or ":memory:" as a database in memory.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, err
	}
	// SQLite would create the file with mode 0644; records hold personal data. The WAL
	// and shared-memory files SQLite makes beside it take the file's mode.
	// The store keeps this descriptor for its lifetime: it names the file SQLite
	// writes, so that a file deleted or replaced under the gateway is noticed (see
	// ErrFileGone).
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s, err := openWriter(ctx, abs, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// openWriter opens the pools on the file at abs, which f holds open.
func openWriter(ctx context.Context, abs string, f *os.File) (*Store, error) {
	w, err := sql.Open("sqlite", abs+"?"+writeParams)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	if err := checkWAL(ctx, w); err != nil {
		w.Close()
		return nil, err
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, err
	}

	// The file SQLite opened, symbolic links resolved: its WAL, which Sync flushes, is
	// beside that file, not beside a link to it.
	var file string
	if err := w.QueryRowContext(ctx, "SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file); err != nil {
		w.Close()
		return nil, fmt.Errorf("database file: %w", err)
	}
	stmts, err := prepareWriter(ctx, w)
	if err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", abs+"?"+readParams)
	if err != nil {
		stmts.close()
		w.Close()
		return nil, err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	c, err := acquireChain(ctx, file)
	if err != nil {
		r.Close()
		stmts.close()
		w.Close()
		return nil, err
	}
	s := &Store{chain: c, w: w, path: file, r: r, stmts: stmts, files: &fileWatch{db: f, path: file, log: c.log}, pruneChunk: defaultPruneChunk}
	// Learn the WAL SQLite opened (it exists once the migration check read the file).
	if err := s.files.check(); err != nil {
		s.files = nil // f is the caller's to close
		s.Close()
		return nil, err
	}
	return s, nil
}

// errReadOnly is what a store opened with OpenReadOnly answers to a write.
var errReadOnly = errors.New("sqlite: store was opened read-only")

// OpenReadOnly opens an existing store for reading only, as auditors' tools do: a
// missing file is an error (not a new, empty store), nothing is created or migrated, and
// Append, Prune and every approval write fail. The file's schema must be the one this
// build writes.
func OpenReadOnly(ctx context.Context, dsn string) (*Store, error) {
	path, ok := strings.CutPrefix(dsn, "sqlite://")
	if !ok || path == "" {
		return nil, errors.New("sqlite: open: dsn must be sqlite://PATH")
	}
	s, err := openReadOnly(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

func openReadOnly(ctx context.Context, path string) (*Store, error) {
	if strings.ContainsRune(path, '?') {
		return nil, errors.New("path must not contain '?'")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	// mode=ro: SQLite opens the file read-only, so neither a write nor the WAL
	// checkpoint of a last connection changes it, and a file that vanished is not
	// created again. (SQLite may still create the -shm and -wal files it reads through.)
	uri := "file:" + strings.NewReplacer("%", "%25", "#", "%23").Replace(abs)
	r, err := sql.Open("sqlite", uri+"?mode=ro&"+readParams)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(ctx, r); err != nil {
		r.Close()
		return nil, err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	tail, err := readTail(ctx, r, abs+logSuffix)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &Store{r: r, path: abs, tail: tail}, nil
}

// readTail returns the entries of the chain log at path that follow the database's
// last entry: what its gateway logged and had not indexed when the files were copied,
// or when it was killed.
func readTail(ctx context.Context, r *sql.DB, path string) ([]logged, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var seq int64
	var hash string
	err = r.QueryRowContext(ctx, selectHead).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		seq, hash, err = 0, recorder.GenesisHash, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain head: %w", err)
	}
	xs, err := frames(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var tail []logged
	for _, x := range xs {
		switch {
		case x.e.Seq <= seq && len(tail) == 0:
			continue
		case x.e.Seq != seq+1 || x.e.PrevHash != hash:
			if len(tail) == 0 {
				return nil, fmt.Errorf("%s: entry %d does not continue the database's chain, whose head is entry %d", path, x.e.Seq, seq)
			}
			return tail, nil // what a failed write left
		}
		x.e.Data = unpack(x.e.Data, sql.NullString{String: x.codec, Valid: x.codec != ""})
		tail = append(tail, x)
		seq, hash = x.e.Seq, x.e.Hash
	}
	return tail, nil
}

// checkSchema makes sure db's schema is the newest this build knows.
func checkSchema(ctx context.Context, db *sql.DB) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	var have int
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&have); err != nil {
		return fmt.Errorf("not a keyhole record store: %w", err)
	}
	switch known := len(ms); {
	case have > known:
		return fmt.Errorf("schema version %d: %w (%d)", have, errSchemaTooNew, known)
	case have < known:
		return fmt.Errorf("schema version %d is older than this build's (%d): open it once with the gateway to migrate it", have, known)
	}
	return nil
}

// checkWAL makes sure the file is in WAL mode: SQLite silently keeps the old journal
// mode where WAL cannot work (some network filesystems), and there concurrent
// readers and the locking between processes are not what this package relies on.
func checkWAL(ctx context.Context, w *sql.DB) error {
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %s, want wal", mode)
	}
	return nil
}

// Ping reports whether the file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var v sql.NullInt64
	if err := s.r.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the store's connections. Calls made after Close fail.
func (s *Store) Close() error {
	// Readers first: the last connection to close checkpoints the WAL into the file.
	var werr error
	if s.w != nil {
		s.stmts.close()
		var cerr error
		s.closeChain.Do(func() { cerr = s.chain.release() })
		werr = errors.Join(cerr, s.w.Close())
	}
	var ferr error
	if s.files != nil {
		ferr = s.files.db.Close()
	}
	if err := errors.Join(s.r.Close(), werr, ferr); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}
