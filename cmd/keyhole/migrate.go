package main

import (
	"context"
	"fmt"
	"io"

	"github.com/keyholehq/keyhole/store/postgres"
)

// cmdMigrate applies the PostgreSQL store's schema migrations by hand, for operators
// who run them before a rollout, or as the database's owner while the gateways' role
// may only read and write rows.
func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	dsn := fs.String("store", "", "the PostgreSQL store, postgres://user@host:5432/db?sslmode=verify-full (password in the DSN, PGPASSWORD or ~/.pgpass)")
	pwFile := fs.String("password-file", "", "file holding the password")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !isPostgres(*dsn) {
		fmt.Fprintln(stderr, "keyhole migrate: --store must name a PostgreSQL store (postgres://...); a SQLite store is migrated by the gateway that opens it")
		return errUsage
	}
	applied, err := postgres.Migrate(ctx, *dsn, postgres.Options{PasswordFile: *pwFile})
	for _, name := range applied {
		fmt.Fprintf(stdout, "applied %s\n", name)
	}
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "the schema is up to date: nothing to apply")
	}
	return nil
}
