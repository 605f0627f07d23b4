// Package embedded is the event store ledgerdesk uses when no database is
// configured: one SQLite file, through modernc.org/sqlite (pure Go).
//
// SQLite has one writer at a time. OpenDB makes every write transaction take
// the write lock at BEGIN (BEGIN IMMEDIATE), and positions come from an
// AUTOINCREMENT key assigned while that lock is held, so commit order equals
// position order: a reader that resumes at position > checkpoint can never
// skip an event that commits late. Within one process the Store also queues
// its writers on a channel, so they wait for each other without SQLite's
// busy-handler sleeps; the busy timeout remains for other processes.
//
// The schema is migrations/sqlite/0001_eventstore.sql; apply it with
// migrations.ApplySQLite before New.
package embedded

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var _ eventstore.Store = (*Store)(nil)

const (
	// DefaultPollInterval bounds how late a subscriber sees an event that
	// another process appended; events appended through the same Store wake
	// subscribers at once.
	DefaultPollInterval = 200 * time.Millisecond
	// DefaultBatchSize is how many events one subscription transaction
	// handles. The transaction holds SQLite's write lock, so it stays small.
	DefaultBatchSize = 100

	// busyTimeout is how long a connection waits for another process's
	// write lock before SQLITE_BUSY.
	busyTimeout = 10 * time.Second
	// maxRetryDelay caps the back-off after a failing handler.
	maxRetryDelay = 5 * time.Second
	// recordedAtLayout stores RecordedAt in UTC with microseconds, fixed width
	// so that the text sorts like the time.
	recordedAtLayout = "2006-01-02T15:04:05.000000Z"
)

// OpenDB opens (creating if needed) the SQLite database at path for the
// embedded store: WAL journal, synchronous=FULL (a committed event survives a
// power cut, which matters because mail is deleted at the source after the
// commit), a busy timeout, foreign keys, and write transactions that take the
// write lock at BEGIN. Transactions begun with sql.TxOptions{ReadOnly: true}
// stay deferred and never take the write lock.
func OpenDB(path string) (*sql.DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("embedded: open %q: path must be non-empty and contain no '?' or '#'", path)
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("embedded: open %q: %w", path, err)
	}
	// Every new connection re-runs the pragmas; keep a few idle ones.
	db.SetMaxIdleConns(8)
	if err := db.PingContext(context.Background()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded: open %q: %w", path, err)
	}
	return db, nil
}

// Store is the SQLite event store. It is safe for concurrent use.
type Store struct {
	db     *sql.DB
	logger *slog.Logger
	now    func() time.Time

	// writer is a one-slot semaphore: holding it is the right to begin a
	// write transaction in this process.
	writer chan struct{}

	mu   sync.Mutex
	wake chan struct{} // closed and replaced after each commit that appended

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // the store's own statements, see prepared

	closed    atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a store on db, which must come from OpenDB (or be opened with
// the same _txlock=immediate option) and carry the schema of
// migrations.ApplySQLite. A nil logger discards. The Store owns db: Close
// closes it.
func New(db *sql.DB, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		db:     db,
		logger: logger,
		now:    time.Now,
		writer: make(chan struct{}, 1),
		wake:   make(chan struct{}),
		stmts:  make(map[string]*sql.Stmt),
		done:   make(chan struct{}),
	}
}

// fail wraps err with op and turns errors caused by a concurrent Close into
// ErrClosed.
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() && !errors.Is(err, eventstore.ErrClosed) {
		return fmt.Errorf("embedded: %s: %w (%w)", op, eventstore.ErrClosed, err)
	}
	return fmt.Errorf("embedded: %s: %w", op, err)
}

// signal wakes every subscriber waiting for new events.
func (s *Store) signal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.wake)
	s.wake = make(chan struct{})
}

// woken returns the channel the next signal closes.
func (s *Store) woken() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

