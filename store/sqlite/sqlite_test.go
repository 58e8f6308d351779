package sqlite

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/klauspost/compress/s2"
	"github.com/oklog/ulid/v2"
)

// base is when the test exchanges begin; exchange i is received i seconds later.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// open opens a store in a new file, closed when the test ends.
func open(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyhole.db")
	s, err := Open(t.Context(), "sqlite://"+path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// raw opens the file behind the store's back, as an attacker with the file would.
func raw(t testing.TB, path string) *sql.DB {
	t.Helper()
	// What the stores of the test appended is in SQLite once indexed.
	if err := drainFile(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// xid returns the id of exchange i: ids sort like i, as ULIDs sort by time.
func xid(i int) string { return fmt.Sprintf("x%06d", i) }

// pair returns the request and response entries of exchange i.
func pair(i int, subject, route, decision string, status int) (*recorder.Entry, *recorder.Entry) {
	at := base.Add(time.Duration(i) * time.Second)
	req := &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: xid(i), At: at,
		Data:    fmt.Appendf(nil, `{"id":%q,"decision":%q,"request":{"method":"GET","path":"/v1/items/%d"}}`, xid(i), decision, i),
		Subject: subject, Route: route, Decision: decision, Method: "GET", Path: fmt.Sprintf("/v1/items/%d", i)}
	resp := &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: xid(i), At: at.Add(10 * time.Millisecond),
		Data:  fmt.Appendf(nil, `{"decision":%q,"response":{"status":%d}}`, decision, status),
		Route: route, Decision: decision, Status: status}
	return req, resp
}

// appendPairs appends exchanges from to to-1 (request then response), batch entries
// per Append.
func appendPairs(t testing.TB, s *Store, from, to, batch int) {
	t.Helper()
	var es []*recorder.Entry
	for i := from; i < to; i++ {
		req, resp := pair(i, "alice", "items", "allowed", 200)
		es = append(es, req, resp)
	}
	for len(es) > 0 {
		n := min(batch, len(es))
		if err := s.Append(t.Context(), es[:n]); err != nil {
			t.Fatalf("Append: %v", err)
		}
		es = es[n:]
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, dsn, file string
		wantErr         bool
	}{
		{name: "absolute", dsn: "sqlite://" + dir + "/a/b/keyhole.db", file: dir + "/a/b/keyhole.db"},
		{name: "relative", dsn: "sqlite://" + mustRel(t, dir+"/rel/keyhole.db"), file: dir + "/rel/keyhole.db"},
		{name: "no path", dsn: "sqlite://", wantErr: true},
		{name: "other scheme", dsn: "postgres://localhost/keyhole", wantErr: true},
		{name: "driver parameters", dsn: "sqlite://" + dir + "/x.db?_journal_mode=DELETE", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.dsn)
			if tt.wantErr {
				if err == nil {
					s.Close()
					t.Fatalf("Open(%q) = nil error, want one", tt.dsn)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.dsn, err)
			}
			defer s.Close()
			if err := s.Ping(t.Context()); err != nil {
				t.Errorf("Ping: %v", err)
			}
			fi, err := os.Stat(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("file mode = %o, want 600", got)
			}
			di, err := os.Stat(filepath.Dir(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := di.Mode().Perm(); got != 0o700 {
				t.Errorf("directory mode = %o, want 700", got)
			}
		})
	}
}

func mustRel(t *testing.T, path string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestPragmas(t *testing.T) {
	s, _ := open(t)
	tests := []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "synchronous", "2"}, // FULL
		{s.w, "busy_timeout", "5000"},
		{s.w, "foreign_keys", "1"},
		{s.r, "busy_timeout", "5000"},
		{s.r, "query_only", "1"},
	}
	for _, tt := range tests {
		var got string
		if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
		}
	}
}

