package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var _ eventstore.LogInspector = (*Store)(nil)

// sqlHead is the last event in global order below the horizon (see
// sqlReadAllFromStart), read backwards on events_pkey.
const sqlHead = `SELECT position FROM events WHERE transaction_id < ` + sqlHorizon + `
ORDER BY transaction_id DESC, position DESC LIMIT 1`

// sqlCountAfter counts the events ReadAll would return after $1.
const sqlCountAfter = `SELECT count(*) FROM events
WHERE (transaction_id, position) > ((SELECT transaction_id FROM events WHERE position = $1), $1)
	AND transaction_id < ` + sqlHorizon

const sqlCountAll = `SELECT count(*) FROM events WHERE transaction_id < ` + sqlHorizon

// Head implements eventstore.LogInspector.
func (s *Store) Head(ctx context.Context) (int64, error) {
	if s.isClosed() {
		return 0, eventstore.ErrClosed
	}
	var pos int64
	err := s.pool.QueryRow(ctx, sqlHead).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore/postgres: head of the log: %w", err)
	}
	return pos, nil
}

// CountAfter implements eventstore.LogInspector. An unknown position is
// eventstore.ErrUnknownPosition.
func (s *Store) CountAfter(ctx context.Context, after int64) (int64, error) {
	if s.isClosed() {
		return 0, eventstore.ErrClosed
	}
	var n int64
	var err error
	if after <= 0 {
		err = s.pool.QueryRow(ctx, sqlCountAll).Scan(&n)
	} else {
		if _, err := s.transactionOf(ctx, after); err != nil {
			return 0, fmt.Errorf("eventstore/postgres: count after %d: %w", after, err)
		}
		err = s.pool.QueryRow(ctx, sqlCountAfter, after).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore/postgres: count after %d: %w", after, err)
	}
	return n, nil
}
