package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyholehq/keyhole/approvals"
)

// Approval list limits, those of store/sqlite.
const (
	defaultApprovalLimit = 50
	maxApprovalLimit     = 500
)

// subjectLock is the first key of the transaction advisory lock CreateApproval takes
// on its requester's subject (the second is the subject's hash): "kh" in ASCII.
const subjectLock int32 = 0x6b68

const (
	// approvalColumns are the columns scanApproval reads, in its order.
	approvalColumns = `id, binding, route, method, path, query, headers, body, body_size, body_hash,
		requester_issuer, requester_subject, requester_client_id, requester_groups, requester_scopes,
		reason, exchange_id, created_ns, expires_ns, min_approvals, state, closed, decided_ns, used_ns, used_by, tool`
	insertApproval = `INSERT INTO approvals (` + approvalColumns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
			FALSE, NULL, NULL, '', $22)`
	// decisionColumns are the columns scanDecisions reads, in its order.
	decisionColumns = `approval_id, approver_issuer, approver_subject, approver_client_id,
		approver_groups, approver_scopes, verdict, comment, at_ns, via`
	insertDecision = `INSERT INTO approval_decisions (seq, ` + decisionColumns + `)
		VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM approval_decisions WHERE approval_id = $1),
			$1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
)

// Constraints whose violation CreateApproval and DecideApproval report as sentinels,
// should two replicas get past the checks together.
const (
	openBindingIndex  = "approvals_open_binding"
	oneVerdictPerUser = "approval_decisions_approval_id_approver_subject_key"
)

// violated reports whether err is a unique violation of the constraint or index name.
func violated(err error, name string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == name
}

