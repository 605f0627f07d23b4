package embedded

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// handlerError marks a handler's failure, which Subscribe retries and, once
// it has failed often enough, sets aside.
type handlerError struct {
	position int64                    // cursor of the delivery (its first event)
	event    eventstore.RecordedEvent // the event the handler failed on
	batch    []int64                  // a batch's cursors, nil for one event
	err      error
}

func (e *handlerError) Error() string {
	return fmt.Sprintf("handler failed on event %d: %v", e.event.Position, e.err)
}

func (e *handlerError) Unwrap() error { return e.err }

// Subscribe implements eventstore.Store.
//
// Each batch runs in one write transaction: it reads the checkpoint, the next
// events after it, runs the handler on each inside a savepoint and moves the
// checkpoint to the last event whose handler succeeded. A failing handler's
// writes roll back to its savepoint, the events before it in the batch
// commit, and the failed event is delivered again after a back-off, until
// it is set aside (eventstore.SubscribeOptions.MaxAttempts). The
// transaction holds the write lock, so appenders wait for the batch: keep
// handlers short, and do all database work through the handler's tx (the
// Store's own Append or Update from a handler waits until ctx ends).
//
// Subscribe returns ctx.Err() when ctx ends and ErrClosed when the Store is
// closed. Database errors are logged and retried like handler errors, but
// never count as attempts.
func (s *Store) Subscribe(ctx context.Context, name string, h eventstore.Handler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("embedded: subscribe %q: handler is nil", name)
	}
	return s.subscribe(ctx, name, perEvent(h), opts)
}

// SubscribeBatch implements eventstore.Store. It is Subscribe with one
// savepoint around the whole batch: a failing handler rolls back the
// batch's writes and the batch is delivered again after a back-off. A batch
// that failed MaxAttempts times is delivered one event per batch up to its
// last event, and the event that fails alone is set aside.
func (s *Store) SubscribeBatch(ctx context.Context, name string, h eventstore.BatchHandler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("embedded: subscribe %q: handler is nil", name)
	}
	return s.subscribe(ctx, name, wholeBatch(h), opts)
}

// unit is one step of a delivery: the event at cursor, past which the
// checkpoint moves, and the events the handler gets for it. That is the
// event itself; for a request to retry a set-aside event of this
// subscriber, the original event and then the request; none for an event
// the subscriber's Types exclude (read only to move past it).
type unit struct {
	cursor eventstore.RecordedEvent
	events []eventstore.RecordedEvent
}

// applier runs a subscriber's handler on the units of a batch inside t
// and returns how many of them (from the first) were handled; failure is
// the handler's error (*handlerError), err one of the database. skip sets
// a unit aside instead when it is due and reports whether it did.
type applier func(ctx context.Context, s *Store, t *txn, units []unit, skip func(unit) (bool, error)) (handled int, failure, err error)

// perEvent runs h on each unit inside a savepoint of its own, stopping at
// the first failure: the units before it commit.
func perEvent(h eventstore.Handler) applier {
	return func(ctx context.Context, s *Store, t *txn, units []unit, skip func(unit) (bool, error)) (int, error, error) {
		for i, u := range units {
			if skipped, err := skip(u); err != nil || skipped {
				if err != nil {
					return i, nil, err
				}
				continue
			}
			var failed eventstore.RecordedEvent
			failure, err := s.inSavepoint(ctx, t, func() error {
				for _, e := range u.events {
					if err := h(ctx, t, e); err != nil {
						failed = e
						return err
					}
				}
				return nil
			})
			if err != nil {
				return i, nil, err
			}
			if failure != nil {
				return i, &handlerError{position: u.cursor.Position, event: failed, err: failure}, nil
			}
		}
		return len(units), nil, nil
	}
}

// wholeBatch runs h once on the events of all units inside one savepoint,
// after setting aside the units at the front that are due.
func wholeBatch(h eventstore.BatchHandler) applier {
	return func(ctx context.Context, s *Store, t *txn, units []unit, skip func(unit) (bool, error)) (int, error, error) {
		first := 0
		for ; first < len(units); first++ {
			skipped, err := skip(units[first])
			if err != nil {
				return first, nil, err
			}
			if !skipped {
				break
			}
		}
		rest := units[first:]
		var evs []eventstore.RecordedEvent
		for _, u := range rest {
			evs = append(evs, u.events...)
		}
		if len(evs) == 0 {
			return len(units), nil, nil
		}
		failure, err := s.inSavepoint(ctx, t, func() error { return h(ctx, t, evs) })
		if err != nil {
			return first, nil, err
		}
		if failure != nil {
			he := &handlerError{position: rest[0].cursor.Position, event: evs[0], err: failure}
			if len(rest) > 1 {
				for _, u := range rest {
					he.batch = append(he.batch, u.cursor.Position)
				}
			}
			return first, he, nil
		}
		return len(units), nil, nil
	}
}

