package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

const (
	selectHead  = "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
	insertEntry = `INSERT INTO entries (seq, kind, exchange_id, at_ns, data, prev_hash, hash,
		subject, route, decision, method, path, status, tool, chain_v, data_codec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// A second request entry with an id already indexed is kept in the chain but not
	// indexed: see Append.
	insertExchange = `INSERT INTO exchanges (id, received_ns, subject, route, decision, request_seq, tool)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	// completeExchange completes the index row of an exchange whose response kept the
	// request's decision, as nearly every one does: it sets no indexed column, so SQLite
	// leaves every index of exchanges alone (setting decision to the value it had still
	// deletes and inserts the row's exchanges_decision key, a page more in each commit).
	// redecideExchange completes one whose response changed it.
	completeExchange = `UPDATE exchanges SET status = ?, response_seq = ?
		WHERE id = ? AND response_seq IS NULL AND decision = ?`
	redecideExchange = `UPDATE exchanges SET decision = ?, status = ?, response_seq = ?
		WHERE id = ? AND response_seq IS NULL`
)

// Append assigns each entry the next sequence number, seals it onto the chain and
// writes all of them to the chain log, synced to disk before Append returns; the
// store's indexer inserts them into SQLite in the background, and every read of the
// store waits for what was appended before it. On a nil return each entry's Seq,
// PrevHash and Hash are set; on an error nothing is written and entries are unchanged.
// Append fails while the indexer cannot write to SQLite, and while too many entries
// wait for it.
//
// A request entry makes its exchange's index row and a response entry completes it
// (a response whose request is not indexed only joins the chain). Exchange ids are
// meant to be unique; a second request entry with an id already indexed, or a second
// response, is written to the chain, which stays complete and verifiable, but the
// index keeps the first. Failing the batch instead would lose every other record in
// it for one duplicate.
func (s *Store) Append(ctx context.Context, entries []*recorder.Entry) error {
	return s.appendChecked(ctx, entries, true)
}

// AppendUnsynced appends like Append but returns once the entries are written to the
// log, without waiting for them to reach the disk: they survive a killed process at
// once, and a lost machine from the next Append, which syncs them with its own
// entries, or the next Sync.
func (s *Store) AppendUnsynced(ctx context.Context, entries []*recorder.Entry) error {
	return s.appendChecked(ctx, entries, false)
}

// Sync makes every entry appended so far durable.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.chain.sync(); err != nil {
		return fmt.Errorf("sqlite: sync: %w", err)
	}
	return nil
}

// syncFile flushes the file or directory at path to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (s *Store) appendChecked(ctx context.Context, entries []*recorder.Entry, sync bool) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: append: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("sqlite: append: entry %d is nil", i)
		}
		switch e.Kind {
		case recorder.KindRequest, recorder.KindResponse, recorder.KindCheckpoint:
		default:
			return fmt.Errorf("sqlite: append: entry %d: unknown kind %q", i, e.Kind)
		}
	}
	if err := s.chain.append(entries, sync); err != nil {
		return fmt.Errorf("sqlite: append: %w", err)
	}
	return nil
}

// headOf returns the sequence number and hash of the last entry, or 0 and GenesisHash
// for an empty chain. Retention always leaves its checkpoint as the last entry, so a
// chain is empty only before its first entry.
func (w *writer) headOf(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := w.head.QueryRowContext(ctx).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, recorder.GenesisHash, nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("chain head: %w", err)
	}
	return seq, hash, nil
}

// writer holds the statements that read the chain head and write sealed entries
// within one transaction.
type writer struct {
	head, entry, exchange, complete, redecide *sql.Stmt
}

