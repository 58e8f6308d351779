package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyholehq/keyhole/recorder"
)

// List limits, those of store/sqlite.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

const (
	entryColumns = "seq, kind, exchange_id, at_ns, data, prev_hash, hash, subject, route, decision, method, path, status, tool, chain_v, data_sha256"
	// recordQuery selects an exchange's request entry (q) and response entry (r, all
	// NULL when there is none), scanned by scanRecord.
	recordQuery = `SELECT
		q.seq, q.kind, q.exchange_id, q.at_ns, q.data, q.prev_hash, q.hash,
		q.subject, q.route, q.decision, q.method, q.path, q.status, q.tool, q.chain_v, q.data_sha256,
		r.seq, r.kind, r.exchange_id, r.at_ns, r.data, r.prev_hash, r.hash,
		r.subject, r.route, r.decision, r.method, r.path, r.status, r.tool, r.chain_v, r.data_sha256
	FROM exchanges x
	JOIN entries q ON q.seq = x.request_seq
	LEFT JOIN entries r ON r.seq = x.response_seq`
)

// List returns the exchanges matching f, newest (greatest id) first, and the cursor
// of the next page, "" when there is none. f.Limit defaults to 100 and is capped at
// 1000. Since and Until bound the time the request was received. Every value of f
// reaches the database as a bind parameter.
func (s *Store) List(ctx context.Context, f recorder.Filter) ([]recorder.Record, string, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, "", err
	}
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		limit = maxListLimit
	}
	var where []string
	var args []any
	cond := func(c string, v any) {
		args = append(args, v)
		where = append(where, c+" $"+strconv.Itoa(len(args)))
	}
	if !f.Since.IsZero() {
		cond("x.received_ns >=", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		cond("x.received_ns <", f.Until.UnixNano())
	}
	if f.Subject != "" {
		cond("x.subject =", f.Subject)
	}
	if f.Route != "" {
		cond("x.route =", f.Route)
	}
	if f.Decision != "" {
		cond("x.decision =", f.Decision)
	}
	if f.Status != 0 {
		cond("x.status =", f.Status)
	}
	if f.Tool != "" {
		cond("x.tool =", f.Tool)
	}
	if f.Cursor != "" {
		cond("x.id <", f.Cursor)
	}
	q := recordQuery
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	// One more than the page tells whether there is a next page. ids compare byte by
	// byte: the column is COLLATE "C".
	args = append(args, limit+1)
	q += " ORDER BY x.id DESC LIMIT $" + strconv.Itoa(len(args))

	ctx, cancel := s.bounded(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", s.errorf("list", err)
	}
	defer rows.Close()
	recs := make([]recorder.Record, 0, min(limit+1, 64))
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, "", s.errorf("list", err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, "", s.errorf("list", err)
	}
	next := ""
	if len(recs) > limit {
		recs = recs[:limit]
		next = recs[limit-1].Request.ExchangeID
	}
	return recs, next, nil
}

// Get returns the exchange with this id, or an error wrapping recorder.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (recorder.Record, error) {
	if err := s.usable(ctx, false); err != nil {
		return recorder.Record{}, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	rec, err := scanRecord(s.pool.QueryRow(ctx, recordQuery+" WHERE x.id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return recorder.Record{}, fmt.Errorf("postgres: get %q: %w", id, recorder.ErrNotFound)
	}
	if err != nil {
		return recorder.Record{}, s.errorf(fmt.Sprintf("get %q", id), err)
	}
	return rec, nil
}

// Entries returns up to limit entries with Seq greater than after, in sequence order;
// none when limit is not positive.
func (s *Store) Entries(ctx context.Context, after int64, limit int) ([]recorder.Entry, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+entryColumns+" FROM entries WHERE seq > $1 ORDER BY seq LIMIT $2", after, limit)
	if err != nil {
		return nil, s.errorf("entries", err)
	}
	defer rows.Close()
	es := make([]recorder.Entry, 0, min(limit, 1000))
	for rows.Next() {
		var e nullEntry
		if err := rows.Scan(e.dest()...); err != nil {
			return nil, s.errorf("entries", err)
		}
		es = append(es, e.entry())
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("entries", err)
	}
	return es, nil
}

// Count returns the number of entries in the chain.
func (s *Store) Count(ctx context.Context) (int64, error) {
	if err := s.usable(ctx, false); err != nil {
		return 0, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT COUNT(*) FROM entries").Scan(&n); err != nil {
		return 0, s.errorf("count", err)
	}
	return n, nil
}

// scanRecord scans a row of recordQuery.
func scanRecord(row pgx.Row) (recorder.Record, error) {
	var q, r nullEntry
	if err := row.Scan(append(q.dest(), r.dest()...)...); err != nil {
		return recorder.Record{}, err
	}
	rec := recorder.Record{Request: q.entry()}
	if r.seq.Valid {
		resp := r.entry()
		rec.Response = &resp
	}
	return rec, nil
}

// nullEntry receives the entryColumns of a row that may be all NULL (an outer join).
type nullEntry struct {
	seq, at, status                                        pgtype.Int8
	version                                                pgtype.Int2
	kind, id, prev, hash, subject, route, decision, method pgtype.Text
	path, tool, dataHash                                   pgtype.Text
	data                                                   []byte
}

// dest returns the Scan destinations in entryColumns order.
func (n *nullEntry) dest() []any {
	return []any{&n.seq, &n.kind, &n.id, &n.at, &n.data, &n.prev, &n.hash,
		&n.subject, &n.route, &n.decision, &n.method, &n.path, &n.status, &n.tool, &n.version, &n.dataHash}
}

func (n *nullEntry) entry() recorder.Entry {
	return recorder.Entry{
		Seq:        n.seq.Int64,
		Kind:       n.kind.String,
		ExchangeID: n.id.String,
		At:         time.Unix(0, n.at.Int64).UTC(),
		Data:       n.data,
		PrevHash:   n.prev.String,
		Hash:       n.hash.String,
		Subject:    n.subject.String,
		Route:      n.route.String,
		Decision:   n.decision.String,
		Method:     n.method.String,
		Path:       n.path.String,
		Status:     int(n.status.Int64),
		Tool:       n.tool.String,
		Version:    int(n.version.Int16),
		DataHash:   n.dataHash.String,
	}
}
