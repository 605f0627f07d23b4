package ticketing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// SetAsideRecorder is the eventstore.SetAsideCodec of ledgerdesk's durable
// subscribers (the intake, the outbound saga, the projections): an event
// set aside is recorded as domain.SubscriberEventSetAside in the
// subscriber's stream, and domain.SubscriberEventRetried asks for it to be
// handled again. Every subscriber passes it in its SubscribeOptions.
type SetAsideRecorder struct{}

var _ eventstore.SetAsideCodec = SetAsideRecorder{}

// SetAsideActor is the actor of set-aside events: the store decided, no
// person.
const SetAsideActor = "system:subscriber"

// SetAsideEvent implements eventstore.SetAsideCodec.
func (SetAsideRecorder) SetAsideEvent(s eventstore.SetAside) (eventstore.AppendRequest, error) {
	var text string
	if s.Err != nil {
		text = s.Err.Error()
	}
	e := domain.SubscriberEventSetAside{Subscriber: s.Subscriber, Position: s.Event.Position, EventID: s.Event.ID,
		EventType: s.Event.Type, Stream: s.Event.Stream, AccountID: domain.MailAccount(s.Event.Type, s.Event.Payload),
		Attempts: s.Attempts, Error: domain.SetAsideError(text), At: s.At.UTC()}
	name, version, payload, err := domain.MarshalEvent(e)
	if err != nil {
		return eventstore.AppendRequest{}, fmt.Errorf("ticketing: record event %d as set aside: %w", s.Event.Position, err)
	}
	return eventstore.AppendRequest{Stream: domain.SubscriberStream(s.Subscriber), ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: version, Payload: payload,
			Metadata: eventstore.Metadata{CausationID: s.Event.ID, CorrelationID: s.Event.Metadata.CorrelationID,
				Actor: SetAsideActor, OccurredAt: e.At}}}}, nil
}

// RetryType implements eventstore.SetAsideCodec.
func (SetAsideRecorder) RetryType() string { return domain.SubscriberEventRetriedName }

// DecodeRetry implements eventstore.SetAsideCodec.
func (SetAsideRecorder) DecodeRetry(re eventstore.RecordedEvent) (eventstore.Retry, error) {
	ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
	if err != nil {
		return eventstore.Retry{}, fmt.Errorf("ticketing: retry request at position %d: %w", re.Position, err)
	}
	r, ok := ev.(domain.SubscriberEventRetried)
	if !ok {
		return eventstore.Retry{}, fmt.Errorf("ticketing: event at position %d is a %s, not a retry request", re.Position, re.Type)
	}
	return eventstore.Retry{Subscriber: r.Subscriber, Position: r.Position}, nil
}

// WithSetAside returns opts recording set-aside events with SetAsideRecorder
// unless they name a codec already.
func WithSetAside(opts eventstore.SubscribeOptions) eventstore.SubscribeOptions {
	if opts.SetAside == nil {
		opts.SetAside = SetAsideRecorder{}
	}
	return opts
}

// SetAsides returns the events subscriber has set aside and no retry was
// asked for since.
func SetAsides(ctx context.Context, store eventstore.Store, subscriber string) ([]domain.SubscriberEventSetAside, error) {
	s, _, err := loadSetAsides(ctx, store, subscriber)
	return s.Open, err
}

// RetrySetAside asks subscriber to handle again the set-aside event at
// position, or with all every one it has set aside: it appends a
// domain.SubscriberEventRetried for each to the subscriber's stream, which
// the subscriber reads in its turn and then handles the original event
// again. It returns the requests appended and the position of the last.
func RetrySetAside(ctx context.Context, store eventstore.Store, subscriber string, position int64, all bool, actor string,
	now time.Time,
) ([]domain.SubscriberEventRetried, int64, error) {
	var lastErr error
	for range commandRetries {
		s, version, err := loadSetAsides(ctx, store, subscriber)
		if err != nil {
			return nil, 0, err
		}
		events, err := domain.DecideRetry(s, position, all, actor, now.UTC())
		if err != nil {
			return nil, 0, fmt.Errorf("ticketing: retry for %s: %w", subscriber, err)
		}
		if len(events) == 0 {
			return nil, 0, nil
		}
		req := eventstore.AppendRequest{Stream: domain.SubscriberStream(subscriber), ExpectedVersion: version}
		out := make([]domain.SubscriberEventRetried, 0, len(events))
		for _, e := range events {
			name, v, payload, err := domain.MarshalEvent(e)
			if err != nil {
				return nil, 0, fmt.Errorf("ticketing: retry for %s: %w", subscriber, err)
			}
			req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload,
				Metadata: eventstore.Metadata{Actor: actor, OccurredAt: now.UTC()}})
			out = append(out, e.(domain.SubscriberEventRetried))
		}
		res, err := store.Append(ctx, req)
		if errors.Is(err, eventstore.ErrVersionConflict) {
			lastErr = err // the subscriber set another event aside meanwhile
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("ticketing: retry for %s: %w", subscriber, err)
		}
		return out, res.LastPosition, nil
	}
	return nil, 0, fmt.Errorf("ticketing: retry for %s: gave up after %d conflicting writes: %w", subscriber, commandRetries, lastErr)
}

// loadSetAsides folds subscriber's stream and returns its version.
func loadSetAsides(ctx context.Context, store eventstore.Store, subscriber string) (domain.SetAsides, int64, error) {
	var s domain.SetAsides
	evs, err := store.ReadStream(ctx, domain.SubscriberStream(subscriber), 1, 0)
	if err != nil {
		return s, 0, fmt.Errorf("ticketing: read the set-aside events of %s: %w", subscriber, err)
	}
	var version int64
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return s, 0, fmt.Errorf("ticketing: read the set-aside events of %s: %w", subscriber, err)
		}
		s = domain.EvolveSetAsides(s, ev)
		version = re.StreamVersion
	}
	return s, version, nil
}
