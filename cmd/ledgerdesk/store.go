package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// minPoolConns covers the subscribers (intake, projections, outbound saga),
// the fetchers and the API at once.
const minPoolConns = 16

// store is the event store chosen by the configuration, migrated and ready.
type store struct {
	eventstore.Store
	Kind          string             // "postgres" or "embedded"
	Reader        projections.Reader // read-only queries of the projections' tables
	schemaVersion func(ctx context.Context) (current, latest int, err error)
	closeDB       func()
	// pool is the PostgreSQL pool, nil for the embedded store: blobs in the
	// database, and several instances coordinate through it (instances.go).
	pool *pgxpool.Pool
}

// SchemaVersion reports the database's schema version and the latest known.
func (s *store) SchemaVersion(ctx context.Context) (int, int, error) { return s.schemaVersion(ctx) }

// Ready is the readiness check: the database answers and its schema is current.
func (s *store) Ready(ctx context.Context) error {
	if err := s.Ping(ctx); err != nil {
		return fmt.Errorf("%s store unreachable: %w", s.Kind, err)
	}
	_, _, err := s.schemaVersion(ctx)
	return err
}

// Close stops the store and then closes the database it runs on.
func (s *store) Close() error {
	err := s.Store.Close()
	if s.closeDB != nil {
		s.closeDB()
	}
	return err
}

// openStore opens the configured store and applies pending migrations: a
// newer schema than this binary knows stops the program.
func openStore(ctx context.Context, cfg *config, logger *slog.Logger) (*store, error) {
	if cfg.DatabaseURL != "" {
		return openPostgres(ctx, cfg, logger)
	}
	return openEmbedded(ctx, cfg, logger)
}

func openPostgres(ctx context.Context, cfg *config, logger *slog.Logger) (*store, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		// pgx's message may quote the URL, password included: keep only the gist.
		return nil, &configError{problems: []error{fmt.Errorf("%s: cannot be parsed as a PostgreSQL URL", envDatabaseURL)}}
	}
	// Every durable subscriber holds a connection while its batch runs; the
	// default pool (4 on 2 cores) would leave API requests and imports
	// waiting. An explicit pool_max_conns in the URL wins.
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		pcfg.MaxConns = max(pcfg.MaxConns, minPoolConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", pcfg.ConnConfig.Host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	if err := migrations.ApplyPostgres(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	es, err := postgres.New(pool, logger)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL event store: %w", err)
	}
	logger.Info("store opened", "kind", "postgres", "host", pcfg.ConnConfig.Host, "database", pcfg.ConnConfig.Database)
	return &store{
		Store: es, Kind: "postgres", closeDB: pool.Close, Reader: projections.PGReader(pool), pool: pool,
		schemaVersion: func(ctx context.Context) (int, int, error) { return migrations.StatusPostgres(ctx, pool) },
	}, nil
}

func openEmbedded(ctx context.Context, cfg *config, logger *slog.Logger) (*store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory %s (%s): %w", cfg.DataDir, envDataDir, err)
	}
	path := filepath.Join(cfg.DataDir, "ledgerdesk.db")
	db, err := embedded.OpenDB(path)
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	if err := migrations.ApplySQLite(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	// The database holds mail and sealed secrets: owner only.
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(f, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = db.Close()
			return nil, fmt.Errorf("restrict %s to its owner: %w", f, err)
		}
	}
	logger.Info("store opened", "kind", "embedded", "path", path)
	return &store{
		Store: embedded.New(db, logger), Kind: "embedded", Reader: projections.SQLReader(db),
		schemaVersion: func(ctx context.Context) (int, int, error) { return migrations.StatusSQLite(ctx, db) },
	}, nil
}

// secretKeyFile holds the generated key in embedded mode;
// previousKeyFile the key before it while secrets rotate runs (see
// keyRotation).
const (
	secretKeyFile   = "secret.key"
	previousKeyFile = "secret.key.previous"
)

// readKeyFiles reads the key files of dataDir: the key, and the previous
// key an unfinished rotation left (nil when there is none). A missing key
// file is no error (nil).
func readKeyFiles(dataDir string) (cur, prev []byte, err error) {
	read := func(name string) ([]byte, error) {
		path := filepath.Join(dataDir, name)
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read secret key file %s: %w", path, err)
		}
		key, err := decodeSecretKey(string(raw))
		if err != nil {
			return nil, fmt.Errorf("secret key file %s: %w", path, err)
		}
		return key, nil
	}
	if cur, err = read(secretKeyFile); err != nil {
		return nil, nil, err
	}
	if prev, err = read(previousKeyFile); err != nil {
		return nil, nil, err
	}
	if prev != nil && cur == nil {
		return nil, nil, fmt.Errorf("%s is there without %s; restore the key file from the backup",
			filepath.Join(dataDir, previousKeyFile), filepath.Join(dataDir, secretKeyFile))
	}
	return cur, prev, nil
}

// loadSecretKey returns the key that encrypts secrets at rest. With
// PostgreSQL it must be configured; in embedded mode it is generated once
// into the data directory, readable by its owner only. A key file beside
// the previous key of an unfinished rotation is refused: some secrets may
// still be sealed under that one, and 'secrets rotate' finishes the job.
func loadSecretKey(cfg *config, logger *slog.Logger) ([]byte, error) {
	if cfg.SecretKey != "" {
		return decodeSecretKey(cfg.SecretKey)
	}
	if cfg.DatabaseURL != "" {
		return nil, &configError{problems: []error{fmt.Errorf("%s: required with PostgreSQL", envSecretKey)}}
	}
	if _, prev, err := readKeyFiles(cfg.DataDir); err != nil {
		return nil, err
	} else if prev != nil {
		return nil, fmt.Errorf("a key rotation did not finish (%s is there): run 'ledgerdesk secrets rotate' to finish it",
			filepath.Join(cfg.DataDir, previousKeyFile))
	}
	path := filepath.Join(cfg.DataDir, secretKeyFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, derr := decodeSecretKey(string(raw))
		if derr != nil {
			return nil, fmt.Errorf("secret key file %s: %w", path, derr)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read secret key file %s: %w", path, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate secret key: %w", err)
	}
	// O_EXCL: two processes starting at once must not write different keys.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadSecretKey(cfg, logger)
	}
	if err != nil {
		return nil, fmt.Errorf("create secret key file %s: %w", path, err)
	}
	_, werr := fmt.Fprintf(f, "%x\n", key)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("write secret key file %s: %w", path, werr)
	}
	logger.Warn("generated a new secret key for encrypting secrets at rest; back it up with the data directory",
		"path", path, "env", envSecretKey)
	return key, nil
}
