package ticketing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// forEachStore runs fn against a fresh embedded store and a fresh
// PostgreSQL store.
func forEachStore(t *testing.T, fn func(t *testing.T, store eventstore.Store)) {
	t.Helper()
	storetest.Each(t, fn)
}

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func appendEvent(t *testing.T, store eventstore.Store, stream string, expected int64, id string, e domain.Event) int64 {
	t.Helper()
	name, version, payload, err := domain.MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: expected,
		Events: []eventstore.NewEvent{{ID: id, Type: name, SchemaVersion: version, Payload: payload,
			Metadata: eventstore.Metadata{OccurredAt: t0}}}})
	if err != nil {
		t.Fatalf("append %s to %s: %v", name, stream, err)
	}
	return res.LastPosition
}

func mail(n int, subject string, mutate func(*domain.MailReceived)) domain.MailReceived {
	m := domain.MailReceived{
		AccountID: "acc", SourceKey: fmt.Sprintf("imap/INBOX/1/%d", n), Size: 100,
		ReceivedAt: t0.Add(time.Duration(n) * time.Hour), MessageID: fmt.Sprintf("m%d@customer.example", n),
		Subject: subject, From: domain.Address{Name: "Erika Muster", Email: "erika@customer.example"},
		To: []domain.Address{{Email: "support@desk.example"}}, TextBody: "hello",
	}
	m.MailID = domain.MailIDFor(m.AccountID, m.SourceKey)
	if mutate != nil {
		mutate(&m)
	}
	return m
}

// runUntil runs the process manager until it has decided the event at
// position, then stops it.
func runUntil(t *testing.T, store eventstore.Store, pm *ProcessManager, position int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pm.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := store.Reached(context.Background(), IntakeSubscriber, position)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("process manager stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("process manager did not reach position %d within 30s", position)
		}
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run stopped with %v, want the cancellation", err)
	}
}

func streamTypes(t *testing.T, store eventstore.Store, stream string) []string {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), stream, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	return types
}

func loadTicket(t *testing.T, store eventstore.Store, id string) domain.Ticket {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), domain.TicketStream(id), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var tk domain.Ticket
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			t.Fatal(err)
		}
		tk = domain.EvolveTicket(tk, ev)
	}
	return tk
}

