package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/internal/pgtest"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/storetest"
)

// opts keeps test pools small: the suite opens many stores at once.
var opts = Options{MaxConns: 4}

var approvalsFilter = approvals.Filter{}

func open(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestContract runs the store contract, shared with store/sqlite, on a real
// PostgreSQL: several Stores on one database stand for several gateway replicas.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		New:  func(t testing.TB) string { return pgtest.DSN(t) },
		Open: func(t testing.TB, dsn string) storetest.Store { return open(t, dsn) },
		OpenReadOnly: func(t testing.TB, dsn string) storetest.Store {
			t.Helper()
			s, err := OpenReadOnly(t.Context(), dsn, opts)
			if err != nil {
				t.Fatalf("OpenReadOnly: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		Exec: func(t testing.TB, dsn, query string, args ...any) error {
			return pgtest.TryExec(dsn, placeholders(query), args...)
		},
		SetPruneChunk: func(s storetest.Store, n int) { s.(*Store).pruneChunk = n },
	})
}

// placeholders turns the suite's ? placeholders into PostgreSQL's $1, $2, ...
func placeholders(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func pair(i int) []*recorder.Entry {
	at := time.Date(2025, 3, 1, 12, 0, i, 0, time.UTC)
	id := fmt.Sprintf("x%06d", i)
	return []*recorder.Entry{
		{Kind: recorder.KindRequest, ExchangeID: id, At: at, Data: []byte(`{}`), Subject: "alice", Route: "items", Decision: "allowed"},
		{Kind: recorder.KindResponse, ExchangeID: id, At: at, Data: []byte(`{}`), Route: "items", Decision: "allowed", Status: 200},
	}
}

func migrationNames(t *testing.T, dsn string) []string {
	t.Helper()
	s := open(t, dsn)
	rows, err := s.pool.Query(t.Context(), "SELECT name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// TestMigrate checks that Migrate applies every migration once and then nothing, that
// replicas starting together migrate once, and that a newer schema is refused with a
// message saying what to do.
func TestMigrate(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, m := range ms {
		all = append(all, m.name)
	}
	dsn := pgtest.DSN(t)
	applied, err := Migrate(t.Context(), dsn, opts)
	if err != nil || !slices.Equal(applied, all) {
		t.Fatalf("Migrate = %v, %v; want %v", applied, err, all)
	}
	if applied, err := Migrate(t.Context(), dsn, opts); err != nil || len(applied) != 0 {
		t.Errorf("second Migrate = %v, %v; want nothing applied", applied, err)
	}

	// Replicas starting together on an empty database.
	fresh := pgtest.DSN(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(t.Context(), fresh, opts)
			if err != nil {
				t.Errorf("concurrent Open: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	if got := migrationNames(t, fresh); !slices.Equal(got, all) {
		t.Errorf("schema_migrations after concurrent Opens = %v, want %v once each", got, all)
	}

	pgtest.Exec(t, dsn, "INSERT INTO schema_migrations (version, name, applied_ns) VALUES (9999, '9999_future.sql', 0)")
	want := fmt.Sprintf("database schema version 9999 is newer than this keyhole (knows %d): upgrade keyhole", len(ms))
	for name, open := range map[string]func() (*Store, error){
		"Open":         func() (*Store, error) { return Open(t.Context(), dsn, opts) },
		"OpenReadOnly": func() (*Store, error) { return OpenReadOnly(t.Context(), dsn, opts) },
	} {
		s, err := open()
		if err == nil {
			s.Close()
			t.Fatalf("%s of a newer schema = nil error, want one", name)
		}
		if !errors.Is(err, errSchemaTooNew) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s of a newer schema = %q, want it to say %q", name, err, want)
		}
	}
}

// TestOpenReadOnlyRoles opens the store as an auditor role with only SELECT: it reads
// and verifies; a writer role with the documented grants appends and approves; a role
// with nothing granted cannot open it.
func TestOpenReadOnlyRoles(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := open(t, dsn)
	if err := s.Append(t.Context(), pair(1)); err != nil {
		t.Fatal(err)
	}
	db := dsn[strings.LastIndex(dsn, "/")+1:]
	if i := strings.IndexByte(db, '?'); i >= 0 {
		db = db[:i]
	}

	auditor, apw := pgtest.Role(t, dsn)
	pgtest.Exec(t, dsn, `GRANT SELECT ON schema_migrations, entries, exchanges, approvals, approval_decisions TO "`+auditor+`"`)
	ro, err := OpenReadOnly(t.Context(), pgtest.WithUser(t, dsn, auditor, apw), opts)
	if err != nil {
		t.Fatalf("OpenReadOnly as a SELECT-only role: %v", err)
	}
	defer ro.Close()
	if rep, err := recorder.Verify(t.Context(), ro, nil); err != nil || !rep.OK || rep.Entries != 2 {
		t.Errorf("Verify as auditor = %+v, %v; want OK, 2 entries", rep, err)
	}
	if _, err := ro.Get(t.Context(), "x000001"); err != nil {
		t.Errorf("Get as auditor: %v", err)
	}
	if _, err := ro.Approvals(t.Context(), approvalsFilter); err != nil {
		t.Errorf("Approvals as auditor: %v", err)
	}

	writer, wpw := pgtest.Role(t, dsn)
	pgtest.Exec(t, dsn, `GRANT SELECT, INSERT, UPDATE, DELETE ON schema_migrations, entries, chain_head, exchanges, approvals, approval_decisions, probe, export_cursors, settings TO "`+writer+`"`)
	w, err := Open(t.Context(), pgtest.WithUser(t, dsn, writer, wpw), opts)
	if err != nil {
		t.Fatalf("Open as a writer role: %v", err)
	}
	defer w.Close()
	if err := w.Append(t.Context(), pair(2)); err != nil {
		t.Errorf("Append as writer: %v", err)
	}
	if err := w.Probe(t.Context()); err != nil {
		t.Errorf("Probe as writer: %v", err)
	}
	if _, err := w.Prune(t.Context(), time.Date(2025, 3, 1, 12, 0, 2, 0, time.UTC)); err != nil {
		t.Errorf("Prune as writer: %v", err)
	}

	nobody, npw := pgtest.Role(t, dsn)
	if s, err := OpenReadOnly(t.Context(), pgtest.WithUser(t, dsn, nobody, npw), opts); err == nil {
		s.Close()
		t.Errorf("OpenReadOnly as %s, granted nothing = nil error, want one (database %s)", nobody, db)
	}
}

// TestOpenRefused checks what a wrong password, a password file, and a server that does
// not answer do: an error naming where, never the password, within the connect timeout.
func TestOpenRefused(t *testing.T) {
	dsn := pgtest.DSN(t)
	const planted = "Pl4nted-Secret-Value"
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("  "+planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dsn  string
		o    Options
		want string // in the error
	}{
		{"wrong password in the DSN", pgtest.WithUser(t, dsn, "keyhole", planted), opts, "as keyhole"},
		{"wrong password in a file", dsn, Options{PasswordFile: pwFile}, "as keyhole"},
		{"nothing listening", "postgres://keyhole:" + planted + "@127.0.0.1:1/keyhole?sslmode=disable", Options{ConnectTimeout: time.Second}, "127.0.0.1:1/keyhole"},
		{"not a DSN", "postgres://keyhole:" + planted + "@[::1/x", opts, "not a valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(t.Context(), tt.dsn, tt.o)
			if err == nil {
				s.Close()
				t.Fatal("Open = nil error, want one")
			}
			if strings.Contains(err.Error(), planted) || strings.Contains(fmt.Sprintf("%+v", err), planted) {
				t.Errorf("Open error %q holds the password", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error %q does not say %q", err, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Open took %v, want it bounded by the connect timeout", d)
			}
		})
	}
}

// TestBoundedWaits holds the chain head's lock from outside: an Append waits at most
// the statement timeout and fails, rather than hanging; the lock's release lets the
// next Append through.
func TestBoundedWaits(t *testing.T) {
	dsn := pgtest.DSN(t)
	s, err := Open(t.Context(), dsn, Options{MaxConns: 2, StatementTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	holder := open(t, dsn)
	tx, err := holder.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), lockHead); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Append(context.Background(), pair(1))
	if err == nil {
		t.Fatal("Append behind a held chain lock = nil error, want a timeout")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Append waited %v, want about the statement timeout", d)
	}
	tx.Rollback(t.Context())
	if err := s.Append(t.Context(), pair(1)); err != nil {
		t.Errorf("Append after the lock is released: %v", err)
	}
	if rep, err := recorder.Verify(t.Context(), s, nil); err != nil || !rep.OK || rep.Entries != 2 {
		t.Errorf("Verify = %+v, %v; want OK with 2 entries", rep, err)
	}
}

// TestIndexFollowsBatchOrder checks that a batch updates the exchange index in the
// order of its entries, as one statement per entry would: a response ahead of its
// request in one batch only joins the chain, and the next response completes the
// exchange.
func TestIndexFollowsBatchOrder(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	p := pair(1)
	early, late := *p[1], *p[1]
	early.Status, late.Status = 500, 201
	if err := s.Append(t.Context(), []*recorder.Entry{&early, p[0], &late}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(t.Context(), p[0].ExchangeID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Request.Seq != 2 || rec.Response == nil || rec.Response.Seq != 3 || rec.Response.Status != 201 {
		t.Errorf("Get = request %d, response %+v; want request 2 and response 3 (status 201)", rec.Request.Seq, rec.Response)
	}
	if recs, _, err := s.List(t.Context(), recorder.Filter{Status: 201}); err != nil || len(recs) != 1 {
		t.Errorf("List(Status 201) = %d records, %v; want 1", len(recs), err)
	}
}

// TestGuessedHead checks the appends that guess where the chain head is: a Store whose
// guess another Store made stale appends after the real head; one alone on the
// database appends on its guess; a batch that fails on either path writes nothing, the
// head included; and the chain verifies throughout.
func TestGuessedHead(t *testing.T) {
	dsn := pgtest.DSN(t)
	a, b := open(t, dsn), open(t, dsn)
	appendOK := func(s *Store, i int, wantSeq int64) {
		t.Helper()
		es := pair(i)
		if err := s.Append(t.Context(), es); err != nil {
			t.Fatalf("Append(pair %d): %v", i, err)
		}
		if es[0].Seq != wantSeq || es[1].Seq != wantSeq+1 {
			t.Errorf("Append(pair %d) numbered %d, %d; want %d, %d", i, es[0].Seq, es[1].Seq, wantSeq, wantSeq+1)
		}
	}
	appendOK(a, 1, 1) // a knows the head now
	appendOK(b, 2, 3)
	appendOK(a, 3, 5) // a's guess is stale
	if a.guessed.missed.IsZero() {
		t.Error("a's stale guess was not noticed")
	}
	a.guessed.missed = time.Time{} // no pause: a guesses again, and rightly
	appendOK(a, 4, 7)
	if !a.guessed.missed.IsZero() {
		t.Error("a's guess missed with no other Store appending")
	}

	// A statement failing after the head moved (the guess) or was locked (b, whose
	// guess is stale: it locks first) leaves nothing written.
	pgtest.Exec(t, dsn, "ALTER TABLE entries ADD CONSTRAINT test_small CHECK (length(data) < 100) NOT VALID")
	for name, s := range map[string]*Store{"guessed": a, "locked": b} {
		es := pair(9)
		es[1].Data = []byte(strings.Repeat("x", 200))
		if err := s.Append(t.Context(), es); err == nil {
			t.Errorf("%s: Append of a refused entry = nil error, want one", name)
		}
		if n := pgtest.QueryInt(t, dsn, "SELECT seq FROM chain_head"); n != 8 {
			t.Errorf("%s: chain head at %d after a failed Append, want 8", name, n)
		}
	}
	pgtest.Exec(t, dsn, "ALTER TABLE entries DROP CONSTRAINT test_small")
	appendOK(a, 5, 9)
	appendOK(b, 6, 11)
	if rep, err := recorder.Verify(t.Context(), a, nil); err != nil || !rep.OK || rep.Entries != 12 {
		t.Errorf("Verify = %+v, %v; want OK with 12 entries", rep, err)
	}
}

// TestStricterDefaultIsolation: on a database whose default isolation is REPEATABLE
// READ, three Stores appending at once still all succeed, and the chain verifies — the
// store's sessions run READ COMMITTED, which the head lock's re-read needs (under the
// database's default they failed each other with serialization errors).
func TestStricterDefaultIsolation(t *testing.T) {
	dsn := pgtest.DSN(t)
	name := dsn[strings.LastIndexByte(dsn, '/')+1:]
	name, _, _ = strings.Cut(name, "?")
	pgtest.Exec(t, dsn, `ALTER DATABASE "`+name+`" SET default_transaction_isolation = 'repeatable read'`)
	stores := []*Store{open(t, dsn), open(t, dsn), open(t, dsn)}
	var wg sync.WaitGroup
	var failed sync.Map
	for si, s := range stores {
		for w := range 3 {
			wg.Go(func() {
				for i := range 20 {
					if err := s.Append(t.Context(), pair((si*3+w)*100+i)); err != nil {
						failed.Store(err.Error(), true)
					}
				}
			})
		}
	}
	wg.Wait()
	failed.Range(func(k, _ any) bool { t.Errorf("Append: %v", k); return true })
	rep, err := recorder.Verify(t.Context(), stores[0], nil)
	if err != nil || !rep.OK || rep.Entries != 360 {
		t.Errorf("Verify = %+v, %v; want 360 entries intact", rep, err)
	}
}
