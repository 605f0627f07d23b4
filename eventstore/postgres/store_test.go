package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// newStore returns a store on a fresh, migrated database. Without a
// PostgreSQL server it fails the test, except under -short.
func newStore(tb testing.TB) *postgres.Store {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs PostgreSQL; skipped under -short")
	}
	pool := pgtest.NewPool(tb)
	if err := migrations.ApplyPostgres(context.Background(), pool); err != nil {
		tb.Fatalf("ApplyPostgres() error = %v", err)
	}
	level := slog.LevelError + 1 // the suite fails handlers on purpose
	if os.Getenv("LEDGERDESK_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	s, err := postgres.New(pool, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if err != nil {
		tb.Fatalf("New() error = %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t) })
}

func TestNew_rejectsNilPool(t *testing.T) {
	if _, err := postgres.New(nil, nil); err == nil {
		t.Errorf("New(nil, nil) error = nil, want an error")
	}
}

func TestTx_QueryRowWithoutRows(t *testing.T) {
	s := newStore(t)
	var n int
	err := s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		return tx.QueryRow(ctx, `SELECT 1 WHERE false`).Scan(&n)
	})
	if !errors.Is(err, eventstore.ErrNoRows) {
		t.Errorf("Row.Scan() of an empty result error = %v, want eventstore.ErrNoRows", err)
	}
}