// CreateApproval inserts a as a new approval, Pending and open, unless an open
// approval holds a.Binding (an error wrapping approvals.ErrOpen) or, when maxPending >
// 0, a's requester already has maxPending open pending approvals unexpired at
// a.CreatedAt (approvals.ErrTooMany); then it inserts nothing.
//
// The transaction first takes an advisory transaction lock on the requester's subject,
// so the count and the insert of one requester's approvals are serialised across every
// replica and the cap holds exactly; the lock ends with the transaction. (SERIALIZABLE
// would hold too, but fail the losers with serialisation errors to retry.) The partial
// unique index on open bindings holds against any other writer. a's State, Closed,
// DecidedAt, UsedAt, UsedBy and Decisions are not read; on a nil return they are set
// as stored.
func (s *Store) CreateApproval(ctx context.Context, a *approvals.Approval, maxPending int) error {
	if err := s.usable(ctx, true); err != nil {
		return err
	}
	if err := s.createApproval(ctx, a, maxPending); err != nil {
		if errors.Is(err, approvals.ErrOpen) || errors.Is(err, approvals.ErrTooMany) {
			return fmt.Errorf("postgres: create approval: %w", err)
		}
		return s.errorf("create approval", err)
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
	err = s.inTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", subjectLock, a.Requester.Subject); err != nil {
			return fmt.Errorf("requester lock: %w", err)
		}
		var open bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM approvals WHERE binding = $1 AND NOT closed)", a.Binding).Scan(&open); err != nil {
			return err
		}
		if open {
			return approvals.ErrOpen
		}
		if maxPending > 0 {
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM approvals
				WHERE requester_subject = $1 AND state = $2 AND NOT closed AND expires_ns > $3`,
				a.Requester.Subject, approvals.Pending, a.CreatedAt.UnixNano()).Scan(&n); err != nil {
				return err
			}
			if n >= maxPending {
				return approvals.ErrTooMany
			}
		}
		_, err := tx.Exec(ctx, insertApproval,
			a.ID, a.Binding, a.Route, a.Method, a.Path, a.Query, headers, []byte(a.Body), a.BodySize, a.BodyHash,
			a.Requester.Issuer, a.Requester.Subject, a.Requester.ClientID, groups, scopes,
			a.Reason, a.ExchangeID, a.CreatedAt.UnixNano(), a.ExpiresAt.UnixNano(), a.MinApprovals, approvals.Pending, a.Tool)
		return err
	})
	if violated(err, openBindingIndex) {
		return approvals.ErrOpen // the same binding under another subject's lock
	}
	return err
}

// OpenApproval returns the open approval with binding, with its decisions in order, or
// an error wrapping approvals.ErrNotFound.
func (s *Store) OpenApproval(ctx context.Context, binding string) (*approvals.Approval, error) {
	a, err := s.readOne(ctx, "binding = $1 AND NOT closed", binding)
	if err != nil {
		return nil, s.wrap("open approval", err)
	}
	return a, nil
}

// Approval returns the approval with id, with its decisions in order, or an error
// wrapping approvals.ErrNotFound.
func (s *Store) Approval(ctx context.Context, id string) (*approvals.Approval, error) {
	a, err := s.readOne(ctx, "id = $1", id)
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("approval %q", id), err)
	}
	return a, nil
}

// wrap wraps a sentinel of the approvals package plainly and any other error with
// where the database is.
func (s *Store) wrap(op string, err error) error {
	for _, sentinel := range []error{approvals.ErrNotFound, approvals.ErrNotPending, approvals.ErrAlreadyDecided} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("postgres: %s: %w", op, err)
		}
	}
	return s.errorf(op, err)
}

// readOne returns the approval cond selects, read in one snapshot with its decisions,
// or approvals.ErrNotFound.
func (s *Store) readOne(ctx context.Context, cond string, args ...any) (*approvals.Approval, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, err
	}
	var as []*approvals.Approval
	err := s.inTx(ctx, readTx, func(ctx context.Context, tx pgx.Tx) error {
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

// readTx reads several queries as one snapshot.
var readTx = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// Approvals lists the approvals matching f, newest (greatest id) first, with their
// decisions. f.Limit defaults to 50 and is capped at 500; f.Before pages: pass the id
// of the last approval of the previous page.
func (s *Store) Approvals(ctx context.Context, f approvals.Filter) ([]*approvals.Approval, error) {
	if err := s.usable(ctx, false); err != nil {
		return nil, err
	}
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
		args = append(args, v)
		where = append(where, c+" $"+strconv.Itoa(len(args)))
	}
	if f.State != "" {
		cond("state =", f.State)
	}
	if f.Route != "" {
		cond("route =", f.Route)
	}
	if f.Subject != "" {
		cond("requester_subject =", f.Subject)
	}
	if f.Before != "" {
		cond("id <", f.Before)
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += " ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
	var as []*approvals.Approval
	err := s.inTx(ctx, readTx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		as, err = selectApprovals(ctx, tx, q, args...)
		return err
	})
	if err != nil {
		return nil, s.errorf("approvals", err)
	}
	return as, nil
}

// DecideApproval adds d to approval id if it is Pending, open, and now is before its
// ExpiresAt, and returns the approval as it then is: Denied on a Deny, Approved once
// MinApprovals distinct approvers approved, else still Pending. The approval's row is
// locked (SELECT ... FOR UPDATE) for the transaction, so decisions made on several
// replicas at once are counted one after the other. It returns an error wrapping
// approvals.ErrNotFound, approvals.ErrNotPending, or approvals.ErrAlreadyDecided; then
// nothing is written.
func (s *Store) DecideApproval(ctx context.Context, id string, d approvals.Decision, now time.Time) (*approvals.Approval, error) {
	if err := s.usable(ctx, true); err != nil {
		return nil, err
	}
	a, err := s.decideApproval(ctx, id, d, now)
	if err != nil {
		return nil, s.wrap(fmt.Sprintf("decide approval %q", id), err)
	}
	if a.State != approvals.Pending {
		s.announce(ctx, id)
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
	var out *approvals.Approval
	err = s.inTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		var state approvals.State
		var closed bool
		var expires int64
		var need int
		err := tx.QueryRow(ctx, "SELECT state, closed, expires_ns, min_approvals FROM approvals WHERE id = $1 FOR UPDATE", id).
			Scan(&state, &closed, &expires, &need)
		if errors.Is(err, pgx.ErrNoRows) {
			return approvals.ErrNotFound
		}
		if err != nil {
			return err
		}
		if state != approvals.Pending || closed || now.UnixNano() >= expires {
			return approvals.ErrNotPending
		}
		var decided bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM approval_decisions
			WHERE approval_id = $1 AND approver_subject = $2)`, id, d.Approver.Subject).Scan(&decided); err != nil {
			return err
		}
		if decided {
			return approvals.ErrAlreadyDecided
		}
		if _, err := tx.Exec(ctx, insertDecision, id, d.Approver.Issuer, d.Approver.Subject, d.Approver.ClientID,
			groups, scopes, d.Verdict, d.Comment, d.At.UnixNano(), d.Via); err != nil {
			if violated(err, oneVerdictPerUser) {
				return approvals.ErrAlreadyDecided
			}
			return fmt.Errorf("insert decision: %w", err)
		}
		next := approvals.Pending
		switch d.Verdict {
		case approvals.Deny:
			next = approvals.Denied
		case approvals.Approve:
			var n int
			if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM approval_decisions WHERE approval_id = $1 AND verdict = $2",
				id, approvals.Approve).Scan(&n); err != nil {
				return err
			}
			if n >= need {
				next = approvals.Approved
			}
		}
		if next != approvals.Pending {
			if _, err := tx.Exec(ctx, "UPDATE approvals SET state = $1, decided_ns = $2 WHERE id = $3", next, now.UnixNano(), id); err != nil {
				return err
			}
		}
		as, err := selectApprovals(ctx, tx, "WHERE id = $1", id)
		if err != nil {
			return err
		}
		if len(as) != 1 {
			return approvals.ErrNotFound // cannot happen: the row is locked
		}
		out = as[0]
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ConsumeApproval marks approval id Used by exchange at now, and closed, if it is
// Approved, open, and now is before its ExpiresAt. It reports whether this call did so:
// it is one conditional UPDATE, and PostgreSQL re-checks the condition on a row another
// transaction changed meanwhile, so of many concurrent callers on any number of
// replicas exactly one gets true. An unknown id is false, not an error.
func (s *Store) ConsumeApproval(ctx context.Context, id, exchange string, now time.Time) (bool, error) {
	if err := s.usable(ctx, true); err != nil {
		return false, err
	}
	n, err := s.exec(ctx, `UPDATE approvals SET state = $1, closed = TRUE, used_ns = $2, used_by = $3
		WHERE id = $4 AND state = $5 AND NOT closed AND expires_ns > $2`,
		approvals.Used, now.UnixNano(), exchange, id, approvals.Approved)
	if err != nil {
		return false, s.errorf(fmt.Sprintf("consume approval %q", id), err)
	}
	if n == 1 {
		s.announce(ctx, id)
	}
	return n == 1, nil
}

