package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
)

// TestFileGone deletes, renames and replaces the database file (and its WAL) under an
// open store, as `rm data/keyhole.db*` does: SQLite keeps writing to the unlinked file
// and every commit succeeds into nothing. Every write must fail with ErrFileGone instead.
func TestFileGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(t *testing.T, path string)
	}{
		{"rm db and wal", func(t *testing.T, path string) {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(path + suffix)
			}
		}},
		{"rm db", func(t *testing.T, path string) { mustDo(t, os.Remove(path)) }},
		{"rm wal", func(t *testing.T, path string) { mustDo(t, os.Remove(path+"-wal")) }},
		{"renamed away", func(t *testing.T, path string) { mustDo(t, os.Rename(path, path+".bak")) }},
		{"replaced", func(t *testing.T, path string) {
			other := filepath.Join(filepath.Dir(path), "other.db")
			mustDo(t, os.WriteFile(other, nil, 0o600))
			mustDo(t, os.Rename(other, path))
		}},
		{"wal replaced", func(t *testing.T, path string) {
			other := filepath.Join(filepath.Dir(path), "other-wal")
			mustDo(t, os.WriteFile(other, nil, 0o600))
			mustDo(t, os.Rename(other, path+"-wal"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, path := open(t)
			appendPairs(t, s, 0, 2, 2)
			if err := s.Probe(t.Context()); err != nil {
				t.Fatalf("Probe before = %v, want nil", err)
			}
			tc.do(t, path)
			req, resp := pair(3, "ada", "r", "allowed", 200)
			for name, err := range map[string]error{
				"Append":         s.Append(t.Context(), []*recorder.Entry{req, resp}),
				"AppendUnsynced": s.AppendUnsynced(t.Context(), []*recorder.Entry{req, resp}),
				"Sync":           s.Sync(t.Context()),
				"Probe":          s.Probe(t.Context()),
			} {
				if !errors.Is(err, ErrFileGone) {
					t.Errorf("%s after the file went = %v, want ErrFileGone", name, err)
				}
			}
			if _, err := s.ExpireApprovals(t.Context(), base); !errors.Is(err, ErrFileGone) {
				t.Errorf("ExpireApprovals after the file went = %v, want ErrFileGone", err)
			}
		})
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestProbeFullDisk fills the filesystem an open store is on: Probe must fail (an idle
// gateway would otherwise stay ready while strict mode refuses everything), succeed
// again once space is freed, and fail after a restart on the full disk. (A disk cannot
// be made read-only under open files, busy as they are; the kernel's remount after an
// I/O error fails writes as a full disk does.)
func TestProbeFullDisk(t *testing.T) {
	dir := testkit.Tmpfs(t, 2<<20)
	path := filepath.Join(dir, "keyhole.db")
	s, err := OpenPath(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	appendPairs(t, s, 0, 4, 4)
	if err := s.Probe(t.Context()); err != nil {
		s.Close()
		t.Fatalf("Probe on a writable disk = %v, want nil", err)
	}
	fill := testkit.Fill(t, dir)
	if err := s.Probe(t.Context()); err == nil {
		t.Error("Probe on a full disk = nil, want an error")
	}
	mustDo(t, os.Remove(fill))
	if err := s.Probe(t.Context()); err != nil {
		t.Errorf("Probe once space is free = %v, want nil", err)
	}

	mustDo(t, s.Close())
	testkit.Fill(t, dir)
	if s, err = OpenPath(t.Context(), path); err != nil {
		t.Logf("OpenPath on a full disk = %v (refused at start: fine)", err)
		return
	}
	defer s.Close()
	if err := s.Probe(t.Context()); err == nil {
		t.Error("Probe after a restart on a full disk = nil, want an error")
	}
}