// TestAppendUnsynced checks that an unsynced append joins the one chain like any other
// and leaves the write connection synchronous=FULL for every write after it, an
// approval's included.
// TestAppendUnsynced checks that an unsynced append leaves the write connection
// synchronous=FULL for every write after it, an approval's included (the contract
// suite checks that it joins the chain).
func TestAppendUnsynced(t *testing.T) {
	s, _ := open(t)
	req, _ := pair(1, "alice", "items", "allowed", 200)
	if err := s.AppendUnsynced(t.Context(), []*recorder.Entry{req}); err != nil {
		t.Fatal(err)
	}
	var sync string
	if err := s.w.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != "2" {
		t.Errorf("after AppendUnsynced the write connection is synchronous=%s, want 2 (FULL)", sync)
	}
}

// TestSyncFindsTheWAL checks that Sync flushes the WAL SQLite writes, also when the
// store is opened through a symbolic link: SQLite resolves the link and keeps its WAL
// beside the real file, where a Sync looking beside the link would find nothing and
// report success.
func TestSyncFindsTheWAL(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "keyhole.db")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), "sqlite://"+link)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req, _ := pair(1, "alice", "items", "allowed", 200)
	if err := s.AppendUnsynced(t.Context(), []*recorder.Entry{req}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path + "-wal"); err != nil {
		t.Errorf("Sync would flush %s-wal: %v", s.path, err)
	}
	if _, err := os.Stat(real + "-wal"); err != nil {
		t.Fatalf("SQLite's WAL is not beside the real file: %v", err)
	}
	if err := s.Sync(t.Context()); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

