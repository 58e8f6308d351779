package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyholehq/keyhole/recorder"
)

// Expire makes stubs (recorder.Stub) of the request and response entries of the
// exchanges rule selects, deletes their index rows, and appends an expiry entry
// (recorder.Expiry) listing the stubs, so the chain still verifies, with the contract
// of store/sqlite's Expire: transactions of at most a tenth of the prune chunk (1,000
// exchanges by default), and exchanges whose request entry was sealed in chain version
// 1 keep their entries. Each transaction holds the chain head, so replicas expiring at
// once take turns, and the second finds the work done.
func (s *Store) Expire(ctx context.Context, rule recorder.ExpiryRule) (int64, error) {
	if err := s.usable(ctx, true); err != nil {
		return 0, err
	}
	defer s.guessed.forget() // the expiry entries move the chain head
	chunk := max(1, s.pruneChunk/10)
	var total int64
	for {
		n, more, err := s.expireChunk(ctx, rule, chunk)
		total += n
		if err != nil {
			return total, s.errorf("expire", err)
		}
		if !more {
			return total, nil
		}
	}
}

// expireChunk expires up to chunk exchanges in one transaction and says whether more
// may be left.
func (s *Store) expireChunk(ctx context.Context, rule recorder.ExpiryRule, chunk int) (n int64, more bool, err error) {
	if len(rule.Routes) == 0 && !rule.OtherRoutes {
		return 0, false, nil
	}
	err = s.inTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		headSeq, headHash, err := head(ctx, tx)
		if err != nil {
			return err
		}
		routes := rule.Routes
		if routes == nil {
			routes = []string{}
		}
		// One statement deletes the index rows of the chunk and returns their entries.
		rows, err := tx.Query(ctx, `WITH picked AS (
				SELECT x.id, x.request_seq, x.response_seq FROM exchanges x JOIN entries q ON q.seq = x.request_seq
				WHERE x.received_ns < $1 AND q.chain_v >= 2 AND (x.route = ANY($2) <> $3)
				ORDER BY x.received_ns LIMIT $4)
			DELETE FROM exchanges x USING picked p WHERE x.id = p.id AND x.request_seq = p.request_seq
			RETURNING p.request_seq, p.response_seq`,
			rule.Before.UnixNano(), routes, rule.OtherRoutes, chunk)
		if err != nil {
			return fmt.Errorf("select exchanges: %w", err)
		}
		var seqs []int64
		picked := 0
		for rows.Next() {
			var req int64
			var resp pgtype.Int8
			if err := rows.Scan(&req, &resp); err != nil {
				rows.Close()
				return fmt.Errorf("select exchanges: %w", err)
			}
			picked++
			seqs = append(seqs, req)
			if resp.Valid {
				seqs = append(seqs, resp.Int64)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select exchanges: %w", err)
		}
		more = picked == chunk
		if picked == 0 {
			return nil
		}
		stubbed, err := stubEntries(ctx, tx, seqs)
		if err != nil || len(stubbed) == 0 {
			return err
		}
		if err := appendAtHead(ctx, tx, recorder.Expiry(stubbed, rule, time.Now()), headSeq, headHash); err != nil {
			return fmt.Errorf("expiry entry: %w", err)
		}
		n = int64(len(stubbed))
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return n, more, nil
}

// stubEntries replaces the Data of the entries numbered seqs by its SHA-256 and returns,
// ascending, the numbers of those it changed: not entries already gone or stubs, nor
// ones sealed in chain version 1.
func stubEntries(ctx context.Context, tx pgx.Tx, seqs []int64) ([]int64, error) {
	rows, err := tx.Query(ctx, "SELECT seq, kind, exchange_id, at_ns, data, chain_v, data_sha256 FROM entries WHERE seq = ANY($1)", seqs)
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	var b pgx.Batch
	var done []int64
	for rows.Next() {
		var e recorder.Entry
		var at int64
		var version int16
		var dataHash pgtype.Text
		if err := rows.Scan(&e.Seq, &e.Kind, &e.ExchangeID, &at, &e.Data, &version, &dataHash); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read entries: %w", err)
		}
		e.Version, e.DataHash = int(version), dataHash.String
		stub, ok := recorder.Stub(e)
		if !ok {
			continue
		}
		b.Queue("UPDATE entries SET data = ''::bytea, data_sha256 = $1 WHERE seq = $2", stub.DataHash, e.Seq)
		done = append(done, e.Seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	if len(done) == 0 {
		return nil, nil
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, fmt.Errorf("stub entries: %w", err)
	}
	slices.Sort(done)
	return done, nil
}