// write runs fn in a write transaction that holds the in-process writer slot
// and SQLite's write lock from BEGIN to COMMIT. fn's own error is returned
// unwrapped.
func (s *Store) write(ctx context.Context, op string, fn func(t *txn) error) error {
	if s.closed.Load() {
		return fmt.Errorf("embedded: %s: %w", op, eventstore.ErrClosed)
	}
	select {
	case s.writer <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("embedded: %s: wait for the write lock: %w", op, ctx.Err())
	case <-s.done:
		return fmt.Errorf("embedded: %s: %w", op, eventstore.ErrClosed)
	}
	defer func() { <-s.writer }()

	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.fail(op+": begin", err)
	}
	t := &txn{tx: sqlTx, store: s}
	defer func() { _ = sqlTx.Rollback() }()
	if err := fn(t); err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return s.fail(op+": commit", err)
	}
	if t.appended {
		s.signal()
	}
	return nil
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	err := s.write(ctx, "append", func(t *txn) error {
		var err error
		res, err = t.Append(ctx, reqs...)
		return err
	})
	return res, err
}

// Update implements eventstore.Store. fn must do all its database work
// through tx: calling the Store's own Append or Update from fn waits for the
// write lock that fn's transaction holds, until ctx ends.
func (s *Store) Update(ctx context.Context, fn func(ctx context.Context, tx eventstore.Tx) error) error {
	return s.write(ctx, "update", func(t *txn) error { return fn(ctx, t) })
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from, to int64) ([]eventstore.RecordedEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("embedded: read stream %q: %w", stream, eventstore.ErrClosed)
	}
	evs, err := readStream(ctx, s.run(nil), stream, from, to)
	if err != nil {
		return nil, s.fail(fmt.Sprintf("read stream %q", stream), err)
	}
	return evs, nil
}

// ReadStreams implements eventstore.Store.
func (s *Store) ReadStreams(ctx context.Context, streams []string) ([]eventstore.RecordedEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("embedded: read %d streams: %w", len(streams), eventstore.ErrClosed)
	}
	evs, err := readStreams(ctx, s.run(nil), streams)
	if err != nil {
		return nil, s.fail(fmt.Sprintf("read %d streams", len(streams)), err)
	}
	return evs, nil
}

// StreamVersion implements eventstore.Store.
func (s *Store) StreamVersion(ctx context.Context, stream string) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("embedded: stream version of %q: %w", stream, eventstore.ErrClosed)
	}
	v, err := streamVersion(ctx, s.run(nil), stream)
	if err != nil {
		return 0, s.fail(fmt.Sprintf("stream version of %q", stream), err)
	}
	return v, nil
}