// inSavepoint runs fn inside a savepoint and rolls its writes back when it
// fails; failure is then fn's error.
func (s *Store) inSavepoint(ctx context.Context, t *txn, fn func() error) (failure, err error) {
	run := s.run(t.tx)
	if _, err := run.exec(ctx, `SAVEPOINT ledgerdesk_event`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	appendedBefore := t.appended
	if herr := fn(); herr != nil {
		if _, err := run.exec(ctx, `ROLLBACK TO ledgerdesk_event`); err != nil {
			return nil, fmt.Errorf("roll back the handler's writes: %w", err)
		}
		t.appended = appendedBefore
		failure = herr
	}
	if _, err := run.exec(ctx, `RELEASE ledgerdesk_event`); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return failure, nil
}

func (s *Store) subscribe(ctx context.Context, name string, apply applier, opts eventstore.SubscribeOptions) error {
	if name == "" {
		return errors.New("embedded: subscribe: name is empty")
	}
	interval := opts.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	batch := opts.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	log := s.logger.With("subscriber", name)
	failures := eventstore.NewFailures(opts)
	// Since Go 1.23 Reset discards a stale tick, so no draining is needed.
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var delay time.Duration
	for {
		// Take the wake-up channel before looking, so that a commit after
		// the look still wakes this loop.
		wake := s.woken()
		limit := batch
		if failures.Singles() {
			limit = 1
		}
		n, err := s.deliver(ctx, name, apply, limit, opts, failures)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.closed.Load() {
			return fmt.Errorf("embedded: subscribe %q: %w", name, eventstore.ErrClosed)
		}
		var wait <-chan struct{}
		switch {
		case err != nil:
			delay = min(max(2*delay, 10*time.Millisecond), maxRetryDelay)
			var he *handlerError
			switch {
			case !errors.As(err, &he):
				log.Error("delivery failed, will retry", "retry_in", delay, "error", err)
			case s.storeFault(ctx, he.err):
				log.Warn("handler failed while the database did not answer; not counted as an attempt",
					"position", he.event.Position, "retry_in", delay, "error", he.err)
			default:
				attempts := failures.Failed(he.position, he.event, he.err, he.batch)
				log.Warn("handler failed, will deliver the event again", "position", he.event.Position, "type", he.event.Type,
					"attempt", attempts, "batch", len(he.batch), "retry_in", delay, "error", he.err)
			}
			timer.Reset(delay)
		case n == limit:
			delay = 0
			continue // more may be waiting
		default:
			delay = 0
			wait = wake
			timer.Reset(interval)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("embedded: subscribe %q: %w", name, eventstore.ErrClosed)
		case <-wait:
		case <-timer.C:
		}
	}
}

// storeFault reports whether a handler's failure is the database's rather
// than the handler's on its event: SQLite could not lock, read or write,
// the store is closing, or it does not answer a ping now. Such failures
// are retried but never set an event aside.
func (s *Store) storeFault(ctx context.Context, err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
			sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CORRUPT:
			return true
		}
	}
	if errors.Is(err, eventstore.ErrClosed) || s.closed.Load() {
		return true
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
	defer cancel()
	return s.Ping(pctx) != nil
}

// pingTimeout bounds the health check after a handler's failure.
const pingTimeout = 5 * time.Second

// pending reports whether an event follows name's checkpoint, without taking
// the write lock: an idle subscriber must not block appenders.
//
// It looks for events of every type: a subscriber with Types moves its
// checkpoint past the others too (deliver), so that no poll reads them
// again.
func (s *Store) pending(ctx context.Context, name string) (bool, error) {
	var yes bool
	err := s.run(nil).scalar(ctx, &yes, `SELECT EXISTS (SELECT 1 FROM events WHERE position >
		COALESCE((SELECT position FROM subscription_checkpoints WHERE name = $1), 0))`, name)
	return yes, err
}

// typeFilter is the SQL condition of SubscribeOptions.Types, its
// placeholders numbered from first, and its arguments ("" without types).
func typeFilter(types []string, first int) (string, []any) {
	if len(types) == 0 {
		return "", nil
	}
	marks := make([]string, len(types))
	args := make([]any, len(types))
	for i, t := range types {
		marks[i], args[i] = "$"+strconv.Itoa(first+i), t
	}
	return " AND type IN (" + strings.Join(marks, ", ") + ")", args
}

