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
		var script, directory string
		for _, m := range ms {
			switch m.Name {
			case "0005_tickets.sql":
				script = m.SQL
			case "0013_directory.sql":
				directory = m.SQL
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
			if dialect == DialectPostgres {
				// 0009_id_collation.sql gives these columns collation "C"
				// later; TestRebuild_KeepsTheSchema compares the result.
				want = strings.ReplaceAll(want, ` COLLATE "C"`, "")
			}
			// 0013_directory.sql adds the column removed to users and
			// locations, at the end.
			for _, table := range []string{"users", "locations"} {
				added := "ALTER TABLE " + table + " ADD COLUMN removed BOOLEAN NOT NULL DEFAULT FALSE;"
				if v == table && !strings.Contains(directory, added) {
					t.Errorf("%s 0013_directory.sql does not hold %s", dialect, added)
				}
			}
			for _, pad := range []string{"      ", "    "} {
				want = strings.Replace(want, ",\n    removed"+pad+"BOOLEAN NOT NULL DEFAULT FALSE\n", "\n", 1)
			}
			if !strings.Contains(script, want) {
				t.Errorf("%s 0005_tickets.sql does not hold the DDL of %s:\n%s", dialect, v, want)
			}
		}
	}
}

func TestDeferPrimaryKeys(t *testing.T) {
	t.Parallel()
	ddl, err := tableDDL(DialectPostgres, "tickets", "_g2")
	if err != nil {
		t.Fatal(err)
	}
	tables, _ := splitDDL(ddl)
	// and a key over two columns, on a line of its own
	tables = append(tables, "CREATE TABLE pairs_g2 (\n    a TEXT NOT NULL,\n    b BIGINT NOT NULL,\n    PRIMARY KEY (a, b)\n)")
	got, indexes, pkeys := deferPrimaryKeys(tables)
	for _, s := range got {
		if strings.Contains(s, "PRIMARY KEY") || strings.Contains(s, ",\n)") {
			t.Errorf("deferPrimaryKeys() left:\n%s", s)
		}
	}
	if !strings.Contains(got[0], `id                TEXT COLLATE "C"   NOT NULL,`) {
		t.Errorf("deferPrimaryKeys() tickets:\n%s", got[0])
	}
	if want := "CREATE TABLE pairs_g2 (\n    a TEXT NOT NULL,\n    b BIGINT NOT NULL\n)"; got[1] != want {
		t.Errorf("deferPrimaryKeys() pairs = %q, want %q", got[1], want)
	}
	wantIdx := []string{"CREATE UNIQUE INDEX tickets_g2_pkey ON tickets_g2 (id)",
		"CREATE UNIQUE INDEX pairs_g2_pkey ON pairs_g2 (a, b)"}
	wantPK := []string{"ALTER TABLE tickets_g2 ADD CONSTRAINT tickets_g2_pkey PRIMARY KEY USING INDEX tickets_g2_pkey",
		"ALTER TABLE pairs_g2 ADD CONSTRAINT pairs_g2_pkey PRIMARY KEY USING INDEX pairs_g2_pkey"}
	if strings.Join(indexes, ";") != strings.Join(wantIdx, ";") || strings.Join(pkeys, ";") != strings.Join(wantPK, ";") {
		t.Errorf("deferPrimaryKeys() = %q, %q; want %q, %q", indexes, pkeys, wantIdx, wantPK)
	}
}
