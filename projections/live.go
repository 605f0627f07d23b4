package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// view is what the ticket, user and location projections share: a durable
// subscriber with a constant name. A rebuild (see Rebuild) swaps fresh
// tables in underneath it; the subscriber keeps its name and checkpoint, and
// the handlers' per-stream version guard makes the events it meets again
// after a swap change nothing.
type view struct {
	short  string // "tickets", "users", "locations"
	name   string // subscriber name
	store  eventstore.Store
	reader Reader
	logger *slog.Logger
}

func newView(short, name string, store eventstore.Store, reader Reader, logger *slog.Logger) *view {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &view{short: short, name: name, store: store, reader: reader, logger: logger}
}

// Name is the projection's subscriber name (for Store.Reached).
func (v *view) Name() string { return v.name }

// run subscribes h until ctx ends; it returns ctx.Err() then, or the
// store's error when the subscription cannot go on. An event h keeps
// failing on is set aside (ticketing.SetAsideRecorder) rather than holding
// the view back for ever.
func (v *view) run(ctx context.Context, h eventstore.Handler, opts eventstore.SubscribeOptions) error {
	if opts.Types == nil {
		opts.Types = viewTypes()
	}
	err := v.store.Subscribe(ctx, v.name, h, ticketing.WithSetAside(opts))
	if err != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("projections: %s: %w", v.name, err)
	}
	return err
}

// intakeTypes are the events of the intake's mail streams and polls, which
// no ticket, user or location stream ever holds. They are most of the log,
// and a MailReceived carries a mail's bodies: a view that reads them only to
// pass them by costs the database as much as the intake's own reads.
var intakeTypes = []string{domain.MailReceivedName, domain.MailFailedName, domain.MailSkippedName, domain.MailboxPolledName}

// viewTypes is what the ticket, user and location views subscribe to:
// every registered event but the intake's. An event type a newer version
// stored and this one does not know is not delivered; its stream's next
// known event then finds a version gap, which the view reports.
func viewTypes() []string {
	return slices.DeleteFunc(domain.EventNames(), func(n string) bool { return slices.Contains(intakeTypes, n) })
}

// runBatch is run for a batch handler, by default 500 events a batch (a
// fetcher's batch of mails): fewer, larger commits while mail pours in.
func (v *view) runBatch(ctx context.Context, h eventstore.BatchHandler, opts eventstore.SubscribeOptions) error {
	if opts.Types == nil {
		opts.Types = viewTypes()
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = viewBatchSize
	}
	err := v.store.SubscribeBatch(ctx, v.name, h, ticketing.WithSetAside(opts))
	if err != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("projections: %s: %w", v.name, err)
	}
	return err
}

// viewBatchSize is the batch of the views that take the log in batches.
const viewBatchSize = 500

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
