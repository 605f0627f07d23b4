package postgres

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// topic is the watermill topic of the events table. The adapters below
// ignore it; watermill only checks that it is a valid name.
const topic = "events"

// maxNameLen is the width of subscription_offsets.consumer_group.
const maxNameLen = 255

// Subscription defaults.
const (
	defaultPollInterval = 200 * time.Millisecond
	defaultBatchSize    = 100
	// maxHandlerBackoff caps the wait before a failed batch is retried.
	maxHandlerBackoff = 5 * time.Second
)

// offsetsAdapter is watermill's own PostgreSQL offsets adapter on the
// subscription_offsets table of the migrations: one row per consumer group,
// locked FOR UPDATE while a batch runs and upserted in the batch's
// transaction.
var offsetsAdapter = wsql.DefaultPostgreSQLOffsetsAdapter{
	GenerateMessagesOffsetsTableName: func(string) string { return "subscription_offsets" },
}

// schemaAdapter lets watermill's Subscriber read the events table. It
// follows DefaultPostgreSQLSchema (order by (transaction_id, position), only
// below the snapshot's xmin) with the store's columns, and narrows the xmin
// to this database (see sqlHorizon).
type schemaAdapter struct {
	batchSize int
	state     *batchState
	types     []string // SubscribeOptions.Types
}

var _ wsql.SchemaAdapter = schemaAdapter{}

// InsertQuery is refused: events are appended with Store.Append, which
// checks stream versions and returns positions; watermill's Publisher can do
// neither.
func (schemaAdapter) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errors.New("eventstore/postgres: events are appended with Store.Append, not published")
}

// SchemaInitializingQueries is refused: the schema belongs to the migrations.
func (schemaAdapter) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, errors.New("eventstore/postgres: the schema is created by migrations.ApplyPostgres")
}

// SubscribeIsolationLevel is REPEATABLE READ, as in DefaultPostgreSQLSchema:
// the batch and its handlers see one snapshot.
func (schemaAdapter) SubscribeIsolationLevel() stdsql.IsolationLevel {
	return stdsql.LevelRepeatableRead
}

// SelectQuery selects the next batch after the group's offset. The row
// comparison is an index condition on events_pkey (watermill's OR form needs
// a bitmap scan to stay fast).
func (a schemaAdapter) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	if a.state != nil {
		a.state.inBatch.Store(true) // watermill asks inside the batch transaction
		a.state.startBatch()
	}
	next, err := p.OffsetsAdapter.NextOffsetQuery(wsql.NextOffsetQueryParams{Topic: p.Topic, ConsumerGroup: p.ConsumerGroup})
	if err != nil {
		return wsql.Query{}, err
	}
	if len(a.types) > 0 {
		return a.selectTypes(next), nil
	}
	q := `WITH last_processed AS (` + next.Query + `)
SELECT transaction_id, ` + eventColumns + ` FROM events
WHERE (transaction_id, position) > (
		(SELECT last_processed_transaction_id FROM last_processed),
		(SELECT COALESCE(offset_acked, 0) FROM last_processed))
	AND transaction_id < ` + sqlHorizon + `
ORDER BY transaction_id, position
LIMIT ` + strconv.Itoa(a.batchSize)
	return wsql.Query{Query: q, Args: next.Args}, nil
}

