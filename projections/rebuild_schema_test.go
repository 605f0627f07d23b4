package projections

import (
	"context"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// TestRebuild_KeepsTheSchema wants the tables a PostgreSQL rebuild swaps in
// (primary keys added after the load) to have the columns, constraints and
// indexes of the migration's, up to the generation suffix of the names.
func TestRebuild_KeepsTheSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, pool := storetest.Postgres(t)
	before := pgSchema(t, pool)
	if _, err := Rebuild(ctx, store, PGReader(pool), nil, RebuildOptions{Dialect: DialectPostgres}); err != nil {
		t.Fatalf("Rebuild() error = %v", err)
	}
	if diff := cmp.Diff(before, pgSchema(t, pool)); diff != "" {
		t.Errorf("schema (-migration +rebuild):\n%s", diff)
	}
}

func pgSchema(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	suffix := regexp.MustCompile(`_g[0-9]+`)
	var out []string
	for _, q := range []string{
		`SELECT table_name || ' ' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
			FROM information_schema.columns WHERE table_name IN ('tickets', 'ticket_articles', 'users', 'locations') ORDER BY 1`,
		`SELECT conrelid::regclass || ' ' || conname || ' ' || contype::text || ' ' || pg_get_constraintdef(oid)
			FROM pg_constraint WHERE conrelid IN ('tickets'::regclass, 'ticket_articles'::regclass, 'users'::regclass, 'locations'::regclass) ORDER BY 1`,
		`SELECT indexdef FROM pg_indexes WHERE tablename IN ('tickets', 'ticket_articles', 'users', 'locations') ORDER BY 1`,
	} {
		rows, err := pool.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, suffix.ReplaceAllString(s, ""))
		}
		rows.Close()
	}
	return out
}