// ReadAll implements eventstore.Store. Global order is position order, and
// every position read is committed (see the package comment).
func (s *Store) ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.RecordedEvent, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("embedded: read all: %w", eventstore.ErrClosed)
	}
	if limit <= 0 {
		return nil, fmt.Errorf("embedded: read all: limit %d, want > 0", limit)
	}
	if after < 0 {
		return nil, fmt.Errorf("embedded: read all after %d: %w", after, eventstore.ErrUnknownPosition)
	}
	if after > 0 {
		var exists bool
		err := s.run(nil).scalar(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM events WHERE position = $1)`, after)
		if err != nil {
			return nil, s.fail("read all", err)
		}
		if !exists {
			return nil, fmt.Errorf("embedded: read all after %d: %w", after, eventstore.ErrUnknownPosition)
		}
	}
	evs, err := readAfter(ctx, s.run(nil), after, limit)
	if err != nil {
		return nil, s.fail("read all", err)
	}
	return evs, nil
}

// Checkpoint implements eventstore.Store.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("embedded: checkpoint of %q: %w", name, eventstore.ErrClosed)
	}
	cp, err := checkpoint(ctx, s.run(nil), name)
	if err != nil {
		return 0, s.fail(fmt.Sprintf("checkpoint of %q", name), err)
	}
	return cp, nil
}

// Reached implements eventstore.Store: positions are in global order, so the
// subscriber has processed position when its checkpoint is at or past it.
func (s *Store) Reached(ctx context.Context, name string, position int64) (bool, error) {
	cp, err := s.Checkpoint(ctx, name)
	if err != nil {
		return false, err
	}
	return cp >= position, nil
}

// Ping implements eventstore.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("embedded: ping: %w", eventstore.ErrClosed)
	}
	if err := s.db.PingContext(ctx); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Close stops running subscriptions (they return ErrClosed) and closes the
// database. Closing twice is harmless.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.stmtMu.Lock()
		for _, st := range s.stmts {
			_ = st.Close()
		}
		s.stmtMu.Unlock()
		if cerr := s.db.Close(); cerr != nil {
			err = fmt.Errorf("embedded: close: %w", cerr)
		}
	})
	return err
}

// prepared returns the store's statement for query, preparing it on first
// use. SQLite parses a statement on every plain Exec or Query, which was a
// quarter of an append's CPU; a *sql.Stmt is prepared once per connection.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	st, err := s.db.PrepareContext(ctx, query) //nolint:sqlclosecheck // cached for the store's life, closed by Close
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	s.stmts[query] = st
	return st, nil
}

// runner runs the store's own statements on the database, or inside tx when
// it is not nil.
type runner struct {
	s  *Store
	tx *sql.Tx
}

func (s *Store) run(tx *sql.Tx) runner { return runner{s: s, tx: tx} }

func (r runner) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	st, err := r.s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	if r.tx != nil {
		return r.tx.StmtContext(ctx, st), nil
	}
	return st, nil
}

func (r runner) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := r.stmt(ctx, query) //nolint:sqlclosecheck // cached; a transaction's copy closes with the transaction
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// scalar scans the single row of query into dest; sql.ErrNoRows when none.
func (r runner) scalar(ctx context.Context, dest any, query string, args ...any) error {
	st, err := r.stmt(ctx, query) //nolint:sqlclosecheck // cached; a transaction's copy closes with the transaction
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dest)
}

func (r runner) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := r.stmt(ctx, query) //nolint:sqlclosecheck // cached; a transaction's copy closes with the transaction
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

const eventColumns = `position, id, stream, stream_version, type, schema_version, payload, metadata, recorded_at`

func readStream(ctx context.Context, r runner, stream string, from, to int64) ([]eventstore.RecordedEvent, error) {
	if to <= 0 {
		return scanEvents(r.query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE stream = $1 AND stream_version >= $2 ORDER BY stream_version`, stream, from))
	}
	return scanEvents(r.query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream = $1 AND stream_version >= $2 AND stream_version <= $3 ORDER BY stream_version`, stream, from, to))
}

// readStreams reads the streams in chunks that stay well below SQLite's
// limit on bound parameters.
func readStreams(ctx context.Context, r runner, streams []string) ([]eventstore.RecordedEvent, error) {
	const chunk = 500
	streams = slices.Clone(streams)
	slices.Sort(streams)
	streams = slices.Compact(streams)
	var out []eventstore.RecordedEvent
	for lo := 0; lo < len(streams); lo += chunk {
		part := streams[lo:min(lo+chunk, len(streams))]
		args := make([]any, len(part))
		marks := make([]string, len(part))
		for i, name := range part {
			args[i], marks[i] = name, "$"+strconv.Itoa(i+1)
		}
		evs, err := scanEvents(r.query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE stream IN (`+strings.Join(marks, ", ")+`) ORDER BY stream, stream_version`, args...))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

