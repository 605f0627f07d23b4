// Package eventstore defines the contract of ledgerdesk's event store: streams
// with optimistic concurrency, one global order that readers can never skip
// ahead of, durable subscriptions with a checkpoint per subscriber, and
// appends that share a transaction with other writes (the outbox).
//
// Two backends implement it: eventstore/postgres (pgx/v5 and watermill-sql v4,
// the production store) and eventstore/embedded (modernc.org/sqlite, the
// default when no database is configured). eventstore/storetest is the one
// conformance suite both must pass.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrVersionConflict is matched (errors.Is) by every error an append returns
// because a stream was not at the expected version.
var ErrVersionConflict = errors.New("eventstore: version conflict")

// ErrClosed is returned by a store that has been closed.
var ErrClosed = errors.New("eventstore: closed")

// ErrUnknownPosition is returned when a position given as a cursor names no
// stored event.
var ErrUnknownPosition = errors.New("eventstore: unknown position")

// Expected versions with a special meaning. Any other value is the version
// the stream must be at (the number of events in it) for the append to pass.
const (
	// AnyVersion appends whatever the stream's version is.
	AnyVersion int64 = -1
	// NoStream requires that the stream has no events yet.
	NoStream int64 = 0
)

// VersionConflictError says which stream was not at the expected version.
type VersionConflictError struct {
	Stream   string
	Expected int64
	Actual   int64 // -1 when the backend could not tell
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("eventstore: version conflict on stream %q: expected version %d, stream is at %d",
		e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrVersionConflict) true.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }

