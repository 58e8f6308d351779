package recorder_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// waitHealth waits up to five seconds for the recorder's Health to be nil (want
// healthy) or not, and returns it.
func waitHealth(t *testing.T, rec *recorder.Recorder, healthy bool) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := rec.Health()
		if (err == nil) == healthy {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health = %v after 5s, want healthy=%t", err, healthy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHealthFileDeleted deletes the store's file under an idle, then a busy, strict
// recorder: Health must say so within the probe interval with no traffic, strict Begins
// must fail, the failure is logged once however many requests it refuses, and Health
// recovers when the file is back under its name.
func TestHealthFileDeleted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	st, err := sqlite.OpenPath(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs testkit.Buffer
	rec := recorder.New(st, recorder.Policy{Mode: recorder.Strict}, recorder.Options{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	defer rec.Close(context.Background())
	waitHealth(t, rec, true)
	if err := rec.Begin(t.Context(), exchange(1)); err != nil {
		t.Fatalf("Begin before = %v", err)
	}
	// Keep the files under other names, to put them back.
	for _, f := range []string{path, path + "-wal"} {
		if err := os.Link(f, f+".keep"); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitHealth(t, rec, false); !errors.Is(err, sqlite.ErrFileGone) {
		t.Errorf("Health after rm = %v, want ErrFileGone", err)
	}
	for i := range 20 {
		if err := rec.Begin(t.Context(), exchange(10+i)); !errors.Is(err, recorder.ErrUnavailable) {
			t.Fatalf("Begin after rm = %v, want ErrUnavailable", err)
		}
	}
	if n := strings.Count(logs.String(), "record store cannot be written"); n != 1 {
		t.Errorf("logged the unwritable store %d times for 20 refused requests, want once:\n%s", n, logs.String())
	}
	for _, f := range []string{path, path + "-wal"} {
		if err := os.Rename(f+".keep", f); err != nil {
			t.Fatal(err)
		}
	}
	waitHealth(t, rec, true)
	if err := rec.Begin(t.Context(), exchange(2)); err != nil {
		t.Errorf("Begin once the file is back = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "record store writable again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// TestHealthDiskFull fills the disk under an idle strict recorder, then starts one on
// the full disk (a gateway restarted there): Health must fail in both, where before the
// recorder knew only of commits, and an idle one had none to fail.
func TestHealthDiskFull(t *testing.T) {
	dir := testkit.Tmpfs(t, 2<<20)
	st, err := sqlite.OpenPath(t.Context(), filepath.Join(dir, "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := recorder.New(st, recorder.Policy{Mode: recorder.Strict}, recorder.Options{})
	defer rec.Close(context.Background())
	waitHealth(t, rec, true)
	fill := testkit.Fill(t, dir)
	waitHealth(t, rec, false)
	rec2 := recorder.New(st, recorder.Policy{Mode: recorder.Strict}, recorder.Options{})
	defer rec2.Close(context.Background())
	if err := waitHealth(t, rec2, false); err == nil {
		t.Error("a recorder started on a full disk is healthy")
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, rec, true)
	waitHealth(t, rec2, true)
}

// syncWatch is a store that tells when a sync the recorder asked for has returned, and
// when an unsynced append has.
type syncWatch struct {
	*sqlite.Store
	synced   chan error
	unsynced chan error
}

func (s *syncWatch) AppendUnsynced(ctx context.Context, entries []*recorder.Entry) error {
	err := s.Store.AppendUnsynced(ctx, entries)
	select {
	case s.unsynced <- err:
	default:
	}
	return err
}

func (s *syncWatch) Sync(ctx context.Context) error {
	err := s.Store.Sync(ctx)
	select {
	case s.synced <- err:
	default:
	}
	return err
}

// TestHealthSyncOnFullDisk: on a full disk the chain log still syncs, so the sync the
// writer owes an unsynced append succeeds while every append fails; that sync must not make the
// store look writable again (it did: /readyz said ready, and "writable again" was
// logged, between two refused requests).
func TestHealthSyncOnFullDisk(t *testing.T) {
	dir := testkit.Tmpfs(t, 16<<20)
	st, err := sqlite.OpenPath(t.Context(), filepath.Join(dir, "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := &syncWatch{Store: st, synced: make(chan error, 1), unsynced: make(chan error, 1)}
	var logs testkit.Buffer
	rec := recorder.New(w, recorder.Policy{Mode: recorder.Strict}, recorder.Options{Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	defer rec.Close(context.Background())
	waitHealth(t, rec, true)
	x := exchange(1)
	if err := rec.Begin(t.Context(), x); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Count(t.Context()); err != nil || n != 1 { // indexed
		t.Fatalf("Count = %d, %v; want 1", n, err)
	}
	select { // the sync of an earlier commit, if any, is not the one under test
	case <-w.synced:
	default:
	}
	fill := testkit.Fill(t, dir)
	defer os.Remove(fill)
	// A response no request waits for: appended unsynced (the chain log's blocks are
	// allocated ahead), to be synced within a second; indexing it into SQLite fails.
	rec.End(x)
	if err := <-w.unsynced; err != nil {
		t.Fatalf("the unsynced append on a full disk failed (%v): this disk cannot show the defect", err)
	}
	if n, err := st.Count(t.Context()); err != nil || n != 1 {
		t.Fatalf("Count = %d, %v; want the response entry logged and not indexed on the full disk", n, err)
	}
	for i := 2; rec.Begin(t.Context(), exchange(i)) == nil; i++ {
		if i > 1000 {
			t.Fatal("strict Begins still succeed on a full disk")
		}
	}
	select {
	case err := <-w.synced:
		if err != nil {
			t.Fatalf("the owed sync failed (%v): this disk cannot show the defect", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not sync its unsynced commit")
	}
	for range 10 {
		if err := rec.Health(); err == nil {
			t.Fatal("Health is nil after a sync on a full disk, with appends failing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "writable again") {
		t.Errorf("logged the store writable again on a full disk:\n%s", logs.String())
	}
}
