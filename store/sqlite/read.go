package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// List limits.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

const (
	entryColumns = "seq, kind, exchange_id, at_ns, data, prev_hash, hash, subject, route, decision, method, path, status, tool, chain_v, data_sha256, data_codec"
	// recordQuery selects an exchange's request entry (q) and response entry (r, all
	// NULL when there is none), scanned by scanRecord.
	recordQuery = `SELECT
		q.seq, q.kind, q.exchange_id, q.at_ns, q.data, q.prev_hash, q.hash,
		q.subject, q.route, q.decision, q.method, q.path, q.status, q.tool, q.chain_v, q.data_sha256, q.data_codec,
		r.seq, r.kind, r.exchange_id, r.at_ns, r.data, r.prev_hash, r.hash,
		r.subject, r.route, r.decision, r.method, r.path, r.status, r.tool, r.chain_v, r.data_sha256, r.data_codec
	FROM exchanges x
	JOIN entries q ON q.seq = x.request_seq
	LEFT JOIN entries r ON r.seq = x.response_seq`
)

// List returns the exchanges matching f, newest (greatest id) first, and the cursor
// of the next page, "" when there is none. f.Limit defaults to 100 and is capped at
// 1000. Since and Until bound the time the request was received.
func (s *Store) List(ctx context.Context, f recorder.Filter) ([]recorder.Record, string, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = defaultListLimit
	case limit > maxListLimit:
		limit = maxListLimit
	}
	if err := s.drain(ctx); err != nil {
		return nil, "", fmt.Errorf("sqlite: list: %w", err)
	}
	q, args := listQuery(f, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite: list: %w", err)
	}
	defer rows.Close()
	recs := make([]recorder.Record, 0, min(limit+1, 64))
	for rows.Next() {
		rec, err := scanRecord(rows)
		if err != nil {
			return nil, "", fmt.Errorf("sqlite: list: %w", err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("sqlite: list: %w", err)
	}
	next := ""
	if len(recs) > limit {
		recs = recs[:limit]
		next = recs[limit-1].Request.ExchangeID
	}
	return recs, next, nil
}

// listQuery returns List's query for f and its arguments: a page of limit exchanges and
// one more, which tells whether there is a next page.
func listQuery(f recorder.Filter, limit int) (string, []any) {
	var where []string
	var args []any
	cond := func(c string, v any) {
		where = append(where, c)
		args = append(args, v)
	}
	if !f.Since.IsZero() {
		cond("x.received_ns >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		cond("x.received_ns < ?", f.Until.UnixNano())
	}
	if f.Subject != "" {
		cond("x.subject = ?", f.Subject)
	}
	if f.Route != "" {
		cond("x.route = ?", f.Route)
	}
	if f.Decision != "" {
		cond("x.decision = ?", f.Decision)
	}
	if f.Status != 0 {
		cond("x.status = ?", f.Status)
	}
	if f.Tool != "" {
		// The literal term lets SQLite use exchanges_tool, which holds only tool <> ''.
		cond("x.tool = ? AND x.tool <> ''", f.Tool)
	}
	if f.Cursor != "" {
		cond("x.id < ?", f.Cursor)
	}
	q := recordQuery
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY x.id DESC LIMIT ?"
	return q, append(args, limit+1)
}

// Get returns the exchange with this id, or an error wrapping recorder.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (recorder.Record, error) {
	if err := s.drain(ctx); err != nil {
		return recorder.Record{}, fmt.Errorf("sqlite: get %q: %w", id, err)
	}
	rec, err := scanRecord(s.r.QueryRowContext(ctx, recordQuery+" WHERE x.id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return recorder.Record{}, fmt.Errorf("sqlite: get %q: %w", id, recorder.ErrNotFound)
	}
	if err != nil {
		return recorder.Record{}, fmt.Errorf("sqlite: get %q: %w", id, err)
	}
	return rec, nil
}

// Entries returns up to limit entries with Seq greater than after, in sequence order;
// none when limit is not positive. A store opened read-only reads, after the
// database's, the entries the chain log held beyond them when it was opened.
func (s *Store) Entries(ctx context.Context, after int64, limit int) ([]recorder.Entry, error) {
	if limit <= 0 {
		return nil, nil
	}
	if err := s.drain(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: entries: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, "SELECT "+entryColumns+" FROM entries WHERE seq > ? ORDER BY seq LIMIT ?", after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: entries: %w", err)
	}
	defer rows.Close()
	es := make([]recorder.Entry, 0, min(limit, 1000))
	for rows.Next() {
		var e nullEntry
		if err := rows.Scan(e.dest()...); err != nil {
			return nil, fmt.Errorf("sqlite: entries: %w", err)
		}
		es = append(es, e.entry())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: entries: %w", err)
	}
	if len(es) > 0 {
		after = es[len(es)-1].Seq
	}
	for _, x := range s.tail {
		if len(es) == limit {
			break
		}
		if x.e.Seq > after {
			es = append(es, x.e)
		}
	}
	return es, nil
}

// Count returns the number of entries in the chain (for a store opened read-only,
// with those of its chain log: see Entries).
func (s *Store) Count(ctx context.Context) (int64, error) {
	if err := s.drain(ctx); err != nil {
		return 0, fmt.Errorf("sqlite: count: %w", err)
	}
	var n, last int64
	if err := s.r.QueryRowContext(ctx, "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM entries").Scan(&n, &last); err != nil {
		return 0, fmt.Errorf("sqlite: count: %w", err)
	}
	for _, x := range s.tail {
		if x.e.Seq > last {
			n++
		}
	}
	return n, nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// scanRecord scans a row of recordQuery.
func scanRecord(sc scanner) (recorder.Record, error) {
	var q, r nullEntry
	if err := sc.Scan(append(q.dest(), r.dest()...)...); err != nil {
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
	seq, at, status, version                               sql.NullInt64
	kind, id, prev, hash, subject, route, decision, method sql.NullString
	path, tool, dataHash, codec                            sql.NullString
	data                                                   []byte
}

// dest returns the Scan destinations in entryColumns order.
func (n *nullEntry) dest() []any {
	return []any{&n.seq, &n.kind, &n.id, &n.at, &n.data, &n.prev, &n.hash,
		&n.subject, &n.route, &n.decision, &n.method, &n.path, &n.status, &n.tool, &n.version, &n.dataHash, &n.codec}
}

func (n *nullEntry) entry() recorder.Entry {
	return recorder.Entry{
		Seq:        n.seq.Int64,
		Kind:       n.kind.String,
		ExchangeID: n.id.String,
		At:         time.Unix(0, n.at.Int64).UTC(),
		Data:       unpack(n.data, n.codec),
		PrevHash:   n.prev.String,
		Hash:       n.hash.String,
		Subject:    n.subject.String,
		Route:      n.route.String,
		Decision:   n.decision.String,
		Method:     n.method.String,
		Path:       n.path.String,
		Status:     int(n.status.Int64),
		Tool:       n.tool.String,
		Version:    int(n.version.Int64),
		DataHash:   n.dataHash.String,
	}
}

// drain waits until what this process appended before it is in SQLite, for a read to
// see it. A store opened read-only waits for a store of this process writing the same
// file; what a gateway process appends is in SQLite some milliseconds later.
func (s *Store) drain(ctx context.Context) error {
	if s.chain != nil {
		return s.chain.drain(ctx)
	}
	return drainFile(ctx, s.path)
}

// drainFile waits for the chain of this process on the database file at path, if any.
func drainFile(ctx context.Context, path string) error {
	file, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil
	}
	chainsMu.Lock()
	c := chains[file]
	chainsMu.Unlock()
	if c == nil {
		return nil
	}
	return c.drain(ctx)
}