// Metadata travels with every event. OccurredAt is set by the caller (the
// domain's notion of when it happened); the store sets RecordedAt.
type Metadata struct {
	CorrelationID string    `json:"correlation_id,omitempty"`
	CausationID   string    `json:"causation_id,omitempty"`
	Actor         string    `json:"actor,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
}

// NewEvent is an event about to be appended.
type NewEvent struct {
	// ID identifies the event. Callers derive it deterministically where a
	// re-delivered input must give the same id; when empty the store makes one.
	ID string
	// Type is the stable stored name of the event (never derived from a Go type).
	Type string
	// SchemaVersion of Payload, starting at 1; readers upcast older versions.
	SchemaVersion int
	Payload       json.RawMessage
	Metadata      Metadata
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	ID            string
	Stream        string
	StreamVersion int64 // 1 for a stream's first event
	// Position identifies the event in the global log and is the cursor for
	// ReadAll. Global order is the store's order (see Store.ReadAll); on
	// PostgreSQL it is not the numeric order of positions.
	Position      int64
	Type          string
	SchemaVersion int
	Payload       json.RawMessage
	Metadata      Metadata
	RecordedAt    time.Time
}

// AppendRequest appends events to one stream if it is at ExpectedVersion.
type AppendRequest struct {
	Stream          string
	ExpectedVersion int64
	Events          []NewEvent
}

// Validate reports what is wrong with a request before it reaches a database.
func (r AppendRequest) Validate() error {
	var errs []error
	if r.Stream == "" {
		errs = append(errs, errors.New("stream name is empty"))
	}
	if r.ExpectedVersion < AnyVersion {
		errs = append(errs, fmt.Errorf("expected version %d is invalid", r.ExpectedVersion))
	}
	for i, e := range r.Events {
		if e.Type == "" {
			errs = append(errs, fmt.Errorf("event %d has no type", i))
		}
		if e.SchemaVersion < 1 {
			errs = append(errs, fmt.Errorf("event %d (%s) has schema version %d, want >= 1", i, e.Type, e.SchemaVersion))
		}
		if len(e.Payload) > 0 && !json.Valid(e.Payload) {
			errs = append(errs, fmt.Errorf("event %d (%s) payload is not valid JSON", i, e.Type))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("eventstore: append to %q: %w", r.Stream, err)
	}
	return nil
}

// AppendResult tells where the appended events landed.
type AppendResult struct {
	// LastPosition is the global position of the last appended event.
	LastPosition int64
	// StreamVersions holds each stream's version after the append, by stream.
	StreamVersions map[string]int64
}

// Rows is the part of a query result that projections and the application
// layer need; both backends' rows satisfy it.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Row is a single-row query result; Scan returns ErrNoRows when it is empty.
type Row interface {
	Scan(dest ...any) error
}

// ErrNoRows is returned by Row.Scan when the query selected nothing.
var ErrNoRows = errors.New("eventstore: no rows")

// PlanEachCall, given as the first argument of Exec, Query or QueryRow,
// asks the database to plan the statement for this call's arguments and
// the table as it is now. Without it PostgreSQL may settle on a generic
// plan made while a table was small (a full scan and a sort) and keep it
// long after the table has grown; use it for range scans over growing
// tables. The embedded store needs no such hint and drops it.
var PlanEachCall = planEachCall{}

type planEachCall struct{}

// WithoutPlanEachCall returns args without a leading PlanEachCall and
// whether it was there (for backends).
func WithoutPlanEachCall(args []any) ([]any, bool) {
	if len(args) > 0 {
		if _, ok := args[0].(planEachCall); ok {
			return args[1:], true
		}
	}
	return args, false
}

// Querier runs SQL with $1-style placeholders, which both backends accept.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (rowsAffected int64, err error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Tx is one database transaction: SQL writes and event appends in it commit
// or roll back together.
type Tx interface {
	Querier
	// Append appends to one or more streams; all or none of them.
	Append(ctx context.Context, reqs ...AppendRequest) (AppendResult, error)
	// ReadStream reads as Store.ReadStream does, inside the transaction.
	ReadStream(ctx context.Context, stream string, from, to int64) ([]RecordedEvent, error)
	// ReadStreams reads as Store.ReadStreams does, inside the transaction.
	ReadStreams(ctx context.Context, streams []string) ([]RecordedEvent, error)
}

// Handler processes one event of a subscription. It runs inside the
// transaction that also advances the subscriber's checkpoint, so writes made
// through tx commit exactly when the event counts as processed. A returned
// error rolls that transaction back and the event is delivered again, until
// it is set aside (SubscribeOptions.MaxAttempts).
// Handlers must honour ctx and keep their work short.
type Handler func(ctx context.Context, tx Tx, event RecordedEvent) error

// BatchHandler processes the events of one subscription batch at once, in
// global order, inside the transaction that also advances the subscriber's
// checkpoint past the last of them. It lets a subscriber write a batch with
// one statement instead of one per event. A returned error rolls back all of
// the batch's writes, and its events are delivered again (the next batch
// starts at the same event but may hold a different number of events); a
// batch that keeps failing is delivered one event at a time, and the event
// that fails alone is set aside (SubscribeOptions.MaxAttempts).
// Handlers must honour ctx and keep their work short.
type BatchHandler func(ctx context.Context, tx Tx, events []RecordedEvent) error

// SubscribeOptions tunes a subscription.
type SubscribeOptions struct {
	// PollInterval bounds how long a new event waits before delivery. Zero
	// means the backend's default.
	PollInterval time.Duration
	// BatchSize is how many events share one transaction. Zero means the
	// backend's default.
	BatchSize int
	// Types, when set, limits delivery to events of these types, selected
	// by the database: a subscriber that needs few of the log's events
	// is not handed the others. Its checkpoint still moves past them, so
	// no poll reads them again and Checkpoint and Reached work as usual.
	// Retry requests (SetAsideCodec.RetryType) are read whatever Types
	// says; the original event is delivered when its type is in Types.
	Types []string
	// MaxAttempts is how many times the handler may fail on one event
	// before the event is set aside (a batch handler: on one batch, and
	// then on each of its events alone): SetAside records it in the
	// transaction that moves the checkpoint past it, and the subscription
	// goes on with the next event. Only the handler's failures while the
	// store is healthy count: not those the store causes (a lost
	// connection, a serialization failure, a busy database), nor any
	// after which the store does not answer Ping, nor those of a
	// subscription that is stopping. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// SetAside records set-aside events and reads the requests to retry
	// them. Without it nothing is set aside: an event the store could not
	// record as skipped is delivered again for ever rather than dropped.
	SetAside SetAsideCodec
}

// Store is the event store contract. Implementations are safe for
// concurrent use.
type Store interface {
	// Append appends to one or more streams atomically in a transaction of
	// its own.
	Append(ctx context.Context, reqs ...AppendRequest) (AppendResult, error)
	// Update runs fn in one transaction: appends and SQL writes commit
	// together when fn returns nil and roll back otherwise (the outbox).
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// ReadStream returns the events of stream with from <= version <= to,
	// oldest first; to <= 0 means up to the end. Reading up to a version
	// gives the stream as it stood then. An unknown stream gives no events.
	ReadStream(ctx context.Context, stream string, from, to int64) ([]RecordedEvent, error)
	// ReadStreams returns all events of the named streams with one query
	// (a caller that needs many small streams, such as the tickets of a
	// batch, reads them in one round trip), grouped by stream, each
	// stream's events in version order; the order of the streams is the
	// store's. Unknown streams give no events; a name given twice counts
	// once.
	ReadStreams(ctx context.Context, streams []string) ([]RecordedEvent, error)
	// StreamVersion is the stream's current version, 0 when it is empty.
	StreamVersion(ctx context.Context, stream string) (int64, error)
	// ReadAll returns up to limit events that follow the event at position
	// after in global order (after = 0: from the first event). It never
	// returns an event while an earlier one in global order may still be
	// uncommitted, so a reader that resumes from the last position it saw
	// skips nothing.
	ReadAll(ctx context.Context, after int64, limit int) ([]RecordedEvent, error)
	// Subscribe delivers every event, in global order, once per successful
	// handler run, starting after the subscriber's checkpoint (from the
	// first event for a new name). A failing event is delivered again
	// after a back-off, and set aside after opts.MaxAttempts failures (see
	// SubscribeOptions.SetAside), so that no single event stops the
	// subscriber for ever. It blocks until ctx is done or the handler
	// fails in a way the store cannot retry, and returns ctx.Err() on
	// cancellation.
	Subscribe(ctx context.Context, name string, h Handler, opts SubscribeOptions) error
	// SubscribeBatch is Subscribe with a handler that takes each batch of
	// up to opts.BatchSize events whole. A subscriber name is used with
	// either Subscribe or SubscribeBatch; both share the checkpoint.
	SubscribeBatch(ctx context.Context, name string, h BatchHandler, opts SubscribeOptions) error
	// Checkpoint returns the position of the last event the named
	// subscriber processed, 0 when it has processed none.
	Checkpoint(ctx context.Context, name string) (int64, error)
	// Reached reports whether the named subscriber has processed the event
	// at position (read-your-writes for the API).
	Reached(ctx context.Context, name string, position int64) (bool, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	Close() error
}

// LogInspector is implemented by both stores: where the global log ends,
// and how far a position is behind that end, each with one query. The live
// event stream starts from Head; the metrics read subscribers' lag with
// CountAfter.
type LogInspector interface {
	// Head returns the position of the last event ReadAll may return now
	// (0 for an empty log).
	Head(ctx context.Context) (int64, error)
	// CountAfter returns how many events ReadAll may return now after the
	// event at position after (0: the whole log).
	CountAfter(ctx context.Context, after int64) (int64, error)
}

// Notifier is implemented by a store that can wake a live reader when it
// has committed events, so the reader need not poll often. A store that
// does not implement it is polled.
type Notifier interface {
	// Appended returns a channel that is closed after the next commit that
	// appended events through this store.
	Appended() <-chan struct{}
}
