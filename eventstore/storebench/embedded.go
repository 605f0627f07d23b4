package storebench

import (
	"context"
	"fmt"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// measureEmbedded takes the store figures of the embedded SQLite store in a
// new database file at cfg.SQLitePath.
func measureEmbedded(ctx context.Context, cfg Config) ([]Result, error) {
	db, err := embedded.OpenDB(cfg.SQLitePath)
	if err != nil {
		return nil, fmt.Errorf("storebench: open embedded store: %w", err)
	}
	defer func() { _ = db.Close() }()
	if err := migrations.ApplySQLite(ctx, db); err != nil {
		return nil, fmt.Errorf("storebench: %w", err)
	}
	store := embedded.New(db, cfg.Logger)
	defer func() { _ = store.Close() }()

	single, err := compare(ctx, cfg.SingleEvents, 1, side{"embedded store Append, 1 event/tx", storeAppender(store, "single")})
	if err != nil {
		return nil, err
	}
	batched, err := compare(ctx, cfg.Events, batchSize, side{"embedded store Append, 100 events/tx", storeAppender(store, "batch")})
	if err != nil {
		return nil, err
	}
	read := Result{Name: fmt.Sprintf("embedded store catch-up ReadAll, pages of %d", cfg.PageSize)}
	for pass := 0; pass < 3; pass++ {
		start := time.Now()
		n, err := readAllPages(ctx, store, cfg.PageSize)
		if err != nil {
			return nil, fmt.Errorf("storebench: embedded catch-up read: %w", err)
		}
		read.Elapsed += time.Since(start)
		read.Events += n
	}
	return []Result{single[0], batched[0], read}, nil
}
