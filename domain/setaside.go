package domain

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// This file holds the events of record for durable subscribers that give up
// on one event: the event store sets an event aside after its handler
// failed on it too often (eventstore.SubscribeOptions.MaxAttempts), so that
// one bad mail cannot stop all ticket creation, and an operator asks for it
// to be handled again (ledgerdesk events retry). Both go to the
// subscriber's stream, SubscriberStream(name).

// Stored names and schema versions.
const (
	SubscriberEventSetAsideName = "SubscriberEventSetAside"
	SubscriberEventRetriedName  = "SubscriberEventRetried"

	SubscriberEventSetAsideSchemaVersion = 1
	SubscriberEventRetriedSchemaVersion  = 1
)

// SubscriberStream is the stream of a durable subscriber's set-aside and
// retried events.
func SubscriberStream(subscriber string) string { return "subscriber-" + subscriber }

// SetAsideErrorMax bounds, in bytes, the error text a set-aside event
// keeps: enough for a database's message and its context, not a whole
// payload quoted back.
const SetAsideErrorMax = 1000

// SubscriberEventSetAside records that a durable subscriber stopped
// retrying the event at Position and went on with the next: its handler
// failed Attempts times while the store was healthy, last with Error. The
// subscriber's checkpoint moved past the event in the same transaction.
// AccountID is the inbound account of a mail's event (MailReceived,
// MailFailed, MailSkipped), empty for others.
type SubscriberEventSetAside struct {
	Subscriber string    `json:"subscriber"`
	Position   int64     `json:"position"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Stream     string    `json:"stream"`
	AccountID  string    `json:"account_id,omitempty"`
	Attempts   int       `json:"attempts"`
	Error      string    `json:"error"`
	At         time.Time `json:"at"`
}

// EventName implements Event.
func (SubscriberEventSetAside) EventName() string { return SubscriberEventSetAsideName }

// SubscriberEventRetried records an operator's request that Subscriber
// handle the event at Position, which it had set aside, again. The
// subscriber does so when it reads this event; if its handler fails on it
// again as often, the event is set aside again. The other fields repeat
// the set-aside event's, so that views need not look it up.
type SubscriberEventRetried struct {
	Subscriber string    `json:"subscriber"`
	Position   int64     `json:"position"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	AccountID  string    `json:"account_id,omitempty"`
	Actor      string    `json:"actor"`
	At         time.Time `json:"at"`
}

// EventName implements Event.
func (SubscriberEventRetried) EventName() string { return SubscriberEventRetriedName }

// SetAsideError returns an error text fit for a set-aside event: without
// NUL characters and invalid UTF-8 (PostgreSQL text holds neither, and the
// error may quote the very value that broke the handler), and cut at a
// character boundary to at most SetAsideErrorMax bytes, "…" included.
func SetAsideError(text string) string {
	text = strings.ToValidUTF8(strings.ReplaceAll(text, "\x00", ""), "\uFFFD")
	if len(text) <= SetAsideErrorMax {
		return text
	}
	const ellipsis = "…"
	cut := SetAsideErrorMax - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + ellipsis
}

// MailAccount returns the inbound account a mail's event names (the
// account_id of MailReceived, MailFailed and MailSkipped), or "" for other
// events and payloads it cannot read: a set-aside event may be set aside
// precisely because its payload is broken.
func MailAccount(eventType string, payload []byte) string {
	switch eventType {
	case MailReceivedName, MailFailedName, MailSkippedName:
	default:
		return ""
	}
	var p struct {
		AccountID string `json:"account_id"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return ""
	}
	return p.AccountID
}

// SetAsides is a subscriber's stream folded: the events it set aside and
// that no retry was asked for since, in the order they were set aside.
type SetAsides struct {
	Open []SubscriberEventSetAside
}

// EvolveSetAsides folds one event of a subscriber's stream into s.
func EvolveSetAsides(s SetAsides, e Event) SetAsides {
	switch e := e.(type) {
	case SubscriberEventSetAside:
		open := slices.DeleteFunc(slices.Clone(s.Open), func(o SubscriberEventSetAside) bool { return o.Position == e.Position })
		s.Open = append(open, e)
	case SubscriberEventRetried:
		s.Open = slices.DeleteFunc(slices.Clone(s.Open), func(o SubscriberEventSetAside) bool { return o.Position == e.Position })
	}
	return s
}

// DecideRetry returns the requests to handle set-aside events again: the
// one at position, or with all every open one, in the order they were set
// aside. A position that is not open is ErrNotFound; all with nothing open
// gives no events.
func DecideRetry(s SetAsides, position int64, all bool, actor string, at time.Time) ([]Event, error) {
	retried := func(o SubscriberEventSetAside) Event {
		return SubscriberEventRetried{Subscriber: o.Subscriber, Position: o.Position, EventID: o.EventID,
			EventType: o.EventType, AccountID: o.AccountID, Actor: actor, At: at}
	}
	if all {
		var out []Event
		for _, o := range s.Open {
			out = append(out, retried(o))
		}
		return out, nil
	}
	for _, o := range s.Open {
		if o.Position == position {
			return []Event{retried(o)}, nil
		}
	}
	return nil, fmt.Errorf("%w: no event at position %d is set aside", ErrNotFound, position)
}