// selectTypes is SelectQuery for a subscriber with Types: the batch's
// events of those types and, when fewer than a batch follow, also the last
// final event of the log whatever its type. Watermill's offset then moves
// past the events of other types (runSubscriber acks that last one without
// handing it to the handler), so no poll reads them twice.
func (a schemaAdapter) selectTypes(next wsql.Query) wsql.Query {
	args := append(slices.Clip(next.Args), a.types)
	limit := strconv.Itoa(a.batchSize)
	// the final events after the offset
	const unread = `SELECT transaction_id, ` + eventColumns + ` FROM events
	WHERE (transaction_id, position) > (
			(SELECT last_processed_transaction_id FROM last_processed),
			(SELECT COALESCE(offset_acked, 0) FROM last_processed))
		AND transaction_id < (SELECT xid FROM horizon)`
	q := `WITH last_processed AS (` + next.Query + `),
horizon AS (SELECT ` + sqlHorizon + ` AS xid),
wanted AS (` + unread + `
		AND event_type = ANY($` + strconv.Itoa(len(args)) + `::text[])
	ORDER BY transaction_id, position
	LIMIT ` + limit + `),
tail AS (` + unread + `
	ORDER BY transaction_id DESC, position DESC
	LIMIT 1)
SELECT * FROM wanted
UNION ALL
SELECT * FROM tail
WHERE (SELECT count(*) FROM wanted) < ` + limit + ` AND tail.position NOT IN (SELECT position FROM wanted)
ORDER BY transaction_id, position`
	return wsql.Query{Query: q, Args: args}
}

// mdPosition and mdType are the metadata of the watermill messages the
// adapter produces, for logs; the events themselves travel beside them in
// batchState, so that they are not formatted into strings and parsed back.
const (
	mdPosition = "position"
	mdType     = "type"
)

// UnmarshalMessage turns a row into a message whose UUID is the event id,
// and keeps the event for the handlers (batchState.take). Watermill reads
// all rows of a batch before it delivers the first.
func (a schemaAdapter) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var xid uint64
	e, err := scanEvent(prependScanner{p.Row, &xid})
	if err != nil {
		return wsql.Row{}, err
	}
	if a.state != nil {
		a.state.add(e)
	}
	msg := message.NewMessage(e.ID, message.Payload(e.Payload))
	msg.Metadata = message.Metadata{mdPosition: strconv.FormatInt(e.Position, 10), mdType: e.Type}
	return wsql.Row{
		Offset:    e.Position,
		UUID:      []byte(e.ID),
		Payload:   e.Payload,
		Msg:       msg,
		ExtraData: map[string]any{"transaction_id": wsql.XID8(xid)},
	}, nil
}

// prependScanner scans the first column into first and the rest into the
// caller's destinations.
type prependScanner struct {
	row   scanner
	first any
}

func (s prependScanner) Scan(dest ...any) error {
	return s.row.Scan(append([]any{s.first}, dest...)...)
}

// Subscribe delivers events to h in global order through a watermill
// sql.Subscriber whose consumer group is name. A batch of up to
// opts.BatchSize events runs in one REPEATABLE READ transaction, which h
// writes through and which also upserts the group's offset, so h's writes
// commit exactly when the events count as processed.
//
// When h fails, the whole batch is rolled back (h's writes for earlier
// events of the batch included) and delivered again after a growing pause;
// the failure is logged. Watermill's Nack is not used: it would resend in the
// same transaction, keeping the failed handler's writes. After
// opts.MaxAttempts failures on one event while the database answers, the
// next delivery sets the event aside instead of handing it to h: the record
// is appended in the batch's transaction, which also moves the offset past
// the event.
//
// A subscription holds one pool connection while a batch runs (and briefly
// for each empty poll). h must do its database work through tx: a handler
// that waits for another pool connection can starve the pool when every
// connection is held by a subscription.
//
// Subscribe returns ctx.Err() when ctx ends and eventstore.ErrClosed when
// the store is closed.
func (s *Store) Subscribe(ctx context.Context, name string, h eventstore.Handler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("eventstore/postgres: subscribe %q: handler is nil", name)
	}
	each := func(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if err := h(ctx, tx, e); err != nil {
				return &eventError{event: e, err: err}
			}
		}
		return nil
	}
	return s.subscribe(ctx, name, each, false, opts)
}

// SubscribeBatch implements eventstore.Store: Subscribe, but h gets the
// events of a batch transaction at once, when watermill hands over the
// batch's last event. The events before it are acked to watermill as they
// arrive, which only lets it offer the next one: nothing commits before
// the batch's end, and a failing h or a stop in mid-batch rolls the whole
// batch back. A batch that failed opts.MaxAttempts times is delivered
// again in batches of one event up to its last, so that the event that
// fails it is set aside alone.
func (s *Store) SubscribeBatch(ctx context.Context, name string, h eventstore.BatchHandler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("eventstore/postgres: subscribe %q: handler is nil", name)
	}
	return s.subscribe(ctx, name, h, true, opts)
}

