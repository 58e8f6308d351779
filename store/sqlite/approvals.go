package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/approvals"
)

var _ approvals.Store = (*Store)(nil)

// Approval list limits.
const (
	defaultApprovalLimit = 50
	maxApprovalLimit     = 500
)

// decisionChunk is the most approval ids one query for decisions names, well below
// SQLite's limit on a statement's parameters.
const decisionChunk = 500

const (
	// approvalColumns are the columns scanApproval reads, in its order.
	approvalColumns = `id, binding, route, method, path, query, headers, body, body_size, body_hash,
		requester_issuer, requester_subject, requester_client_id, requester_groups, requester_scopes,
		reason, exchange_id, created_ns, expires_ns, min_approvals, state, closed, decided_ns, used_ns, used_by, tool`
	insertApproval = `INSERT INTO approvals (` + approvalColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, '', ?)`
	// decisionColumns are the columns scanDecision reads, in its order.
	decisionColumns = `approval_id, approver_issuer, approver_subject, approver_client_id,
		approver_groups, approver_scopes, verdict, comment, at_ns, via`
	insertDecision = `INSERT INTO approval_decisions (seq, ` + decisionColumns + `)
		VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_decisions WHERE approval_id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
)

// CreateApproval inserts a as a new approval, Pending and open, unless an open
// approval holds a.Binding (an error wrapping approvals.ErrOpen) or, when maxPending >
// 0, a's requester already has maxPending open pending approvals unexpired at
// a.CreatedAt (approvals.ErrTooMany); then it inserts nothing. The check and the insert
// are one transaction, so concurrent requests cannot exceed the cap together. a's State, Closed, DecidedAt, UsedAt, UsedBy and Decisions are not
// read; on a nil return they are set as stored (Pending, open, none). a must have an
// ID, a Binding, CreatedAt and ExpiresAt, and MinApprovals of at least 1.
func (s *Store) CreateApproval(ctx context.Context, a *approvals.Approval, maxPending int) error {
	if err := s.writable(); err != nil {
		return err
	}
	if err := s.createApproval(ctx, a, maxPending); err != nil {
		return fmt.Errorf("sqlite: create approval: %w", err)
	}
	a.State, a.Closed = approvals.Pending, false
	a.DecidedAt, a.UsedAt, a.UsedBy, a.Decisions = nil, nil, "", nil
	return nil
}

