package pgtest_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

func TestNewDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped under -short")
	}
	ctx := context.Background()
	var names []string
	t.Run("gives each test its own empty database", func(t *testing.T) {
		for range 2 {
			u := pgtest.NewDatabase(t)
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatalf("NewDatabase() = %q, not a URL: %v", u, err)
			}
			names = append(names, strings.TrimPrefix(parsed.Path, "/"))
			conn, err := pgx.Connect(ctx, u)
			if err != nil {
				t.Fatalf("connect to the new database: %v", err)
			}
			var tables int
			err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables)
			_ = conn.Close(ctx)
			if err != nil || tables != 0 {
				t.Errorf("new database has %d tables (%v), want none", tables, err)
			}
		}
		if names[0] == names[1] {
			t.Errorf("NewDatabase() gave the same name twice: %s", names[0])
		}
	})
	// The subtest's cleanup has run: its databases must be gone.
	conn, err := pgx.Connect(ctx, pgtest.BaseURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	for _, name := range names {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("database %s still exists after the test ended", name)
		}
	}
}

func TestNewPool(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped under -short")
	}
	pool := pgtest.NewPool(t)
	var one int
	if err := pool.QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1 = %d, %v", one, err)
	}
}
