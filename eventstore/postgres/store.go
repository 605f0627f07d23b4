// Package postgres is the production event store: PostgreSQL through pgx/v5,
// with durable subscriptions run by watermill-sql v4's Subscriber over the
// events table.
//
// Global order is (transaction_id, position), where transaction_id is the
// xid8 of the appending transaction (pg_current_xact_id()). Readers only see
// rows whose transaction_id is below the oldest transaction of this database
// still running (pg_snapshot_xmin(pg_current_snapshot()) narrowed to the
// database), so an event that commits late can never sort before one a
// reader already passed: a bigserial alone would let a reader skip it. The
// cost is that one long-running transaction with an xid in this database
// delays every reader until it ends; keep transactions short.
//
// The schema comes from migrations/postgres (migrations.ApplyPostgres); New
// does not create tables.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var _ eventstore.Store = (*Store)(nil)

// Store is the PostgreSQL event store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	// closing is cancelled by Close; subscriptions derive from it.
	closing context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
	subs    sync.WaitGroup

	// appended is closed and replaced after each commit that appended
	// events through this store (see Appended).
	appendedMu sync.Mutex
	appended   chan struct{}
}

var _ eventstore.Notifier = (*Store)(nil)

// Appended implements eventstore.Notifier: the channel is closed after
// the next commit that appends events through this store, so that this
// process's subscribers read them at once rather than at their next poll.
// Other processes' appends are still found by polling.
func (s *Store) Appended() <-chan struct{} {
	s.appendedMu.Lock()
	defer s.appendedMu.Unlock()
	return s.appended
}

// notifyAppended wakes whoever waits on Appended.
func (s *Store) notifyAppended() {
	s.appendedMu.Lock()
	defer s.appendedMu.Unlock()
	close(s.appended)
	s.appended = make(chan struct{})
}

// New returns a store on pool. The pool stays the caller's: Close does not
// close it. A nil logger discards logs.
func New(pool *pgxpool.Pool, logger *slog.Logger) (*Store, error) {
	if pool == nil {
		return nil, errors.New("eventstore/postgres: new store: pool is nil")
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{pool: pool, logger: logger, closing: ctx, cancel: cancel, appended: make(chan struct{})}, nil
}

// Close stops running subscriptions, waits for their handlers to return and
// makes further calls fail with eventstore.ErrClosed. It must not be called
// from inside a handler.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.subs.Wait()
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed() {
		return eventstore.ErrClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("eventstore/postgres: ping: %w", err)
	}
	return nil
}

// Append appends to the streams of reqs atomically. A request with
// eventstore.AnyVersion that loses a race against a concurrent append to the
// same stream is retried, since it did not ask for a particular version.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if s.isClosed() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	if err := validate(reqs); err != nil {
		return eventstore.AppendResult{}, err
	}
	for attempt := 1; ; attempt++ {
		res, err := s.appendOnce(ctx, reqs)
		if err == nil && res.LastPosition > 0 {
			s.notifyAppended()
		}
		if err == nil || !retryable(err, reqs) || attempt >= maxAnyVersionAttempts || ctx.Err() != nil {
			return res, err
		}
	}
}

// maxAnyVersionAttempts bounds the retries of AnyVersion appends. Every
// round of a race has a winner, so n concurrent writers need at most n.
const maxAnyVersionAttempts = 50

func (s *Store) appendOnce(ctx context.Context, reqs []eventstore.AppendRequest) (eventstore.AppendResult, error) {
	// One statement is its own transaction: no BEGIN/COMMIT round trips.
	if len(reqs) == 1 {
		return appendAll(ctx, s.pool, reqs)
	}
	var res eventstore.AppendResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = appendAll(ctx, tx, reqs)
		return err
	})
	if err != nil {
		return eventstore.AppendResult{}, mapCommitError(err)
	}
	return res, nil
}

// Update runs fn in one transaction (READ COMMITTED) and commits when fn
// returns nil. fn's error is returned as it is.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx eventstore.Tx) error) error {
	if s.isClosed() {
		return eventstore.ErrClosed
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("eventstore/postgres: update: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	ptx := &pgTx{tx: tx}
	if err := fn(ctx, ptx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("eventstore/postgres: update: commit: %w", mapCommitError(err))
	}
	if ptx.appended {
		s.notifyAppended()
	}
	return nil
}

// ReadStream returns the events of stream with from <= version <= to.
func (s *Store) ReadStream(ctx context.Context, stream string, from, to int64) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	return readStream(ctx, s.pool, stream, from, to)
}

