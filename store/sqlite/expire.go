package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// Expire makes stubs (recorder.Stub) of the request and response entries of the
// exchanges rule selects, deletes their index rows, and appends an expiry entry
// (recorder.Expiry) listing the stubs, so the chain still verifies. It works in
// transactions of at most a tenth of the prune chunk (1,000 exchanges by default) and
// returns how many entries it made stubs of. Exchanges whose request entry was sealed
// in chain version 1 keep their entries: only Prune can remove those.
func (s *Store) Expire(ctx context.Context, rule recorder.ExpiryRule) (int64, error) {
	if err := s.writable(); err != nil {
		return 0, err
	}
	chunk := max(1, s.pruneChunk/10)
	var total int64
	for {
		var n int64
		var more bool
		err := s.chain.direct(ctx, func() (last *recorder.Entry, err error) {
			n, more, last, err = s.expireChunk(ctx, rule, chunk)
			return last, err
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlite: expire: %w", err)
		}
		if !more {
			return total, nil
		}
	}
}

// expireChunk expires up to chunk exchanges in one transaction and says whether more
// may be left; it returns the expiry entry it appended, nil for none.
func (s *Store) expireChunk(ctx context.Context, rule recorder.ExpiryRule, chunk int) (int64, bool, *recorder.Entry, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, nil, err
	}
	defer tx.Rollback()
	w := s.stmts.in(ctx, tx)
	defer w.close()
	headSeq, headHash, err := w.headOf(ctx)
	if err != nil {
		return 0, false, nil, err
	}
	xs, err := expirable(ctx, tx, rule, chunk)
	if err != nil || len(xs) == 0 {
		return 0, false, nil, err
	}
	var seqs []int64
	for _, x := range xs {
		if _, err := tx.ExecContext(ctx, "DELETE FROM exchanges WHERE id = ? AND request_seq = ?", x.id, x.seq); err != nil {
			return 0, false, nil, fmt.Errorf("delete exchange: %w", err)
		}
		for _, seq := range x.entries {
			done, err := stubEntry(ctx, tx, seq)
			if err != nil {
				return 0, false, nil, err
			}
			if done {
				seqs = append(seqs, seq)
			}
		}
	}
	var e *recorder.Entry
	if len(seqs) > 0 {
		slices.Sort(seqs)
		e = recorder.Expiry(seqs, rule, time.Now())
		e.Seq = headSeq + 1
		recorder.Seal(e, headHash)
		if err := w.write(ctx, e); err != nil {
			return 0, false, nil, fmt.Errorf("expiry entry: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, false, nil, err
	}
	return int64(len(seqs)), len(xs) == chunk, e, nil
}

// expiring is an exchange index row to expire and the entries to make stubs of.
type expiring struct {
	indexed
	entries []int64
}

// expirable returns up to chunk exchanges rule selects whose request entry is sealed in
// a chain version that allows stubs, oldest first.
func expirable(ctx context.Context, tx *sql.Tx, rule recorder.ExpiryRule, chunk int) ([]expiring, error) {
	q := `SELECT x.id, x.request_seq, x.response_seq FROM exchanges x JOIN entries q ON q.seq = x.request_seq
		WHERE x.received_ns < ? AND q.chain_v >= 2`
	args := []any{rule.Before.UnixNano()}
	if len(rule.Routes) > 0 {
		op := " IN "
		if rule.OtherRoutes {
			op = " NOT IN "
		}
		q += " AND x.route" + op + "(" + strings.Repeat("?, ", len(rule.Routes)-1) + "?)"
		for _, r := range rule.Routes {
			args = append(args, r)
		}
	} else if !rule.OtherRoutes {
		return nil, nil
	}
	q += " ORDER BY x.received_ns LIMIT ?"
	args = append(args, chunk)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("select exchanges: %w", err)
	}
	defer rows.Close()
	var xs []expiring
	for rows.Next() {
		var x expiring
		var resp sql.NullInt64
		if err := rows.Scan(&x.id, &x.seq, &resp); err != nil {
			return nil, fmt.Errorf("select exchanges: %w", err)
		}
		x.entries = []int64{x.seq}
		if resp.Valid {
			x.entries = append(x.entries, resp.Int64)
		}
		xs = append(xs, x)
	}
	return xs, rows.Err()
}

// stubEntry replaces the Data of entry seq by its SHA-256 and reports whether it did:
// not for an entry already gone or a stub, nor one sealed in chain version 1.
func stubEntry(ctx context.Context, tx *sql.Tx, seq int64) (bool, error) {
	var e recorder.Entry
	var at int64
	var dataHash, codec sql.NullString
	err := tx.QueryRowContext(ctx, "SELECT seq, kind, exchange_id, at_ns, data, chain_v, data_sha256, data_codec FROM entries WHERE seq = ?", seq).
		Scan(&e.Seq, &e.Kind, &e.ExchangeID, &at, &e.Data, &e.Version, &dataHash, &codec)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read entry %d: %w", seq, err)
	}
	e.DataHash, e.Data = dataHash.String, unpack(e.Data, codec)
	stub, ok := recorder.Stub(e)
	if !ok {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, "UPDATE entries SET data = x'', data_codec = NULL, data_sha256 = ? WHERE seq = ?", stub.DataHash, seq); err != nil {
		return false, fmt.Errorf("stub entry %d: %w", seq, err)
	}
	return true, nil
}
