// Package migrations holds the SQL schema of both stores, embedded in the
// binary, and applies it. Each file NNNN_name.sql runs once, in its own
// transaction, and is recorded in schema_migrations. A database whose schema
// is newer than this binary knows is refused rather than used.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed postgres sqlite
var files embed.FS

// ErrSchemaTooNew means the database was migrated by a newer ledgerdesk.
var ErrSchemaTooNew = errors.New("migrations: database schema is newer than this binary")

// ErrPending means migrations exist that the database has not had yet.
var ErrPending = errors.New("migrations: database schema is behind, run 'ledgerdesk migrate'")

// Migration is one embedded schema step.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// List returns the migrations of a dialect ("postgres" or "sqlite") in order.
func List(dialect string) ([]Migration, error) {
	entries, err := fs.ReadDir(files, dialect)
	if err != nil {
		return nil, fmt.Errorf("migrations: list %s: %w", dialect, err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migrations: %s/%s: name must start with a positive number and '_'", dialect, e.Name())
		}
		body, err := files.ReadFile(path.Join(dialect, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s/%s: %w", dialect, e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations: %s: version %d used twice", dialect, out[i].Version)
		}
	}
	return out, nil
}

// Latest is the highest version this binary knows for a dialect.
func Latest(dialect string) (int, error) {
	ms, err := List(dialect)
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	return ms[len(ms)-1].Version, nil
}

// stepper is what applying needs from one transaction of either database.
type stepper interface {
	exec(ctx context.Context, q string, args ...any) error
	applied(ctx context.Context) (map[int]bool, error)
}

