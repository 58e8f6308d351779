// Package pgtest gives tests a real PostgreSQL database of their own, on the server
// KEYHOLE_TEST_POSTGRES names (start one with `eval "$(.ci/postgres start)"`).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the variable holding the DSN of the test server; its role must be allowed to
// create databases and roles. RequireEnv set to 1 (as CI sets it) makes its absence a
// failure instead of a skip.
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
