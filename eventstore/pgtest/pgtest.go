// Package pgtest gives each test its own PostgreSQL database on the server
// named by LEDGERDESK_TEST_DATABASE_URL (default: the local trust-auth server),
// so tests can run in parallel and never see each other's rows.
//
// A test that asks for a database fails, and does not skip, when the server
// is unreachable: CI must prove the PostgreSQL path. Tests that want to run
// without a server check testing.Short() themselves before calling in.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvDatabaseURL names the variable holding the server URL tests use. The
// database in it is only used to create and drop the per-test databases.
const EnvDatabaseURL = "LEDGERDESK_TEST_DATABASE_URL"

// DefaultURL is used when EnvDatabaseURL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// connectTimeout bounds how long a test waits for an unreachable server.
const connectTimeout = 10 * time.Second

// BaseURL returns the server URL tests create their databases on.
func BaseURL() string {
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return u
	}
	return DefaultURL
}

// NewDatabase creates a fresh, uniquely named database, returns its URL and
// drops it (WITH (FORCE), so leaked connections do not keep it alive) when
// the test ends. It calls tb.Fatal when the server cannot be reached.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	base := BaseURL()
	name := "ldtest_" + sanitize(tb.Name()) + "_" + randomSuffix(tb)
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	admin, err := connect(ctx, base)
	if err != nil {
		tb.Fatalf("pgtest: PostgreSQL is unreachable at %s (set %s to a server that accepts CREATE DATABASE): %v",
			redact(base), EnvDatabaseURL, err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	if err := createDatabase(ctx, admin, name); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		conn, err := connect(ctx, base)
		if err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(base, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return u
}

// NewPool returns a pool on a fresh database (see NewDatabase), closed when
// the test ends before the database is dropped.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	u := NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		tb.Fatalf("pgtest: open pool: %v", err)
	}
	tb.Cleanup(pool.Close) // registered after the drop, so it runs before it
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: ping new database: %v", err)
	}
	return pool
}

func connect(ctx context.Context, u string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("parse URL: %w", err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// createDatabase retries while another session holds the template database
// open (SQLSTATE 55006), which parallel tests provoke now and then.
func createDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	for attempt := 0; ; attempt++ {
		_, err := conn.Exec(ctx, q)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt >= 20 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
}

func withDatabase(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("%s must be a postgres:// URL", EnvDatabaseURL)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// sanitize keeps a short, identifier-safe trace of the test name so a
// leftover database can be traced to its test.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 32 {
			break
		}
	}
	return b.String()
}

func randomSuffix(tb testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("pgtest: random database name: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// redact hides a password in the URL shown in failure messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