const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`

const appliedVersions = `SELECT version FROM schema_migrations`

// applyNext applies the first migration the database has not had, in
// version order, and reports whether there was one. Missing versions are
// applied even below the highest applied one, so migrations written on
// parallel branches all arrive. One migration per transaction keeps a
// failing step from leaving a half-applied schema behind.
func applyNext(ctx context.Context, tx stepper, ms []Migration, now string) (bool, error) {
	if err := tx.exec(ctx, createTable); err != nil {
		return false, fmt.Errorf("create schema_migrations: %w", err)
	}
	done, err := tx.applied(ctx)
	if err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	if err := unknownVersions(done, ms); err != nil {
		return false, err
	}
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		if err := tx.exec(ctx, m.SQL); err != nil {
			return false, fmt.Errorf("apply %s: %w", m.Name, err)
		}
		if err := tx.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.Version, m.Name, now); err != nil {
			return false, fmt.Errorf("record %s: %w", m.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// unknownVersions refuses a database that has migrations this binary does
// not know: a newer ledgerdesk migrated it.
func unknownVersions(done map[int]bool, ms []Migration) error {
	known := make(map[int]bool, len(ms))
	latest := 0
	for _, m := range ms {
		known[m.Version] = true
		latest = max(latest, m.Version)
	}
	for v := range done {
		if !known[v] {
			return fmt.Errorf("%w: database has version %d, this binary knows up to %d", ErrSchemaTooNew, v, latest)
		}
	}
	return nil
}

func scanVersions(next func() bool, scan func(*int) error, errf func() error) (map[int]bool, error) {
	done := map[int]bool{}
	for next() {
		var v int
		if err := scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, errf()
}

// pgStep runs a step in a pgx transaction.
type pgStep struct{ tx pgx.Tx }

func (s pgStep) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.tx.Exec(ctx, q, args...)
	return err
}

func (s pgStep) applied(ctx context.Context) (map[int]bool, error) {
	rows, err := s.tx.Query(ctx, appliedVersions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanVersions(rows.Next, func(v *int) error { return rows.Scan(v) }, rows.Err)
}

// pgLockKey serialises concurrent migrators (several ledgerdesk processes
// starting at once) on one advisory lock.
const pgLockKey = 7_306_117_100_001

// ApplyPostgres brings a PostgreSQL database up to the latest schema.
func ApplyPostgres(ctx context.Context, pool *pgxpool.Pool) error {
	return applyAll("postgres", func(ms []Migration) (bool, error) { return pgApplyOne(ctx, pool, ms) })
}

// applyAll applies a dialect's migrations one transaction at a time until
// none is missing.
func applyAll(dialect string, applyOne func([]Migration) (bool, error)) error {
	ms, err := List(dialect)
	if err != nil {
		return err
	}
	for {
		more, err := applyOne(ms)
		if err != nil {
			return fmt.Errorf("migrations: %s: %w", dialect, err)
		}
		if !more {
			return nil
		}
	}
}

func pgApplyOne(ctx context.Context, pool *pgxpool.Pool, ms []Migration) (bool, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgLockKey)); err != nil {
		return false, fmt.Errorf("lock: %w", err)
	}
	var now string
	if err := tx.QueryRow(ctx, `SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`).Scan(&now); err != nil {
		return false, fmt.Errorf("read time: %w", err)
	}
	more, err := applyNext(ctx, pgStep{tx}, ms, now)
	if err != nil {
		return false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return more, nil
}

// StatusPostgres returns the database's schema version and the latest this
// binary knows; err wraps ErrPending or ErrSchemaTooNew when they differ.
func StatusPostgres(ctx context.Context, pool *pgxpool.Pool) (current, latest int, err error) {
	ms, err := List("postgres")
	if err != nil {
		return 0, 0, err
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, 0, fmt.Errorf("migrations: postgres: read schema version: %w", err)
	}
	done := map[int]bool{}
	if exists {
		rows, err := pool.Query(ctx, appliedVersions)
		if err != nil {
			return 0, 0, fmt.Errorf("migrations: postgres: read schema version: %w", err)
		}
		done, err = scanVersions(rows.Next, func(v *int) error { return rows.Scan(v) }, rows.Err)
		rows.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("migrations: postgres: read schema version: %w", err)
		}
	}
	return status(done, ms)
}

// status compares the applied versions with the known ones.
func status(done map[int]bool, ms []Migration) (current, latest int, err error) {
	for v := range done {
		current = max(current, v)
	}
	for _, m := range ms {
		latest = max(latest, m.Version)
	}
	if err := unknownVersions(done, ms); err != nil {
		return current, latest, err
	}
	for _, m := range ms {
		if !done[m.Version] {
			return current, latest, fmt.Errorf("%w: %s is not applied", ErrPending, m.Name)
		}
	}
	return current, latest, nil
}

// sqlStep runs a step in a database/sql transaction.
type sqlStep struct{ tx *sql.Tx }

func (s sqlStep) exec(ctx context.Context, q string, args ...any) error {
	_, err := s.tx.ExecContext(ctx, q, args...)
	return err
}

func (s sqlStep) applied(ctx context.Context) (map[int]bool, error) {
	rows, err := s.tx.QueryContext(ctx, appliedVersions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, rows.Err()
}

// ApplySQLite brings the embedded SQLite database up to the latest schema.
// The database should be opened so that transactions take the write lock at
// BEGIN (eventstore/embedded.OpenDB does), which serialises migrators.
func ApplySQLite(ctx context.Context, db *sql.DB) error {
	return applyAll("sqlite", func(ms []Migration) (bool, error) { return sqliteApplyOne(ctx, db, ms) })
}

func sqliteApplyOne(ctx context.Context, db *sql.DB, ms []Migration) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var now string
	if err := tx.QueryRowContext(ctx, `SELECT strftime('%Y-%m-%dT%H:%M:%SZ', 'now')`).Scan(&now); err != nil {
		return false, fmt.Errorf("read time: %w", err)
	}
	more, err := applyNext(ctx, sqlStep{tx}, ms, now)
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return more, nil
}

// StatusSQLite is StatusPostgres for the embedded store.
func StatusSQLite(ctx context.Context, db *sql.DB) (current, latest int, err error) {
	ms, err := List("sqlite")
	if err != nil {
		return 0, 0, err
	}
	var n int
	if err := db.QueryRowContext(ctx,
		`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return 0, 0, fmt.Errorf("migrations: sqlite: read schema version: %w", err)
	}
	done := map[int]bool{}
	if n > 0 {
		if done, err = sqliteApplied(ctx, db); err != nil {
			return 0, 0, fmt.Errorf("migrations: sqlite: read schema version: %w", err)
		}
	}
	return status(done, ms)
}

func sqliteApplied(ctx context.Context, db *sql.DB) (map[int]bool, error) {
	rows, err := db.QueryContext(ctx, appliedVersions)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, rows.Err()
}