// subscribe runs a subscription; whole says whether h gets each batch at
// once or each event as it arrives.
func (s *Store) subscribe(ctx context.Context, name string, h eventstore.BatchHandler, whole bool, opts eventstore.SubscribeOptions) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("eventstore/postgres: subscribe: name must have 1 to %d bytes, %q has %d", maxNameLen, name, len(name))
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPollInterval
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = defaultBatchSize
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return eventstore.ErrClosed
	}
	s.subs.Add(1)
	s.mu.Unlock()
	defer s.subs.Done()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()

	logger := s.logger.With("subscriber", name)
	failures := eventstore.NewFailures(opts)
	var (
		backoff    time.Duration
		lastFailed int64
		wasSingles bool
	)
	for {
		f, err := s.runSubscriber(runCtx, name, h, whole, opts, failures, logger)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case s.closing.Err() != nil:
			return eventstore.ErrClosed
		case err != nil:
			return fmt.Errorf("eventstore/postgres: subscribe %q: %w", name, err)
		}
		var failedAt int64
		if f != nil {
			failedAt = f.key
			switch {
			case f.store:
			case s.storeFault(runCtx, f.err):
				logger.Warn("event handler failed while the database was in trouble; the batch is rolled back and not counted as an attempt",
					"position", f.event.Position, "type", f.event.Type, "err", f.err)
			default:
				attempts := failures.Failed(f.key, f.event, f.err, f.batch)
				logger.Error("event handler failed; the batch is rolled back and will be delivered again",
					"event_id", f.event.ID, "position", f.event.Position, "type", f.event.Type, "attempt", attempts,
					"events", f.events, "err", f.err)
			}
		}
		// The pause grows while the same event keeps failing. It starts
		// again when a failing batch is taken apart: its events' attempts
		// are counted anew, and at the grown pause the events behind a
		// poisoned one would wait MaxAttempts times maxHandlerBackoff more.
		singles := failures.Singles()
		if failedAt != lastFailed || backoff == 0 || singles != wasSingles {
			backoff = opts.PollInterval
		} else {
			backoff = min(2*backoff, maxHandlerBackoff)
		}
		lastFailed, wasSingles = failedAt, singles
		select {
		case <-runCtx.Done():
		case <-time.After(backoff):
		}
	}
}

// failure is why a run of the subscriber ended early.
type failure struct {
	key    int64                    // position of the failed delivery's first event
	event  eventstore.RecordedEvent // the event the handler failed on
	batch  []int64                  // a batch delivery's cursors, nil for one event
	events int                      // how many events h was given
	err    error
	store  bool // the store failed, not the handler: logged already, never counted
}

// eventError names the event a per-event handler failed on.
type eventError struct {
	event eventstore.RecordedEvent
	err   error
}

func (e *eventError) Error() string { return e.err.Error() }
func (e *eventError) Unwrap() error { return e.err }

// storeFault reports whether a handler's failure is the database's rather
// than the handler's on its event: the connection was lost or refused,
// the server is shutting down, short of resources or failing on I/O, the
// transaction lost a serialization or deadlock race, or the database does
// not answer a ping now. Such failures are retried but never set an event
// aside.
func (s *Store) storeFault(ctx context.Context, err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == codeSerializationFailure, pgErr.Code == codeDeadlock, pgErr.Code == codeLockNotAvailable,
			strings.HasPrefix(pgErr.Code, "08"),  // connection exception
			strings.HasPrefix(pgErr.Code, "53"),  // insufficient resources
			strings.HasPrefix(pgErr.Code, "57P"), // operator intervention: shutdown, cannot connect now
			strings.HasPrefix(pgErr.Code, "58"),  // system error (I/O)
			strings.HasPrefix(pgErr.Code, "XX"):  // internal error
			return true
		}
	}
	var netErr net.Error
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, eventstore.ErrClosed) {
		return true
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
	defer cancel()
	return s.Ping(pctx) != nil
}