// TestReopen checks that opening a migrated file again applies no migration twice.
func TestReopen(t *testing.T) {
	s, path := open(t)
	applied := migrationRows(t, path)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err := OpenPath(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got := migrationRows(t, path); !slices.Equal(got, applied) {
		t.Errorf("schema_migrations after reopen = %v, want %v (not applied again)", got, applied)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", len(applied), len(ms))
	}
}

// migrationRows returns schema_migrations as "version@applied_ns" strings.
func migrationRows(t *testing.T, path string) []string {
	t.Helper()
	rows, err := raw(t, path).QueryContext(t.Context(), "SELECT version, applied_ns FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v, at int64
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d@%d", v, at))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFutureSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyhole.db")
	s, err := OpenPath(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	exec(t, raw(t, path), "INSERT INTO schema_migrations (version, applied_ns) VALUES (9999, 0)")
	s, err = OpenPath(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema = nil error, want one")
	}
	if !errors.Is(err, errSchemaTooNew) {
		t.Errorf("Open of a newer schema = %v, want errSchemaTooNew", err)
	}
}

// TestOpenReadOnly checks what the contract suite cannot: a read-only open leaves a
// copied file as it was, a missing file is an error and is not created, a write is
// refused with errReadOnly, and an unmigrated file is refused.
func TestOpenReadOnly(t *testing.T) {
	s, path := open(t)
	appendPairs(t, s, 0, 10, 8)

	// An auditor's read of a copy taken while the gateway ran (or of a crashed
	// gateway's files) leaves the file as it was: SQLite would otherwise checkpoint the
	// WAL into it when the last connection closes.
	evidence := filepath.Join(t.TempDir(), "evidence.db")
	for _, suffix := range []string{"", "-wal", "-shm", "-chain"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(evidence+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := os.ReadFile(evidence)
	ro, err := OpenReadOnly(t.Context(), "sqlite://"+evidence)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := recorder.Verify(t.Context(), ro, nil); err != nil || !rep.OK || rep.Entries != 20 {
		t.Errorf("Verify read-only = %+v, %v; want OK, 20 entries", rep, err)
	}
	ro.Close()
	if after, _ := os.ReadFile(evidence); !bytes.Equal(before, after) {
		t.Error("a read-only open changed the store file")
	}
	ro, err = OpenReadOnly(t.Context(), "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	req, _ := pair(99, "alice", "items", "allowed", 200)
	if err := ro.Append(t.Context(), []*recorder.Entry{req}); !errors.Is(err, errReadOnly) {
		t.Errorf("Append on a read-only store = %v, want errReadOnly", err)
	}

	missing := filepath.Join(t.TempDir(), "missing.db")
	if s, err := OpenReadOnly(t.Context(), "sqlite://"+missing); err == nil {
		s.Close()
		t.Error("OpenReadOnly of a missing file = nil error, want one")
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("OpenReadOnly created %s", missing)
	}

	exec(t, raw(t, path), "DELETE FROM schema_migrations")
	if s, err := OpenReadOnly(t.Context(), "sqlite://"+path); err == nil || !strings.Contains(err.Error(), "older") {
		if s != nil {
			s.Close()
		}
		t.Errorf("OpenReadOnly of an unmigrated file = %v, want an error saying it is older", err)
	}
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyhole.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenPath(t.Context(), path); err == nil {
		s.Close()
		t.Fatal("Open of a file that is not a database = nil error, want one")
	}
}

func BenchmarkAppend(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 1024)
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, _ := open(b)
			es := make([]*recorder.Entry, size)
			for b.Loop() {
				for i := range es {
					es[i] = &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: ulid.Make().String(), At: time.Now(),
						Data: data, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items"}
				}
				if err := s.Append(b.Context(), es); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkAppendExchanges appends what the recorder appends: each batch holds n new
// exchanges' request entries and the response entries of the n before, with records
// of a realistic size (n = 1 for a lone client, 8 under load). It reports the read and write system calls per
// entry (from /proc/self/io), which dominate the cost on machines with slow syscalls.
func BenchmarkAppendExchanges(b *testing.B) {
	req := bytes.Repeat([]byte("q"), 900)
	resp := bytes.Repeat([]byte("r"), 1100)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("exchanges=%d", n), func(b *testing.B) {
			s, _ := open(b)
			var prev []string
			es := make([]*recorder.Entry, 0, 2*n)
			calls0, cpu0, gs0 := ioCalls(b), cpuTime(b), goroutinesCreated()
			for b.Loop() {
				es = es[:0]
				ids := make([]string, n)
				for i := range ids {
					ids[i] = ulid.Make().String()
					es = append(es, &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: ids[i], At: time.Now(),
						Data: req, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items"})
				}
				for _, id := range prev {
					es = append(es, &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: id, At: time.Now(),
						Data: resp, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items", Status: 200})
				}
				prev = ids
				if err := s.Append(b.Context(), es); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*2*n)/b.Elapsed().Seconds(), "entries/s")
			drained(b, s)
			b.ReportMetric(float64(ioCalls(b)-calls0)/float64(b.N*2*n), "syscalls/entry")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N*2*n), "cpu-µs/entry")
			b.ReportMetric(float64(goroutinesCreated()-gs0)/float64(b.N*2*n), "goroutines/entry")
		})
	}
}

// BenchmarkAppendSplitExchanges appends as the recorder does under load (the harness's
// small GET at c=32): a synced Append of n exchanges' request entries, which the
// requests wait for, then an unsynced one of their response entries. It reports the
// bytes written (WAL frames: pages) and the CPU time per exchange.
func BenchmarkAppendSplitExchanges(b *testing.B) {
	req := bytes.Repeat([]byte("q"), 900)
	resp := bytes.Repeat([]byte("r"), 1100)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("exchanges=%d", n), func(b *testing.B) {
			s, _ := open(b)
			reqs, resps := make([]*recorder.Entry, n), make([]*recorder.Entry, n)
			w0, cpu0 := ioWritten(b), cpuTime(b)
			for b.Loop() {
				for i := range n {
					id, at := ulid.Make().String(), time.Now()
					reqs[i] = &recorder.Entry{Kind: recorder.KindRequest, ExchangeID: id, At: at,
						Data: req, Subject: "alice", Route: "items", Decision: "allowed", Method: "GET", Path: "/v1/items"}
					resps[i] = &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: id, At: at,
						Data: resp, Route: "items", Decision: "allowed", Status: 200}
				}
				if err := s.Append(b.Context(), reqs); err != nil {
					b.Fatal(err)
				}
				if err := s.AppendUnsynced(b.Context(), resps); err != nil {
					b.Fatal(err)
				}
			}
			drained(b, s)
			b.ReportMetric(float64(ioWritten(b)-w0)/float64(b.N*n), "wbytes/exchange")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/exchange")
		})
	}
}

