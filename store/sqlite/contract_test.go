package sqlite

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/store/storetest"
)

// TestContract runs the store contract, shared with store/postgres, on SQLite files.
// Several Stores on one file stand for several gateway processes on one host.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		New: func(t testing.TB) string { return "sqlite://" + filepath.Join(t.TempDir(), "keyhole.db") },
		Open: func(t testing.TB, dsn string) storetest.Store {
			t.Helper()
			s, err := Open(t.Context(), dsn)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		OpenReadOnly: func(t testing.TB, dsn string) storetest.Store {
			t.Helper()
			s, err := OpenReadOnly(t.Context(), dsn)
			if err != nil {
				t.Fatalf("OpenReadOnly: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Exec: func(t testing.TB, dsn, query string, args ...any) error {
			db := raw(t, strings.TrimPrefix(dsn, "sqlite://"))
			_, err := db.ExecContext(t.Context(), query, args...)
			return err
		},
		SetPruneChunk: func(s storetest.Store, n int) { s.(*Store).pruneChunk = n },
	})
}
