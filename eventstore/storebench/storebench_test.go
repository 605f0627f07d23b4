package storebench_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storebench"
)

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     storebench.Config
		wantErr bool
	}{
		{"defaults with a URL", storebench.Config{PostgresURL: "postgres://x/y"}, false},
		{"no URL", storebench.Config{}, true},
		{"fewer events than one batch", storebench.Config{PostgresURL: "postgres://x/y", Events: 99}, true},
		{"negative page size", storebench.Config{PostgresURL: "postgres://x/y", PageSize: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// A tiny run proves every measurement works end to end; it asserts on the
// table's rows, never on figures.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped under -short")
	}
	var out bytes.Buffer
	cfg := storebench.Config{PostgresURL: pgtest.BaseURL(), Events: 200, SingleEvents: 20, PageSize: 50,
		SQLitePath: filepath.Join(t.TempDir(), "bench.db")}
	if err := storebench.Run(context.Background(), &out, cfg); err != nil {
		t.Fatalf("Run() error = %v", err)
	}
	for _, want := range []string{
		"PG store Append, 1 event/tx", "raw INSERT, 1 row/commit",
		"PG store Append, 100 events/tx", "raw multi-row INSERT, 100 rows/tx", "raw pgx.Batch INSERT, 100 rows/tx",
		"raw COPY, 100 rows/tx", "PG store catch-up ReadAll, pages of 50", "raw ordered scan",
		"embedded store Append, 1 event/tx", "embedded store Append, 100 events/tx", "embedded store catch-up ReadAll",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Run() output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(out.String(), "x raw ordered scan") {
		t.Errorf("Run() output has no read ratio:\n%s", out.String())
	}
}
