// Package projections builds ledgerdesk's read models from the event log.
// Each projection is a durable subscriber with a constant name (renaming it
// replays the whole log into it): it writes its rows through the
// subscription's transaction, so rows and checkpoint commit together, and it
// is idempotent under redelivery. The tables are plain SQL that analysts may
// query; the schema lives in migrations/{postgres,sqlite}.
package projections

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Reader runs read-only queries on the projection tables, outside any
// subscription; SQLReader and PGReader adapt the two databases. Queries use
// $1-style placeholders, which both accept.
type Reader interface {
	Query(ctx context.Context, query string, args ...any) (eventstore.Rows, error)
}

// SQLReader reads through database/sql (the embedded store's *sql.DB).
func SQLReader(db *sql.DB) Reader { return sqlReader{db} }

type sqlReader struct{ db *sql.DB }

func (r sqlReader) Query(ctx context.Context, query string, args ...any) (eventstore.Rows, error) {
	rows, err := r.db.QueryContext(ctx, query, args...) //nolint:rowserrcheck // the caller iterates and checks Err
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// PGReader reads through a pgx pool (the PostgreSQL store's).
func PGReader(pool *pgxpool.Pool) Reader { return pgReader{pool} }

type pgReader struct{ pool *pgxpool.Pool }

func (r pgReader) Query(ctx context.Context, query string, args ...any) (eventstore.Rows, error) {
	rows, err := r.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgRows{rows}, nil
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Close() error {
	r.Rows.Close()
	return r.Err()
}

// DefaultWait is how long a read with min_position waits for a projection.
const DefaultWait = 5 * time.Second

// WaitReached waits until the named subscriber has processed the event at
// position (read-your-writes), checking store.Reached with a short back-off,
// for at most timeout. It reports whether the subscriber got there; it does
// not fail when it did not, so the caller can still answer (and say the view
// may be behind). Errors are the store's, e.g. eventstore.ErrUnknownPosition
// for a position that names no event, and ctx's.
func WaitReached(ctx context.Context, store eventstore.Store, subscriber string, position int64, timeout time.Duration) (bool, error) {
	if position <= 0 {
		return true, nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	delay := 5 * time.Millisecond
	for {
		ok, err := store.Reached(ctx, subscriber, position)
		if err != nil {
			return false, fmt.Errorf("projections: wait for %s to reach %d: %w", subscriber, position, err)
		}
		if ok {
			return true, nil
		}
		tick := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			tick.Stop()
			return false, ctx.Err()
		case <-deadline.C:
			tick.Stop()
			return false, nil
		case <-tick.C:
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}
