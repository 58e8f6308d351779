package export

import (
	"context"
	"time"
)

// CursorStore keeps, in the record store, how far each named push export has
// delivered, and which process may push it: a lease, so that several gateways sharing
// one store push each exchange once between them rather than once each. Times are the
// callers' clocks; processes sharing a store should agree on the time to well within a
// lease. store/sqlite and store/postgres implement it; both must be safe for concurrent
// use by any number of processes.
type CursorStore interface {
	// LeaseCursor gives holder the lease on name until until, when nobody holds it, its
	// lease ended before now, or holder holds it already (a renewal). It returns whether
	// holder now holds the lease and, when it does, the cursor: the chain sequence
	// number after which the export resumes (0 for a name never advanced).
	LeaseCursor(ctx context.Context, name, holder string, now, until time.Time) (after int64, held bool, err error)
	// AdvanceCursor sets name's cursor to after and renews the lease until until, if
	// holder still holds it (even expired, as long as nobody took it since). It reports
	// whether holder did; false changes nothing.
	AdvanceCursor(ctx context.Context, name, holder string, after int64, now, until time.Time) (held bool, err error)
	// ReleaseCursor ends holder's lease on name, if holder holds it, so that another
	// process takes over at once; the cursor stays.
	ReleaseCursor(ctx context.Context, name, holder string) error
}
