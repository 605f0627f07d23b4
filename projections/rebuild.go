package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// RebuildOptions tunes Rebuild.
type RebuildOptions struct {
	// Dialect is DialectPostgres or DialectSQLite (the DDL of the fresh tables).
	Dialect string
	// BatchSize is how many events share one transaction [1000].
	BatchSize int
	// Every is how often Progress is called [1s].
	Every time.Duration
	// Progress, if set, is called while the rebuild runs and once at the end.
	Progress func(RebuildProgress)
	Logger   *slog.Logger
	// Now is the clock of the rate [time.Now].
	Now func() time.Time
}

// RebuildProgress says how far a rebuild is.
type RebuildProgress struct {
	View       string
	Generation int64
	Subscriber string
	// Events counts the events handed to the projection so far; Total is
	// the size of the log when the rebuild started.
	Events, Total int64
	// Position is the fresh subscriber's checkpoint.
	Position int64
	Elapsed  time.Duration
	// Rate is events per second since the start.
	Rate float64
	// Swapped is set once the fresh tables serve.
	Swapped bool
}

// Percent is Events of Total, capped at 100 (events appended during the
// rebuild count too).
func (p RebuildProgress) Percent() float64 {
	if p.Total <= 0 {
		return 100
	}
	return min(100, 100*float64(p.Events)/float64(p.Total))
}

// Rebuild replays the whole log into a fresh generation of view's tables
// (view is one of ViewNames) while the serving tables keep serving, then
// swaps the fresh set in:
//
//  1. It takes the next generation N (projection_generations.last_attempt,
//     so an aborted rebuild never reuses a subscriber name or its
//     checkpoint), and creates the tables with the suffix "_g<N>".
//  2. A new subscriber, "<base>.g<N>", feeds them from the first event.
//  3. Once it has processed every event visible in the log, it stops, and
//     one transaction drops the serving tables, renames the fresh ones to
//     the plain names and records generation N and its subscriber.
//
// A running server notices the new subscriber within a few seconds and
// continues from where the rebuild stopped (see view.run); the handlers'
// per-stream version guard keeps rows right while both briefly write.
func Rebuild(ctx context.Context, store eventstore.Store, reader Reader, view string, opts RebuildOptions) (RebuildProgress, error) {
	tables, ok := viewTables[view]
	if !ok {
		return RebuildProgress{}, fmt.Errorf("projections: rebuild: unknown view %q (one of %s)", view, strings.Join(ViewNames(), ", "))
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	gen, err := nextGeneration(ctx, store, view)
	if err != nil {
		return RebuildProgress{}, err
	}
	suffix := fmt.Sprintf("_g%d", gen)
	ddl, err := tableDDL(opts.Dialect, view, suffix)
	if err != nil {
		return RebuildProgress{}, err
	}
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		for _, t := range tables {
			if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+t+suffix); err != nil {
				return err
			}
		}
		return execAll(ctx, tx, ddl)
	})
	if err != nil {
		return RebuildProgress{}, fmt.Errorf("projections: rebuild %s: create tables: %w", view, err)
	}

	var (
		handle eventstore.Handler
		base   string
	)
	switch view {
	case "tickets":
		p := newTickets(store, reader, opts.Logger, suffix)
		handle, base = p.Handle, TicketsName
	case "users":
		p := newUsers(store, reader, opts.Logger, suffix)
		handle, base = p.Handle, UsersName
	case "locations":
		p := newLocations(store, reader, opts.Logger, suffix)
		handle, base = p.Handle, LocationsName
	}
	prog := RebuildProgress{View: view, Generation: gen, Subscriber: subscriberFor(base, gen)}
	if prog.Total, err = countEvents(ctx, reader); err != nil {
		return prog, err
	}

	var handled atomic.Int64
	counted := func(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
		err := handle(ctx, tx, ev)
		if err == nil {
			handled.Add(1)
		}
		return err
	}
	start := opts.Now()
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	subDone := make(chan error, 1)
	go func() {
		subDone <- store.Subscribe(subCtx, prog.Subscriber, counted,
			eventstore.SubscribeOptions{BatchSize: opts.BatchSize, PollInterval: 50 * time.Millisecond})
	}()
	report := func() {
		prog.Events = handled.Load()
		prog.Elapsed = opts.Now().Sub(start)
		if s := prog.Elapsed.Seconds(); s > 0 {
			prog.Rate = float64(prog.Events) / s
		}
		if opts.Progress != nil {
			opts.Progress(prog)
		}
	}
	tick := time.NewTicker(opts.Every / 4)
	defer tick.Stop()
	lastReport := start
	for caughtUp := false; !caughtUp; {
		select {
		case <-ctx.Done():
			stop()
			<-subDone
			return prog, ctx.Err()
		case err := <-subDone:
			return prog, fmt.Errorf("projections: rebuild %s: subscription ended: %w", view, err)
		case <-tick.C:
		}
		if prog.Position, err = store.Checkpoint(ctx, prog.Subscriber); err != nil {
			return prog, fmt.Errorf("projections: rebuild %s: %w", view, err)
		}
		if handled.Load() >= prog.Total || prog.Position > 0 {
			next, err := store.ReadAll(ctx, prog.Position, 1)
			if err != nil {
				return prog, fmt.Errorf("projections: rebuild %s: %w", view, err)
			}
			caughtUp = len(next) == 0
		}
		if now := opts.Now(); now.Sub(lastReport) >= opts.Every && !caughtUp {
			lastReport = now
			report()
		}
	}
	stop()
	if err := <-subDone; err != nil && !errors.Is(err, context.Canceled) {
		return prog, fmt.Errorf("projections: rebuild %s: %w", view, err)
	}
	if prog.Position, err = store.Checkpoint(ctx, prog.Subscriber); err != nil {
		return prog, fmt.Errorf("projections: rebuild %s: %w", view, err)
	}
	if err := swap(ctx, store, view, tables, suffix, gen, prog.Subscriber); err != nil {
		return prog, err
	}
	prog.Swapped = true
	report()
	return prog, nil
}

