package projections

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// TestCopyBinary_SameRowsAsPgx writes the same tickets and articles with
// the binary COPY encoder and with pgx's CopyFrom of their values, and
// wants the same table contents.
func TestCopyBinary_SameRowsAsPgx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store, pool := storetest.Postgres(t)
	for _, suffix := range []string{"_bin", "_pgx"} {
		ddl, err := tableDDL(DialectPostgres, "tickets", suffix)
		if err != nil {
			t.Fatal(err)
		}
		tables, _ := splitDDL(ddl)
		if err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error { return execAll(ctx, tx, tables) }); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("CET", 3600))
	old := time.Date(1969, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
	closed := at.Add(time.Hour)
	tickets := ticketRows{
		{ID: "t1", Number: 1, Subject: "Grüße <p> \"x\"", Status: "new", RequesterEmail: "a@b", ArticleCount: 2, CreatedAt: at, UpdatedAt: old, Version: 3},
		{ID: "t2", Number: -5, Subject: "", Status: "closed", Priority: "high", CreatedAt: old, UpdatedAt: at, ClosedAt: &closed, Version: 1 << 40},
	}
	for _, rows := range []struct {
		table, cols string
		columns     []string
		rows        binaryRows
	}{{"tickets", ticketColumns, ticketCols, tickets}} {
		if err := copyBinary(ctx, pool, rows.table+"_bin", rows.columns, rows.rows); err != nil {
			t.Fatalf("copyBinary(%s) error = %v", rows.table, err)
		}
		if err := PGReader(pool).(pgReader).insertRows(ctx, rowBatch{table: rows.table + "_pgx", columns: rows.columns,
			rows: anyRowsOf(rows.rows)}); err != nil {
			t.Fatalf("insertRows(%s) error = %v", rows.table, err)
		}
		read := func(table string) []map[string]any {
			r, err := pool.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s ORDER BY 1, 2`, rows.cols, table))
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(r, pgx.RowToMap)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		want := read(rows.table + "_pgx")
		if len(want) != 2 {
			t.Fatalf("%s: %d rows through pgx, want 2", rows.table, len(want))
		}
		if diff := cmp.Diff(want, read(rows.table+"_bin")); diff != "" {
			t.Errorf("%s (-pgx +binary):\n%s", rows.table, diff)
		}
	}
}

func anyRowsOf(r rowSource) anyRows {
	out := make(anyRows, r.len())
	for i := range out {
		out[i] = r.values(i)
	}
	return out
}