func readAfter(ctx context.Context, r runner, after int64, limit int) ([]eventstore.RecordedEvent, error) {
	return scanEvents(r.query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE position > $1 ORDER BY position LIMIT $2`, after, limit))
}

func streamVersion(ctx context.Context, r runner, stream string) (int64, error) {
	var v int64
	err := r.scalar(ctx, &v, `SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream = $1`, stream)
	return v, err
}

func checkpoint(ctx context.Context, r runner, name string) (int64, error) {
	var cp int64
	err := r.scalar(ctx, &cp, `SELECT position FROM subscription_checkpoints WHERE name = $1`, name)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return cp, err
}

func scanEvents(rows *sql.Rows, err error) ([]eventstore.RecordedEvent, error) {
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	evs := []eventstore.RecordedEvent{}
	for rows.Next() {
		var (
			e                  eventstore.RecordedEvent
			payload, meta      []byte
			recordedAt         string
			schemaVersion      int64
			position, streamV  int64
			id, stream, evType string
		)
		if err := rows.Scan(&position, &id, &stream, &streamV, &evType, &schemaVersion, &payload, &meta, &recordedAt); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		e.Position, e.ID, e.Stream, e.StreamVersion, e.Type, e.SchemaVersion = position, id, stream, streamV, evType, int(schemaVersion)
		if len(payload) > 0 {
			e.Payload = json.RawMessage(payload)
		}
		if err := json.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("decode metadata of event %d: %w", position, err)
		}
		t, err := time.Parse(recordedAtLayout, recordedAt)
		if err != nil {
			return nil, fmt.Errorf("decode recorded_at of event %d: %w", position, err)
		}
		e.RecordedAt = t
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return evs, nil
}

// txn is the eventstore.Tx of the embedded store.
type txn struct {
	tx       *sql.Tx
	store    *Store
	appended bool // whether to wake subscribers after the commit
}

var _ eventstore.Tx = (*txn)(nil)

func (t *txn) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	args, _ = eventstore.WithoutPlanEachCall(args)
	var res sql.Result
	var err error
	if st := t.cached(ctx, query); st != nil { //nolint:sqlclosecheck // a transaction's copy of a cached statement closes with the transaction
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = t.tx.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return 0, fmt.Errorf("embedded: exec: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("embedded: exec: rows affected: %w", err)
	}
	return n, nil
}

func (t *txn) Query(ctx context.Context, query string, args ...any) (eventstore.Rows, error) {
	args, _ = eventstore.WithoutPlanEachCall(args)
	var rows *sql.Rows
	var err error
	if st := t.cached(ctx, query); st != nil { //nolint:sqlclosecheck // a transaction's copy of a cached statement closes with the transaction
		rows, err = st.QueryContext(ctx, args...) //nolint:rowserrcheck,sqlclosecheck // the caller iterates, checks Err and closes
	} else {
		rows, err = t.tx.QueryContext(ctx, query, args...) //nolint:rowserrcheck,sqlclosecheck // the caller iterates, checks Err and closes
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: query: %w", err)
	}
	return rows, nil
}

func (t *txn) QueryRow(ctx context.Context, query string, args ...any) eventstore.Row {
	args, _ = eventstore.WithoutPlanEachCall(args)
	if st := t.cached(ctx, query); st != nil { //nolint:sqlclosecheck // a transaction's copy of a cached statement closes with the transaction
		return row{st.QueryRowContext(ctx, args...)}
	}
	return row{t.tx.QueryRowContext(ctx, query, args...)}
}

// maxCachedStatements bounds the statement cache: callers' SQL (projections,
// the process manager, the importer) repeats a few hundred texts at most,
// and SQLite parsing them on every call cost more than running them.
const maxCachedStatements = 512

// cached returns the transaction's copy of a cached prepared statement for
// query, or nil when the cache is full (then the caller runs it unprepared).
func (t *txn) cached(ctx context.Context, query string) *sql.Stmt {
	t.store.stmtMu.Lock()
	_, ok := t.store.stmts[query]
	full := len(t.store.stmts) >= maxCachedStatements
	t.store.stmtMu.Unlock()
	if !ok && full {
		return nil
	}
	st, err := t.store.run(t.tx).stmt(ctx, query) //nolint:sqlclosecheck // cached; a transaction's copy closes with the transaction
	if err != nil {
		return nil // let the unprepared path report the error with its context
	}
	return st
}

// row makes Scan report eventstore.ErrNoRows (and still sql.ErrNoRows).
type row struct{ r *sql.Row }

func (r row) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("embedded: %w (%w)", eventstore.ErrNoRows, err)
	}
	if err != nil {
		return fmt.Errorf("embedded: scan: %w", err)
	}
	return nil
}

func (t *txn) ReadStream(ctx context.Context, stream string, from, to int64) ([]eventstore.RecordedEvent, error) {
	evs, err := readStream(ctx, t.store.run(t.tx), stream, from, to)
	if err != nil {
		return nil, fmt.Errorf("embedded: read stream %q: %w", stream, err)
	}
	return evs, nil
}

// ReadStreams implements eventstore.Tx.
func (t *txn) ReadStreams(ctx context.Context, streams []string) ([]eventstore.RecordedEvent, error) {
	evs, err := readStreams(ctx, t.store.run(t.tx), streams)
	if err != nil {
		return nil, fmt.Errorf("embedded: read %d streams: %w", len(streams), err)
	}
	return evs, nil
}

// Append implements eventstore.Tx. Requests apply in order, so two requests
// for the same stream see each other.
func (t *txn) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	res := eventstore.AppendResult{StreamVersions: make(map[string]int64, len(reqs))}
	for _, r := range reqs {
		if err := r.Validate(); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("embedded: %w", err)
		}
	}
	recordedAt := t.store.now().UTC().Truncate(time.Microsecond).Format(recordedAtLayout)
	run := t.store.run(t.tx)
	var insert *sql.Stmt // bound to t.tx once, for all events of the call
	for _, r := range reqs {
		cur, err := streamVersion(ctx, t.store.run(t.tx), r.Stream)
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("embedded: append to %q: read version: %w", r.Stream, err)
		}
		if r.ExpectedVersion != eventstore.AnyVersion && r.ExpectedVersion != cur {
			return eventstore.AppendResult{}, fmt.Errorf("embedded: append: %w",
				&eventstore.VersionConflictError{Stream: r.Stream, Expected: r.ExpectedVersion, Actual: cur})
		}
		for _, e := range r.Events {
			cur++
			id := e.ID
			if id == "" {
				id = uuid.NewString()
			}
			meta, err := json.Marshal(e.Metadata)
			if err != nil {
				return eventstore.AppendResult{}, fmt.Errorf("embedded: append to %q: encode metadata: %w", r.Stream, err)
			}
			if insert == nil {
				if insert, err = run.stmt(ctx, insertEvent); err != nil {
					return eventstore.AppendResult{}, fmt.Errorf("embedded: append to %q: %w", r.Stream, err)
				}
			}
			out, err := insert.ExecContext(ctx, id, r.Stream, cur, e.Type, e.SchemaVersion, string(e.Payload), string(meta), recordedAt)
			if err != nil {
				if isUniqueViolation(err, "events.stream") {
					// Another process wrote without the write lock at BEGIN.
					err = &eventstore.VersionConflictError{Stream: r.Stream, Expected: r.ExpectedVersion, Actual: -1}
				}
				return eventstore.AppendResult{}, fmt.Errorf("embedded: append to %q version %d: %w", r.Stream, cur, err)
			}
			if res.LastPosition, err = out.LastInsertId(); err != nil {
				return eventstore.AppendResult{}, fmt.Errorf("embedded: append to %q: read position: %w", r.Stream, err)
			}
			t.appended = true
		}
		res.StreamVersions[r.Stream] = cur
	}
	return res, nil
}

const insertEvent = `INSERT INTO events
	(id, stream, stream_version, type, schema_version, payload, metadata, recorded_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

// isUniqueViolation reports whether err is SQLite's unique-constraint error
// on a column list starting with column.
func isUniqueViolation(err error, column string) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE && strings.Contains(se.Error(), column)
}
