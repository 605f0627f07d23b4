package main

import (
	"context"
	"fmt"
	"io"
)

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "Apply the embedded database migrations and exit. Safe to run again; serve runs it too.", stderr)
	cfg := bindConfig(fs, getenv, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cfg.validate(false); err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, stderr)
	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	current, latest, err := st.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s store at schema version %d (latest %d)\n", st.Kind, current, latest)
	return nil
}
