// Package pgtest gives tests a real PostgreSQL database of their own, on the server
// KEYHOLE_TEST_POSTGRES names (start one with `eval "$(.ci/postgres start)"`).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the variable holding the DSN of the test server; its role must be allowed to
// create databases and roles, and to end other backends (pg_signal_backend: DROP DATABASE
// ... WITH (FORCE) ends an autovacuum worker in a test database too). RequireEnv set to
// 1 (as CI sets it) makes its absence a failure instead of a skip.
const (
	Env        = "KEYHOLE_TEST_POSTGRES"
	RequireEnv = "KEYHOLE_REQUIRE_POSTGRES"
)

// Server returns the DSN of the test server, skipping the test when Env is unset
// (failing it when RequireEnv is 1).
func Server(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(Env)
	if dsn == "" {
		const why = Env + " not set: run `eval \"$(.ci/postgres start)\"`"
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(why + " (" + RequireEnv + "=1: a missing PostgreSQL is a failure)")
		}
		t.Skip(why)
	}
	return dsn
}

// DSN creates a new, empty database on the test server and returns a DSN for it, as
// the server's role. The database is dropped, its connections closed, when the test
// ends.
func DSN(t testing.TB) string {
	t.Helper()
	server := Server(t)
	name := "keyhole_t_" + Name()
	admin(t, server, `CREATE DATABASE "`+name+`"`)
	t.Cleanup(func() { admin(t, server, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`) })
	return WithDatabase(t, server, name)
}

// Role creates a login role with a random name and password on the test server, for
// grants on the tables of dsn's database (a DSN from DSN), and returns its name and
// password. When the test ends its grants there are revoked and it is dropped.
func Role(t testing.TB, dsn string) (name, password string) {
	t.Helper()
	server := Server(t)
	name, password = "keyhole_r_"+Name(), Name()
	admin(t, server, `CREATE ROLE "`+name+`" LOGIN PASSWORD '`+password+`'`)
	t.Cleanup(func() {
		admin(t, dsn, `REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "`+name+`"`)
		admin(t, server, `DROP ROLE IF EXISTS "`+name+`"`)
	})
	return name, password
}

// Name returns 16 random hex digits, for names of databases and roles.
func Name() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Exec runs sql on the database dsn names, failing the test on an error.
func Exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	if err := TryExec(dsn, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TryExec runs sql on the database dsn names on a connection of its own, within ten seconds.
func TryExec(dsn, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryInt runs sql, which selects one integer, on the database dsn names, failing the
// test on an error.
func QueryInt(t testing.TB, dsn, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func admin(t testing.TB, server, sql string) {
	t.Helper()
	if err := TryExec(server, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// WithDatabase returns dsn naming database db instead.
func WithDatabase(t testing.TB, dsn, db string) string {
	t.Helper()
	return edit(t, dsn, func(u *url.URL) { u.Path = "/" + db }, " dbname="+db)
}

// WithUser returns dsn logging in as user with password instead.
func WithUser(t testing.TB, dsn, user, password string) string {
	t.Helper()
	return edit(t, dsn, func(u *url.URL) { u.User = url.UserPassword(user, password) }, " user="+user+" password="+password)
}

// edit changes a URL DSN with fn, and appends kv to a key=value one (a later key wins).
func edit(t testing.TB, dsn string, fn func(u *url.URL), kv string) string {
	t.Helper()
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + kv
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s is not a URL", Env)
	}
	fn(u)
	return u.String()
}

// Own is a PostgreSQL server of a test's own, for tests that restart it: the shared
// test server must stay up for the other tests running at the same time.
type Own struct {
	DSN    string // the keyhole role's database on it
	dir    string
	script string
}

// NewServer starts a server of the test's own with the repository's .ci/postgres
// (initdb into a temporary directory, as a non-root user), and stops and removes it
// when the test ends. Like Server, it skips the test when no test server is
// configured, or fails it when RequireEnv is 1: the tests that need PostgreSQL run
// together.
func NewServer(t testing.TB) *Own {
	t.Helper()
	Server(t)
	script, err := findScript()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, script, "start")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s start: %v\n%s", script, err, stderr.String())
	}
	o := &Own{script: script}
	for line := range strings.SplitSeq(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		v = strings.Trim(v, "'")
		switch {
		case ok && k == Env:
			o.DSN = v
		case ok && k == Env+"_DIR":
			o.dir = v
		}
	}
	if o.DSN == "" || o.dir == "" {
		t.Fatalf("%s start printed no DSN and directory: %q", script, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", o.dir).CombinedOutput(); err != nil {
			t.Errorf("%s stop: %v\n%s", script, err, out)
		}
	})
	return o
}

// Restart restarts the server (a fast shutdown: sessions are cut, committed data
// stays) on the same port, and returns once it accepts connections again.
func (o *Own) Restart(t testing.TB) { o.ctl(t, "restart") }

// Down stops the server (fast shutdown), keeping its data; Up starts it again on the
// same port.
func (o *Own) Down(t testing.TB) { o.ctl(t, "down") }

// Up starts a server Down stopped, and returns once it accepts connections.
func (o *Own) Up(t testing.TB) { o.ctl(t, "up") }

func (o *Own) ctl(t testing.TB, action string) {
	t.Helper()
	if out, err := exec.Command(o.script, action, o.dir).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", o.script, action, err, out)
	}
}

// findScript returns the path of .ci/postgres, looking up from the working directory
// (a package's directory when tests run).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, ".ci", "postgres")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pgtest: .ci/postgres not found above the working directory")
		}
		dir = parent
	}
}
