package sqlite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite/logframe"
	"github.com/oklog/ulid/v2"
)

// appendUnindexed appends n exchanges through s while its indexer is held off, and
// copies the files then, as a killed gateway leaves them: the entries are in the log,
// not in SQLite. It returns the copy's path.
func appendUnindexed(t *testing.T, s *Store, path string, n int) string {
	t.Helper()
	s.chain.indexMu.Lock() // the indexer waits: nothing reaches SQLite
	defer s.chain.indexMu.Unlock()
	for i := range n {
		req, resp := pair(100+i, "alice", "items", "allowed", 200)
		if err := s.Append(t.Context(), []*recorder.Entry{req}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendUnsynced(t.Context(), []*recorder.Entry{resp}); err != nil {
			t.Fatal(err)
		}
	}
	killed := filepath.Join(t.TempDir(), "killed.db")
	for _, suffix := range []string{"", "-wal", logSuffix} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(killed+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return killed
}

// TestChainLogRecovery: entries a killed gateway had logged but not indexed are in the
// store once it is opened again, writable or read-only, and the chain verifies; a
// frame cut off by the crash is dropped.
func TestChainLogRecovery(t *testing.T) {
	for _, tt := range []struct {
		name string
		torn []byte // appended to the log after the crash
	}{
		{"clean", nil},
		{"torn tail", []byte{0x40, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'}},
		{"garbage tail", bytes.Repeat([]byte{0xff}, 100)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, live := open(t)
			appendPairs(t, s, 0, 3, 3) // indexed
			s.drain(t.Context())
			path := appendUnindexed(t, s, live, 5)
			logPath := path + logSuffix
			if tt.torn != nil {
				f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write(tt.torn)
				f.Close()
			}
			var n int64
			if err := raw(t, path).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM entries").Scan(&n); err != nil || n != 6 {
				t.Fatalf("entries in SQLite after the crash = %d, %v; want 6 (the rest only in the log)", n, err)
			}

			ro, err := OpenReadOnly(t.Context(), "sqlite://"+path)
			if err != nil {
				t.Fatal(err)
			}
			if rep, err := recorder.Verify(t.Context(), ro, nil); err != nil || !rep.OK || rep.Entries != 16 {
				t.Errorf("read-only Verify after the crash = %+v, %v; want OK, 16 entries", rep, err)
			}
			if n, err := ro.Count(t.Context()); err != nil || n != 16 {
				t.Errorf("read-only Count = %d, %v; want 16", n, err)
			}
			ro.Close()

			s2, err := OpenPath(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if rep, err := recorder.Verify(t.Context(), s2, nil); err != nil || !rep.OK || rep.Entries != 16 {
				t.Errorf("Verify after reopening = %+v, %v; want OK, 16 entries", rep, err)
			}
			recs, _, err := s2.List(t.Context(), recorder.Filter{})
			if err != nil || len(recs) != 8 {
				t.Fatalf("List after reopening = %d, %v; want 8 exchanges", len(recs), err)
			}
			for _, r := range recs {
				if r.Response == nil {
					t.Errorf("exchange %s lost its response", r.Request.ExchangeID)
				}
			}
			if fi, err := os.Stat(logPath); err != nil || fi.Size() != 0 {
				t.Errorf("log after recovery: %v, %v; want it empty", fi, err)
			}
			// The chain goes on from the recovered head.
			appendPairs(t, s2, 8, 9, 1)
			if rep, err := recorder.Verify(t.Context(), s2, nil); err != nil || !rep.OK || rep.Entries != 18 {
				t.Errorf("Verify after one more = %+v, %v; want OK, 18 entries", rep, err)
			}
		})
	}
}

// TestChainLogOfAnotherChain: a log whose entries do not continue the database's chain
// (a database restored from an older backup beside a newer log) is refused, writable
// and read-only, rather than indexed onto the wrong chain or dropped.
func TestChainLogOfAnotherChain(t *testing.T) {
	s, path := open(t)
	appendPairs(t, s, 0, 2, 2)
	backup := filepath.Join(t.TempDir(), "backup.db")
	if _, err := raw(t, path).ExecContext(t.Context(), "VACUUM INTO ?", backup); err != nil {
		t.Fatal(err)
	}
	appendPairs(t, s, 2, 4, 2)
	// Empty the log: entries 5-8 are in the database only.
	if err := s.chain.direct(t.Context(), func() (*recorder.Entry, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	killed := appendUnindexed(t, s, path, 2)
	// The backup has entries 1-4; the log begins at entry 9.
	if err := os.Rename(killed+logSuffix, backup+logSuffix); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPath(t.Context(), backup); err == nil {
		t.Error("OpenPath of a database behind its log = nil error, want one")
	}
	if _, err := OpenReadOnly(t.Context(), "sqlite://"+backup); err == nil {
		t.Error("OpenReadOnly of a database behind its log = nil error, want one")
	}
}

// TestOneWriterProcess: while a store is open for writing, its chain log is locked, so
// a store of another process (here another open file description, which flock tells
// apart the same way) cannot open the file for writing; Stores of one process share it.
func TestOneWriterProcess(t *testing.T) {
	s, path := open(t)
	if _, err := openLog(path + logSuffix); !errors.Is(err, errLogInUse) {
		t.Errorf("locking the log of an open store = %v, want errLogInUse", err)
	}
	other, err := OpenPath(t.Context(), path)
	if err != nil {
		t.Fatalf("a second Store of the process: %v", err)
	}
	appendPairs(t, other, 0, 2, 2)
	other.Close()
	appendPairs(t, s, 2, 4, 2)
	if rep, err := recorder.Verify(t.Context(), s, nil); err != nil || !rep.OK || rep.Entries != 8 {
		t.Errorf("Verify = %+v, %v; want OK, 8 entries", rep, err)
	}
	s.Close()
	l, err := openLog(path + logSuffix)
	if err != nil {
		t.Fatalf("locking the log of a closed store: %v", err)
	}
	l.close()
}

// TestLogEmptied: once what the log holds is indexed, the log is emptied within
// emptyEvery, so data retention removes from the database does not stay in it; Close
// empties it too.
func TestLogEmptied(t *testing.T) {
	s, path := open(t)
	appendPairs(t, s, 0, 1, 1)
	deadline := time.Now().Add(emptyEvery + 5*time.Second)
	for {
		s.chain.mu.Lock()
		size := s.chain.log.size
		s.chain.mu.Unlock()
		if size == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log still holds %d bytes", size)
		}
		// Another append, indexed after emptyEvery, empties it.
		time.Sleep(emptyEvery / 4)
		appendPairs(t, s, 1, 2, 1)
		s.drain(t.Context())
	}
	appendPairs(t, s, 2, 3, 1)
	s.Close()
	if fi, err := os.Stat(path + logSuffix); err != nil || fi.Size() != 0 {
		t.Errorf("log after Close: %v, %v; want it empty", fi, err)
	}
}

// TestCancelledRetentionFailsOnlyItself: a Prune whose caller has gone (its context
// ended) while entries wait for the indexer fails, and nothing else does: the next
// append is accepted and a read sees every exchange appended before it.
func TestCancelledRetentionFailsOnlyItself(t *testing.T) {
	s, _ := open(t)
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	for i := range 20 {
		req, resp := pair(i, "alice", "items", "allowed", 200)
		if err := s.Append(t.Context(), []*recorder.Entry{req, resp}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prune(gone, time.Now()); !errors.Is(err, context.Canceled) {
			t.Fatalf("Prune with an ended context = %v, want context.Canceled", err)
		}
		q, r := pair(1000+i, "bob", "items", "allowed", 200)
		if err := s.Append(t.Context(), []*recorder.Entry{q, r}); err != nil {
			t.Fatalf("round %d: an append after the cancelled Prune failed: %v", i, err)
		}
		recs, _, err := s.List(t.Context(), recorder.Filter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2*(i+1) {
			t.Fatalf("round %d: List saw %d exchanges, want %d", i, len(recs), 2*(i+1))
		}
	}
}

// TestUnreadableFrameRefused: a chain log whose frame is whole but not one this build
// reads (a newer gateway's codec) is not cut there on open — the entries in and after
// it are in no database — and the store is not opened, writable or read-only.
func TestUnreadableFrameRefused(t *testing.T) {
	s, live := open(t)
	appendPairs(t, s, 0, 1, 2)
	if err := s.drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	killed := appendUnindexed(t, s, live, 1)
	raw, err := os.ReadFile(killed + logSuffix)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := logframe.Read(raw, maxFrame)
	if err != nil || len(fs) == 0 {
		t.Fatalf("read the log: %d frames, %v", len(fs), err)
	}
	last := fs[len(fs)-1]
	newer := logframe.Append(append([]byte{}, raw[:last.Start]...), &last.Entry, last.Entry.Data, "zstd")
	if err := os.WriteFile(killed+logSuffix, newer, 0o600); err != nil {
		t.Fatal(err)
	}
	if s2, err := OpenPath(t.Context(), killed); err == nil {
		s2.Close()
		t.Fatal("a store opened on a log with a frame it cannot read")
	} else if !errors.Is(err, logframe.ErrForeign) {
		t.Fatalf("open: %v, want logframe.ErrForeign", err)
	}
	if r, err := OpenReadOnly(t.Context(), killed); err == nil {
		r.Close()
		t.Fatal("a read-only store opened on a log with a frame it cannot read")
	}
	if got, err := os.ReadFile(killed + logSuffix); err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("the log was changed (%d bytes, want %d; %v)", len(got), len(newer), err)
	}
}

// TestFailureWithNothingPendingClears: a failure that leaves no entry waiting — the
// WAL sync before emptying the log failed — is retried by the indexer, and appends are
// accepted again once it succeeds, without a restart.
func TestFailureWithNothingPendingClears(t *testing.T) {
	s, _ := open(t)
	appendPairs(t, s, 0, 2, 2)
	if err := s.drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := s.chain
	c.mu.Lock()
	c.failed = errors.New("sync: input/output error") // what a failed empty leaves
	c.mu.Unlock()
	req, resp := pair(9, "alice", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{req, resp}); err == nil {
		t.Fatal("an append was accepted while the store had failed")
	}
	signal(c.kick)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.Append(t.Context(), []*recorder.Entry{req, resp})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appends still refused 5 s after the failure cleared: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Probe(t.Context()); err != nil {
		t.Fatalf("Probe after recovery: %v", err)
	}
}

// TestFailedLogWriteIsFinal: once a write or sync of the chain log fails, the store
// takes no more appends, even when the disk would take them again — after a failed
// fdatasync the kernel may have dropped pages it could not write, so no later sync
// vouches for them — and its probe says why, until it is opened again.
func TestFailedLogWriteIsFinal(t *testing.T) {
	s, path := open(t)
	appendPairs(t, s, 0, 1, 2)
	l := s.chain.log
	good := l.f
	ro, err := os.Open(path + logSuffix) // a descriptor that cannot write: the write fails
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	s.chain.mu.Lock()
	l.f = ro
	s.chain.mu.Unlock()
	req, resp := pair(5, "alice", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{req, resp}); err == nil {
		t.Fatal("an append whose log write failed was acknowledged")
	}
	s.chain.mu.Lock()
	l.f = good // the disk takes writes again
	s.chain.mu.Unlock()
	if err := s.Append(t.Context(), []*recorder.Entry{req, resp}); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("append after a failed log write = %v, want it refused until restart", err)
	}
	if err := s.Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "chain log") {
		t.Fatalf("Probe = %v, want the chain log's failure", err)
	}
}

// TestOversizeEntryRefused: an entry too large for a chain log frame is refused before
// anything is written, so no acknowledged entry is one that recovery would read as a
// torn write.
func TestOversizeEntryRefused(t *testing.T) {
	s, _ := open(t)
	appendPairs(t, s, 0, 1, 2)
	big := &recorder.Entry{Kind: recorder.KindCheckpoint, At: time.Now(), Data: make([]byte, maxFrame)}
	if err := s.Append(t.Context(), []*recorder.Entry{big}); err == nil {
		t.Fatal("an entry larger than a frame holds was appended")
	}
	if big.Seq != 0 || big.Hash != "" {
		t.Fatalf("the refused entry was sealed: seq %d", big.Seq)
	}
	q, r := pair(7, "alice", "items", "allowed", 200)
	if err := s.Append(t.Context(), []*recorder.Entry{q, r}); err != nil {
		t.Fatal(err)
	}
	if q.Seq != 3 {
		t.Fatalf("the next entry has seq %d, want 3: the refused one took a place in the chain", q.Seq)
	}
}

// BenchmarkIndex inserts what the indexer inserts under load: batches of n exchanges'
// request and response entries (logged, so already sealed and packed), without the
// log's sync. It reports the CPU time per exchange.
func BenchmarkIndex(b *testing.B) {
	for _, n := range []int{8, 64} {
		b.Run(fmt.Sprintf("exchanges=%d", n), func(b *testing.B) {
			s, _ := open(b)
			c := s.chain
			seq, hash := c.seq, c.hash
			cpu0 := cpuTime(b)
			for b.Loop() {
				batch := make([]logged, 0, 2*n)
				for i := range n {
					id, at := ulid.Make().String(), time.Now()
					for _, e := range []recorder.Entry{
						{Kind: recorder.KindRequest, ExchangeID: id, At: at, Data: bytes.Repeat([]byte("q"), 900),
							Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: fmt.Sprintf("/v1/items/%d", i)},
						{Kind: recorder.KindResponse, ExchangeID: id, At: at, Data: bytes.Repeat([]byte("r"), 1100),
							Route: "items", Decision: "allowed", Status: 200},
					} {
						e.Seq = seq + 1
						recorder.Seal(&e, hash)
						seq, hash = e.Seq, e.Hash
						batch = append(batch, logged{e: e})
					}
				}
				if err := c.insert(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/exchange")
		})
	}
}
