package embedded

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// handlerError marks a handler's failure, which Subscribe retries.
type handlerError struct {
	position int64
	err      error
}

func (e *handlerError) Error() string {
	return fmt.Sprintf("handler failed on event %d: %v", e.position, e.err)
}

func (e *handlerError) Unwrap() error { return e.err }

// Subscribe implements eventstore.Store.
//
// Each batch runs in one write transaction: it reads the checkpoint, the next
// events after it, runs the handler on each inside a savepoint and moves the
// checkpoint to the last event whose handler succeeded. A failing handler's
// writes roll back to its savepoint, the events before it in the batch
// commit, and the failed event is delivered again after a back-off. The
// transaction holds the write lock, so appenders wait for the batch: keep
// handlers short, and do all database work through the handler's tx (the
// Store's own Append or Update from a handler waits until ctx ends).
//
// Subscribe returns ctx.Err() when ctx ends and ErrClosed when the Store is
// closed. Database errors are logged and retried like handler errors.
func (s *Store) Subscribe(ctx context.Context, name string, h eventstore.Handler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("embedded: subscribe %q: handler is nil", name)
	}
	return s.subscribe(ctx, name, perEvent(h), opts)
}

// SubscribeBatch implements eventstore.Store. It is Subscribe with one
// savepoint around the whole batch: a failing handler rolls back the
// batch's writes and the batch is delivered again after a back-off.
func (s *Store) SubscribeBatch(ctx context.Context, name string, h eventstore.BatchHandler, opts eventstore.SubscribeOptions) error {
	if h == nil {
		return fmt.Errorf("embedded: subscribe %q: handler is nil", name)
	}
	return s.subscribe(ctx, name, wholeBatch(h), opts)
}

// applier runs a subscriber's handler on the events of a batch inside t
// and returns how many of them (from the first) were handled; failure is
// the handler's error (*handlerError), err one of the database.
type applier func(ctx context.Context, s *Store, t *txn, evs []eventstore.RecordedEvent) (handled int, failure, err error)

// perEvent runs h on each event inside a savepoint of its own, stopping
// at the first failure: the events before it commit.
func perEvent(h eventstore.Handler) applier {
	return func(ctx context.Context, s *Store, t *txn, evs []eventstore.RecordedEvent) (int, error, error) {
		for i, e := range evs {
			failure, err := s.inSavepoint(ctx, t, e.Position, func() error { return h(ctx, t, e) })
			if failure != nil || err != nil {
				return i, failure, err
			}
		}
		return len(evs), nil, nil
	}
}

// wholeBatch runs h once on all events inside one savepoint.
func wholeBatch(h eventstore.BatchHandler) applier {
	return func(ctx context.Context, s *Store, t *txn, evs []eventstore.RecordedEvent) (int, error, error) {
		failure, err := s.inSavepoint(ctx, t, evs[0].Position, func() error { return h(ctx, t, evs) })
		if failure != nil || err != nil {
			return 0, failure, err
		}
		return len(evs), nil, nil
	}
}

// inSavepoint runs fn inside a savepoint and rolls its writes back when it
// fails; failure is then fn's error as a *handlerError at position.
func (s *Store) inSavepoint(ctx context.Context, t *txn, position int64, fn func() error) (failure, err error) {
	run := s.run(t.tx)
	if _, err := run.exec(ctx, `SAVEPOINT ledgerdesk_event`); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	appendedBefore := t.appended
	if herr := fn(); herr != nil {
		if _, err := run.exec(ctx, `ROLLBACK TO ledgerdesk_event`); err != nil {
			return nil, fmt.Errorf("roll back event %d: %w", position, err)
		}
		t.appended = appendedBefore
		failure = &handlerError{position: position, err: herr}
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
	// Since Go 1.23 Reset discards a stale tick, so no draining is needed.
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var delay time.Duration
	for {
		// Take the wake-up channel before looking, so that a commit after
		// the look still wakes this loop.
		wake := s.woken()
		n, err := s.deliver(ctx, name, apply, batch, opts.Types)
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
			if errors.As(err, &he) {
				log.Warn("handler failed, will deliver the event again", "position", he.position, "retry_in", delay, "error", he.err)
			} else {
				log.Error("delivery failed, will retry", "retry_in", delay, "error", err)
			}
			timer.Reset(delay)
		case n == batch:
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

// deliver runs one batch and returns how many events were handled
// successfully. A handler failure is returned as *handlerError after the events
// before it have committed.
func (s *Store) deliver(ctx context.Context, name string, apply applier, batch int, types []string) (int, error) {
	if ok, err := s.pending(ctx, name); err != nil || !ok {
		if err != nil {
			return 0, s.fail(fmt.Sprintf("subscribe %q: look for events", name), err)
		}
		return 0, nil
	}
	var handled int
	var failure error
	err := s.write(ctx, fmt.Sprintf("subscribe %q", name), func(t *txn) error {
		run := s.run(t.tx)
		cp, err := checkpoint(ctx, run, name)
		if err != nil {
			return fmt.Errorf("embedded: subscribe %q: read checkpoint: %w", name, err)
		}
		filter, args := typeFilter(types, 3)
		evs, err := scanEvents(run.query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE position > $1`+filter+` ORDER BY position LIMIT $2`, append([]any{cp, batch}, args...)...))
		if err != nil {
			return fmt.Errorf("embedded: subscribe %q: read events: %w", name, err)
		}
		last := cp
		if len(evs) > 0 {
			handled, failure, err = apply(ctx, s, t, evs)
			if err != nil {
				return fmt.Errorf("embedded: subscribe %q: %w", name, err)
			}
			if handled > 0 {
				last = evs[handled-1].Position
			}
		}
		if len(types) > 0 && len(evs) < batch && failure == nil {
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
	return handled, failure
}