// deliver runs one batch and returns how many events it read and passed
// (handled or set aside). A handler failure is returned as *handlerError
// after the events before it have committed.
func (s *Store) deliver(ctx context.Context, name string, apply applier, batch int, opts eventstore.SubscribeOptions,
	failures *eventstore.Failures,
) (int, error) {
	if ok, err := s.pending(ctx, name); err != nil || !ok {
		if err != nil {
			return 0, s.fail(fmt.Sprintf("subscribe %q: look for events", name), err)
		}
		return 0, nil
	}
	var (
		handled int
		failure error
		passed  []int64
	)
	err := s.write(ctx, fmt.Sprintf("subscribe %q", name), func(t *txn) error {
		handled, failure, passed = 0, nil, nil
		run := s.run(t.tx)
		cp, err := checkpoint(ctx, run, name)
		if err != nil {
			return fmt.Errorf("embedded: subscribe %q: read checkpoint: %w", name, err)
		}
		filter, args := typeFilter(opts.SelectTypes(), 3)
		evs, err := scanEvents(run.query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE position > $1`+filter+` ORDER BY position LIMIT $2`, append([]any{cp, batch}, args...)...))
		if err != nil {
			return fmt.Errorf("embedded: subscribe %q: read events: %w", name, err)
		}
		last := cp
		if len(evs) > 0 {
			units, err := s.units(ctx, run, name, evs, opts)
			if err != nil {
				return fmt.Errorf("embedded: subscribe %q: %w", name, err)
			}
			skip := func(u unit) (bool, error) { return s.setAside(ctx, t, name, u, opts, failures) }
			handled, failure, err = apply(ctx, s, t, units, skip)
			if err != nil {
				return fmt.Errorf("embedded: subscribe %q: %w", name, err)
			}
			for _, u := range units[:handled] {
				passed = append(passed, u.cursor.Position)
			}
			if handled > 0 {
				last = units[handled-1].cursor.Position
			}
		}
		if len(opts.Types) > 0 && len(evs) < batch && failure == nil {
			// Every wanted event up to the end of the log was delivered:
			// the checkpoint passes the other types' events as well.
			var end int64
			if err := run.scalar(ctx, &end, `SELECT COALESCE(MAX(position), 0) FROM events`); err != nil {
				return fmt.Errorf("embedded: subscribe %q: end of the log: %w", name, err)
			}
			last = max(last, end)
		}
		if last == cp {
			return nil
		}
		_, err = run.exec(ctx, `INSERT INTO subscription_checkpoints (name, position, updated_at)
			VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
			name, last, s.now().UTC().Format(recordedAtLayout))
		if err != nil {
			return fmt.Errorf("embedded: subscribe %q: save checkpoint %d: %w", name, last, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, p := range passed {
		failures.Passed(p)
	}
	return handled, failure
}

// units turns the events read into the units of a delivery; a request to
// retry one of this subscriber's set-aside events brings the original
// event, read again by its position.
func (s *Store) units(ctx context.Context, run runner, name string, evs []eventstore.RecordedEvent,
	opts eventstore.SubscribeOptions,
) ([]unit, error) {
	units := make([]unit, 0, len(evs))
	for _, e := range evs {
		u := unit{cursor: e}
		if opts.SetAside != nil && e.Type == opts.SetAside.RetryType() {
			r, err := opts.SetAside.DecodeRetry(e)
			switch {
			case err != nil:
				s.logger.Warn("undecodable retry request delivered as an event", "subscriber", name, "position", e.Position, "error", err)
			case r.Subscriber == name:
				orig, err := scanEvents(run.query(ctx, `SELECT `+eventColumns+` FROM events WHERE position = $1`, r.Position))
				switch {
				case err != nil:
					return nil, fmt.Errorf("read event %d to retry: %w", r.Position, err)
				case len(orig) == 0:
					s.logger.Warn("retry request names no event", "subscriber", name, "position", r.Position)
				case opts.Wants(orig[0].Type):
					u.events = append(u.events, orig[0])
				}
			}
		}
		if opts.Wants(e.Type) {
			u.events = append(u.events, e)
		}
		units = append(units, u)
	}
	return units, nil
}

// setAside appends the record of u's set-aside event in t when u is due,
// and reports whether it did.
func (s *Store) setAside(ctx context.Context, t *txn, name string, u unit, opts eventstore.SubscribeOptions,
	failures *eventstore.Failures,
) (bool, error) {
	sa, due := failures.Due(name, u.cursor.Position, s.now().UTC())
	if !due {
		return false, nil
	}
	req, err := opts.SetAside.SetAsideEvent(sa)
	if err != nil {
		return false, fmt.Errorf("record event %d as set aside: %w", sa.Event.Position, err)
	}
	if _, err := t.Append(ctx, req); err != nil {
		return false, fmt.Errorf("record event %d as set aside: %w", sa.Event.Position, err)
	}
	s.logger.Error("event set aside: its handler kept failing", "subscriber", name, "position", sa.Event.Position,
		"type", sa.Event.Type, "stream", sa.Event.Stream, "attempts", sa.Attempts, "error", sa.Err)
	return true, nil
}
