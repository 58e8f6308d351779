package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
)

// aid returns the id of approval i: ids sort like i, as ULIDs sort by time.
func aid(i int) string { return fmt.Sprintf("a%06d", i) }

// newApproval returns approval i, requested by subject on route: created i seconds
// after base, expiring an hour later, needing one approval.
func newApproval(i int, subject, route string) *approvals.Approval {
	req := approvals.Identity{Issuer: "https://issuer.test", Subject: subject, ClientID: "cli"}
	body := fmt.Sprintf(`{"n":%d}`, i)
	hash := approvals.BodyHash([]byte(body))
	path := fmt.Sprintf("/v1/items/%d", i)
	created := base.Add(time.Duration(i) * time.Second)
	return &approvals.Approval{
		ID: aid(i), Binding: approvals.Bind(req, route, "POST", path, "", approvals.HeadersHash(nil), hash),
		Route: route, Method: "POST", Path: path,
		Body: body, BodySize: int64(len(body)), BodyHash: hash,
		Requester: req, ExchangeID: xid(i),
		CreatedAt: created, ExpiresAt: created.Add(time.Hour), MinApprovals: 1,
	}
}

// create stores approvals, failing the test on an error.
func create(t *testing.T, s *Store, as ...*approvals.Approval) {
	t.Helper()
	for _, a := range as {
		if err := s.CreateApproval(t.Context(), a, 0); err != nil {
			t.Fatalf("CreateApproval(%s): %v", a.ID, err)
		}
	}
}

func get(t *testing.T, s *Store, id string) *approvals.Approval {
	t.Helper()
	a, err := s.Approval(t.Context(), id)
	if err != nil {
		t.Fatalf("Approval(%s): %v", id, err)
	}
	return a
}

// TestMigrateApprovals opens a file made by a build that knew only the first migration:
// its records stay, and approvals can be stored.
func TestMigrateApprovals(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[1].name != "0002_approvals.sql" {
		t.Fatalf("migrations = %v, want 0002_approvals.sql second", ms)
	}
	path := filepath.Join(t.TempDir(), "keyhole.db")
	db := raw(t, path)
	exec(t, db, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)`)
	exec(t, db, ms[0].sql)
	exec(t, db, "INSERT INTO schema_migrations (version, applied_ns) VALUES (1, 42)")
	db.Close()

	// The old build's store, then the new one.
	old, err := OpenReadOnly(t.Context(), "sqlite://"+path)
	if err == nil {
		old.Close()
		t.Fatal("OpenReadOnly of a file without approvals = nil error, want one: it must be migrated first")
	}
	s, err := OpenPath(t.Context(), path)
	if err != nil {
		t.Fatalf("Open of a version 1 file: %v", err)
	}
	defer s.Close()
	rows := migrationRows(t, path)
	if len(rows) != len(ms) || rows[0] != "1@42" {
		t.Errorf("schema_migrations = %v, want version 1 kept and %d versions", rows, len(ms))
	}
	appendPairs(t, s, 0, 2, 4)
	create(t, s, newApproval(0, "alice", "items"))
	if a := get(t, s, aid(0)); a.State != approvals.Pending {
		t.Errorf("approval after migration = %s, want pending", a.State)
	}
}