// ReadStreams returns the events of streams, by stream and version.
func (s *Store) ReadStreams(ctx context.Context, streams []string) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	return readStreams(ctx, s.pool, streams)
}

// StreamVersion is the stream's current version, 0 when it is empty.
func (s *Store) StreamVersion(ctx context.Context, stream string) (int64, error) {
	if s.isClosed() {
		return 0, eventstore.ErrClosed
	}
	var v int64
	if err := s.pool.QueryRow(ctx, sqlStreamVersion, stream).Scan(&v); err != nil {
		return 0, fmt.Errorf("eventstore/postgres: version of stream %q: %w", stream, err)
	}
	return v, nil
}

// ReadAll returns up to limit events after the event at position after in
// global order, (transaction_id, position), leaving out every event whose
// transaction may not have ended yet along with all that sort after it.
func (s *Store) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.RecordedEvent, error) {
	if s.isClosed() {
		return nil, eventstore.ErrClosed
	}
	if limit <= 0 {
		return nil, fmt.Errorf("eventstore/postgres: read all: limit %d must be positive", limit)
	}
	var (
		rows pgx.Rows
		err  error
	)
	if after <= 0 {
		rows, err = s.pool.Query(ctx, sqlReadAllFromStart, limit)
	} else {
		rows, err = s.pool.Query(ctx, sqlReadAllAfter, after, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", after, err)
	}
	events, err := collectEvents(rows, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", after, err)
	}
	if len(events) == 0 && after > 0 {
		// An empty page can also mean the cursor names no event.
		if _, err := s.transactionOf(ctx, after); err != nil {
			return nil, fmt.Errorf("eventstore/postgres: read all after %d: %w", after, err)
		}
	}
	return events, nil
}

// transactionOf returns the transaction id of the event at position, or
// eventstore.ErrUnknownPosition.
func (s *Store) transactionOf(ctx context.Context, position int64) (uint64, error) {
	var xid uint64
	err := s.pool.QueryRow(ctx, `SELECT transaction_id FROM events WHERE position = $1`, position).Scan(&xid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %d", eventstore.ErrUnknownPosition, position)
	}
	return xid, err
}

// Checkpoint returns the position of the last event the named subscriber
// processed, 0 when it has processed none.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	if s.isClosed() {
		return 0, eventstore.ErrClosed
	}
	var pos *int64
	err := s.pool.QueryRow(ctx, `SELECT offset_acked FROM subscription_offsets WHERE consumer_group = $1`, name).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && pos == nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore/postgres: checkpoint of %q: %w", name, err)
	}
	return *pos, nil
}

// Reached reports whether the named subscriber has processed the event at
// position: whether (transaction id, position) of that event is at or before
// the subscriber's (last_processed_transaction_id, offset_acked). Position 0
// (before the first event) is always reached; a position naming no event
// gives eventstore.ErrUnknownPosition.
func (s *Store) Reached(ctx context.Context, name string, position int64) (bool, error) {
	if s.isClosed() {
		return false, eventstore.ErrClosed
	}
	if position <= 0 {
		return true, nil
	}
	var reached bool
	err := s.pool.QueryRow(ctx, `
		SELECT COALESCE((e.transaction_id, e.position) <= (o.last_processed_transaction_id, o.offset_acked), false)
		FROM events e
		LEFT JOIN subscription_offsets o ON o.consumer_group = $1
		WHERE e.position = $2`, name, position).Scan(&reached)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("eventstore/postgres: reached %d by %q: %w", position, name, eventstore.ErrUnknownPosition)
	}
	if err != nil {
		return false, fmt.Errorf("eventstore/postgres: reached %d by %q: %w", position, name, err)
	}
	return reached, nil
}

// mapCommitError turns a serialization failure at commit into a version
// conflict: with REPEATABLE READ (the subscriber's transactions) a concurrent
// append to the same stream can surface there.
func mapCommitError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeSerializationFailure {
		return fmt.Errorf("%w (%s)", &eventstore.VersionConflictError{Actual: -1}, pgErr.Message)
	}
	return err
}
