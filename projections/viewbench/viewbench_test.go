package viewbench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

// TestRun runs the benchmark small, to keep it working; its figures mean
// nothing at this size and are not checked.
func TestRun(t *testing.T) {
	t.Parallel()
	cfg := Config{SQLiteDir: t.TempDir(), Events: 2000, Rate: 50, Duration: 500 * time.Millisecond, Rebuilds: 1}
	if !testing.Short() {
		cfg.PostgresURL = pgtest.BaseURL()
	}
	var out bytes.Buffer
	if err := Run(context.Background(), &out, cfg); err != nil {
		t.Fatalf("Run() error = %v\n%s", err, out.String())
	}
	want := []string{"generated 2000 events (200 tickets)", "rebuild / raw scan:", "p99 tickets / bare:", "== embedded (SQLite) store"}
	if !testing.Short() {
		want = append(want, "== PostgreSQL store")
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}
