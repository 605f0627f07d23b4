package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// RebuildOptions tunes Rebuild.
type RebuildOptions struct {
	// Dialect is DialectPostgres or DialectSQLite (the DDL of the fresh tables).
	Dialect string
	// PageSize is how many events one read of the log returns [5000].
	PageSize int
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
	Views      []string
	Generation int64
	// Events counts the events read so far.
	Events int64
	// Position is the last event read; End is the last position of the log
	// when the rebuild started (known at once, where counting the events
	// would take a scan of its own).
	Position, End int64
	Elapsed       time.Duration
	// Rate is events per second since the start.
	Rate float64
	// Phase is "reading", "writing", "catching up" or "swapped".
	Phase string
}

// Percent is Position of End, capped at 100 (events appended during the
// rebuild go beyond End).
func (p RebuildProgress) Percent() float64 {
	if p.End <= 0 {
		return 100
	}
	return min(100, 100*float64(p.Position)/float64(p.End))
}

// Swapped reports whether the fresh tables serve.
func (p RebuildProgress) Swapped() bool { return p.Phase == "swapped" }

// Rebuild replays the whole log into a fresh generation of the views'
// tables (views from ViewNames; all of them in one pass over the log) while
// the serving tables keep serving, then swaps the fresh ones in:
//
//  1. It reserves the next generation N (projection_generations) and
//     creates the tables with the suffix "_g<N>".
//  2. It reads the log from the first event in pages, folds it in memory and
//     writes the rows in bulk (COPY on PostgreSQL). The fresh tables serve
//     nobody yet, so this needs no per-event transaction: a rebuild that
//     dies leaves them behind and the next one takes generation N+1.
//  3. It applies the events appended meanwhile through the projections'
//     own handlers, until it has read the whole visible log.
//  4. One transaction locks the serving tables (which stops the running
//     projection from writing them), applies the last events appended since,
//     drops the serving tables and renames the fresh ones to the plain names.
//
// The running projections keep their subscriber names and checkpoints: the
// events they meet again after the swap are at or below the rows' versions
// and change nothing.
func Rebuild(ctx context.Context, store eventstore.Store, reader Reader, views []string, opts RebuildOptions) (RebuildProgress, error) {
	if len(views) == 0 {
		views = ViewNames()
	}
	for _, v := range views {
		if _, ok := viewTables[v]; !ok {
			return RebuildProgress{}, fmt.Errorf("projections: rebuild: unknown view %q (one of %s)", v, strings.Join(ViewNames(), ", "))
		}
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 5000
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
	what := strings.Join(views, ", ")
	gen, stale, err := nextGeneration(ctx, store, views)
	if err != nil {
		return RebuildProgress{}, err
	}
	suffix := fmt.Sprintf("_g%d", gen)
	// The indexes are built after the bulk load: one sort each instead of
	// an insert per row into every index, the primary keys' too. On
	// PostgreSQL their unique indexes become the primary keys after (pkeys).
	// SQLite cannot add a primary key to a table, so there the unique index
	// (named <table>_pkey) stays in its place: it is what a primary key of a
	// SQLite table with a rowid is, and ON CONFLICT takes it the same way.
	var indexes, pkeys []string
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		indexes, pkeys = nil, nil
		for _, v := range views {
			ddl, err := tableDDL(opts.Dialect, v, suffix)
			if err != nil {
				return err
			}
			// the tables of interrupted rebuilds, and any of this one
			for _, g := range append(stale[v], gen) {
				for _, t := range slices.Concat(viewTables[v], retiredTables[v]) {
					if _, err := tx.Exec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS %s_g%d`, t, g)); err != nil {
						return err
					}
				}
			}
			tables, idx := splitDDL(ddl)
			var pkIdx, pk []string
			tables, pkIdx, pk = deferPrimaryKeys(tables)
			indexes = append(indexes, pkIdx...)
			if opts.Dialect == DialectPostgres {
				pkeys = append(pkeys, pk...)
			}
			indexes = append(indexes, idx...)
			if err := execAll(ctx, tx, tables); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return RebuildProgress{}, fmt.Errorf("projections: rebuild %s: create tables: %w", what, err)
	}

	var (
		folds    []bulkFold
		handlers []eventstore.Handler
	)
	for _, v := range views {
		switch v {
		case "tickets":
			folds = append(folds, newBulkTickets(opts.Logger, suffix))
			handlers = append(handlers, newTickets(store, reader, opts.Logger, suffix).Handle)
		case "users":
			folds = append(folds, &bulkUsers{logger: opts.Logger, table: "users" + suffix, users: map[string]*User{}})
			handlers = append(handlers, newUsers(store, reader, opts.Logger, suffix).Handle)
		case "locations":
			folds = append(folds, &bulkLocations{logger: opts.Logger, table: "locations" + suffix, locs: map[string]*Location{}})
			handlers = append(handlers, newLocations(store, reader, opts.Logger, suffix).Handle)
		}
	}
	prog := RebuildProgress{Views: views, Generation: gen, Phase: "reading"}
	if prog.End, err = lastPosition(ctx, reader); err != nil {
		return prog, err
	}
	start := opts.Now()
	lastReport := start
	report := func(force bool) {
		now := opts.Now()
		if !force && now.Sub(lastReport) < opts.Every {
			return
		}
		lastReport = now
		prog.Elapsed = now.Sub(start)
		if s := prog.Elapsed.Seconds(); s > 0 {
			prog.Rate = float64(prog.Events) / s
		}
		if opts.Progress != nil {
			opts.Progress(prog)
		}
	}

	// Three stages overlap while the log is read: reading pages, decoding
	// them (in parallel) and folding them in order. Then a goroutine
	// writes each table's rows, and its indexes are built as soon as they
	// are in, beside the next table's rows.
	w := startWriter(ctx, store, reader, indexesByTable(indexes))
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	pages := readPages(readCtx, store, opts.PageSize)
	var foldTime time.Duration
	for p := range pages {
		if p.err != nil {
			w.abort()
			return prog, fmt.Errorf("projections: rebuild %s: read the log: %w", what, p.err)
		}
		t1 := time.Now()
		for _, d := range p.events {
			for _, f := range folds {
				if err := f.apply(ctx, d); err != nil {
					stopReading()
					for range pages {
					}
					w.abort()
					return prog, fmt.Errorf("projections: rebuild %s: event at position %d: %w", what, d.ev.Position, err)
				}
			}
		}
		foldTime += time.Since(t1)
		prog.Events += int64(len(p.events))
		prog.Position = p.events[len(p.events)-1].ev.Position
		report(false)
	}
	opts.Logger.Info("rebuild: log read", "views", what, "events", prog.Events, "fold", foldTime)
	prog.Phase = "writing"
	report(true)
	writeStart := time.Now()
	for _, f := range folds {
		for _, b := range f.rest() {
			if err := w.write(ctx, b); err != nil {
				return prog, fmt.Errorf("projections: rebuild %s: %w", what, err)
			}
		}
	}
	if err := w.close(); err != nil {
		return prog, fmt.Errorf("projections: rebuild %s: %w", what, err)
	}
	if len(pkeys) > 0 { // PostgreSQL's; SQLite keeps the unique indexes
		err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			return execAll(ctx, tx, pkeys)
		})
		if err != nil {
			return prog, fmt.Errorf("projections: rebuild %s: create primary keys: %w", what, err)
		}
	}
	opts.Logger.Info("rebuild: rows and indexes written", "views", what, "after the log", time.Since(writeStart),
		"writer busy", w.busy)

	// Events appended since: through the handlers, a page per transaction.
	prog.Phase = "catching up"
	report(true)
	apply := func(ctx context.Context, tx eventstore.Tx) (int, error) {
		page, err := store.ReadAll(ctx, prog.Position, opts.PageSize)
		if err != nil {
			return 0, err
		}
		for _, ev := range page {
			for _, h := range handlers {
				if err := h(ctx, tx, ev); err != nil {
					return 0, fmt.Errorf("event at position %d: %w", ev.Position, err)
				}
			}
			prog.Position = ev.Position
		}
		prog.Events += int64(len(page))
		return len(page), nil
	}
	for {
		var n int
		before := prog
		err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			prog = before
			var err error
			n, err = apply(ctx, tx)
			return err
		})
		if err != nil {
			return prog, fmt.Errorf("projections: rebuild %s: catch up: %w", what, err)
		}
		report(false)
		if n < opts.PageSize {
			break
		}
	}

	// The swap: lock, last events, drop, rename.
	before := prog
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		prog = before
		if opts.Dialect == DialectPostgres {
			var serving []string
			for _, v := range views {
				serving = append(serving, viewTables[v]...)
			}
			if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(serving, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
				return fmt.Errorf("lock the serving tables: %w", err)
			}
		}
		for {
			n, err := apply(ctx, tx)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
		for _, v := range views {
			for _, t := range viewTables[v] {
				if _, err := tx.Exec(ctx, `DROP TABLE `+t); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `ALTER TABLE `+t+suffix+` RENAME TO `+t); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `UPDATE projection_generations SET generation = $2 WHERE projection = $1`, v, gen); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return prog, fmt.Errorf("projections: rebuild %s: swap in generation %d: %w", what, gen, err)
	}
	prog.Phase = "swapped"
	report(true)
	return prog, nil
}

// page is a page of the log, decoded.
type page struct {
	events []decoded
	err    error
}

// LogScanner is implemented by stores that can stream the whole log in one
// ordered read (both stores do: see postgres.Store.ScanLog and
// embedded.Store.ScanLog). The events it hands over need to carry only
// Position, Stream, StreamVersion, Type, SchemaVersion, Payload and
// RecordedAt, which is all the folds read, and the Payload only for the
// streams that start with one of payloadStreams (all when it is empty): the
// folds read the ticket, user and location streams, while the mails'
// streams, the log's largest payloads, only move the position on. A rebuild
// reads through it when the store has it and through ReadAll pages
// otherwise.
type LogScanner interface {
	ScanLog(ctx context.Context, batch int, payloadStreams []string, fn func([]eventstore.RecordedEvent) error) error
}

// readPages reads the whole visible log in pages from the first event, one
// page ahead of the consumer, and decodes each page on all cores. The
// channel closes after the last page, after an error page or when ctx ends.
func readPages(ctx context.Context, store eventstore.Store, size int) <-chan page {
	raw := make(chan page, 1)
	send := func(evs []eventstore.RecordedEvent) error {
		ds := make([]decoded, len(evs))
		for i := range evs {
			ds[i].ev = &evs[i]
		}
		select {
		case raw <- page{events: ds}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		defer close(raw)
		var err error
		if sc, ok := store.(LogScanner); ok {
			err = sc.ScanLog(ctx, size, foldedPrefixes, send)
		} else {
			var after int64
			for err == nil {
				var evs []eventstore.RecordedEvent
				if evs, err = store.ReadAll(ctx, after, size); err != nil || len(evs) == 0 {
					break
				}
				after = evs[len(evs)-1].Position
				err = send(evs)
			}
		}
		if err != nil && ctx.Err() == nil {
			raw <- page{err: err}
		}
	}()
	out := make(chan page, 1)
	go func() {
		defer close(out)
		workers := runtime.GOMAXPROCS(0)
		for p := range raw {
			if p.err == nil {
				var wg sync.WaitGroup
				per := (len(p.events) + workers - 1) / workers
				for lo := 0; lo < len(p.events); lo += per {
					hi := min(lo+per, len(p.events))
					wg.Go(func() {
						for i := lo; i < hi; i++ {
							p.events[i] = decode(p.events[i].ev)
						}
					})
				}
				wg.Wait()
			}
			select {
			case out <- p:
			case <-ctx.Done():
				for range raw {
				}
				return
			}
		}
	}()
	return out
}

// nextGeneration reserves the generation number of a new rebuild of views:
// one more than any generation they have served or tried. stale lists, per
// view, the generations tried after the serving one, whose rebuilds did not
// finish.
func nextGeneration(ctx context.Context, store eventstore.Store, views []string) (int64, map[string][]int64, error) {
	var gen int64
	stale := map[string][]int64{}
	err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		gen = 2
		clear(stale)
		for _, v := range views {
			var cur, last int64
			err := tx.QueryRow(ctx, `SELECT generation, last_attempt FROM projection_generations WHERE projection = $1`, v).Scan(&cur, &last)
			switch {
			case errors.Is(err, eventstore.ErrNoRows):
				cur, last = 1, 1
				_, err = tx.Exec(ctx, `INSERT INTO projection_generations (projection, generation, subscriber, last_attempt)
					VALUES ($1, 1, $2, 1)`, v, baseName(v))
				if err != nil {
					return err
				}
			case err != nil:
				return err
			}
			for g := cur + 1; g <= last; g++ {
				stale[v] = append(stale[v], g)
			}
			gen = max(gen, cur+1, last+1)
		}
		for _, v := range views {
			if _, err := tx.Exec(ctx, `UPDATE projection_generations SET last_attempt = $2 WHERE projection = $1`, v, gen); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("projections: rebuild: reserve a generation: %w", err)
	}
	return gen, stale, nil
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

func lastPosition(ctx context.Context, r Reader) (int64, error) {
	rows, err := r.Query(ctx, `SELECT coalesce(max(position), 0) FROM events`)
	if err != nil {
		return 0, fmt.Errorf("projections: last position of the log: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var n int64
	if rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, fmt.Errorf("projections: last position of the log: %w", err)
		}
	}
	return n, rows.Err()
}

// splitDDL splits a DDL script into its CREATE TABLE statements and its
// CREATE INDEX statements.
func splitDDL(script string) (tables, indexes []string) {
	for stmt := range strings.SplitSeq(script, ";\n") {
		stmt = strings.TrimSpace(stmt)
		switch {
		case stmt == "":
		case strings.HasPrefix(stmt, "CREATE INDEX"), strings.HasPrefix(stmt, "CREATE UNIQUE INDEX"):
			indexes = append(indexes, stmt)
		default:
			tables = append(tables, stmt)
		}
	}
	return tables, indexes
}

// indexesByTable groups CREATE INDEX statements by their table.
func indexesByTable(stmts []string) map[string][]string {
	out := map[string][]string{}
	for _, stmt := range stmts {
		_, rest, _ := strings.Cut(stmt, " ON ")
		table, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		out[table] = append(out[table], stmt)
	}
	return out
}

// parallelExecer is a Reader that can run statements on connections of
// their own (the PostgreSQL one): a rebuild then builds indexes on several
// connections, and cores, at once, and while it still writes rows.
type parallelExecer interface {
	exec(ctx context.Context, stmt string) error
}

// indexWorkers is how many indexes a rebuild builds at once.
const indexWorkers = 3

func (r pgReader) exec(ctx context.Context, stmt string) error {
	// The rebuild runs indexWorkers builds at once already; parallel
	// workers of the biggest one only compete with the others (measured:
	// the indexes after the last rows took 1.1-1.3 s without them and
	// 1.6-2.3 s with them, on 2 cores). SET LOCAL leaves the pooled
	// connection as it was.
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL max_parallel_maintenance_workers = 0"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, stmt)
		return err
	})
}

// indexer builds indexes in the background, indexWorkers at a time.
type indexer struct {
	next chan string
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func startIndexer(ctx context.Context, p parallelExecer, cancel context.CancelFunc) *indexer {
	ix := &indexer{next: make(chan string, 64)}
	for range indexWorkers {
		ix.wg.Go(func() {
			for stmt := range ix.next {
				if ctx.Err() != nil {
					continue
				}
				if err := p.exec(ctx, stmt); err != nil {
					ix.mu.Lock()
					ix.errs = append(ix.errs, fmt.Errorf("%s: %w", firstLine(stmt), err))
					ix.mu.Unlock()
					cancel()
				}
			}
		})
	}
	return ix
}

// add queues statements; it never blocks for long (the workers take them
// as they free up).
func (ix *indexer) add(ctx context.Context, stmts []string) {
	for _, stmt := range stmts {
		select {
		case ix.next <- stmt:
		case <-ctx.Done():
			return
		}
	}
}

// wait waits for the queued statements.
func (ix *indexer) wait() error {
	close(ix.next)
	ix.wg.Wait()
	return errors.Join(ix.errs...)
}

// deferPrimaryKeys takes the primary keys out of CREATE TABLE statements
// (a column's "PRIMARY KEY" becomes "NOT NULL", a table's line goes) and
// returns, for each, the CREATE UNIQUE INDEX named <table>_pkey that builds
// it and the ALTER TABLE that makes that index the primary key, which
// gives the constraint, index and NOT NULL columns that the key in CREATE
// TABLE gives. A COPY then appends to the heap only, and each key is one
// sort after the load instead of an index insert per row.
func deferPrimaryKeys(tables []string) (out, indexes, pkeys []string) {
	for _, stmt := range tables {
		name, ok := strings.CutPrefix(stmt, "CREATE TABLE ")
		if !ok {
			out = append(out, stmt)
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		lines := strings.Split(stmt, "\n")
		var cols string
		for i := 0; i < len(lines); i++ {
			l := strings.TrimSpace(lines[i])
			switch {
			case strings.HasPrefix(l, "PRIMARY KEY ("):
				cols = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(l, "PRIMARY KEY ("), ","), ")")
				lines = append(lines[:i], lines[i+1:]...)
				lines[i-1] = strings.TrimSuffix(lines[i-1], ",")
				i--
			case strings.Contains(l, " PRIMARY KEY"):
				cols = strings.Fields(l)[0]
				lines[i] = strings.Replace(lines[i], "PRIMARY KEY", "NOT NULL", 1)
			}
		}
		if cols == "" {
			out = append(out, stmt)
			continue
		}
		out = append(out, strings.Join(lines, "\n"))
		indexes = append(indexes, fmt.Sprintf("CREATE UNIQUE INDEX %s_pkey ON %s (%s)", name, name, cols))
		pkeys = append(pkeys, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s_pkey PRIMARY KEY USING INDEX %s_pkey", name, name, name))
	}
	return out, indexes, pkeys
}

// execAll runs statements one by one.
func execAll(ctx context.Context, tx eventstore.Tx, stmts []string) error {
	for _, stmt := range stmts {
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

// writer writes row batches in a goroutine of its own; it holds at most
// two batches. When a table's rows are in, it builds the table's indexes:
// in the background on PostgreSQL, so that one table's indexes build while
// the next table's rows are copied, and in line on SQLite, which has one
// writer anyway.
type writer struct {
	busy    time.Duration // time spent writing, read after close
	ch      chan rowBatch
	done    chan error
	cancel  context.CancelFunc
	indexes map[string][]string // by table, until built
}

func startWriter(ctx context.Context, store eventstore.Store, reader Reader, indexes map[string][]string) *writer {
	ctx, cancel := context.WithCancel(ctx)
	w := &writer{ch: make(chan rowBatch, 1), done: make(chan error, 1), cancel: cancel, indexes: indexes}
	bulk, _ := reader.(bulkInserter)
	var ix *indexer
	if p, ok := reader.(parallelExecer); ok {
		ix = startIndexer(ctx, p, cancel)
	}
	go func() {
		var err error
		for b := range w.ch {
			if err != nil { // after a failure, drain until close
				continue
			}
			t0 := time.Now()
			switch {
			case b.rows.len() == 0:
			case bulk != nil:
				err = bulk.insertRows(ctx, b)
			default:
				err = insertRowsSQL(ctx, store, b)
			}
			w.busy += time.Since(t0)
			if err != nil {
				continue
			}
			stmts := w.indexes[b.table]
			delete(w.indexes, b.table)
			switch {
			case ix != nil:
				ix.add(ctx, stmts)
			case len(stmts) == 0:
			default:
				err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
					return execAll(ctx, tx, stmts)
				})
			}
			if err != nil {
				err = fmt.Errorf("create indexes: %w", err)
			}
		}
		if ix != nil {
			if ixErr := ix.wait(); err == nil && ixErr != nil {
				err = fmt.Errorf("create indexes: %w", ixErr)
			}
		}
		if err == nil && len(w.indexes) > 0 {
			err = fmt.Errorf("no rows for %d tables", len(w.indexes))
		}
		w.done <- err
	}()
	return w
}

// write queues b. A failed write shows in close.
func (w *writer) write(ctx context.Context, b rowBatch) error {
	select {
	case w.ch <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close waits for the queued batches and the indexes.
func (w *writer) close() error {
	close(w.ch)
	err := <-w.done
	w.cancel()
	if err != nil {
		return fmt.Errorf("write the fresh tables: %w", err)
	}
	return nil
}

// abort stops the writer; the rebuild fails with its own error, so the
// writer's is dropped.
func (w *writer) abort() {
	w.cancel()
	close(w.ch)
	<-w.done //nolint:errcheck // see above
}
