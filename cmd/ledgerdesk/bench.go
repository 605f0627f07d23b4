package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ledgerdesk/ledgerdesk/eventstore/storebench"
)

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "Measure event store throughput (append one per transaction, batches of 100, catch-up reads)\n"+
		"on PostgreSQL and on the embedded store, next to raw pgx INSERT, COPY and ordered-scan baselines\n"+
		"measured in the same run. Uses a scratch database it creates and drops.", stderr)
	pgURL := fs.String("database-url", firstNonEmpty(getenv(envDatabaseURL), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL server to create the scratch database on ["+envDatabaseURL+"]")
	events := fs.Int("events", 20000, "events per measurement")
	skipEmbedded := fs.Bool("skip-embedded", false, "measure PostgreSQL only")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *events < 100 {
		return &configError{problems: []error{fmt.Errorf("--events: %d is too few, use at least 100", *events)}}
	}
	cfg := storebench.Config{PostgresURL: *pgURL, Events: *events}
	if !*skipEmbedded {
		dir, err := os.MkdirTemp("", "ledgerdesk-bench-")
		if err != nil {
			return fmt.Errorf("scratch directory: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.SQLitePath = filepath.Join(dir, "bench.db")
	}
	return storebench.Run(ctx, stdout, cfg)
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