// SQLSTATEs of lost races that storeFault does not count.
const (
	codeDeadlock         = "40P01"
	codeLockNotAvailable = "55P03"
)

// pingTimeout bounds the health check after a handler's failure.
const pingTimeout = 5 * time.Second

// runSubscriber runs one watermill Subscriber until ctx ends or a handler
// fails; f then says how (f.store when the failure was the store's).
//
// The two ways of stopping differ on purpose:
//   - A handler failure aborts: watermill's own context is cancelled before
//     the message is acked, so its ack query and commit fail on that context
//     and the whole batch transaction rolls back, the failed handler's
//     writes included.
//   - The end of ctx stops gracefully: the batch commits what was acked. It
//     calls watermill's Close, which commits the acked messages, only when
//     that cannot commit a handler's writes without its offset: while no
//     handler runs and watermill has taken in the last ack (it offered the
//     next message, or it finished the batch).
//
// Events that arrived but were not handled yet (whole batches) must not
// commit: a stop then rolls the batch back instead.
//
// While failures takes a failing batch apart, batches hold one event; the
// run ends gracefully after the batch's last event, so that the next one
// reads full batches again.
func (s *Store) runSubscriber(ctx context.Context, name string, h eventstore.BatchHandler, whole bool, opts eventstore.SubscribeOptions,
	failures *eventstore.Failures, logger *slog.Logger) (f *failure, err error) {
	wmCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	state := &batchState{ended: make(chan struct{}, 1), store: s, stopping: make(chan struct{})}
	zero := time.Duration(0)
	batchSize := opts.BatchSize
	singles := failures.Singles()
	if singles {
		batchSize = 1
	}
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(s.pool), wsql.SubscriberConfig{
		ConsumerGroup: name,
		// No ack deadline: when it fires watermill commits the batch so far
		// while the handler may still be writing in the same transaction.
		AckDeadline:    &zero,
		PollInterval:   opts.PollInterval,
		ResendInterval: opts.PollInterval,
		RetryInterval:  opts.PollInterval,
		BackoffManager: backoffManager{ctx: wmCtx, poll: opts.PollInterval, logger: logger, state: state},
		SchemaAdapter:  schemaAdapter{batchSize: batchSize, state: state, types: opts.SelectTypes()},
		OffsetsAdapter: offsetsAdapter,
	}, watermillLogger(logger, func() bool { return wmCtx.Err() != nil }))
	if err != nil {
		return nil, fmt.Errorf("watermill subscriber: %w", err)
	}
	msgs, err := sub.Subscribe(wmCtx, topic)
	if err != nil {
		_ = sub.Close()
		if ctx.Err() != nil {
			return nil, nil
		}
		// Registering the group failed (e.g. the database is down): retry
		// like a failed batch rather than give up.
		logger.Warn("subscriber could not start", "err", err)
		return &failure{err: err, store: true}, nil
	}
	// stop ends the subscriber and waits for it; gracefully unless aborted
	// or it takes too long.
	stop := func(graceful bool) {
		state.stop()
		if !graceful {
			abort()
		}
		closed := make(chan struct{})
		go func() {
			_ = sub.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(gracefulStopTimeout):
			abort()
			<-closed
		}
		for range msgs { // watermill closes it after its consumer returned
		}
	}
	// stopAfterAck stops gracefully once watermill has taken in the last
	// ack: it ended the batch, or it offers the next message (left
	// unhandled).
	stopAfterAck := func() {
		select {
		case <-state.ended:
		case <-msgs:
		case <-time.After(gracefulStopTimeout):
			stop(false)
			return
		}
		stop(true)
	}

	var (
		held    bool                       // a message was received and will not be handled
		pending []eventstore.RecordedEvent // acked to watermill, not yet handled
		cursors []int64                    // positions of the messages whose events are pending
	)
	for !held {
		select {
		case <-ctx.Done():
			if !state.inBatch.Load() {
				stop(true) // between batches: nothing to commit
				return nil, nil
			}
			if len(pending) > 0 {
				stop(false)
				return nil, nil
			}
			stopAfterAck()
			return nil, nil
		case msg, ok := <-msgs:
			if !ok {
				return nil, nil
			}
			// An end-of-batch signal still pending is from an earlier batch.
			select {
			case <-state.ended:
			default:
			}
			if ctx.Err() != nil {
				held = true
				break
			}
			e, first, last, err := state.take(msg.UUID)
			if err != nil {
				stop(false)
				logger.Error("subscription out of step with watermill; the batch is rolled back", "event_id", msg.UUID, "err", err)
				return &failure{err: err, store: true}, nil
			}
			if first {
				pending, cursors = nil, nil // an earlier batch that watermill ended early rolled back
			}
			setAside, evs, err := s.unit(ctx, msg, name, e, opts, failures, logger)
			if err != nil {
				stop(false)
				if ctx.Err() != nil {
					return nil, nil
				}
				logger.Error("event could not be prepared for delivery; the batch is rolled back", "position", e.Position, "err", err)
				return &failure{key: e.Position, event: e, err: err, store: true}, nil
			}
			if len(evs) > 0 {
				pending = append(pending, evs...)
				cursors = append(cursors, e.Position)
			} // else set aside, or an event only read to move the offset
			if len(pending) > 0 && (!whole || last) {
				appended, err := s.handle(ctx, msg, h, pending)
				if appended {
					state.appended.Store(true)
				}
				if err != nil {
					stop(false)
					if ctx.Err() != nil {
						return nil, nil // stopping: the handler saw its context end
					}
					return failed(cursors, pending, whole, err), nil
				}
				for _, c := range cursors {
					failures.Passed(c)
				}
				pending, cursors = nil, nil // h may keep the slice
			}
			if setAside {
				failures.Passed(e.Position)
			}
			msg.Ack()
			if singles && !failures.Singles() {
				stopAfterAck() // the failing batch is taken apart: read full batches again
				return nil, nil
			}
		}
	}
	stop(len(pending) == 0)
	return nil, nil
}

