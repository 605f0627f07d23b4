package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var _ eventstore.Tx = (*pgTx)(nil)

// pgTx is an eventstore.Tx over a pgx transaction the store does not own:
// Update's, or the one watermill's Subscriber runs a batch in. It never
// commits or rolls back.
type pgTx struct {
	tx pgx.Tx
	// appended is set once Append wrote events, so that whoever commits the
	// transaction wakes the store's subscribers (Store.Appended).
	appended bool
}

// pgArgs turns a leading eventstore.PlanEachCall into pgx's exec mode that
// sends the statement unnamed, which PostgreSQL plans at each call.
func pgArgs(args []any) []any {
	if rest, ok := eventstore.WithoutPlanEachCall(args); ok {
		return append([]any{pgx.QueryExecModeExec}, rest...)
	}
	return args
}

// Exec runs a statement in the transaction.
func (t *pgTx) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, query, pgArgs(args)...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// Query runs a query in the transaction.
func (t *pgTx) Query(ctx context.Context, query string, args ...any) (eventstore.Rows, error) {
	rows, err := t.tx.Query(ctx, query, pgArgs(args)...)
	if err != nil {
		return nil, err
	}
	return pgRows{rows}, nil
}

// QueryRow runs a query expected to return at most one row.
func (t *pgTx) QueryRow(ctx context.Context, query string, args ...any) eventstore.Row {
	return pgRow{t.tx.QueryRow(ctx, query, pgArgs(args)...)}
}

// Append appends in the transaction. A single request that finds its stream
// at another version writes nothing and leaves the transaction usable; a
// conflict seen as a unique violation or serialization failure aborts it, as
// any failed statement does in PostgreSQL. Several requests run under a
// savepoint so that they are appended all or none.
func (t *pgTx) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if err := validate(reqs); err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(reqs) == 1 {
		res, err := appendAll(ctx, t.tx, reqs)
		t.appended = t.appended || (err == nil && res.LastPosition > 0)
		return res, err
	}
	// A savepoint only here: every subtransaction that writes keeps its xid
	// until the top-level commit, and past 64 of them every snapshot in the
	// cluster gets slower (subxid overflow), so per-event savepoints in a
	// subscriber batch would hurt.
	sp, err := t.tx.Begin(ctx)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: savepoint: %w", err)
	}
	res, err := appendAll(ctx, sp, reqs)
	if err != nil {
		_ = sp.Rollback(context.WithoutCancel(ctx))
		return eventstore.AppendResult{}, err
	}
	if err := sp.Commit(ctx); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append: release savepoint: %w", err)
	}
	t.appended = t.appended || res.LastPosition > 0
	return res, nil
}

// ReadStream reads a stream as the transaction sees it.
func (t *pgTx) ReadStream(ctx context.Context, stream string, from, to int64) ([]eventstore.RecordedEvent, error) {
	return readStream(ctx, t.tx, stream, from, to)
}

// ReadStreams reads streams as the transaction sees them.
func (t *pgTx) ReadStreams(ctx context.Context, streams []string) ([]eventstore.RecordedEvent, error) {
	return readStreams(ctx, t.tx, streams)
}

// pgRows adapts pgx.Rows to eventstore.Rows.
type pgRows struct{ pgx.Rows }

// Close releases the rows and reports the error that ended them, if any.
func (r pgRows) Close() error {
	r.Rows.Close()
	return r.Err()
}

// pgRow adapts pgx.Row to eventstore.Row.
type pgRow struct{ row pgx.Row }

// Scan scans the row; an empty result gives an error matching both
// eventstore.ErrNoRows and pgx.ErrNoRows.
func (r pgRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %w", eventstore.ErrNoRows, err)
	}
	return err
}
