package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaseCursor takes or renews a lease in one statement. Of replicas racing for a free
// lease, INSERT ... ON CONFLICT lets one insert or update the row and makes the others
// wait for it and then re-check the condition on the row as it now is, so exactly one
// gets a row back. The conflict branch changes nothing (and returns no row) while
// another holder's lease runs.
const leaseCursor = `INSERT INTO export_cursors (name, after_seq, updated_ns, holder, lease_until_ns)
	VALUES ($1, 0, $2, $3, $4)
	ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until_ns = excluded.lease_until_ns
	WHERE export_cursors.holder = excluded.holder OR export_cursors.lease_until_ns < $2
	RETURNING after_seq`

// LeaseCursor gives holder the lease on the export cursor name until until, when it is
// free, ended before now, or holder's already, and returns the cursor and whether holder
// holds the lease. See export.CursorStore.
func (s *Store) LeaseCursor(ctx context.Context, name, holder string, now, until time.Time) (int64, bool, error) {
	if err := s.usable(ctx, true); err != nil {
		return 0, false, err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var after int64
	err := s.pool.QueryRow(ctx, leaseCursor, name, now.UnixNano(), holder, until.UnixNano()).Scan(&after)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, s.errorf(fmt.Sprintf("lease export cursor %q", name), err)
	}
	return after, true, nil
}

// AdvanceCursor sets the export cursor name to after and renews holder's lease until
// until, if holder holds it, and reports whether it did. See export.CursorStore.
func (s *Store) AdvanceCursor(ctx context.Context, name, holder string, after int64, now, until time.Time) (bool, error) {
	if err := s.usable(ctx, true); err != nil {
		return false, err
	}
	n, err := s.exec(ctx, `UPDATE export_cursors SET after_seq = $1, updated_ns = $2, lease_until_ns = $3
		WHERE name = $4 AND holder = $5`, after, now.UnixNano(), until.UnixNano(), name, holder)
	if err != nil {
		return false, s.errorf(fmt.Sprintf("advance export cursor %q", name), err)
	}
	return n == 1, nil
}

// ReleaseCursor ends holder's lease on the export cursor name, if it holds it.
func (s *Store) ReleaseCursor(ctx context.Context, name, holder string) error {
	if err := s.usable(ctx, true); err != nil {
		return err
	}
	if _, err := s.exec(ctx, "UPDATE export_cursors SET lease_until_ns = 0, holder = '' WHERE name = $1 AND holder = $2", name, holder); err != nil {
		return s.errorf(fmt.Sprintf("release export cursor %q", name), err)
	}
	return nil
}
