package projections

import (
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// TestTableDDL_MatchesMigration keeps the DDL a rebuild uses identical to
// the tables the migration creates.
func TestTableDDL_MatchesMigration(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{DialectPostgres, DialectSQLite} {
		ms, err := migrations.List(dialect)
		if err != nil {
			t.Fatalf("List(%s) error = %v", dialect, err)
		}
		var script string
		for _, m := range ms {
			if m.Name == "0005_tickets.sql" {
				script = m.SQL
			}
		}
		if script == "" {
			t.Fatalf("%s: no 0005_tickets.sql", dialect)
		}
		for _, v := range append(ViewNames(), "generations") {
			want := generationsDDL
			if v != "generations" {
				if want, err = tableDDL(dialect, v, ""); err != nil {
					t.Fatalf("tableDDL(%s, %s) error = %v", dialect, v, err)
				}
			}
			if !strings.Contains(script, want) {
				t.Errorf("%s 0005_tickets.sql does not hold the DDL of %s:\n%s", dialect, v, want)
			}
		}
	}
}