// drained waits until what s's appends logged is in SQLite too, so that the CPU time
// and bytes a benchmark reports include indexing it.
func drained(b *testing.B, s *Store) {
	if err := s.drain(b.Context()); err != nil {
		b.Fatal(err)
	}
}

// ioCalls is the process's read and write system calls so far.
func ioCalls(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	var n int64
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && (k == "syscr" || k == "syscw") {
			var c int64
			fmt.Sscan(v, &c)
			n += c
		}
	}
	return n
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// goroutinesCreated is how many goroutines the process has started so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkAppendLargeExchange appends what the recorder appends for an exchange with a
// large answer, as the load harness's "100KB GET c=8" makes them: each Append holds one
// exchange's request entry and the response entry of the one before, whose Data holds a
// 64 KiB body (the harness's body limit) JSON-escaped. The body is either JSON like the
// harness's (a list of customers) or random base64, which no compressor shrinks much.
// It reports the bytes the process wrote (/proc/self/io's wchar) and the CPU time per
// exchange.
func BenchmarkAppendLargeExchange(b *testing.B) {
	bodies := map[string][]byte{"customers": customersJSON(64 << 10), "random": randomText(64 << 10)}
	for _, name := range []string{"customers", "random"} {
		b.Run("body="+name, func(b *testing.B) {
			data, err := json.Marshal(map[string]any{"decision": "allowed", "response": map[string]any{"status": 200,
				"headers": map[string][]string{"Content-Type": {"application/json"}},
				"body":    map[string]any{"text": string(bodies[name]), "size": 100 << 10, "truncated": true}}})
			if err != nil {
				b.Fatal(err)
			}
			req := fmt.Appendf(nil, `{"id":"01J","received_at":"2026-01-02T15:04:05Z","identity":{"subject":"agent"},"route":"api-read","decision":"allowed","request":{"method":"GET","path":"/big","headers":{"Accept":["*/*"],"Authorization":["[REDACTED]"]},"body":{"size":0}},"durations":{"total_ms":0}}`)
			s, _ := open(b)
			prev := ""
			b.SetBytes(int64(len(data)))
			wrote0, cpu0 := ioWritten(b), cpuTime(b)
			for b.Loop() {
				id := ulid.Make().String()
				es := []*recorder.Entry{{Kind: recorder.KindRequest, ExchangeID: id, At: time.Now(), Data: req,
					Subject: "agent", Route: "api-read", Decision: "allowed", Method: "GET", Path: "/big"}}
				if prev != "" {
					es = append(es, &recorder.Entry{Kind: recorder.KindResponse, ExchangeID: prev, At: time.Now(), Data: data,
						Route: "api-read", Decision: "allowed", Status: 200})
				}
				prev = id
				if err := s.Append(b.Context(), es); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ioWritten(b)-wrote0)/float64(b.N), "wbytes/exchange")
			drained(b, s)
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/exchange")
		})
	}
}

