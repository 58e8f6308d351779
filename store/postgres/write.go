package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyholehq/keyhole/recorder"
)

const (
	// lockHead takes the chain head's row lock: every appending transaction, in every
	// replica, queues here, so the chain stays one line.
	lockHead   = "SELECT seq, hash FROM chain_head WHERE one FOR UPDATE"
	updateHead = "UPDATE chain_head SET seq = $1, hash = $2 WHERE one"
	// moveHead moves the chain head from ($1, $2), where it is guessed to be, to ($3,
	// $4), taking its row lock as lockHead does. Should the head, once locked (read
	// committed: the row as the transaction that held it left it), be elsewhere, it
	// sets one to false, which CHECK (one) refuses: the statement and its transaction
	// fail.
	moveHead    = "UPDATE chain_head SET one = (seq = $1 AND hash = $2), seq = $3, hash = $4 WHERE one"
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
// database, in any process, are serialised once per batch: one round trip when this
// Store's last append left the head where it is, two otherwise (see appendBatch).
// Index semantics are those of store/sqlite: a request entry makes its exchange's
// index row, a response entry completes it, and a second request or response with an
// id already indexed only joins the chain.
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

func (s *Store) appendChecked(ctx context.Context, entries []*recorder.Entry, durable bool) error {
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
	sealed, err := s.appendBatch(ctx, entries, durable)
	if err != nil {
		return s.errorf("append", err)
	}
	for i, e := range entries {
		e.Seq, e.PrevHash, e.Hash, e.Version, e.DataHash = sealed[i].Seq, sealed[i].PrevHash, sealed[i].Hash, sealed[i].Version, ""
	}
	return nil
}

// appendBatch writes entries in one transaction and returns their sealed copies. When
// this Store knows where it left the chain head (see headGuess), it takes one round
// trip to the server: the transaction moves the head from there, taking its row lock,
// writes the entries sealed after it and commits; should another Store have moved the
// head since, the head's CHECK refuses the move, nothing is written, and the batch is
// written as below. Otherwise it takes two: the first opens the transaction and locks
// the chain head, the second, once the entries are sealed after that head, writes them
// and the new head and commits. Either way synchronous_commit is off for the
// transaction unless durable. On an error the transaction is rolled back (by the server,
// should the connection be lost), so nothing of the batch is written.
func (s *Store) appendBatch(ctx context.Context, entries []*recorder.Entry, durable bool) (sealed []recorder.Entry, err error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection released inside a transaction (a rollback failed too) is closed by
	// the pool, never reused.
	defer pc.Release()
	conn := pc.Conn()
	if seq, hash, ok := s.guessed.guess(); ok {
		sealed, err = appendGuessed(ctx, conn, entries, durable, seq, hash)
		if err == nil {
			s.guessed.set(sealed[len(sealed)-1], false)
			return sealed, nil
		}
		rollback(ctx, conn)
		if !isStaleGuess(err) {
			s.guessed.forget()
			return nil, err
		}
		s.guessed.set(recorder.Entry{}, true)
	}
	if sealed, err = appendLocked(ctx, conn, entries, durable); err != nil {
		rollback(ctx, conn)
		s.guessed.forget()
		return nil, err
	}
	s.guessed.set(sealed[len(sealed)-1], false)
	return sealed, nil
}

// appendGuessed writes entries after the guessed chain head (seq, hash) in one round
// trip, or fails with an error isStaleGuess recognises, having written nothing, when
// the head is elsewhere.
func appendGuessed(ctx context.Context, conn *pgx.Conn, entries []*recorder.Entry, durable bool, seq int64, hash string) ([]recorder.Entry, error) {
	sealed := sealAfter(entries, seq, hash)
	last := sealed[len(sealed)-1]
	var b pgx.Batch
	b.Queue("BEGIN")
	if !durable {
		b.Queue("SET LOCAL synchronous_commit = off")
	}
	// First, so that the head is locked, and found where it was guessed, before
	// anything else runs: a failed statement skips the rest of the batch.
	b.Queue(moveHead, seq, hash, last.Seq, last.Hash)
	for i := range sealed {
		queue(&b, &sealed[i])
	}
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, &b).Close(); err != nil {
		return nil, err
	}
	return sealed, nil
}

// appendLocked writes entries in two round trips: it locks and reads the chain head,
// then writes the entries sealed after it.
func appendLocked(ctx context.Context, conn *pgx.Conn, entries []*recorder.Entry, durable bool) ([]recorder.Entry, error) {
	var seq int64
	var hash string
	var open pgx.Batch
	open.Queue("BEGIN")
	if !durable {
		open.Queue("SET LOCAL synchronous_commit = off")
	}
	open.Queue(lockHead).QueryRow(func(row pgx.Row) error { return row.Scan(&seq, &hash) })
	if err := conn.SendBatch(ctx, &open).Close(); err != nil {
		return nil, fmt.Errorf("chain head: %w", err)
	}
	sealed := sealAfter(entries, seq, hash)
	last := sealed[len(sealed)-1]
	var write pgx.Batch
	for i := range sealed {
		queue(&write, &sealed[i])
	}
	write.Queue(updateHead, last.Seq, last.Hash)
	write.Queue("COMMIT")
	if err := conn.SendBatch(ctx, &write).Close(); err != nil {
		return nil, err
	}
	return sealed, nil
}

// sealAfter returns copies of entries numbered and sealed after the chain head (seq,
// hash), in order.
func sealAfter(entries []*recorder.Entry, seq int64, hash string) []recorder.Entry {
	sealed := make([]recorder.Entry, len(entries))
	for i, e := range entries {
		c := &sealed[i]
		*c = *e
		c.Seq = seq + 1
		recorder.Seal(c, hash)
		seq, hash = c.Seq, c.Hash
	}
	return sealed
}

// isStaleGuess reports whether err is moveHead's refusal (23514, check_violation): the
// chain head was not where it was guessed.
func isStaleGuess(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && pe.ConstraintName == "chain_head_one_check"
}

// guessPause is how long a Store whose guess of the chain head proved stale appends
// with the head locked first: while other replicas append too, a guess would mostly
// miss, costing a round trip.
const guessPause = time.Second

// headGuess is the chain head as this Store's last append left it, which is where it
// still is while no other Store on the database appends (nor this Store's Prune or
// Expire, which leave it unknown). It is safe for concurrent use.
type headGuess struct {
	mu     sync.Mutex
	seq    int64
	hash   string // "" when unknown
	missed time.Time
}

// guess returns the chain head to guess, ok false when there is none to try.
func (g *headGuess) guess() (seq int64, hash string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hash == "" || time.Since(g.missed) < guessPause {
		return 0, "", false
	}
	return g.seq, g.hash, true
}

// set records that the chain head is last (unknown when last has no Hash), and that a
// guess just missed if missed.
func (g *headGuess) set(last recorder.Entry, missed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq, g.hash = last.Seq, last.Hash
	if missed {
		g.missed = time.Now()
	}
}

// forget makes the chain head unknown.
func (g *headGuess) forget() { g.set(recorder.Entry{}, false) }

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
	defer s.guessed.forget() // the checkpoints move the chain head
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