// CloseApproval closes approval id if it is open, setting its state to Expired when it
// was Pending or Approved (a Denied or Expired one keeps its state). It reports whether
// this call closed it; an unknown id is false, not an error.
func (s *Store) CloseApproval(ctx context.Context, id string) (bool, error) {
	if err := s.usable(ctx, true); err != nil {
		return false, err
	}
	n, err := s.exec(ctx, `UPDATE approvals SET closed = TRUE,
		state = CASE WHEN state IN ($1, $2) THEN $3 ELSE state END
		WHERE id = $4 AND NOT closed`,
		approvals.Pending, approvals.Approved, approvals.Expired, id)
	if err != nil {
		return false, s.errorf(fmt.Sprintf("close approval %q", id), err)
	}
	if n == 1 {
		s.announce(ctx, id)
	}
	return n == 1, nil
}

// exec runs one statement and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, q string, args ...any) (int64, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// ExpireApprovals sets every open Pending or Approved approval whose ExpiresAt is not
// after now to Expired, leaving it open so that the requester's next retry learns of
// the expiry, and returns them as they then are, in id order. Replicas expiring at
// once each return the approvals they changed: none twice.
func (s *Store) ExpireApprovals(ctx context.Context, now time.Time) ([]*approvals.Approval, error) {
	if err := s.usable(ctx, true); err != nil {
		return nil, err
	}
	var as []*approvals.Approval
	err := s.inTx(ctx, pgx.TxOptions{}, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE approvals SET state = $1
			WHERE state IN ($2, $3) AND NOT closed AND expires_ns <= $4 RETURNING id`,
			approvals.Expired, approvals.Pending, approvals.Approved, now.UnixNano())
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(ids) == 0 {
			return err
		}
		as, err = selectApprovals(ctx, tx, "WHERE id = ANY($1) ORDER BY id", ids)
		return err
	})
	if err != nil {
		return nil, s.errorf("expire approvals", err)
	}
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	s.announce(ctx, ids...)
	return as, nil
}

// PendingApprovals counts the open Pending approvals requested by subject (by every
// subject when subject is "") that expire after now.
func (s *Store) PendingApprovals(ctx context.Context, subject string, now time.Time) (int, error) {
	if err := s.usable(ctx, false); err != nil {
		return 0, err
	}
	q := "SELECT COUNT(*) FROM approvals WHERE state = $1 AND NOT closed AND expires_ns > $2"
	args := []any{approvals.Pending, now.UnixNano()}
	if subject != "" {
		q += " AND requester_subject = $3"
		args = append(args, subject)
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var n int
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, s.errorf("pending approvals", err)
	}
	return n, nil
}

// selectApprovals returns the approvals "SELECT approvalColumns FROM approvals" + rest
// selects, in its order, each with its decisions.
func selectApprovals(ctx context.Context, tx pgx.Tx, rest string, args ...any) ([]*approvals.Approval, error) {
	rows, err := tx.Query(ctx, "SELECT "+approvalColumns+" FROM approvals "+rest, args...)
	if err != nil {
		return nil, err
	}
	var as []*approvals.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		as = append(as, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, nil
	}
	return as, loadDecisions(ctx, tx, as)
}

// loadDecisions sets the decisions of each of as, in the order they were made, with
// one query.
func loadDecisions(ctx context.Context, tx pgx.Tx, as []*approvals.Approval) error {
	byID := make(map[string]*approvals.Approval, len(as))
	ids := make([]string, len(as))
	for i, a := range as {
		byID[a.ID] = a
		ids[i] = a.ID
	}
	rows, err := tx.Query(ctx, "SELECT "+decisionColumns+" FROM approval_decisions WHERE approval_id = ANY($1) ORDER BY approval_id, seq", ids)
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
func scanApproval(row pgx.Row) (*approvals.Approval, error) {
	var a approvals.Approval
	var groups, scopes, headers string
	var body []byte
	var created, expires int64
	var decided, used pgtype.Int8
	if err := row.Scan(&a.ID, &a.Binding, &a.Route, &a.Method, &a.Path, &a.Query, &headers, &body, &a.BodySize, &a.BodyHash,
		&a.Requester.Issuer, &a.Requester.Subject, &a.Requester.ClientID, &groups, &scopes,
		&a.Reason, &a.ExchangeID, &created, &expires, &a.MinApprovals, &a.State, &a.Closed, &decided, &used, &a.UsedBy, &a.Tool); err != nil {
		return nil, fmt.Errorf("read approval: %w", err)
	}
	a.Body = string(body)
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

func nullTime(ns pgtype.Int8) *time.Time {
	if !ns.Valid {
		return nil
	}
	t := time.Unix(0, ns.Int64).UTC()
	return &t
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