// prepareWriter prepares the append statements on db.
func prepareWriter(ctx context.Context, db *sql.DB) (*writer, error) {
	var w writer
	var err error
	if w.head, err = db.PrepareContext(ctx, selectHead); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if w.entry, err = db.PrepareContext(ctx, insertEntry); err != nil {
		w.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if w.exchange, err = db.PrepareContext(ctx, insertExchange); err != nil {
		w.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if w.complete, err = db.PrepareContext(ctx, completeExchange); err != nil {
		w.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if w.redecide, err = db.PrepareContext(ctx, redecideExchange); err != nil {
		w.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return &w, nil
}

// in returns w's statements bound to tx.
func (w *writer) in(ctx context.Context, tx *sql.Tx) *writer {
	return &writer{head: tx.StmtContext(ctx, w.head), entry: tx.StmtContext(ctx, w.entry),
		exchange: tx.StmtContext(ctx, w.exchange), complete: tx.StmtContext(ctx, w.complete),
		redecide: tx.StmtContext(ctx, w.redecide)}
}

func (w *writer) close() {
	for _, st := range []*sql.Stmt{w.head, w.entry, w.exchange, w.complete, w.redecide} {
		if st != nil {
			st.Close()
		}
	}
}

// write inserts the sealed entry e, its data compressed if that pays (pack), and
// updates the exchange index.
func (w *writer) write(ctx context.Context, e *recorder.Entry) error {
	data := e.Data
	if data == nil {
		data = []byte{} // the column is NOT NULL; the hash does not tell nil from empty
	}
	p := pack(data)
	defer p.release()
	return w.writeStored(ctx, e, p.data, p.codec)
}

// writeStored inserts the sealed entry e with its data as stored (data, codec) and
// updates the exchange index. The driver runs statements without a cancellation
// goroutine of their own on a context that cannot be cancelled: the transaction
// still can be, and SQLite's busy timeout bounds their waits.
func (w *writer) writeStored(ctx context.Context, e *recorder.Entry, data []byte, codec sql.NullString) error {
	if err := w.writeEntry(ctx, e, data, codec); err != nil {
		return err
	}
	switch e.Kind {
	case recorder.KindRequest:
		if _, err := w.exchange.ExecContext(ctx, e.ExchangeID, e.At.UnixNano(), e.Subject, e.Route, e.Decision, e.Seq, e.Tool); err != nil {
			return fmt.Errorf("index exchange: %w", err)
		}
	case recorder.KindResponse:
		return w.completeExchange(ctx, e)
	}
	return nil
}

// writeEntry inserts the sealed entry e with its data as stored, and nothing else.
func (w *writer) writeEntry(ctx context.Context, e *recorder.Entry, data []byte, codec sql.NullString) error {
	_, err := w.entry.ExecContext(ctx, e.Seq, e.Kind, e.ExchangeID, e.At.UnixNano(), data, e.PrevHash, e.Hash,
		e.Subject, e.Route, e.Decision, e.Method, e.Path, e.Status, e.Tool, e.Version, codec)
	return err
}

// completeExchange completes the index row of the exchange of response entry e. No row
// updated is fine: the request entry may have been lost (best-effort mode) or pruned.
func (w *writer) completeExchange(ctx context.Context, e *recorder.Entry) error {
	status := sql.NullInt64{Int64: int64(e.Status), Valid: e.Status != 0}
	res, err := w.complete.ExecContext(ctx, status, e.Seq, e.ExchangeID, e.Decision)
	if err != nil {
		return fmt.Errorf("complete exchange: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("complete exchange: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := w.redecide.ExecContext(ctx, e.Decision, status, e.Seq, e.ExchangeID); err != nil {
		return fmt.Errorf("complete exchange: %w", err)
	}
	return nil
}

// defaultPruneChunk bounds the entries one Prune transaction deletes. Appends from
// every process wait while it runs, so a first prune of a large backlog goes in
// steps of bounded length rather than one transaction that could outlast the
// writers' busy timeout.
const defaultPruneChunk = 10_000

// Prune deletes entries made before cutoff and returns how many it deleted. Only a
// prefix of the chain can go without breaking it, so Prune deletes from the first
// entry up to, not including, the first entry made at or after cutoff: an old entry
// behind a newer one (a long request's response) waits for a later Prune.
//
// Each transaction deletes at most 10,000 entries together with the index rows of
// their exchanges, then appends a checkpoint entry (recorder.Checkpoint) vouching for
// the last deleted one, so recorder.Verify still accepts the chain; a large backlog
// takes several transactions and leaves several checkpoints. Entries appended after
// Prune began, its own checkpoints among them, are left for the next call. Prune
// deletes nothing, and appends nothing, when no entry is older than cutoff. On an
// error it returns how many entries the transactions already committed deleted.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	if err := s.writable(); err != nil {
		return 0, err
	}
	var limit int64 = -1 // the chain head when Prune began
	var total int64
	for {
		var n, headSeq int64
		err := s.chain.direct(ctx, func() (last *recorder.Entry, err error) {
			n, headSeq, last, err = s.pruneChunkOf(ctx, cutoff, limit)
			return last, err
		})
		if err != nil {
			return total, fmt.Errorf("sqlite: prune: %w", err)
		}
		total += n
		if n == 0 {
			return total, nil
		}
		if limit < 0 {
			limit = headSeq
		}
	}
}

// pruneChunkOf deletes, in one transaction, up to pruneChunk entries older than
// cutoff from the start of the chain, none after seq limit (none when limit is
// negative), and appends the checkpoint. It returns how many it deleted, the chain
// head before the checkpoint, and the checkpoint once committed.
func (s *Store) pruneChunkOf(ctx context.Context, cutoff time.Time, limit int64) (int64, int64, *recorder.Entry, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, nil, err
	}
	defer tx.Rollback()
	w := s.stmts.in(ctx, tx)
	defer w.close()
	headSeq, headHash, err := w.headOf(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	if limit < 0 {
		limit = headSeq
	}
	last, exchanges, err := prunable(ctx, tx, cutoff.UnixNano(), limit, s.pruneChunk)
	if err != nil {
		return 0, 0, nil, err
	}
	if last.Seq == 0 {
		return 0, headSeq, nil, nil
	}
	for _, x := range exchanges {
		// The seq check keeps the index row of a duplicate id's first request, when
		// only a later one is being deleted.
		if _, err := tx.ExecContext(ctx, "DELETE FROM exchanges WHERE id = ? AND request_seq = ?", x.id, x.seq); err != nil {
			return 0, 0, nil, fmt.Errorf("delete exchange: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, "DELETE FROM entries WHERE seq <= ?", last.Seq)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("delete entries: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("delete entries: %w", err)
	}
	c := recorder.Checkpoint(last, n, cutoff, time.Now())
	c.Seq = headSeq + 1
	recorder.Seal(c, headHash)
	if err := w.write(ctx, c); err != nil {
		return 0, 0, nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, nil, err
	}
	return n, headSeq, c, nil
}

// indexed names an exchange index row by its id and request entry.
type indexed struct {
	id  string
	seq int64
}

// prunable reads the chain from its start and returns the last of the entries that
// may go (Seq 0 when none may): at most chunk, none after seq limit, and none from the
// first entry made at or after cutoff on. It also returns the request entries among them.
func prunable(ctx context.Context, tx *sql.Tx, cutoff, limit int64, chunk int) (recorder.Entry, []indexed, error) {
	rows, err := tx.QueryContext(ctx, "SELECT seq, kind, exchange_id, at_ns, hash FROM entries WHERE seq <= ? ORDER BY seq LIMIT ?", limit, chunk)
	if err != nil {
		return recorder.Entry{}, nil, fmt.Errorf("read chain start: %w", err)
	}
	defer rows.Close()
	var last recorder.Entry
	var xs []indexed
	for rows.Next() {
		var e recorder.Entry
		var at int64
		if err := rows.Scan(&e.Seq, &e.Kind, &e.ExchangeID, &at, &e.Hash); err != nil {
			return recorder.Entry{}, nil, fmt.Errorf("read chain start: %w", err)
		}
		if at >= cutoff {
			break
		}
		last = e
		if e.Kind == recorder.KindRequest {
			xs = append(xs, indexed{id: e.ExchangeID, seq: e.Seq})
		}
	}
	if err := rows.Err(); err != nil {
		return recorder.Entry{}, nil, fmt.Errorf("read chain start: %w", err)
	}
	return last, xs, nil
}
