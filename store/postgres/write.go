package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyholehq/keyhole/recorder"
)

const (
	// lockHead takes the chain head's row lock: every appending transaction, in every
	// replica, queues here, so the chain stays one line.
	lockHead    = "SELECT seq, hash FROM chain_head WHERE one FOR UPDATE"
	updateHead  = "UPDATE chain_head SET seq = $1, hash = $2 WHERE one"
	insertEntry = `INSERT INTO entries (seq, kind, exchange_id, at_ns, data, prev_hash, hash,
		subject, route, decision, method, path, status, tool, chain_v) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`
	// A second request entry with an id already indexed is kept in the chain but not
	// indexed: see Append.
	insertExchange = `INSERT INTO exchanges (id, received_ns, subject, route, decision, request_seq, tool)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`
	completeExchange = `UPDATE exchanges SET decision = $1, status = $2, response_seq = $3
		WHERE id = $4 AND response_seq IS NULL`
)

// Append assigns each entry the next sequence number, seals it onto the chain and
// commits all of them in one transaction, durable before Append returns. On a nil
// return each entry's Seq, PrevHash and Hash are set; on an error nothing is written
// and entries are unchanged.
//
// The transaction locks the chain head first, so appends from every Store on the
// database, in any process, are serialised once per batch. Index semantics are those
// of store/sqlite: a request entry makes its exchange's index row, a response entry
// completes it, and a second request or response with an id already indexed only
// joins the chain.
func (s *Store) Append(ctx context.Context, entries []*recorder.Entry) error {
	return s.appendChecked(ctx, entries, true)
}

// AppendUnsynced appends like Append but commits with synchronous_commit off for this
// one transaction: it returns once the commit is in the server's write-ahead log
// buffers, so the entries survive a killed gateway at once, and a lost database server
// from the next synchronous commit of any session (an Append, a Sync), which flushes
// the log past them. Every other write stays synchronous.
func (s *Store) AppendUnsynced(ctx context.Context, entries []*recorder.Entry) error {
	return s.appendChecked(ctx, entries, false)
}

func (s *Store) appendChecked(ctx context.Context, entries []*recorder.Entry, sync bool) error {
	if err := s.usable(ctx, true); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("postgres: append: entry %d is nil", i)
		}
		switch e.Kind {
		case recorder.KindRequest, recorder.KindResponse, recorder.KindCheckpoint:
		default:
			return fmt.Errorf("postgres: append: entry %d: unknown kind %q", i, e.Kind)
		}
	}
	sealed, err := s.appendBatch(ctx, entries, sync)
	if err != nil {
		return s.errorf("append", err)
	}
	for i, e := range entries {
		e.Seq, e.PrevHash, e.Hash, e.Version, e.DataHash = sealed[i].Seq, sealed[i].PrevHash, sealed[i].Hash, sealed[i].Version, ""
	}
	return nil
}

// appendBatch writes entries in one transaction of two round trips to the server: the
// first opens it (synchronous_commit off for this transaction unless sync) and locks
// the chain head; the second, once the entries are sealed after that head, inserts
// them, updates the index and the head, and commits. It returns the sealed copies. On
// an error the transaction is rolled back (the server does so too should the
// connection be lost), so nothing of the batch is written.
func (s *Store) appendBatch(ctx context.Context, entries []*recorder.Entry, sync bool) (sealed []recorder.Entry, err error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection released inside a transaction (the rollback below failed too) is
	// closed by the pool, never reused.
	defer conn.Release()
	defer func() {
		if err != nil {
			rollback(ctx, conn.Conn())
		}
	}()

	var seq int64
	var hash string
	var open pgx.Batch
	open.Queue("BEGIN")
	if !sync {
		open.Queue("SET LOCAL synchronous_commit = off")
	}
	open.Queue(lockHead).QueryRow(func(row pgx.Row) error { return row.Scan(&seq, &hash) })
	if err := conn.SendBatch(ctx, &open).Close(); err != nil {
		return nil, fmt.Errorf("chain head: %w", err)
	}

	sealed = make([]recorder.Entry, len(entries))
	var write pgx.Batch
	for i, e := range entries {
		c := &sealed[i]
		*c = *e
		c.Seq = seq + 1
		recorder.Seal(c, hash)
		queue(&write, c)
		seq, hash = c.Seq, c.Hash
	}
	write.Queue(updateHead, seq, hash)
	write.Queue("COMMIT")
	if err := conn.SendBatch(ctx, &write).Close(); err != nil {
		return nil, err
	}
	return sealed, nil
}

// rollback ends the transaction conn is in, if any, even once ctx is done. A statement
// that failed in a batch leaves the transaction aborted, not ended.
func rollback(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = conn.Exec(rctx, "ROLLBACK")
}

// head locks the chain head and returns the sequence number and hash of the last entry,
// 0 and GenesisHash before the first.
func head(ctx context.Context, tx pgx.Tx) (int64, string, error) {
	var seq int64
	var hash string
	if err := tx.QueryRow(ctx, lockHead).Scan(&seq, &hash); err != nil {
		return 0, "", fmt.Errorf("chain head: %w", err)
	}
	return seq, hash, nil
}

// appendAtHead seals e after the chain head (headSeq, headHash), which tx holds locked,
// and writes it and the new head.
func appendAtHead(ctx context.Context, tx pgx.Tx, e *recorder.Entry, headSeq int64, headHash string) error {
	e.Seq = headSeq + 1
	recorder.Seal(e, headHash)
	var b pgx.Batch
	queue(&b, e)
	b.Queue(updateHead, e.Seq, e.Hash)
	return tx.SendBatch(ctx, &b).Close()
}

