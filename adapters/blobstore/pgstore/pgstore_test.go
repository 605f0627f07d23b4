package pgstore_test

import (
	"context"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/blobtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore/pgstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

func TestStore_Contract(t *testing.T) {
	t.Parallel()
	blobtest.Run(t, func(t *testing.T) blobtest.Backend {
		ctx := context.Background()
		pool := pgtest.NewPool(t)
		if err := migrations.ApplyPostgres(ctx, pool); err != nil {
			t.Fatal(err)
		}
		s, err := pgstore.New(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return blobtest.Backend{Store: s, Corrupt: func(tb testing.TB, ref blobstore.Ref) {
			tb.Helper()
			tag, err := pool.Exec(ctx, `UPDATE blob_chunks SET data = decode(repeat('00', length(data)), 'hex') WHERE ref = $1 AND seq = 0`, string(ref))
			if err != nil || tag.RowsAffected() != 1 {
				tb.Fatalf("corrupt %s: %v, %d rows", ref, err, tag.RowsAffected())
			}
		}}
	})
}

func TestNew_RefusesADatabaseWithoutTheBlobTables(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	if _, err := pgstore.New(context.Background(), pool); err == nil {
		t.Fatal("New() on an unmigrated database succeeded")
	}
}