func (s *Store) createApproval(ctx context.Context, a *approvals.Approval, maxPending int) error {
	switch {
	case a == nil:
		return errors.New("approval is nil")
	case a.ID == "":
		return errors.New("approval has no id")
	case a.Binding == "":
		return errors.New("approval has no binding")
	case a.CreatedAt.IsZero() || a.ExpiresAt.IsZero():
		return errors.New("approval has no creation or expiry time")
	case a.MinApprovals < 1:
		// Fail closed: nothing counts as approval by nobody.
		return fmt.Errorf("approval needs %d approvals, want at least 1", a.MinApprovals)
	}
	groups, err := jsonList(a.Requester.Groups)
	if err != nil {
		return err
	}
	scopes, err := jsonList(a.Requester.Scopes)
	if err != nil {
		return err
	}
	headers, err := jsonHeaders(a.Headers)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The transaction holds the write lock from its start, so no other writer can
	// open an approval with this binding, or for this requester, between these checks
	// and the insert.
	var open bool
	if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM approvals WHERE binding = ? AND closed = 0)", a.Binding).Scan(&open); err != nil {
		return err
	}
	if open {
		return approvals.ErrOpen
	}
	if maxPending > 0 {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM approvals
			WHERE requester_subject = ? AND state = ? AND closed = 0 AND expires_ns > ?`,
			a.Requester.Subject, approvals.Pending, a.CreatedAt.UnixNano()).Scan(&n); err != nil {
			return err
		}
		if n >= maxPending {
			return approvals.ErrTooMany
		}
	}
	if _, err := tx.ExecContext(ctx, insertApproval,
		a.ID, a.Binding, a.Route, a.Method, a.Path, a.Query, headers, blob(a.Body), a.BodySize, a.BodyHash,
		a.Requester.Issuer, a.Requester.Subject, a.Requester.ClientID, groups, scopes,
		a.Reason, a.ExchangeID, a.CreatedAt.UnixNano(), a.ExpiresAt.UnixNano(), a.MinApprovals, approvals.Pending, a.Tool); err != nil {
		return err
	}
	return tx.Commit()
}

// OpenApproval returns the open approval with binding, with its decisions in order, or
// an error wrapping approvals.ErrNotFound.
func (s *Store) OpenApproval(ctx context.Context, binding string) (*approvals.Approval, error) {
	a, err := s.readOne(ctx, "binding = ? AND closed = 0", binding)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open approval: %w", err)
	}
	return a, nil
}

// Approval returns the approval with id, with its decisions in order, or an error
// wrapping approvals.ErrNotFound.
func (s *Store) Approval(ctx context.Context, id string) (*approvals.Approval, error) {
	a, err := s.readOne(ctx, "id = ?", id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: approval %q: %w", id, err)
	}
	return a, nil
}

// readOne returns the approval the condition cond selects, read in one snapshot with
// its decisions, or approvals.ErrNotFound.
func (s *Store) readOne(ctx context.Context, cond string, args ...any) (*approvals.Approval, error) {
	var as []*approvals.Approval
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		as, err = selectApprovals(ctx, tx, "WHERE "+cond+" LIMIT 1", args...)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, approvals.ErrNotFound
	}
	return as[0], nil
}

// Approvals lists the approvals matching f, newest (greatest id) first, with their
// decisions. f.Limit defaults to 50 and is capped at 500; f.Before pages: pass the id
// of the last approval of the previous page.
func (s *Store) Approvals(ctx context.Context, f approvals.Filter) ([]*approvals.Approval, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = defaultApprovalLimit
	case limit > maxApprovalLimit:
		limit = maxApprovalLimit
	}
	var where []string
	var args []any
	cond := func(c string, v any) {
		where = append(where, c)
		args = append(args, v)
	}
	if f.State != "" {
		cond("state = ?", f.State)
	}
	if f.Route != "" {
		cond("route = ?", f.Route)
	}
	if f.Subject != "" {
		cond("requester_subject = ?", f.Subject)
	}
	if f.Before != "" {
		cond("id < ?", f.Before)
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	var as []*approvals.Approval
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		as, err = selectApprovals(ctx, tx, q, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: approvals: %w", err)
	}
	return as, nil
}

// DecideApproval adds d to approval id if it is Pending, open, and now is before its
// ExpiresAt, and returns the approval as it then is: Denied on a Deny, Approved once
// MinApprovals distinct approvers (by issuer and subject) approved, else still Pending.
// DecidedAt is now when the state changed. A zero d.At is taken as now. Decisions are
// kept in the order the store accepted them. It returns an error wrapping
// approvals.ErrNotFound, approvals.ErrNotPending, or approvals.ErrAlreadyDecided when
// d's approver decided this approval before; then nothing is written.
func (s *Store) DecideApproval(ctx context.Context, id string, d approvals.Decision, now time.Time) (*approvals.Approval, error) {
	if err := s.writable(); err != nil {
		return nil, err
	}
	a, err := s.decideApproval(ctx, id, d, now)
	if err != nil {
		return nil, fmt.Errorf("sqlite: decide approval %q: %w", id, err)
	}
	return a, nil
}

func (s *Store) decideApproval(ctx context.Context, id string, d approvals.Decision, now time.Time) (*approvals.Approval, error) {
	if d.Verdict != approvals.Approve && d.Verdict != approvals.Deny {
		return nil, fmt.Errorf("unknown verdict %q", d.Verdict)
	}
	if d.Approver.Subject == "" {
		// Fail closed: an anonymous approver cannot be told from another one.
		return nil, errors.New("approver has no subject")
	}
	if d.At.IsZero() {
		d.At = now
	}
	groups, err := jsonList(d.Approver.Groups)
	if err != nil {
		return nil, err
	}
	scopes, err := jsonList(d.Approver.Scopes)
	if err != nil {
		return nil, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	var state approvals.State
	var closed bool
	var expires int64
	var need int
	err = tx.QueryRowContext(ctx, "SELECT state, closed, expires_ns, min_approvals FROM approvals WHERE id = ?", id).
		Scan(&state, &closed, &expires, &need)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, approvals.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if state != approvals.Pending || closed || now.UnixNano() >= expires {
		return nil, approvals.ErrNotPending
	}
	// Checked here rather than left to the UNIQUE constraint, so that the error can be
	// told apart without reading the driver's message; the write lock held since the
	// transaction began keeps the answer true until the insert.
	var decided bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM approval_decisions
		WHERE approval_id = ? AND approver_subject = ?)`,
		id, d.Approver.Subject).Scan(&decided); err != nil {
		return nil, err
	}
	if decided {
		return nil, approvals.ErrAlreadyDecided
	}
	if _, err := tx.ExecContext(ctx, insertDecision, id, id, d.Approver.Issuer, d.Approver.Subject, d.Approver.ClientID,
		groups, scopes, d.Verdict, d.Comment, d.At.UnixNano(), d.Via); err != nil {
		return nil, fmt.Errorf("insert decision: %w", err)
	}

	next := approvals.Pending
	switch d.Verdict {
	case approvals.Deny:
		next = approvals.Denied
	case approvals.Approve:
		// Approvers are distinct by the UNIQUE constraint on their subject.
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = ? AND verdict = ?",
			id, approvals.Approve).Scan(&n); err != nil {
			return nil, err
		}
		if n >= need {
			next = approvals.Approved
		}
	}
	if next != approvals.Pending {
		if _, err := tx.ExecContext(ctx, "UPDATE approvals SET state = ?, decided_ns = ? WHERE id = ?", next, now.UnixNano(), id); err != nil {
			return nil, err
		}
	}
	as, err := selectApprovals(ctx, tx, "WHERE id = ?", id)
	if err != nil {
		return nil, err
	}
	if len(as) != 1 {
		return nil, approvals.ErrNotFound // cannot happen: the row was read above
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return as[0], nil
}