// failed describes a handler's failure on the pending events of the
// deliveries at cursors.
func failed(cursors []int64, pending []eventstore.RecordedEvent, whole bool, err error) *failure {
	f := &failure{key: cursors[0], event: pending[0], events: len(pending), err: err}
	var ef *eventError
	if errors.As(err, &ef) {
		// Subscribe: the handler failed on one event; the delivery is the
		// message it came with (the last one).
		f.key, f.event, f.err = cursors[len(cursors)-1], ef.event, ef.err
	}
	if whole && len(cursors) > 1 {
		f.batch = cursors
	}
	return f
}

// unit returns the events a message brings the handler: the event itself
// when the subscriber takes its type; for a request to retry an event this
// subscriber set aside, the original event (read again by its position)
// first. When the event is due to be set aside instead, it appends the
// record in the message's transaction and says so.
func (s *Store) unit(ctx context.Context, msg *message.Message, name string, e eventstore.RecordedEvent, opts eventstore.SubscribeOptions,
	failures *eventstore.Failures, logger *slog.Logger) (setAside bool, evs []eventstore.RecordedEvent, err error) {
	if sa, due := failures.Due(name, e.Position, time.Now().UTC()); due {
		tx, err := txOf(msg)
		if err != nil {
			return false, nil, err
		}
		req, err := opts.SetAside.SetAsideEvent(sa)
		if err != nil {
			return false, nil, fmt.Errorf("record event %d as set aside: %w", sa.Event.Position, err)
		}
		if _, err := tx.Append(ctx, req); err != nil {
			return false, nil, fmt.Errorf("record event %d as set aside: %w", sa.Event.Position, err)
		}
		logger.Error("event set aside: its handler kept failing", "position", sa.Event.Position, "type", sa.Event.Type,
			"stream", sa.Event.Stream, "attempts", sa.Attempts, "err", sa.Err)
		return true, nil, nil
	}
	if opts.SetAside != nil && e.Type == opts.SetAside.RetryType() {
		r, err := opts.SetAside.DecodeRetry(e)
		switch {
		case err != nil:
			logger.Warn("undecodable retry request delivered as an event", "position", e.Position, "err", err)
		case r.Subscriber == name:
			tx, err := txOf(msg)
			if err != nil {
				return false, nil, err
			}
			orig, err := readStreamRows(tx.tx.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE position = $1`, r.Position))
			switch {
			case err != nil:
				return false, nil, fmt.Errorf("read event %d to retry: %w", r.Position, err)
			case len(orig) == 0:
				logger.Warn("retry request names no event", "position", r.Position)
			case opts.Wants(orig[0].Type):
				evs = append(evs, orig[0])
			}
		}
	}
	if opts.Wants(e.Type) {
		evs = append(evs, e)
	}
	return false, evs, nil
}

// readStreamRows collects the events of a query's rows.
func readStreamRows(rows pgx.Rows, err error) ([]eventstore.RecordedEvent, error) {
	if err != nil {
		return nil, err
	}
	return collectEvents(rows, 0)
}

// gracefulStopTimeout bounds how long a stopping subscription waits for
// watermill to finish its batch before rolling it back.
const gracefulStopTimeout = 10 * time.Second

// batchState tells runSubscriber where watermill's consumer is.
type batchState struct {
	// inBatch is set when watermill builds its SELECT (inside the batch
	// transaction) and cleared when it reports the batch's outcome.
	inBatch atomic.Bool
	// ended receives a signal after each batch transaction ended.
	ended chan struct{}

	// store is woken by appends (Store.Appended); appended is set when the
	// batch's handlers appended events, to wake the others after its commit.
	store    *Store
	appended atomic.Bool

	mu sync.Mutex
	// events are the batch's events as watermill read them; next is the
	// index of the one it delivers next.
	events []eventstore.RecordedEvent
	next   int
	// wake is Store.Appended as of the batch's start.
	wake <-chan struct{}
	// stopping is closed when the subscriber is being stopped, which ends
	// HandleError's wait as watermill's own sleep would end.
	stopping chan struct{}
	stopOnce sync.Once
}

func (b *batchState) stop() { b.stopOnce.Do(func() { close(b.stopping) }) }

// startBatch forgets the last batch's events (watermill selects a new one).
func (b *batchState) startBatch() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events, b.next = b.events[:0], 0
	if b.store != nil {
		// Taken before the batch's snapshot: a commit after it wakes the
		// wait in HandleError, one before it is in the snapshot.
		b.wake = b.store.Appended()
	}
}

// woken returns the channel taken at the start of the last batch.
func (b *batchState) woken() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wake
}

func (b *batchState) add(e eventstore.RecordedEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, e)
}

// take returns the event of the message watermill delivers now, and
// whether it is the first and the last of its batch.
func (b *batchState) take(id string) (e eventstore.RecordedEvent, first, last bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next >= len(b.events) || b.events[b.next].ID != id {
		return e, false, false, fmt.Errorf("watermill delivered event %s, not the next of the %d read", id, len(b.events))
	}
	e = b.events[b.next]
	first = b.next == 0
	b.next++
	return e, first, b.next == len(b.events), nil
}

// handle runs h on evs in the transaction that delivered msg.
// It says whether h appended events.
func (s *Store) handle(ctx context.Context, msg *message.Message, h eventstore.BatchHandler, evs []eventstore.RecordedEvent) (appended bool, _ error) {
	tx, err := txOf(msg)
	if err != nil {
		return false, err
	}
	// The handler's context carries the transaction and ends with the
	// subscription.
	hctx, cancel := context.WithCancel(msg.Context())
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	err = h(hctx, tx, evs)
	return tx.appended, err
}

// txOf returns the transaction watermill delivered msg in.
func txOf(msg *message.Message) (*pgTx, error) {
	wtx, ok := wsql.TxFromContext(msg.Context())
	if !ok {
		return nil, errors.New("watermill delivered a message without its transaction")
	}
	// Never Commit or Rollback watermill's wrapper (its context is nil for
	// TxFromPgx); the subscriber ends the transaction itself.
	ptx, ok := wtx.(*wsql.PgxTx)
	if !ok {
		return nil, fmt.Errorf("watermill transaction is a %T, want *sql.PgxTx", wtx)
	}
	return &pgTx{tx: ptx.Tx}, nil
}

// backoffManager paces watermill's polling and keeps it quiet about the
// errors a deliberate cancellation causes.
type backoffManager struct {
	ctx    context.Context
	poll   time.Duration
	logger *slog.Logger
	state  *batchState
}

// HandleError runs after every batch transaction, which makes it the
// batch-end signal for runSubscriber too.
func (b backoffManager) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	b.state.inBatch.Store(false)
	select {
	case b.state.ended <- struct{}{}:
	default:
	}
	if b.state.appended.Swap(false) && err == nil && b.state.store != nil {
		b.state.store.notifyAppended() // the batch committed events of its own
	}
	switch {
	case b.ctx.Err() != nil:
		return 0
	case err != nil && strings.Contains(strings.ToLower(err.Error()), "concurrent update"):
		// Another subscriber of the group committed first (REPEATABLE READ
		// plus FOR UPDATE): read again at once.
		return 0
	case err != nil:
		b.logger.Warn("polling events failed", "err", err)
		return max(b.poll, time.Second)
	case noMsg:
		return b.waitAppended()
	}
	return 0
}

// waitAppended waits for the poll interval, or less when this store
// commits events meanwhile: then watermill reads again at once. Watermill
// sleeps for the duration returned and cannot be woken, so the wait is here.
func (b backoffManager) waitAppended() time.Duration {
	wake := b.state.woken()
	if wake == nil {
		return b.poll
	}
	timer := time.NewTimer(b.poll)
	defer timer.Stop()
	select {
	case <-wake:
	case <-timer.C:
	case <-b.ctx.Done():
	case <-b.state.stopping:
		return b.poll // watermill's sleep ends when the subscriber closes
	}
	return 0
}

// watermillLogger maps watermill's chatty Info logs to Debug, and its
// errors to Debug once aborted() holds: a deliberate abort makes watermill's
// ack or commit fail, which runSubscriber has already reported.
func watermillLogger(logger *slog.Logger, aborted func() bool) watermill.LoggerAdapter {
	return quietLogger{
		LoggerAdapter: watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
			slog.LevelInfo: slog.LevelDebug,
		}),
		aborted: aborted,
	}
}

type quietLogger struct {
	watermill.LoggerAdapter
	aborted func() bool
	// withs are the fields of With, added only when something is logged:
	// watermill calls With for every message it delivers, and slog's With
	// encodes the fields at once (5% of the process's CPU in an import).
	withs []watermill.LogFields
}

// fields returns the With fields followed by f.
func (l quietLogger) fields(f watermill.LogFields) watermill.LogFields {
	if len(l.withs) == 0 {
		return f
	}
	all := watermill.LogFields{}
	for _, w := range l.withs {
		all = all.Add(w)
	}
	return all.Add(f)
}

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	if l.aborted() {
		l.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, l.fields(fields))
}

func (l quietLogger) Info(msg string, fields watermill.LogFields) {
	l.LoggerAdapter.Info(msg, l.fields(fields))
}

func (l quietLogger) Debug(msg string, fields watermill.LogFields) {
	l.LoggerAdapter.Debug(msg, l.fields(fields))
}

func (l quietLogger) Trace(msg string, fields watermill.LogFields) {
	l.LoggerAdapter.Trace(msg, l.fields(fields))
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{LoggerAdapter: l.LoggerAdapter, aborted: l.aborted, withs: append(l.withs[:len(l.withs):len(l.withs)], fields)}
}
