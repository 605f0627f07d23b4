package projections

import (
	"context"
	"database/sql"
	"fmt"
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
		`SELECT table_name || ' ' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') || ' ' || coalesce(collation_name, '')
			FROM information_schema.columns WHERE table_name IN ('tickets', 'users', 'locations') ORDER BY 1`,
		`SELECT conrelid::regclass || ' ' || conname || ' ' || contype::text || ' ' || pg_get_constraintdef(oid)
			FROM pg_constraint WHERE conrelid IN ('tickets'::regclass, 'users'::regclass, 'locations'::regclass) ORDER BY 1`,
		`SELECT indexdef FROM pg_indexes WHERE tablename IN ('tickets', 'users', 'locations') ORDER BY 1`,
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

// TestRebuild_KeepsTheKeysOnSQLite wants the tables a SQLite rebuild swaps
// in to have the migration's columns and indexes, and their keys: SQLite
// cannot add a primary key to a filled table, so there a unique index
// named <table>_pkey over NOT NULL columns stands in for it, which is what
// a rowid table's primary key is.
func TestRebuild_KeepsTheKeysOnSQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, db := storetest.Embedded(t)
	before := sqliteSchema(t, db)
	if _, err := Rebuild(ctx, store, SQLReader(db), nil, RebuildOptions{Dialect: DialectSQLite}); err != nil {
		t.Fatalf("Rebuild() error = %v", err)
	}
	if diff := cmp.Diff(before, sqliteSchema(t, db)); diff != "" {
		t.Errorf("schema (-migration +rebuild):\n%s", diff)
	}
	insert := func(number int) string {
		return fmt.Sprintf(`INSERT INTO tickets (id, number, created_at, updated_at, version)
			VALUES ('t1', %d, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00', 1)`, number)
	}
	if _, err := db.ExecContext(ctx, insert(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, insert(2)); err == nil {
		t.Error("a second ticket t1 went in: the key is gone")
	}
	res, err := db.ExecContext(ctx, insert(3)+` ON CONFLICT (id) DO NOTHING`)
	if err != nil {
		t.Fatalf("ON CONFLICT (id) after the swap: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 0 {
		t.Errorf("ON CONFLICT DO NOTHING inserted %d rows", n)
	}
}

// sqliteSchema lists the view tables' columns (a primary key column counts
// as NOT NULL) and their indexes by uniqueness and columns.
func sqliteSchema(t *testing.T, db *sql.DB) []string {
	t.Helper()
	var out []string
	query := func(q string, fn func(*sql.Rows) error) {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			if err := fn(rows); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"tickets", "users", "locations"} {
		query(`SELECT name, type, "notnull", pk, coalesce(dflt_value, '') FROM pragma_table_info('`+table+`') ORDER BY cid`, func(r *sql.Rows) error {
			var name, typ, dflt string
			var notNull, pk int
			err := r.Scan(&name, &typ, &notNull, &pk, &dflt)
			out = append(out, fmt.Sprintf("%s.%s %s notnull=%t default=%q", table, name, typ, notNull == 1 || pk > 0, dflt))
			return err
		})
		query(`SELECT l."unique", (SELECT group_concat(name, ', ') FROM (SELECT name FROM pragma_index_info(l.name) ORDER BY seqno))
			FROM pragma_index_list('`+table+`') l ORDER BY 2`, func(r *sql.Rows) error {
			var unique int
			var cols string
			err := r.Scan(&unique, &cols)
			out = append(out, fmt.Sprintf("%s index unique=%t (%s)", table, unique == 1, cols))
			return err
		})
	}
	return out
}
