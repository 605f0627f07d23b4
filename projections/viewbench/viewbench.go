// Package viewbench measures the ticket views against baselines taken in the
// same run on the same machine:
//
//   - the latency of GET /api/v1/tickets?limit=50 on a real HTTP server over
//     100,000 tickets (by default), next to a bare Echo handler that answers
//     a JSON body of the same size, both under the same fixed request rate
//     from an open-loop generator (latency counts from the moment a request
//     was due, so a slow server cannot hide its queue);
//   - the time to rebuild all views from the log (1,000,000 events by
//     default) with projections.Rebuild, next to one raw ordered scan of the
//     events table that reads the same columns.
//
// The machine is shared: the two sides of each comparison alternate in
// chunks and are summed, so load swings hit both.
package viewbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storebench"
	"github.com/ledgerdesk/ledgerdesk/migrations"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// Config says what to measure.
type Config struct {
	// PostgresURL names a server on which a scratch database is created and
	// dropped; empty skips PostgreSQL.
	PostgresURL string
	// SQLiteDir, when set, is a directory for the embedded store's scratch
	// database; empty skips the embedded store.
	SQLiteDir string
	// Events in the log [1,000,000]; a tenth of them are tickets (each
	// ticket has ten events: two mails, its creation, assignment, note,
	// answer, status change, reply, auto-reply and close or priority).
	Events int
	// Rate of requests per second of the latency measurement [200].
	Rate int
	// Duration of the latency measurement per side [20s].
	Duration time.Duration
	// Rebuilds is how many rebuilds and raw scans alternate [2].
	Rebuilds int
	Logger   *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Events <= 0 {
		c.Events = 1_000_000
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.Rebuilds <= 0 {
		c.Rebuilds = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// target is one store under measurement.
type target struct {
	name    string
	dialect string
	store   eventstore.Store
	reader  projections.Reader
	// scan reads the whole events table in global order, raw.
	scan func(ctx context.Context) (int, error)
	// settle, if set, brings a freshly filled log to the state a running
	// system keeps it in.
	settle func(ctx context.Context) (done string, err error)
	close  func()
}

// Run measures every configured store and prints the figures to w.
func Run(ctx context.Context, w io.Writer, cfg Config) error {
	cfg.setDefaults()
	if cfg.PostgresURL == "" && cfg.SQLiteDir == "" {
		return errors.New("viewbench: neither PostgreSQL nor the embedded store configured")
	}
	fmt.Fprintf(w, "viewbench: %d events (%d tickets), %d req/s for %s per side, %d rebuilds\n",
		cfg.Events, cfg.Events/eventsPerTicket, cfg.Rate, cfg.Duration, cfg.Rebuilds)
	var opens []func(context.Context) (*target, error)
	if cfg.PostgresURL != "" {
		opens = append(opens, func(ctx context.Context) (*target, error) { return openPostgres(ctx, cfg.PostgresURL, cfg.Logger) })
	}
	if cfg.SQLiteDir != "" {
		opens = append(opens, func(ctx context.Context) (*target, error) {
			return openEmbedded(ctx, filepath.Join(cfg.SQLiteDir, "viewbench.db"), cfg.Logger)
		})
	}
	for _, open := range opens {
		t, err := open(ctx)
		if err != nil {
			return err
		}
		err = measure(ctx, w, cfg, t)
		t.close()
		if err != nil {
			return err
		}
	}
	return nil
}

func measure(ctx context.Context, w io.Writer, cfg Config, t *target) error {
	fmt.Fprintf(w, "\n== %s store\n", t.name)
	start := time.Now()
	tickets, err := generate(ctx, t.store, cfg.Events)
	if err != nil {
		return err
	}
	d := time.Since(start)
	fmt.Fprintf(w, "generated %d events (%d tickets) through the store in %s (%.0f events/s)\n", cfg.Events, tickets,
		d.Round(time.Millisecond), float64(cfg.Events)/d.Seconds())
	if t.settle != nil {
		// A log filled in bulk a moment ago is one autovacuum has yet to
		// visit; left alone, it would do so during the measurements, which
		// would time it instead of the scan and the rebuild.
		start = time.Now()
		done, err := t.settle(ctx)
		if err != nil {
			return fmt.Errorf("viewbench: settle the log: %w", err)
		}
		fmt.Fprintf(w, "%s, in %s\n", done, time.Since(start).Round(time.Millisecond))
	}

	if err := compareRebuild(ctx, w, cfg, t); err != nil {
		return err
	}
	return compareLatency(ctx, w, cfg, t)
}

// compareRebuild alternates raw ordered scans and rebuilds of all views.
func compareRebuild(ctx context.Context, w io.Writer, cfg Config, t *target) error {
	var scanTime, rebuildTime time.Duration
	var scanned, rebuilt int64
	for i := range cfg.Rebuilds {
		start := time.Now()
		n, err := t.scan(ctx)
		if err != nil {
			return fmt.Errorf("viewbench: raw scan: %w", err)
		}
		scanTime += time.Since(start)
		scanned += int64(n)

		start = time.Now()
		var phases []string
		last := start
		prog, err := projections.Rebuild(ctx, t.store, t.reader, nil, projections.RebuildOptions{Dialect: t.dialect,
			Logger: t.logger(), Every: time.Hour, Progress: func(p projections.RebuildProgress) {
				// with Every an hour, only the phase changes report
				now := time.Now()
				phases = append(phases, fmt.Sprintf("%s until %s", now.Sub(last).Round(time.Millisecond), p.Phase))
				last = now
			}})
		if err != nil {
			return fmt.Errorf("viewbench: rebuild %d: %w", i+1, err)
		}
		rebuildTime += time.Since(start)
		rebuilt += prog.Events
		fmt.Fprintf(w, "rebuild %d of all views: %d events in %s (generation %d; %s)\n", i+1, prog.Events,
			prog.Elapsed.Round(time.Millisecond), prog.Generation, strings.Join(phases, ", "))
	}
	scanRate := float64(scanned) / scanTime.Seconds()
	rebuildRate := float64(rebuilt) / rebuildTime.Seconds()
	fmt.Fprintf(w, "raw ordered scan of the events table: %8.0f events/s (%s per pass)\n", scanRate,
		(scanTime / time.Duration(cfg.Rebuilds)).Round(time.Millisecond))
	fmt.Fprintf(w, "rebuild of all views (one pass):      %8.0f events/s (%s per rebuild)\n", rebuildRate,
		(rebuildTime / time.Duration(cfg.Rebuilds)).Round(time.Millisecond))
	fmt.Fprintf(w, "rebuild / raw scan:                   %8.2fx (target >= 0.5x)\n", rebuildRate/scanRate)
	return nil
}

func (t *target) logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openPostgres(ctx context.Context, base string, logger *slog.Logger) (*target, error) {
	pool, drop, err := storebench.ScratchDatabase(ctx, base, "ledgerdesk_viewbench_")
	if err != nil {
		return nil, err
	}
	if err := migrations.ApplyPostgres(ctx, pool); err != nil {
		pool.Close()
		drop()
		return nil, fmt.Errorf("viewbench: migrate: %w", err)
	}
	s, err := postgres.New(pool, logger)
	if err != nil {
		pool.Close()
		drop()
		return nil, fmt.Errorf("viewbench: store: %w", err)
	}
	return &target{
		name: "PostgreSQL", dialect: projections.DialectPostgres, store: s, reader: projections.PGReader(pool),
		scan: func(ctx context.Context) (int, error) {
			rows, err := pool.Query(ctx, `SELECT position, event_id, stream, stream_version, event_type, schema_version, payload,
				correlation_id, causation_id, actor, occurred_at, recorded_at FROM events ORDER BY transaction_id, position`)
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				var (
					e       eventstore.RecordedEvent
					payload []byte
				)
				if err := rows.Scan(&e.Position, &e.ID, &e.Stream, &e.StreamVersion, &e.Type, &e.SchemaVersion, &payload,
					&e.Metadata.CorrelationID, &e.Metadata.CausationID, &e.Metadata.Actor, &e.Metadata.OccurredAt, &e.RecordedAt); err != nil {
					return n, err
				}
				n++
			}
			return n, rows.Err()
		},
		settle: func(ctx context.Context) (string, error) {
			if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
				return "", err
			}
			// and the generation's WAL flushed, so that its checkpoint
			// does not write in the background of the measurements (a role
			// without the right to checkpoint measures without)
			done := "vacuumed and analyzed the log, as autovacuum would have, and checkpointed"
			if _, err := pool.Exec(ctx, `CHECKPOINT`); err != nil {
				done = "vacuumed and analyzed the log, as autovacuum would have; could not checkpoint (" + err.Error() + ")"
			}
			return done, nil
		},
		close: func() { _ = s.Close(); pool.Close(); drop() },
	}, nil
}

func openEmbedded(ctx context.Context, path string, logger *slog.Logger) (*target, error) {
	db, err := embedded.OpenDB(path)
	if err != nil {
		return nil, fmt.Errorf("viewbench: %w", err)
	}
	if err := migrations.ApplySQLite(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("viewbench: migrate: %w", err)
	}
	s := embedded.New(db, logger)
	return &target{
		name: "embedded (SQLite)", dialect: projections.DialectSQLite, store: s, reader: projections.SQLReader(db),
		scan: func(ctx context.Context) (int, error) {
			rows, err := db.QueryContext(ctx, `SELECT position, id, stream, stream_version, type, schema_version, payload,
				metadata, recorded_at FROM events ORDER BY position`)
			if err != nil {
				return 0, err
			}
			defer func() { _ = rows.Close() }()
			n := 0
			for rows.Next() {
				var (
					pos, sv       int64
					id, stream, t string
					schema        int
					payload, meta []byte
					recorded      string
				)
				if err := rows.Scan(&pos, &id, &stream, &sv, &t, &schema, &payload, &meta, &recorded); err != nil {
					return n, err
				}
				n++
			}
			return n, rows.Err()
		},
		close: func() { _ = s.Close(); _ = db.Close() },
	}, nil
}
