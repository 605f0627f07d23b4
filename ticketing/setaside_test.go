package ticketing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// TestProcessManager_SetsAsideAMailItCannotStore appends, on PostgreSQL,
// mails the parser should never have let through: a sender address with a
// NUL character (PostgreSQL text cannot hold it) and one of 2.7 KB (too
// large for the index on intake_tickets.sender_email). The intake fails on
// each every time; it sets the mail aside after DefaultMaxAttempts, records
// why, and the next mail still becomes a ticket.
func TestProcessManager_SetsAsideAMailItCannotStore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sender string
		want   string // in the recorded error
	}{
		{"a sender address with a NUL character", "erika\x00@customer.example", "0x00"},
		{"a sender address of 2.7 KB", incompressible(2700) + "@customer.example", "index row"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, _ := storetest.Postgres(t)
			pm := NewProcessManager(store, func() time.Time { return t0.Add(24 * time.Hour) }, testKey, nil)
			account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
				Username: "support", AccountAddress: "support@desk.example", CreateUnknownUsers: true}.WithDefaults()
			appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})

			bad := mail(1, "Printer on fire", func(m *domain.MailReceived) { m.From.Email = tc.sender })
			badPos := appendEvent(t, store, MailStream(bad.MailID), eventstore.NoStream, bad.MailID, bad)
			next := mail(2, "Scanner jammed", nil)
			pos := appendEvent(t, store, MailStream(next.MailID), eventstore.NoStream, next.MailID, next)
			runUntil(t, store, pm, pos)

			if tk := loadTicket(t, store, domain.TicketIDFor(next.MailID)); tk.Number != domain.FirstTicketNumber || tk.Subject != "Scanner jammed" {
				t.Errorf("ticket of the next mail = number %d subject %q, want %d %q", tk.Number, tk.Subject,
					domain.FirstTicketNumber, "Scanner jammed")
			}
			if tk := loadTicket(t, store, domain.TicketIDFor(bad.MailID)); tk.Exists() {
				t.Errorf("the set-aside mail has ticket %d, want none (its decision rolled back)", tk.Number)
			}
			aside, err := SetAsides(context.Background(), store, IntakeSubscriber)
			if err != nil {
				t.Fatal(err)
			}
			if len(aside) != 1 {
				t.Fatalf("set-aside events of the intake = %+v, want the bad mail's", aside)
			}
			got := aside[0]
			if got.Position != badPos || got.EventID != bad.MailID || got.EventType != domain.MailReceivedName ||
				got.Stream != MailStream(bad.MailID) || got.AccountID != "acc" || got.Attempts != eventstore.DefaultMaxAttempts {
				t.Errorf("set-aside event = %+v, want the mail at position %d of account acc after %d attempts",
					got, badPos, eventstore.DefaultMaxAttempts)
			}
			if !strings.Contains(got.Error, tc.want) || len(got.Error) > domain.SetAsideErrorMax || strings.Contains(got.Error, "\x00") {
				t.Errorf("set-aside error = %q, want the database's reason (%q), bounded and without NUL", got.Error, tc.want)
			}
		})
	}
}

// incompressible returns n bytes of hex digits without repeats that
// PostgreSQL's compression could shrink (a run of one letter would fit the
// index compressed).
func incompressible(n int) string {
	var b strings.Builder
	sum := sha256.Sum256([]byte("ledgerdesk"))
	for b.Len() < n {
		b.WriteString(hex.EncodeToString(sum[:]))
		sum = sha256.Sum256(sum[:])
	}
	return b.String()[:n]
}

func TestSetAsideRecorder(t *testing.T) {
	t.Parallel()
	m := mail(1, "Printer", nil)
	name, version, payload, err := domain.MarshalEvent(m)
	if err != nil {
		t.Fatal(err)
	}
	orig := eventstore.RecordedEvent{ID: m.MailID, Stream: MailStream(m.MailID), StreamVersion: 1, Position: 7, Type: name,
		SchemaVersion: version, Payload: payload, Metadata: eventstore.Metadata{CorrelationID: "poll-1"}}
	req, err := SetAsideRecorder{}.SetAsideEvent(eventstore.SetAside{Subscriber: IntakeSubscriber, Event: orig, Attempts: 5,
		Err: errors.New("bad \x00 sender " + strings.Repeat("é", 600)), At: t0})
	if err != nil {
		t.Fatalf("SetAsideEvent() error = %v", err)
	}
	if req.Stream != domain.SubscriberStream(IntakeSubscriber) || req.ExpectedVersion != eventstore.AnyVersion || len(req.Events) != 1 {
		t.Fatalf("SetAsideEvent() = %+v, want one event appended to %s at any version", req, domain.SubscriberStream(IntakeSubscriber))
	}
	ne := req.Events[0]
	if ne.Metadata != (eventstore.Metadata{CausationID: m.MailID, CorrelationID: "poll-1", Actor: SetAsideActor, OccurredAt: t0}) {
		t.Errorf("metadata = %+v, want caused by the mail, in its correlation, by %s at t0", ne.Metadata, SetAsideActor)
	}
	ev, err := domain.UnmarshalEvent(ne.Type, ne.SchemaVersion, ne.Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := domain.SubscriberEventSetAside{Subscriber: IntakeSubscriber, Position: 7, EventID: m.MailID, EventType: domain.MailReceivedName,
		Stream: MailStream(m.MailID), AccountID: "acc", Attempts: 5,
		Error: domain.SetAsideError("bad \x00 sender " + strings.Repeat("é", 600)), At: t0}
	if diff := cmp.Diff(domain.Event(want), ev); diff != "" {
		t.Errorf("recorded event (-want +got):\n%s", diff)
	}

	name, version, payload, err = domain.MarshalEvent(domain.SubscriberEventRetried{Subscriber: IntakeSubscriber, Position: 7, Actor: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if name != (SetAsideRecorder{}).RetryType() {
		t.Errorf("RetryType() = %q, want %q", (SetAsideRecorder{}).RetryType(), name)
	}
	r, err := SetAsideRecorder{}.DecodeRetry(eventstore.RecordedEvent{Type: name, SchemaVersion: version, Payload: payload})
	if err != nil || r != (eventstore.Retry{Subscriber: IntakeSubscriber, Position: 7}) {
		t.Errorf("DecodeRetry() = %+v, %v; want the intake and position 7", r, err)
	}
	if _, err := (SetAsideRecorder{}).DecodeRetry(orig); err == nil {
		t.Error("DecodeRetry(a MailReceived) error = nil, want an error")
	}
}