// nextGeneration reserves the generation number of a new rebuild.
func nextGeneration(ctx context.Context, store eventstore.Store, view string) (int64, error) {
	var gen int64
	err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		var cur, last int64
		err := tx.QueryRow(ctx, `SELECT generation, last_attempt FROM projection_generations WHERE projection = $1`, view).Scan(&cur, &last)
		switch {
		case errors.Is(err, eventstore.ErrNoRows):
			cur, last = 1, 1
			_, err = tx.Exec(ctx, `INSERT INTO projection_generations (projection, generation, subscriber, last_attempt)
				VALUES ($1, 1, $2, 1)`, view, subscriberFor(baseName(view), 1))
			if err != nil {
				return err
			}
		case err != nil:
			return err
		}
		gen = max(cur, last) + 1
		_, err = tx.Exec(ctx, `UPDATE projection_generations SET last_attempt = $2 WHERE projection = $1`, view, gen)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("projections: rebuild %s: reserve a generation: %w", view, err)
	}
	return gen, nil
}

// swap makes generation gen's tables the serving ones, in one transaction.
func swap(ctx context.Context, store eventstore.Store, view string, tables []string, suffix string, gen int64, subscriber string) error {
	err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		for _, t := range tables {
			if _, err := tx.Exec(ctx, `DROP TABLE `+t); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `ALTER TABLE `+t+suffix+` RENAME TO `+t); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE projection_generations SET generation = $2, subscriber = $3 WHERE projection = $1`,
			view, gen, subscriber)
		return err
	})
	if err != nil {
		return fmt.Errorf("projections: rebuild %s: swap in generation %d: %w", view, gen, err)
	}
	return nil
}

func baseName(view string) string {
	switch view {
	case "tickets":
		return TicketsName
	case "users":
		return UsersName
	}
	return LocationsName
}

func countEvents(ctx context.Context, r Reader) (int64, error) {
	rows, err := r.Query(ctx, `SELECT count(*) FROM events`)
	if err != nil {
		return 0, fmt.Errorf("projections: count events: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var n int64
	if rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, fmt.Errorf("projections: count events: %w", err)
		}
	}
	return n, rows.Err()
}

// execAll runs the statements of a DDL script one by one.
func execAll(ctx context.Context, tx eventstore.Tx, script string) error {
	for stmt := range strings.SplitSeq(script, ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", firstLine(stmt), err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