// ConsumeApproval marks approval id Used by exchange at now, and closed, if it is
// Approved, open, and now is before its ExpiresAt. It reports whether this call did so:
// of many concurrent callers, in any number of processes sharing the file, exactly one
// gets true. An unknown id is false, not an error.
func (s *Store) ConsumeApproval(ctx context.Context, id, exchange string, now time.Time) (bool, error) {
	if err := s.writable(); err != nil {
		return false, err
	}
	// One conditional statement: SQLite runs it under the file's write lock, so the
	// check and the change cannot be split by another consumer.
	n, err := s.exec(ctx, `UPDATE approvals SET state = ?, closed = 1, used_ns = ?, used_by = ?
		WHERE id = ? AND state = ? AND closed = 0 AND expires_ns > ?`,
		approvals.Used, now.UnixNano(), exchange, id, approvals.Approved, now.UnixNano())
	if err != nil {
		return false, fmt.Errorf("sqlite: consume approval %q: %w", id, err)
	}
	return n == 1, nil
}

// CloseApproval closes approval id if it is open, setting its state to Expired when it
// was Pending or Approved (a Denied or Expired one keeps its state). It reports whether
// this call closed it; an unknown id is false, not an error.
func (s *Store) CloseApproval(ctx context.Context, id string) (bool, error) {
	if err := s.writable(); err != nil {
		return false, err
	}
	n, err := s.exec(ctx, `UPDATE approvals SET closed = 1,
		state = CASE WHEN state IN (?, ?) THEN ? ELSE state END
		WHERE id = ? AND closed = 0`,
		approvals.Pending, approvals.Approved, approvals.Expired, id)
	if err != nil {
		return false, fmt.Errorf("sqlite: close approval %q: %w", id, err)
	}
	return n == 1, nil
}

// exec runs one statement on the writer and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ExpireApprovals sets every open Pending or Approved approval whose ExpiresAt is not
// after now to Expired, leaving it open so that the requester's next retry learns of
// the expiry, and returns them as they then are, in id order. DecidedAt is unchanged.
func (s *Store) ExpireApprovals(ctx context.Context, now time.Time) ([]*approvals.Approval, error) {
	if err := s.writable(); err != nil {
		return nil, err
	}
	as, err := s.expireApprovals(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("sqlite: expire approvals: %w", err)
	}
	return as, nil
}

func (s *Store) expireApprovals(ctx context.Context, now time.Time) ([]*approvals.Approval, error) {
	const due = "WHERE state IN (?, ?) AND closed = 0 AND expires_ns <= ?"
	args := []any{approvals.Pending, approvals.Approved, now.UnixNano()}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// The write lock held since the transaction began keeps the selected rows the
	// ones the update changes.
	as, err := selectApprovals(ctx, tx, due+" ORDER BY id", args...)
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, "UPDATE approvals SET state = ? "+due, append([]any{approvals.Expired}, args...)...); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	for _, a := range as {
		a.State = approvals.Expired
	}
	return as, nil
}

// PendingApprovals counts the open Pending approvals requested by subject (by every
// subject when subject is "") that expire after now.
func (s *Store) PendingApprovals(ctx context.Context, subject string, now time.Time) (int, error) {
	q := "SELECT COUNT(*) FROM approvals WHERE state = ? AND closed = 0 AND expires_ns > ?"
	args := []any{approvals.Pending, now.UnixNano()}
	if subject != "" {
		q += " AND requester_subject = ?"
		args = append(args, subject)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: pending approvals: %w", err)
	}
	return n, nil
}