// customersJSON is about size bytes of a JSON list of customers, as the harness's backend serves.
func customersJSON(size int) []byte {
	var b []byte
	b = append(b, `{"customers":[`...)
	for i := 0; len(b) < size; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%d,"name":"Customer %d","email":"customer%d@example.com","ssn":"078-05-1120","card":"4242424242424242","phone":"+1 415 555 0100","notes":"prefers email; renewal due in Q3; account managed by the EMEA team"}`, i, i, i)
	}
	return append(b[:size-2], "]}"...)
}

// randomText is size bytes of base64 of random bytes.
func randomText(size int) []byte {
	raw := make([]byte, size*3/4+3)
	rand.Read(raw)
	return []byte(base64.StdEncoding.EncodeToString(raw)[:size])
}

// ioWritten is the bytes the process has passed to write system calls so far.
func ioWritten(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// TestLargeDataCompressed checks that large entry data that compresses is stored as
// S2, and data that is small or does not compress as it is (the contract's LargeData
// checks that both read back as appended).
func TestLargeDataCompressed(t *testing.T) {
	s, path := open(t)
	data := map[string][]byte{"small": customersJSON(1 << 10), "customers": customersJSON(64 << 10), "random": randomText(64 << 10)}
	names := []string{"small", "customers", "random"}
	var es []*recorder.Entry
	for i, name := range names {
		_, resp := pair(i, "alice", "items", "allowed", 200)
		resp.Data = data[name]
		es = append(es, resp)
	}
	if err := s.Append(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		var stored int
		var codec sql.NullString
		if err := raw(t, path).QueryRowContext(t.Context(), "SELECT length(data), data_codec FROM entries WHERE seq = ?", es[i].Seq).Scan(&stored, &codec); err != nil {
			t.Fatal(err)
		}
		compressed := name == "customers"
		if codec.Valid != compressed || (compressed && (codec.String != codecS2 || stored > len(data[name])/4)) || (!compressed && stored != len(data[name])) {
			t.Errorf("%s (%d bytes): stored %d bytes, data_codec %v; want compressed %v", name, len(data[name]), stored, codec, compressed)
		}
	}
}

// TestListPlans checks that List's filters read an index of exchanges, so that a page
// of a large store is not a scan of every exchange: the tool filter in particular, whose
// index holds only the exchanges that called a tool.
func TestListPlans(t *testing.T) {
	_, path := open(t)
	db := raw(t, path)
	tests := []struct {
		f     recorder.Filter
		index string
	}{
		{recorder.Filter{Tool: "lookup_customer"}, "exchanges_tool"},
		{recorder.Filter{Tool: "lookup_customer", Cursor: "01J"}, "exchanges_tool"},
		{recorder.Filter{Subject: "alice"}, "exchanges_subject"},
		{recorder.Filter{Decision: "denied"}, "exchanges_decision"},
	}
	for _, tt := range tests {
		q, args := listQuery(tt.f, 10)
		rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if got := strings.Join(plan, "; "); !strings.Contains(got, "x USING INDEX "+tt.index) && !strings.Contains(got, "x USING COVERING INDEX "+tt.index) {
			t.Errorf("List(%+v) plan = %q, want it to read %s", tt.f, got, tt.index)
		}
	}
}

// TestCompressedBomb: a tampered row whose S2 data claims to decode to 4 GiB, or that
// does decode to 512 MiB of zeros from under a kilobyte, is read as stored — reported as
// altered by verification — without allocating what it claims.
func TestCompressedBomb(t *testing.T) {
	claims4GiB := []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x00} // a varint length of 2^32-1, then nothing
	zeros := s2.Encode(nil, make([]byte, 512<<20))
	for _, tt := range []struct {
		name string
		data []byte
	}{{"a length header claiming 4 GiB", claims4GiB}, {"a valid block of 512 MiB of zeros", zeros}} {
		t.Run(tt.name, func(t *testing.T) {
			s, path := open(t)
			req, resp := pair(0, "alice", "items", "allowed", 200)
			resp.Data = customersJSON(8 << 10)
			if err := s.Append(t.Context(), []*recorder.Entry{req, resp}); err != nil {
				t.Fatal(err)
			}
			if _, err := raw(t, path).ExecContext(t.Context(), "UPDATE entries SET data = ?, data_codec = 's2' WHERE seq = ?", tt.data, resp.Seq); err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rep, err := recorder.Verify(t.Context(), s, nil)
			runtime.ReadMemStats(&after)
			if err != nil || rep.OK {
				t.Errorf("Verify = %+v, %v; want the edited entry reported", rep, err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("verifying one tampered row allocated %d MiB", grew>>20)
			}
		})
	}
}
