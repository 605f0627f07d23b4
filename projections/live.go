package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// generationCheck is how often a running view looks whether a rebuild
// swapped in a new generation of its tables.
const generationCheck = 2 * time.Second

// view is what the ticket, user and location projections share: a
// subscriber whose name follows the serving generation of the tables
// (projection_generations), so that after `projections rebuild` swaps a
// fresh set of tables in, the running server continues feeding that set
// from where the rebuild stopped.
type view struct {
	short  string // "tickets", "users", "locations"
	base   string // subscriber name of generation 1
	store  eventstore.Store
	reader Reader
	logger *slog.Logger

	mu   sync.Mutex
	name string // subscriber of the serving generation, once known
}

func newView(short, base string, store eventstore.Store, reader Reader, logger *slog.Logger) *view {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &view{short: short, base: base, store: store, reader: reader, logger: logger, name: base}
}

// subscriberFor names the subscriber that builds generation gen.
func subscriberFor(base string, gen int64) string {
	if gen <= 1 {
		return base
	}
	return fmt.Sprintf("%s.g%d", base, gen)
}

// Name is the subscriber name of the serving generation (for Store.Reached).
func (v *view) Name() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.name
}

// current reads the serving generation's subscriber.
func (v *view) current(ctx context.Context) (string, error) {
	rows, err := v.reader.Query(ctx, `SELECT subscriber FROM projection_generations WHERE projection = $1`, v.short)
	if err != nil {
		return "", fmt.Errorf("projections: %s: read generation: %w", v.short, err)
	}
	defer func() { _ = rows.Close() }()
	name := v.base
	if rows.Next() {
		if err := rows.Scan(&name); err != nil {
			return "", fmt.Errorf("projections: %s: read generation: %w", v.short, err)
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("projections: %s: read generation: %w", v.short, err)
	}
	return name, nil
}

// run subscribes h under the serving generation's name until ctx ends, and
// re-subscribes under the new name when a rebuild swaps generations. Writes
// of the old subscription that race the swap are harmless: h applies an
// event to a row only at the row's next stream version.
func (v *view) run(ctx context.Context, h eventstore.Handler, opts eventstore.SubscribeOptions) error {
	for {
		name, err := v.current(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		v.mu.Lock()
		v.name = name
		v.mu.Unlock()

		subCtx, cancel := context.WithCancel(ctx)
		switched := make(chan struct{})
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			tick := time.NewTicker(generationCheck)
			defer tick.Stop()
			for {
				select {
				case <-subCtx.Done():
					return
				case <-tick.C:
				}
				now, err := v.current(subCtx)
				if err == nil && now != name {
					v.logger.Info("projection generation swapped", "projection", v.short, "from", name, "to", now)
					close(switched)
					cancel()
					return
				}
			}
		}()
		err = v.store.Subscribe(subCtx, name, h, opts)
		cancel()
		<-watchDone
		select {
		case <-switched:
			if ctx.Err() == nil {
				continue
			}
		default:
		}
		if err != nil && !errors.Is(err, ctx.Err()) {
			return fmt.Errorf("projections: %s: %w", name, err)
		}
		return err
	}
}

// versionGuard is the outcome of applying an event to a row keyed by its
// stream: applied, already there (a redelivery), or out of order.
type versionGuard int

const (
	guardApplied versionGuard = iota
	guardSeen
	guardGap
	guardMissing
)

// checkVersion explains why an update guarded by "version = v-1" changed
// no row: the row is at v or beyond (seen), behind (gap) or absent.
func checkVersion(ctx context.Context, tx eventstore.Tx, table, id string, v int64) (versionGuard, error) {
	var have int64
	err := tx.QueryRow(ctx, `SELECT version FROM `+table+` WHERE id = $1`, id).Scan(&have)
	switch {
	case errors.Is(err, eventstore.ErrNoRows):
		return guardMissing, nil
	case err != nil:
		return 0, err
	case have >= v:
		return guardSeen, nil
	}
	return guardGap, nil
}

// streamID returns the id in a stream name "<prefix><id>".
func streamID(stream, prefix string) (string, bool) {
	id, ok := strings.CutPrefix(stream, prefix)
	return id, ok && id != ""
}
