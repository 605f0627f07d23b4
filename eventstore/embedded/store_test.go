package embedded_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// openStore returns a store on a fresh, migrated SQLite file in tb's temp dir.
func openStore(tb testing.TB) *embedded.Store {
	tb.Helper()
	db, err := embedded.OpenDB(filepath.Join(tb.TempDir(), "ledgerdesk.db"))
	if err != nil {
		tb.Fatalf("OpenDB() error = %v", err)
	}
	if err := migrations.ApplySQLite(context.Background(), db); err != nil {
		_ = db.Close()
		tb.Fatalf("ApplySQLite() error = %v", err)
	}
	s := embedded.New(db, nil)
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close() error = %v", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { return openStore(t) })
}
