// Package storebench measures event store throughput next to raw pgx
// baselines taken in the same run, on the same row shape, so the ratios say
// what the store's bookkeeping (version checks, global order, decoding)
// costs on this machine rather than comparing against figures from another.
//
// Store and baseline runs alternate in small chunks and their times are
// summed per measurement: the machine is shared, and interleaving spreads
// load swings over both sides of each ratio.
package storebench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// Config says what to measure.
type Config struct {
	// PostgresURL names a server on which the benchmark creates a scratch
	// database and drops it afterwards (the URL's own database is only used
	// for CREATE/DROP DATABASE).
	PostgresURL string
	// Events per measurement (default 20,000). One-event-per-transaction
	// measurements use at most SingleEvents of them, since each commit waits
	// for an fsync.
	Events int
	// SingleEvents caps the one-per-transaction measurements (default 2,000:
	// they are fsync-bound, and on a loaded machine 5,000 of them took most
	// of a minute).
	SingleEvents int
	// PageSize is the ReadAll page of the catch-up read (default 1,000).
	PageSize int
	// SQLitePath, when set, is where the embedded store is measured too (a
	// new file; it is not removed).
	SQLitePath string
	// Logger receives the stores' logs; nil discards them.
	Logger *slog.Logger
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.PostgresURL == "" {
		errs = append(errs, errors.New("PostgreSQL URL is empty"))
	}
	if c.Events < 0 || c.SingleEvents < 0 || c.PageSize < 0 {
		errs = append(errs, errors.New("counts must not be negative"))
	}
	if c.Events > 0 && c.Events < batchSize {
		errs = append(errs, fmt.Errorf("events %d: use at least %d", c.Events, batchSize))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("storebench: config: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Events == 0 {
		c.Events = 20_000
	}
	if c.SingleEvents == 0 {
		c.SingleEvents = 2_000
	}
	c.SingleEvents = min(c.SingleEvents, c.Events)
	if c.PageSize == 0 {
		c.PageSize = 1_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// batchSize is the events (or rows) per transaction of the batched runs.
const batchSize = 100

// chunk is how many events one side runs before the other takes its turn.
const chunk = 1_000

// Result is one line of the table.
type Result struct {
	Name    string
	Events  int
	Elapsed time.Duration
}

// PerSecond is the throughput of r.
func (r Result) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Events) / r.Elapsed.Seconds()
}

// Run measures and prints the table to w.
func Run(ctx context.Context, w io.Writer, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.setDefaults()
	pool, drop, err := ScratchDatabase(ctx, cfg.PostgresURL, "ledgerdesk_bench_")
	if err != nil {
		return err
	}
	defer drop()
	defer pool.Close()
	if err := migrations.ApplyPostgres(ctx, pool); err != nil {
		return fmt.Errorf("storebench: %w", err)
	}
	var version string
	if err := pool.QueryRow(ctx, `SHOW server_version`).Scan(&version); err != nil {
		return fmt.Errorf("storebench: server version: %w", err)
	}
	store, err := postgres.New(pool, cfg.Logger)
	if err != nil {
		return fmt.Errorf("storebench: %w", err)
	}
	defer func() { _ = store.Close() }()
	raw, err := newRaw(ctx, pool)
	if err != nil {
		return err
	}

	fmt.Fprintf(w, "ledgerdesk event store benchmark: PostgreSQL %s, %d events per measurement (%d for one per transaction), payload %d B JSON\n\n",
		version, cfg.Events, cfg.SingleEvents, len(payload(0)))
	var lines [][]string
	row := func(r Result, base *Result) {
		ratio := ""
		if base != nil && base.PerSecond() > 0 {
			ratio = fmt.Sprintf("%.2fx %s", r.PerSecond()/base.PerSecond(), base.Name)
		}
		lines = append(lines, []string{r.Name, strconv.Itoa(r.Events), fmt.Sprintf("%.2f", r.Elapsed.Seconds()),
			fmt.Sprintf("%.0f", r.PerSecond()), ratio})
	}

	single, err := compare(ctx, cfg.SingleEvents, 1,
		side{"PG store Append, 1 event/tx", storeAppender(store, "single")},
		side{"raw INSERT, 1 row/commit", raw.insertSingle})
	if err != nil {
		return err
	}
	batched, err := compare(ctx, cfg.Events, batchSize,
		side{"PG store Append, 100 events/tx", storeAppender(store, "batch")},
		side{"raw multi-row INSERT, 100 rows/tx", raw.insertMultiRow},
		side{"raw pgx.Batch INSERT, 100 rows/tx", raw.insertPgxBatch},
		side{"raw COPY, 100 rows/tx", raw.copyRows})
	if err != nil {
		return err
	}
	reads, err := compareReads(ctx, store, pool, cfg.PageSize)
	if err != nil {
		return err
	}

	row(single[0], &single[1])
	row(single[1], nil)
	// The stricter of the two INSERT forms is the baseline.
	insertBase := &batched[1]
	if batched[2].PerSecond() > insertBase.PerSecond() {
		insertBase = &batched[2]
	}
	row(batched[0], insertBase)
	row(batched[1], nil)
	row(batched[2], nil)
	row(batched[3], nil)
	row(reads[0], &reads[1])
	row(reads[1], nil)

	if cfg.SQLitePath != "" {
		res, err := measureEmbedded(ctx, cfg)
		if err != nil {
			return err
		}
		for _, r := range res {
			row(r, nil)
		}
	}
	if err := printTable(w, []string{"measurement", "events", "seconds", "events/s", "ratio (events/s over a baseline)"}, lines); err != nil {
		return fmt.Errorf("storebench: write: %w", err)
	}
	fmt.Fprintf(w, "\nreads count 3 passes over the whole table; ")
	fmt.Fprintf(w, "targets: store Append 100/tx >= 0.5x raw batched INSERT; catch-up ReadAll >= 0.5x raw ordered scan\n")
	return nil
}

// appender writes n events (rows) in transactions of perTx, starting at
// sequence number seq.
type appender func(ctx context.Context, seq, n, perTx int) error

type side struct {
	name string
	fn   appender
}

// seq numbers events across all measurements of a process, so that event
// ids and stream names never repeat.
var seq int

// compare runs each side over total events, alternating in chunks, after a
// warm-up transaction each (not counted).
func compare(ctx context.Context, total, perTx int, sides ...side) ([]Result, error) {
	res := make([]Result, len(sides))
	for i, s := range sides {
		res[i].Name = s.name
		if err := s.fn(ctx, seq, perTx, perTx); err != nil {
			return nil, fmt.Errorf("storebench: %s: warm-up: %w", s.name, err)
		}
		seq += perTx
	}
	step := max(perTx, chunk/perTx*perTx)
	if perTx == 1 {
		step = chunk / 10
	}
	for done := 0; done < total; done += step {
		n := min(step, total-done)
		for i, s := range sides {
			start := time.Now()
			if err := s.fn(ctx, seq, n, perTx); err != nil {
				return nil, fmt.Errorf("storebench: %s: %w", s.name, err)
			}
			res[i].Elapsed += time.Since(start)
			res[i].Events += n
			seq += n
		}
	}
	return res, nil
}

// storeAppender appends through the store, one new stream per transaction.
func storeAppender(s eventstore.Store, prefix string) appender {
	return func(ctx context.Context, seq, n, perTx int) error {
		for off := 0; off < n; off += perTx {
			k := min(perTx, n-off)
			evs := make([]eventstore.NewEvent, k)
			for i := range evs {
				evs[i] = newEvent(seq + off + i)
			}
			_, err := s.Append(ctx, eventstore.AppendRequest{
				Stream:          fmt.Sprintf("%s-%d", prefix, seq+off),
				ExpectedVersion: eventstore.NoStream,
				Events:          evs,
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
}

func newEvent(i int) eventstore.NewEvent {
	return eventstore.NewEvent{
		ID:            fmt.Sprintf("bench-%d", i),
		Type:          "MailReceived",
		SchemaVersion: 1,
		Payload:       payload(i),
		Metadata: eventstore.Metadata{
			CorrelationID: fmt.Sprintf("corr-%d", i),
			CausationID:   fmt.Sprintf("cause-%d", i),
			Actor:         "bench",
			OccurredAt:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		},
	}
}

// payload is a mail-like JSON object of about 2 KB.
func payload(i int) json.RawMessage {
	body := strings.Repeat(fmt.Sprintf("Line %d of a customer's message about printer %d. ", i, i%97), 60)
	b, _ := json.Marshal(map[string]any{
		"mailbox":    "support@example.com",
		"message_id": fmt.Sprintf("<%d@mail.example.com>", i),
		"from":       fmt.Sprintf("customer%d@example.org", i),
		"subject":    fmt.Sprintf("Printer %d does not print", i%97),
		"body":       body[:1850],
	})
	return b
}

// compareReads reads the whole events table in global order through the
// store (ReadAll pages) and with one raw ordered query, alternating, three
// passes each; it reports the sums.
func compareReads(ctx context.Context, s eventstore.Store, pool *pgxpool.Pool, page int) ([]Result, error) {
	res := []Result{
		{Name: fmt.Sprintf("PG store catch-up ReadAll, pages of %d", page)},
		{Name: "raw ordered scan (one query)"},
	}
	for pass := 0; pass < 3; pass++ {
		start := time.Now()
		n, err := readAllPages(ctx, s, page)
		if err != nil {
			return nil, fmt.Errorf("storebench: catch-up read: %w", err)
		}
		res[0].Elapsed += time.Since(start)
		res[0].Events += n

		start = time.Now()
		n, err = rawScan(ctx, pool)
		if err != nil {
			return nil, fmt.Errorf("storebench: raw scan: %w", err)
		}
		res[1].Elapsed += time.Since(start)
		res[1].Events += n
	}
	return res, nil
}

func readAllPages(ctx context.Context, s eventstore.Store, page int) (int, error) {
	var after int64
	n := 0
	for {
		evs, err := s.ReadAll(ctx, after, page)
		if err != nil {
			return n, err
		}
		if len(evs) == 0 {
			return n, nil
		}
		n += len(evs)
		after = evs[len(evs)-1].Position
	}
}

// rawScan reads the same columns into the same Go types as the store does.
func rawScan(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	rows, err := pool.Query(ctx, `SELECT position, event_id, stream, stream_version, event_type, schema_version, payload,
		correlation_id, causation_id, actor, occurred_at, recorded_at
		FROM events ORDER BY transaction_id, position`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	var sink []eventstore.RecordedEvent
	for rows.Next() {
		var (
			e       eventstore.RecordedEvent
			payload []byte
		)
		if err := rows.Scan(&e.Position, &e.ID, &e.Stream, &e.StreamVersion, &e.Type, &e.SchemaVersion, &payload,
			&e.Metadata.CorrelationID, &e.Metadata.CausationID, &e.Metadata.Actor, &e.Metadata.OccurredAt, &e.RecordedAt); err != nil {
			return n, err
		}
		e.Payload = payload
		sink = append(sink[:0], e)
		n++
	}
	return n, rows.Err()
}

// ScratchDatabase creates a uniquely named database (prefix plus random hex)
// on the server of base and returns a pool on it and a function that drops
// it. The benchmarks of the store and of the views measure in one.
func ScratchDatabase(ctx context.Context, base, prefix string) (*pgxpool.Pool, func(), error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, nil, errors.New("storebench: the PostgreSQL URL must be a postgres:// URL")
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, nil, fmt.Errorf("storebench: scratch database name: %w", err)
	}
	name := prefix + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return nil, nil, fmt.Errorf("storebench: connect to %s: %w", u.Redacted(), err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, nil, fmt.Errorf("storebench: create scratch database: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		drop()
		return nil, nil, fmt.Errorf("storebench: open scratch database: %w", err)
	}
	return pool, drop, nil
}

// printTable prints names left-aligned and figures right-aligned.
func printTable(w io.Writer, header []string, lines [][]string) error {
	widths := make([]int, len(header))
	for _, l := range append([][]string{header}, lines...) {
		for i, c := range l {
			widths[i] = max(widths[i], len(c))
		}
	}
	var b strings.Builder
	for _, l := range append([][]string{header}, lines...) {
		for i, c := range l {
			switch {
			case i == 0 || i == len(l)-1:
				fmt.Fprintf(&b, "%-*s", widths[i], c)
			default:
				fmt.Fprintf(&b, "%*s", widths[i], c)
			}
			if i < len(l)-1 {
				b.WriteString("  ")
			}
		}
		b.WriteString("\n")
	}
	out := strings.ReplaceAll(b.String(), " \n", "\n")
	for strings.Contains(out, " \n") {
		out = strings.ReplaceAll(out, " \n", "\n")
	}
	_, err := io.WriteString(w, out)
	return err
}