// read runs fn in a read transaction on the readers, so that what fn reads in several
// queries is one snapshot of the file.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// selectApprovals returns the approvals "SELECT approvalColumns FROM approvals" + rest
// selects, in its order, each with its decisions.
func selectApprovals(ctx context.Context, tx *sql.Tx, rest string, args ...any) ([]*approvals.Approval, error) {
	rows, err := tx.QueryContext(ctx, "SELECT "+approvalColumns+" FROM approvals "+rest, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []*approvals.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, err
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if err := loadDecisions(ctx, tx, as); err != nil {
		return nil, err
	}
	return as, nil
}

// loadDecisions sets the decisions of each of as, in the order they were made, with
// one query for up to decisionChunk approvals.
func loadDecisions(ctx context.Context, tx *sql.Tx, as []*approvals.Approval) error {
	for len(as) > 0 {
		chunk := as[:min(len(as), decisionChunk)]
		as = as[len(chunk):]
		byID := make(map[string]*approvals.Approval, len(chunk))
		args := make([]any, len(chunk))
		for i, a := range chunk {
			byID[a.ID] = a
			args[i] = a.ID
		}
		q := "SELECT " + decisionColumns + " FROM approval_decisions WHERE approval_id IN (?" +
			strings.Repeat(", ?", len(chunk)-1) + ") ORDER BY approval_id, seq"
		if err := scanDecisions(ctx, tx, q, args, byID); err != nil {
			return err
		}
	}
	return nil
}

func scanDecisions(ctx context.Context, tx *sql.Tx, q string, args []any, byID map[string]*approvals.Approval) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, groups, scopes string
		var d approvals.Decision
		var at int64
		if err := rows.Scan(&id, &d.Approver.Issuer, &d.Approver.Subject, &d.Approver.ClientID,
			&groups, &scopes, &d.Verdict, &d.Comment, &at, &d.Via); err != nil {
			return fmt.Errorf("read decisions: %w", err)
		}
		if d.Approver.Groups, err = parseList(groups); err != nil {
			return fmt.Errorf("approval %q: decision groups: %w", id, err)
		}
		if d.Approver.Scopes, err = parseList(scopes); err != nil {
			return fmt.Errorf("approval %q: decision scopes: %w", id, err)
		}
		d.At = time.Unix(0, at).UTC()
		if a := byID[id]; a != nil {
			a.Decisions = append(a.Decisions, d)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read decisions: %w", err)
	}
	return nil
}

// scanApproval scans a row of approvalColumns.
func scanApproval(sc scanner) (*approvals.Approval, error) {
	var a approvals.Approval
	var groups, scopes, headers string
	var created, expires int64
	var decided, used sql.NullInt64
	if err := sc.Scan(&a.ID, &a.Binding, &a.Route, &a.Method, &a.Path, &a.Query, &headers, &a.Body, &a.BodySize, &a.BodyHash,
		&a.Requester.Issuer, &a.Requester.Subject, &a.Requester.ClientID, &groups, &scopes,
		&a.Reason, &a.ExchangeID, &created, &expires, &a.MinApprovals, &a.State, &a.Closed, &decided, &used, &a.UsedBy, &a.Tool); err != nil {
		return nil, fmt.Errorf("read approval: %w", err)
	}
	var err error
	if a.Requester.Groups, err = parseList(groups); err != nil {
		return nil, fmt.Errorf("approval %q: requester groups: %w", a.ID, err)
	}
	if a.Requester.Scopes, err = parseList(scopes); err != nil {
		return nil, fmt.Errorf("approval %q: requester scopes: %w", a.ID, err)
	}
	if a.Headers, err = parseHeaders(headers); err != nil {
		return nil, fmt.Errorf("approval %q: headers: %w", a.ID, err)
	}
	a.CreatedAt = time.Unix(0, created).UTC()
	a.ExpiresAt = time.Unix(0, expires).UTC()
	a.DecidedAt = nullTime(decided)
	a.UsedAt = nullTime(used)
	return &a, nil
}

func nullTime(ns sql.NullInt64) *time.Time {
	if !ns.Valid {
		return nil
	}
	t := time.Unix(0, ns.Int64).UTC()
	return &t
}

// blob returns s as a BLOB value: never nil, which the driver would write as NULL.
func blob(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return []byte(s)
}

// jsonList encodes a list of groups or scopes as a JSON array, "[]" when empty.
func jsonList(v []string) (string, error) {
	if len(v) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// jsonHeaders encodes request headers as a JSON object, "{}" when there are none.
func jsonHeaders(h http.Header) (string, error) {
	if len(h) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// parseHeaders decodes jsonHeaders; no headers is nil.
func parseHeaders(s string) (http.Header, error) {
	var h http.Header
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, nil
	}
	return h, nil
}

// parseList decodes a jsonList; an empty list is nil.
func parseList(s string) ([]string, error) {
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}
