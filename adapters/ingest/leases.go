package ingest

import (
	"context"
	"errors"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// ErrLeaseLost is what a fence returns once the account's lease is no
// longer this instance's: the commit rolls back, nothing is deleted.
var ErrLeaseLost = errors.New("ingest: the mailbox lease passed to another instance")

// Leases decides which instance polls an account when several share one
// database (adapters/lease, on PostgreSQL). The scheduler polls an account
// only while it holds the account's lease; a nil Leases (the embedded
// store, one instance) holds every lease.
type Leases interface {
	// Want tells which accounts this instance runs workers for; leases are
	// taken only among them.
	Want(accountIDs []string)
	// Hold returns the account's lease for one poll when this instance
	// holds it; the caller calls Done when the poll is over. A lease in
	// use is not handed over to another instance until then (but it may
	// be lost, which ends its Context). An IMAP IDLE connection (push) is
	// held the same way, for the connection's life: it is opened only under
	// Hold, closed when the lease's Context ends, and Done is called after.
	Hold(accountID string) (Lease, bool)
	// Changed is closed at the next change of the set of leases held.
	Changed() <-chan struct{}
	// ForwardPollNow asks whichever instance holds the account's lease to
	// poll it now.
	ForwardPollNow(ctx context.Context, accountID string) error
	// PollNowRequests delivers the accounts other instances forwarded a
	// poll-now for.
	PollNowRequests() <-chan string
}

// Lease is one account's lease, held for one poll.
type Lease interface {
	// Context ends before the lease could pass to another instance (its
	// expiry, less a margin for clock drift), so that the poll stops
	// talking to the server in time.
	Context() context.Context
	// Fence fails with ErrLeaseLost unless the lease is still this
	// instance's. Run in the import commit's transaction it also keeps the
	// lease from changing hands until that transaction ends.
	Fence(ctx context.Context, q eventstore.Querier) error
	// StillHeld is Fence outside a transaction: the fetcher asks it before
	// it deletes or moves mail on the server.
	StillHeld(ctx context.Context) error
	// Done ends this use of the lease.
	Done()
}
