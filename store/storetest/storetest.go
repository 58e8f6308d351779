// Package storetest is the contract every record and approval store keeps: one suite
// of behavioural tests that store/sqlite and store/postgres both run, so the two
// cannot drift apart. A store's own tests call Run with a Backend; tests of what only
// one store has (SQLite's files, PostgreSQL's roles) stay in its package.
package storetest

import (
	"testing"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
)

// Store is what a store implements: records, unsynced appends, the health probe,
// approvals and the export cursors.
type Store interface {
	recorder.Store
	recorder.UnsyncedAppender
	recorder.Prober
	approvals.Store
	export.CursorStore
}

// Backend makes stores for the suite. Every field must be set.
type Backend struct {
	// New makes a new, empty database and returns the DSN that opens it.
	New func(t testing.TB) string
	// Open opens a writing store on dsn's database, as a gateway would (a second
	// Open is a second replica), and closes it when the test ends.
	Open func(t testing.TB, dsn string) Store
	// OpenReadOnly opens a read-only store on dsn's database, as an auditor's tool
	// would, and closes it when the test ends.
	OpenReadOnly func(t testing.TB, dsn string) Store
	// Exec runs query on dsn's database behind the stores' back, as someone with
	// access to the database would: to edit, delete, insert or reorder rows. query is
	// written in the SQL both stores' schemas accept, with ? placeholders.
	Exec func(t testing.TB, dsn, query string, args ...any) error
	// SetPruneChunk sets the most entries one of s's Prune transactions deletes.
	SetPruneChunk func(s Store, n int)
}

// The limits of List and Approvals every store applies.
const (
	defaultListLimit     = 100
	maxListLimit         = 1000
	defaultApprovalLimit = 50
	maxApprovalLimit     = 500
)

// Run runs the contract suite against b.
func Run(t *testing.T, b Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"AppendUnsynced", testAppendUnsynced},
		{"AppendGet", testAppendGet},
		{"LargeData", testLargeData},
		{"AppendAllOrNothing", testAppendAllOrNothing},
		{"DuplicateID", testDuplicateID},
		{"List", testList},
		{"ListLimit", testListLimit},
		{"ChainTamper", testChainTamper},
		{"TruncationChangesHead", testTruncationChangesHead},
		{"Prune", testPrune},
		{"VerifyDuringPrune", testVerifyDuringPrune},
		{"PrunePrefixOnly", testPrunePrefixOnly},
		{"PruneChunks", testPruneChunks},
		{"PruneConcurrent", testPruneConcurrent},
		{"Expire", testExpire},
		{"ExpireChunks", testExpireChunks},
		{"ExpireTamper", testExpireTamper},
		{"ConcurrentStores", testConcurrentStores},
		{"Reopen", testReopen},
		{"OpenReadOnly", testOpenReadOnly},
		{"ApprovalRoundTrip", testApprovalRoundTrip},
		{"CreateApprovalInvalid", testCreateApprovalInvalid},
		{"CreateApprovalOpen", testCreateApprovalOpen},
		{"CreateApprovalRace", testCreateApprovalRace},
		{"CreateApprovalCapRace", testCreateApprovalCapRace},
		{"DecideApproval", testDecideApproval},
		{"DecideApprovalRace", testDecideApprovalRace},
		{"ConsumeApproval", testConsumeApproval},
		{"ConsumeApprovalRace", testConsumeApprovalRace},
		{"CloseApproval", testCloseApproval},
		{"ExpireApprovals", testExpireApprovals},
		{"PendingApprovals", testPendingApprovals},
		{"Approvals", testApprovals},
		{"ApprovalsLimit", testApprovalsLimit},
		{"ApprovalsReadOnly", testApprovalsReadOnly},
		{"OpenBindingIndex", testOpenBindingIndex},
		{"CursorLease", testCursorLease},
		{"CursorDurable", testCursorDurable},
		{"CursorLeaseRace", testCursorLeaseRace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, b) })
	}
}

// db is one database of a test.
type db struct {
	b   Backend
	dsn string
}

// open makes a new database and opens a store on it.
func (b Backend) open(t testing.TB) (Store, db) {
	t.Helper()
	d := db{b: b, dsn: b.New(t)}
	return b.Open(t, d.dsn), d
}

// replicas returns s and n-1 more stores on d's database.
func (d db) replicas(t testing.TB, s Store, n int) []Store {
	t.Helper()
	stores := []Store{s}
	for range n - 1 {
		stores = append(stores, d.b.Open(t, d.dsn))
	}
	return stores
}

// exec runs query behind the store's back, failing the test on an error.
func (d db) exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if err := d.b.Exec(t, d.dsn, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}
