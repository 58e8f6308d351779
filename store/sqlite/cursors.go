package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// leaseCursor takes or renews a lease in one statement: SQLite runs it under the
// file's write lock, so of processes racing for a free lease exactly one gets a row
// back. The conflict branch changes nothing (and returns no row) while another holder's
// lease runs.
const leaseCursor = `INSERT INTO export_cursors (name, after_seq, updated_ns, holder, lease_until_ns)
	VALUES (?1, 0, ?2, ?3, ?4)
	ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until_ns = excluded.lease_until_ns
	WHERE export_cursors.holder = excluded.holder OR export_cursors.lease_until_ns < ?2
	RETURNING after_seq`

// LeaseCursor gives holder the lease on the export cursor name until until, when it is
// free, ended before now, or holder's already, and returns the cursor and whether holder
// holds the lease. See export.CursorStore.
func (s *Store) LeaseCursor(ctx context.Context, name, holder string, now, until time.Time) (int64, bool, error) {
	if err := s.writable(); err != nil {
		return 0, false, err
	}
	var after int64
	err := s.w.QueryRowContext(ctx, leaseCursor, name, now.UnixNano(), holder, until.UnixNano()).Scan(&after)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("sqlite: lease export cursor %q: %w", name, err)
	}
	return after, true, nil
}

// AdvanceCursor sets the export cursor name to after and renews holder's lease until
// until, if holder holds it, and reports whether it did. See export.CursorStore.
func (s *Store) AdvanceCursor(ctx context.Context, name, holder string, after int64, now, until time.Time) (bool, error) {
	if err := s.writable(); err != nil {
		return false, err
	}
	n, err := s.exec(ctx, `UPDATE export_cursors SET after_seq = ?, updated_ns = ?, lease_until_ns = ?
		WHERE name = ? AND holder = ?`, after, now.UnixNano(), until.UnixNano(), name, holder)
	if err != nil {
		return false, fmt.Errorf("sqlite: advance export cursor %q: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseCursor ends holder's lease on the export cursor name, if it holds it.
func (s *Store) ReleaseCursor(ctx context.Context, name, holder string) error {
	if err := s.writable(); err != nil {
		return err
	}
	if _, err := s.exec(ctx, "UPDATE export_cursors SET lease_until_ns = 0, holder = '' WHERE name = ? AND holder = ?", name, holder); err != nil {
		return fmt.Errorf("sqlite: release export cursor %q: %w", name, err)
	}
	return nil
}