// queue adds to b the statements that insert the sealed entry e and update the exchange
// index.
func queue(b *pgx.Batch, e *recorder.Entry) {
	data := e.Data
	if data == nil {
		data = []byte{} // the column is NOT NULL; the hash does not tell nil from empty
	}
	at := e.At.UnixNano()
	b.Queue(insertEntry, e.Seq, e.Kind, e.ExchangeID, at, data, e.PrevHash, e.Hash,
		e.Subject, e.Route, e.Decision, e.Method, e.Path, e.Status, e.Tool, e.Version)
	switch e.Kind {
	case recorder.KindRequest:
		b.Queue(insertExchange, e.ExchangeID, at, e.Subject, e.Route, e.Decision, e.Seq, e.Tool)
	case recorder.KindResponse:
		// No row updated is fine: the request entry may have been lost (best-effort
		// mode) or pruned.
		var status *int64
		if e.Status != 0 {
			status = new(int64(e.Status))
		}
		b.Queue(completeExchange, e.Decision, status, e.Seq, e.ExchangeID)
	}
}

// defaultPruneChunk bounds the entries one Prune transaction deletes: appends from
// every replica wait for the chain head while it runs.
const defaultPruneChunk = 10_000

// Prune deletes entries made before cutoff and returns how many it deleted, with the
// contract of store/sqlite's Prune: only a prefix of the chain goes (from the first
// entry up to, not including, the first made at or after cutoff), at most 10,000
// entries a transaction with the index rows of their exchanges, each transaction
// appending a checkpoint entry (recorder.Checkpoint) so the chain still verifies, and
// entries appended after Prune began are left for the next call.
//
// One replica prunes at a time: Prune holds a session advisory lock while it runs,
// and a Prune that finds it taken returns 0 and no error, since the other replica is
// deleting the same entries.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (int64, error) {
	if err := s.usable(ctx, true); err != nil {
		return 0, err
	}
	n, err := s.prune(ctx, cutoff)
	if err != nil {
		return n, s.errorf("prune", err)
	}
	return n, nil
}

func (s *Store) prune(ctx context.Context, cutoff time.Time) (int64, error) {
	lockCtx, cancel := s.bounded(ctx)
	defer cancel()
	conn, err := s.pool.Acquire(lockCtx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(lockCtx, "SELECT pg_try_advisory_lock($1)", pruneLock).Scan(&locked); err != nil {
		return 0, fmt.Errorf("prune lock: %w", err)
	}
	if !locked {
		return 0, nil
	}
	defer func() {
		uctx, cancel := s.bounded(context.WithoutCancel(ctx))
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", pruneLock); err != nil {
			// The lock would outlive this call on a pooled connection: drop the connection.
			conn.Hijack().Close(uctx)
		}
	}()
	var limit int64 = -1 // the chain head when Prune began
	var total int64
	for {
		n, headSeq, err := s.pruneChunkOf(ctx, cutoff, limit)
		if err != nil {
			return total, err
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

// pruneChunkOf deletes, in one transaction, up to pruneChunk entries older than cutoff
// from the start of the chain, none after seq limit (none when limit is negative), and
// appends the checkpoint. It returns how many it deleted and the chain head before the
// checkpoint.
func (s *Store) pruneChunkOf(ctx context.Context, cutoff time.Time, limit int64) (n, headSeq int64, err error) {
	err = s.inTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		var headHash string
		if headSeq, headHash, err = head(ctx, tx); err != nil {
			return err
		}
		if limit < 0 {
			limit = headSeq
		}
		last, err := prunable(ctx, tx, cutoff.UnixNano(), limit, s.pruneChunk)
		if err != nil || last.Seq == 0 {
			return err
		}
		// The seq check keeps the index row of a duplicate id's first request, when
		// only a later one is being deleted.
		if _, err := tx.Exec(ctx, `DELETE FROM exchanges x USING entries e
			WHERE e.seq <= $1 AND e.kind = $2 AND x.id = e.exchange_id AND x.request_seq = e.seq`,
			last.Seq, recorder.KindRequest); err != nil {
			return fmt.Errorf("delete exchanges: %w", err)
		}
		tag, err := tx.Exec(ctx, "DELETE FROM entries WHERE seq <= $1", last.Seq)
		if err != nil {
			return fmt.Errorf("delete entries: %w", err)
		}
		n = tag.RowsAffected()
		if err := appendAtHead(ctx, tx, recorder.Checkpoint(last, n, cutoff, time.Now()), headSeq, headHash); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return n, headSeq, nil
}

// prunable reads the chain from its start and returns the last of the entries that
// may go (Seq 0 when none may): at most chunk, none after seq limit, and none from the
// first entry made at or after cutoff on.
func prunable(ctx context.Context, tx pgx.Tx, cutoff, limit int64, chunk int) (recorder.Entry, error) {
	rows, err := tx.Query(ctx, "SELECT seq, at_ns, hash FROM entries WHERE seq <= $1 ORDER BY seq LIMIT $2", limit, chunk)
	if err != nil {
		return recorder.Entry{}, fmt.Errorf("read chain start: %w", err)
	}
	defer rows.Close()
	var last recorder.Entry
	for rows.Next() {
		var e recorder.Entry
		var at int64
		if err := rows.Scan(&e.Seq, &at, &e.Hash); err != nil {
			return recorder.Entry{}, fmt.Errorf("read chain start: %w", err)
		}
		if at >= cutoff {
			break
		}
		last = e
	}
	if err := rows.Err(); err != nil {
		return recorder.Entry{}, fmt.Errorf("read chain start: %w", err)
	}
	return last, nil
}