func TestProcessManager_DecidesMailsAgainstARealStore(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		clock := t0.Add(24 * time.Hour)
		pm := NewProcessManager(store, func() time.Time { return clock }, testKey, nil)
		account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
			Username: "support", AccountAddress: "support@desk.example", SenderAddress: "support@desk.example",
			CreateUnknownUsers: true, CreateLocationFromDomain: true, AutoReplyTemplate: "default"}.WithDefaults()
		appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})

		// A new customer's mail opens ticket 1001, creates the user and the
		// location once, and queues the auto-reply.
		m1 := mail(1, "Printer on fire", nil)
		pos := appendEvent(t, store, MailStream(m1.MailID), eventstore.NoStream, m1.MailID, m1)
		runUntil(t, store, pm, pos)
		ticketID := domain.TicketIDFor(m1.MailID)
		tk := loadTicket(t, store, ticketID)
		if tk.Number != domain.FirstTicketNumber || tk.Subject != "Printer on fire" {
			t.Fatalf("ticket = number %d subject %q, want %d %q", tk.Number, tk.Subject, domain.FirstTicketNumber, "Printer on fire")
		}
		if got := streamTypes(t, store, domain.TicketStream(ticketID)); !slices.Contains(got, domain.AutoReplyQueuedName) {
			t.Errorf("ticket stream = %v, want an AutoReplyQueued", got)
		}
		userStream := domain.UserStream(domain.UserIDFor("erika@customer.example"))
		if got := streamTypes(t, store, userStream); !slices.Equal(got, []string{domain.UserAutoCreatedName}) {
			t.Errorf("user stream = %v, want [UserAutoCreated]", got)
		}
		locStream := domain.LocationStream(domain.LocationIDFor("customer.example"))
		if got := streamTypes(t, store, locStream); !slices.Equal(got, []string{domain.LocationAutoCreatedName}) {
			t.Errorf("location stream = %v, want [LocationAutoCreated]", got)
		}

		// A reply by subject reference and one by In-Reply-To to our
		// auto-reply are appended to the same ticket; neither creates a user
		// or a location again.
		var autoReplyID string
		evs, _ := store.ReadStream(context.Background(), domain.TicketStream(ticketID), 1, 0)
		for _, re := range evs {
			if re.Type == domain.AutoReplyQueuedName {
				var ar domain.AutoReplyQueued
				_ = json.Unmarshal(re.Payload, &ar)
				autoReplyID = ar.MessageID
			}
		}
		m2 := mail(2, "RE: AW: [Ticket#1001] Printer on fire", nil)
		appendEvent(t, store, MailStream(m2.MailID), eventstore.NoStream, m2.MailID, m2)
		m3 := mail(3, "no reference here", func(m *domain.MailReceived) { m.InReplyTo = autoReplyID })
		pos = appendEvent(t, store, MailStream(m3.MailID), eventstore.NoStream, m3.MailID, m3)
		runUntil(t, store, pm, pos)
		tk = loadTicket(t, store, ticketID)
		if len(tk.MailIDs) != 3 {
			t.Errorf("ticket holds mails %v, want m1, m2 and m3", tk.MailIDs)
		}
		if tk.Status != domain.StatusConfirmedUnread {
			t.Errorf("status after the customer's reply = %s, want %s", tk.Status, domain.StatusConfirmedUnread)
		}
		if got := streamTypes(t, store, userStream); len(got) != 1 {
			t.Errorf("user stream = %v after replies, want one event", got)
		}

		// Agents close the ticket; a reply inside the window reactivates it.
		cmds := NewCommands(store, testKey)
		if _, err := cmds.Handle(context.Background(), ticketID, domain.CloseTicket{Actor: "token:agent", At: t0.Add(4 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		m4 := mail(5, "Re: [Ticket#1001] still burning", nil)
		pos = appendEvent(t, store, MailStream(m4.MailID), eventstore.NoStream, m4.MailID, m4)
		runUntil(t, store, pm, pos)
		if got := streamTypes(t, store, domain.TicketStream(ticketID)); !slices.Contains(got, domain.TicketReactivatedName) {
			t.Errorf("ticket stream = %v, want TicketReactivated", got)
		}

		// A second mail from another sender opens ticket 1002.
		m5 := mail(6, "Another problem", func(m *domain.MailReceived) { m.From = domain.Address{Email: "max@other.example"} })
		pos = appendEvent(t, store, MailStream(m5.MailID), eventstore.NoStream, m5.MailID, m5)
		runUntil(t, store, pm, pos)
		if tk := loadTicket(t, store, domain.TicketIDFor(m5.MailID)); tk.Number != domain.FirstTicketNumber+1 {
			t.Errorf("second ticket number = %d, want %d", tk.Number, domain.FirstTicketNumber+1)
		}
	})
}

func TestProcessManager_SameMailDeliveredTwiceIsDecidedOnce(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, store eventstore.Store) {
		pm := NewProcessManager(store, func() time.Time { return t0 }, testKey, nil)
		m := mail(1, "Hello", nil)
		pos := appendEvent(t, store, MailStream(m.MailID), eventstore.NoStream, m.MailID, m)
		evs, err := store.ReadAll(context.Background(), 0, 10)
		if err != nil || len(evs) != 1 {
			t.Fatalf("ReadAll = %d events, %v", len(evs), err)
		}
		for range 2 {
			if err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				return pm.Handle(ctx, tx, evs[0])
			}); err != nil {
				t.Fatalf("Handle: %v", err)
			}
		}
		got := streamTypes(t, store, domain.TicketStream(domain.TicketIDFor(m.MailID)))
		if !slices.Equal(got, []string{domain.TicketCreatedName}) {
			t.Errorf("ticket stream after two deliveries = %v, want one TicketCreated", got)
		}
		_ = pos
	})
}
