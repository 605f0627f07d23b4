package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// retryActor names the command line in the retry requests it appends.
const retryActor = "admin:events-retry"

// runEvents is `ledgerdesk events retry --subscriber NAME [--position P |
// --all]`: it asks a durable subscriber to handle again events it set
// aside after its handler kept failing on them. It appends a
// SubscriberEventRetried per event; the subscriber, in a running serve or
// the next one started, reads it in its turn and handles the original event
// again (and sets it aside again if it still fails).
func runEvents(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "retry" {
		fmt.Fprint(stderr, "Usage: ledgerdesk events retry --subscriber NAME (--position P | --all) [flags]\n\n"+
			"Run 'ledgerdesk events retry --help' for the flags.\n")
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			return errHelpShown
		}
		return errUsage
	}
	fs := newFlagSet("events retry", "Ask a durable subscriber to handle again the events it set aside (SubscriberEventSetAside\n"+
		"in GET /api/v1/events?type=SubscriberEventSetAside, and set_aside in GET /api/v1/mailboxes).\n"+
		"Fix the cause first: an event that fails again as often is set aside again. Subscribers: "+
		ticketing.IntakeSubscriber+" (the mail intake), "+ticketing.OutboundSubscriber+", the projections.", stderr)
	cfg := bindConfig(fs, getenv, false)
	subscriber := fs.String("subscriber", "", "the subscriber whose set-aside events to retry (required)")
	position := fs.Int64("position", 0, "the global position of the set-aside event to retry")
	all := fs.Bool("all", false, "retry every event the subscriber has set aside")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case *subscriber == "":
		fmt.Fprintln(stderr, "--subscriber is required")
		return errUsage
	case *all == (*position > 0):
		fmt.Fprintln(stderr, "give either --position (a positive position) or --all")
		return errUsage
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

	retried, last, err := ticketing.RetrySetAside(ctx, st, *subscriber, *position, *all, retryActor, time.Now())
	if errors.Is(err, domain.ErrNotFound) {
		open, lerr := ticketing.SetAsides(ctx, st, *subscriber)
		if lerr != nil {
			return errors.Join(err, lerr)
		}
		fmt.Fprintf(stderr, "%s has not set aside an event at position %d (or it was retried already); set aside now: %d\n",
			*subscriber, *position, len(open))
		for _, o := range open {
			fmt.Fprintf(stderr, "  position %d: %s of %s, %d attempts: %s\n", o.Position, o.EventType, o.Stream, o.Attempts, o.Error)
		}
		return err
	}
	if err != nil {
		return err
	}
	if len(retried) == 0 {
		fmt.Fprintf(stdout, "%s has no event set aside\n", *subscriber)
		return nil
	}
	for _, r := range retried {
		fmt.Fprintf(stdout, "retry requested: %s will handle %s at position %d again\n", r.Subscriber, r.EventType, r.Position)
	}
	fmt.Fprintf(stdout, "%d retry request(s) appended, the last at position %d\n", len(retried), last)
	return nil
}
