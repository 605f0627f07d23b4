package ticketing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Commands runs the agents' ticket commands through the domain: load the
// ticket, decide, append at the version read, retrying when another writer
// got there first.
type Commands struct {
	store eventstore.Store
	key   domain.MessageIDKey
}

// NewCommands returns the command handler over store; key keys the
// Message-IDs of the replies it queues (see NewProcessManager).
func NewCommands(store eventstore.Store, key domain.MessageIDKey) *Commands {
	return &Commands{store: store, key: key}
}

// commandRetries bounds the retries of a command that keeps losing races.
const commandRetries = 5

// Result says where a command's events landed; Position is the global
// position of the last one (0 when the command changed nothing).
type Result struct {
	Events   []domain.Event
	Position int64
	Version  int64
}

// Handle decides cmd on the ticket and appends the events. The ticket's
// events and the queued mails commit together (the outbox).
func (c *Commands) Handle(ctx context.Context, ticketID string, cmd domain.TicketCommand) (Result, error) {
	var lastErr error
	for range commandRetries {
		res, err := c.try(ctx, ticketID, cmd)
		if !errors.Is(err, eventstore.ErrVersionConflict) {
			return res, err
		}
		lastErr = err
	}
	return Result{}, fmt.Errorf("ticketing: ticket %s: gave up after %d conflicting writes: %w", ticketID, commandRetries, lastErr)
}

func (c *Commands) try(ctx context.Context, ticketID string, cmd domain.TicketCommand) (Result, error) {
	var res Result
	err := c.store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		l := &loaded{versions: map[string]int64{}}
		t, err := l.ticket(ctx, tx, ticketID)
		if err != nil {
			return err
		}
		settings, err := (&registry[domain.Settings]{stream: SettingsStream, evolve: domain.EvolveSettings,
			state: domain.DefaultSettings()}).load(ctx, tx)
		if err != nil {
			return err
		}
		events, err := domain.DecideTicket(t, settings, c.key, cmd)
		if err != nil {
			return err
		}
		res.Events = events
		res.Version = l.versions[domain.TicketStream(ticketID)]
		if len(events) == 0 {
			return nil
		}
		stream := domain.TicketStream(ticketID)
		news := make([]eventstore.NewEvent, 0, len(events))
		for _, e := range events {
			name, version, payload, err := domain.MarshalEvent(e)
			if err != nil {
				return err
			}
			actor, at := commandActor(cmd)
			news = append(news, eventstore.NewEvent{Type: name, SchemaVersion: version, Payload: payload,
				Metadata: eventstore.Metadata{Actor: actor, OccurredAt: at}})
		}
		ar, err := tx.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: res.Version, Events: news})
		if err != nil {
			return err
		}
		res.Position = ar.LastPosition
		res.Version = ar.StreamVersions[stream]
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("ticketing: ticket %s: %w", ticketID, err)
	}
	return res, nil
}

func commandActor(cmd domain.TicketCommand) (string, time.Time) {
	switch c := cmd.(type) {
	case domain.ChangeStatus:
		return c.Actor, c.At
	case domain.CloseTicket:
		return c.Actor, c.At
	case domain.ReopenTicket:
		return c.Actor, c.At
	case domain.AssignResource:
		return c.Actor, c.At
	case domain.SetCategory:
		return c.Actor, c.At
	case domain.SetPriority:
		return c.Actor, c.At
	case domain.AddNote:
		return c.Actor, c.At
	case domain.ReplyByMail:
		return c.Actor, c.At
	}
	return "", time.Time{}
}
