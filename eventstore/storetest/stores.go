package storetest

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// Embedded opens a fresh, migrated embedded store in tb.TempDir(); it is
// closed on cleanup. The database is returned too, for tests that read
// tables directly. Tests of the packages above the store use it (and
// Postgres) instead of wiring the backends themselves.
func Embedded(tb testing.TB) (*embedded.Store, *sql.DB) {
	tb.Helper()
	db, err := embedded.OpenDB(filepath.Join(tb.TempDir(), "ledgerdesk.db"))
	if err != nil {
		tb.Fatalf("storetest: open embedded store: %v", err)
	}
	if err := migrations.ApplySQLite(context.Background(), db); err != nil {
		tb.Fatalf("storetest: migrate embedded store: %v", err)
	}
	s := embedded.New(db, slog.New(slog.DiscardHandler))
	tb.Cleanup(func() { _ = s.Close() })
	return s, db
}

// Postgres opens a fresh, migrated PostgreSQL store on a database of its
// own (pgtest.NewPool: fails, never skips, without a server) and returns
// the pool too, for tests that read tables directly.
func Postgres(tb testing.TB) (*postgres.Store, *pgxpool.Pool) {
	tb.Helper()
	pool := pgtest.NewPool(tb)
	if err := migrations.ApplyPostgres(context.Background(), pool); err != nil {
		tb.Fatalf("storetest: migrate PostgreSQL store: %v", err)
	}
	s, err := postgres.New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("storetest: open PostgreSQL store: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s, pool
}

// Open returns a fresh store of kind "embedded" or "postgres".
func Open(tb testing.TB, kind string) eventstore.Store {
	tb.Helper()
	if kind == "postgres" {
		s, _ := Postgres(tb)
		return s
	}
	s, _ := Embedded(tb)
	return s
}

// Each runs fn as parallel subtests "embedded" and "postgres", each with a
// fresh store.
func Each(t *testing.T, fn func(t *testing.T, store eventstore.Store)) {
	t.Helper()
	for _, kind := range []string{"embedded", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			fn(t, Open(t, kind))
		})
	}
}
