package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// TestEventsRetry_EndToEnd runs serve on PostgreSQL where the intake cannot
// store one mail (a trigger refuses its sender, standing in for a bug that
// gets fixed): the mail is set aside, the next one still becomes a ticket,
// the event log and the mailbox status show it; after the fix, `ledgerdesk
// events retry` makes the running intake decide the mail again, and it
// becomes a ticket too.
func TestEventsRetry_EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with PostgreSQL")
	}
	t.Parallel()
	ctx := context.Background()
	env := map[string]string{envDataDir: t.TempDir(), envDatabaseURL: pgtest.NewDatabase(t),
		envSecretKey: strings.Repeat("ab", 32), envAdminToken: e2eToken}
	srv := startServe(t, env)
	client := apiClient{tb: t, base: srv.URL}
	accountID := client.createdID("/api/v1/inbound-accounts", map[string]any{"name": "support", "protocol": "imap",
		"host": "imap.example.com", "username": "support", "password": "pw", "account_address": "support@desk.example",
		"enabled": false})

	pool, err := pgxpool.New(ctx, env[envDatabaseURL])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.sender_email LIKE 'poison@%' THEN RAISE EXCEPTION 'refused by the test: %', NEW.sender_email; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT ON intake_tickets FOR EACH ROW EXECUTE FUNCTION refuse_poison()`); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	mail := func(key, from, subject string) domain.MailReceived {
		m := domain.MailReceived{MailID: domain.MailIDFor(accountID, key), AccountID: accountID, SourceKey: key,
			ReceivedAt: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), MessageID: key + "@customer.example", Subject: subject,
			From: domain.Address{Email: from}, To: []domain.Address{{Email: "support@desk.example"}}, TextBody: "hello"}
		name, v, payload, err := domain.MarshalEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Append(ctx, eventstore.AppendRequest{Stream: ticketing.MailStream(m.MailID), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{{ID: m.MailID, Type: name, SchemaVersion: v, Payload: payload}}}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	bad := mail("imap/INBOX/1/1", "poison@customer.example", "Printer on fire")
	mail("imap/INBOX/1/2", "erika@customer.example", "Scanner jammed")

	// the intake sets the bad mail aside and goes on
	created := client.waitEvents(domain.TicketCreatedName, 1)
	if got := payload[domain.TicketCreated](t, created[0]); got.Subject != "Scanner jammed" {
		t.Errorf("first ticket = %q, want the mail after the set-aside one", got.Subject)
	}
	aside := payload[domain.SubscriberEventSetAside](t, client.waitEvents(domain.SubscriberEventSetAsideName, 1)[0])
	if aside.Subscriber != ticketing.IntakeSubscriber || aside.EventID != bad.MailID || aside.AccountID != accountID ||
		aside.Attempts != eventstore.DefaultMaxAttempts || !strings.Contains(aside.Error, "refused by the test: poison@customer.example") {
		t.Errorf("SubscriberEventSetAside = %+v, want the intake's of mail %s of account %s", aside, bad.MailID, accountID)
	}
	waitMailbox(t, client, "set_aside 1", func(r mailboxRow) bool {
		return r.SetAside == 1 && strings.Contains(r.LastSetAsideError, "refused by the test")
	})

	// the fix, then the retry
	if _, err := pool.Exec(ctx, `DROP TRIGGER refuse_poison ON intake_tickets`); err != nil {
		t.Fatal(err)
	}
	cli := map[string]string{envDataDir: env[envDataDir], envDatabaseURL: env[envDatabaseURL], envSecretKey: env[envSecretKey]}
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"events", "retry", "--subscriber", ticketing.IntakeSubscriber, "--all"}, envOf(cli), &out, &errb); code != exitOK {
		t.Fatalf("events retry --all = %d; stderr:\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "retry requested: "+ticketing.IntakeSubscriber+" will handle MailReceived at position") {
		t.Errorf("events retry printed %q", out.String())
	}
	created = client.waitEvents(domain.TicketCreatedName, 2)
	if got := payload[domain.TicketCreated](t, created[1]); got.Subject != "Printer on fire" || got.CausedBy != bad.MailID {
		t.Errorf("second ticket = %q caused by %s, want the retried mail %s", got.Subject, got.CausedBy, bad.MailID)
	}
	waitMailbox(t, client, "set_aside 0", func(r mailboxRow) bool { return r.SetAside == 0 })

	// a second retry of the same event is refused: it is not set aside
	out.Reset()
	errb.Reset()
	at := aside.Position
	code := run(ctx, []string{"events", "retry", "--subscriber", ticketing.IntakeSubscriber, "--position", strconv.FormatInt(at, 10)}, envOf(cli), &out, &errb)
	if code != exitFailed || !strings.Contains(errb.String(), "has not set aside an event at position") {
		t.Errorf("events retry of a retried event = %d, stderr %q; want %d and why", code, errb.String(), exitFailed)
	}
	if code := run(ctx, []string{"events", "retry", "--subscriber", ticketing.IntakeSubscriber}, envOf(cli), &out, &errb); code != exitUsage {
		t.Errorf("events retry without --position or --all = %d, want %d", code, exitUsage)
	}
	if n := len(client.events(domain.SubscriberEventSetAsideName)); n != 1 {
		t.Errorf("SubscriberEventSetAside events = %d, want 1 (the retried mail did not fail again)", n)
	}
}

// waitMailbox waits until the support account's mailbox-status row holds.
func waitMailbox(tb testing.TB, c apiClient, what string, ok func(mailboxRow) bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.mailboxes()["support"]
		if ok(r) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mailbox status of support = %+v after 30s, want %s", r, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
