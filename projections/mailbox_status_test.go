package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

type backend struct {
	name string
	open func(tb testing.TB) (eventstore.Store, projections.Reader)
}

// backends are both stores: the embedded one always, PostgreSQL unless
// -short (it fails, not skips, when the server is unreachable).
func backends(tb testing.TB) []backend {
	tb.Helper()
	bs := []backend{{"embedded", openEmbedded}}
	if !testing.Short() {
		bs = append(bs, backend{"postgres", openPostgres})
	}
	return bs
}

func openEmbedded(tb testing.TB) (eventstore.Store, projections.Reader) {
	tb.Helper()
	s, db := storetest.Embedded(tb)
	return s, projections.SQLReader(db)
}

func openPostgres(tb testing.TB) (eventstore.Store, projections.Reader) {
	tb.Helper()
	s, pool := storetest.Postgres(tb)
	return s, projections.PGReader(pool)
}

func newEvent(tb testing.TB, e domain.Event) eventstore.NewEvent {
	tb.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		tb.Fatalf("marshal %T: %v", e, err)
	}
	return eventstore.NewEvent{Type: e.EventName(), SchemaVersion: 1, Payload: b}
}

func mustAppend(tb testing.TB, s eventstore.Store, stream string, evs ...domain.Event) int64 {
	tb.Helper()
	req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion}
	for _, e := range evs {
		req.Events = append(req.Events, newEvent(tb, e))
	}
	res, err := s.Append(context.Background(), req)
	if err != nil {
		tb.Fatalf("append to %s: %v", stream, err)
	}
	return res.LastPosition
}

func ptr(t time.Time) *time.Time { return &t }

func TestMailboxStatus(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := projections.NewMailboxStatus(store, reader, nil)
			p.Options.PollInterval = 20 * time.Millisecond
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()

			// given two accounts, one renamed, one deleted, and three polls
			acc := func(id, name string) domain.InboundAccount { return domain.InboundAccount{ID: id, Name: name} }
			mustAppend(t, store, "inbound-accounts",
				domain.InboundAccountCreated{Account: acc("a1", "Support"), Actor: "token:x"},
				domain.InboundAccountCreated{Account: acc("a2", "Sales"), Actor: "token:x"},
				domain.InboundAccountCreated{Account: acc("a3", "Gone"), Actor: "token:x"},
			)
			// and the mails' events of record: a1 fetched three (two of them
			// skipped by the intake), failed one and found one oversize, a2
			// fetched two. The polls' own tallies say otherwise (a poll killed
			// mid-way records none, the next finds its mails known): the
			// view counts the events.
			mail := func(account string, n int) domain.MailReceived {
				return domain.MailReceived{MailID: fmt.Sprintf("%s-m%d", account, n), AccountID: account, SourceKey: fmt.Sprint(n)}
			}
			for n := range 3 {
				mustAppend(t, store, fmt.Sprintf("mail-a1-%d", n), mail("a1", n))
			}
			mustAppend(t, store, "mail-a1-0", domain.MailSkipped{MailID: "a1-m0", AccountID: "a1", Code: domain.SkipDuplicate})
			mustAppend(t, store, "mail-a1-1", domain.MailSkipped{MailID: "a1-m1", AccountID: "a1", Code: domain.SkipBounce})
			mustAppend(t, store, "mail-a1-3", domain.MailFailed{MailID: "a1-m3", AccountID: "a1", Reason: "unparseable"})
			mustAppend(t, store, "mail-a1-4", domain.MailFailed{MailID: "a1-m4", AccountID: "a1", Reason: "too big", Oversize: true})
			mustAppend(t, store, "mail-a2-0", mail("a2", 0))
			mustAppend(t, store, "mail-a2-1", mail("a2", 1))
			mustAppend(t, store, "mailbox-a1", domain.MailboxPolled{AccountID: "a1", StartedAt: t0, FinishedAt: t0.Add(time.Second),
				Fetched: 1, Skipped: 2, Deleted: 3})
			mustAppend(t, store, "mailbox-a1", domain.MailboxPolled{AccountID: "a1", StartedAt: t0.Add(5 * time.Minute),
				FinishedAt: t0.Add(5*time.Minute + time.Second), Error: "login: authentication failed",
				ServerReply: "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", Failures: 1})
			mustAppend(t, store, "mailbox-a2", domain.MailboxPolled{AccountID: "a2", StartedAt: t0, FinishedAt: t0.Add(time.Second), Fetched: 7})
			last := mustAppend(t, store, "inbound-accounts",
				domain.InboundAccountUpdated{Account: acc("a1", "Helpdesk"), Changed: []string{"name"}, Actor: "token:x"},
				domain.InboundAccountDeleted{AccountID: "a3", Actor: "token:x"},
			)

			// when the projection has caught up
			ok, err := projections.WaitReached(ctx, store, p.Name(), last, 10*time.Second)
			if err != nil || !ok {
				t.Fatalf("WaitReached() = %v, %v, want true, nil", ok, err)
			}

			// then the view shows names, the last outcome and the totals of
			// the events
			want := []projections.MailboxStatusRow{
				{AccountID: "a1", Name: "Helpdesk", LastPollAt: ptr(t0.Add(5 * time.Minute)), LastFinishedAt: ptr(t0.Add(5*time.Minute + time.Second)),
					LastError: "login: authentication failed", ServerReply: "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
					ConsecutiveFailures: 1, Polls: 2, Fetched: 3, Failed: 1, Oversize: 1, Skipped: 2, Deleted: 3},
				{AccountID: "a2", Name: "Sales", LastPollAt: ptr(t0), LastFinishedAt: ptr(t0.Add(time.Second)), Polls: 1, Fetched: 2},
			}
			got, err := p.List(ctx)
			if err != nil {
				t.Fatalf("List() error = %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("List() (-want +got):\n%s", diff)
			}

			// and redelivering events already applied changes nothing
			cancel()
			if err := <-done; err == nil {
				t.Errorf("Run() = nil after cancel, want an error")
			}
			all, err := store.ReadAll(context.Background(), 0, 100)
			if err != nil {
				t.Fatalf("ReadAll() error = %v", err)
			}
			err = store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				for _, ev := range all {
					if err := p.Handle(ctx, tx, ev); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("redeliver: %v", err)
			}
			got, err = p.List(context.Background())
			if err != nil {
				t.Fatalf("List() after redelivery error = %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("List() after redelivery (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWaitReached_NotCaughtUpReportsFalse(t *testing.T) {
	t.Parallel()
	store, _ := openEmbedded(t)
	pos := mustAppend(t, store, "mailbox-a1", domain.MailboxPolled{AccountID: "a1"})
	ok, err := projections.WaitReached(context.Background(), store, "nobody.subscribes", pos, 50*time.Millisecond)
	if err != nil || ok {
		t.Errorf("WaitReached() = %v, %v, want false, nil", ok, err)
	}
}

// BenchmarkMailboxStatus_Handle measures one poll event applied through a
// subscription-style transaction on the embedded store.
func BenchmarkMailboxStatus_Handle(b *testing.B) {
	store, reader := openEmbedded(b)
	p := projections.NewMailboxStatus(store, reader, nil)
	payload, err := json.Marshal(domain.MailboxPolled{AccountID: "a1", Fetched: 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		ev := eventstore.RecordedEvent{Type: domain.MailboxPolledName, StreamVersion: int64(i + 1), Payload: payload}
		if err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error { return p.Handle(ctx, tx, ev) }); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMailboxStatus_ShowsSetAsideMails: a mail a subscriber set aside
// counts on its account's row, with the last reason, until it is retried.
func TestMailboxStatus_ShowsSetAsideMails(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := projections.NewMailboxStatus(store, reader, nil)
			p.Options.PollInterval = 20 * time.Millisecond
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()

			// given two accounts, three of a1's mails set aside (one by
			// another subscriber), an event without an account set aside,
			// and the first mail retried
			mustAppend(t, store, "inbound-accounts",
				domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "a1", Name: "Support"}, Actor: "token:x"},
				domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "a2", Name: "Sales"}, Actor: "token:x"})
			aside := func(sub string, pos int64, account, reason string, at time.Time) domain.SubscriberEventSetAside {
				return domain.SubscriberEventSetAside{Subscriber: sub, Position: pos, EventID: fmt.Sprintf("m%d", pos),
					EventType: domain.MailReceivedName, Stream: fmt.Sprintf("mail-m%d", pos), AccountID: account, Attempts: 5,
					Error: reason, At: at}
			}
			mustAppend(t, store, domain.SubscriberStream("intake"),
				aside("intake", 42, "a1", "index row size 2720 exceeds maximum 2704", t0),
				aside("intake", 43, "a1", "invalid byte sequence for encoding \"UTF8\": 0x00", t0.Add(time.Minute)),
				aside("intake", 44, "", "not a mail", t0.Add(2*time.Minute)))
			mustAppend(t, store, domain.SubscriberStream("projection.tickets.v1"),
				aside("projection.tickets.v1", 43, "a1", "older reason of another subscriber", t0.Add(-time.Hour)))
			last := mustAppend(t, store, domain.SubscriberStream("intake"),
				domain.SubscriberEventRetried{Subscriber: "intake", Position: 42, EventID: "m42", EventType: domain.MailReceivedName,
					AccountID: "a1", Actor: "admin", At: t0.Add(3 * time.Minute)})

			// when the projection has caught up
			ok, err := projections.WaitReached(ctx, store, p.Name(), last, 10*time.Second)
			if err != nil || !ok {
				t.Fatalf("WaitReached() = %v, %v, want true, nil", ok, err)
			}

			// then a1 shows the two mails still set aside and the last reason
			want := []projections.MailboxStatusRow{
				{AccountID: "a2", Name: "Sales"},
				{AccountID: "a1", Name: "Support", SetAside: 2, LastSetAsideError: "invalid byte sequence for encoding \"UTF8\": 0x00",
					LastSetAsideAt: ptr(t0.Add(time.Minute))},
			}
			got, err := p.List(ctx)
			if err != nil {
				t.Fatalf("List() error = %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("List() (-want +got):\n%s", diff)
			}

			// and redelivering every event changes nothing
			cancel()
			if err := <-done; err == nil {
				t.Errorf("Run() = nil after cancel, want an error")
			}
			all := storetest.ReadAllPaged(t, store, 100)
			err = store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				for _, ev := range all {
					if err := p.Handle(ctx, tx, ev); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("redeliver: %v", err)
			}
			if got, err = p.List(context.Background()); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("List() after redelivery (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMailboxStatus_ShowsPushedOrPolled: the delivery mode the scheduler
// records shows with its time; the last reason an account fell back to
// polling stays once it is pushed again; a redelivery changes nothing.
func TestMailboxStatus_ShowsPushedOrPolled(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			ctx := context.Background()
			p := projections.NewMailboxStatus(store, reader, nil)
			mustAppend(t, store, "inbound-accounts",
				domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "a1", Name: "Pushed"}},
				domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "a2", Name: "Polled"}},
				domain.InboundAccountCreated{Account: domain.InboundAccount{ID: "a3", Name: "Never run"}})
			mustAppend(t, store, "mailbox-delivery-a1",
				domain.MailboxDeliveryChanged{AccountID: "a1", Delivery: domain.DeliveryPushed, At: t0},
				domain.MailboxDeliveryChanged{AccountID: "a1", Delivery: domain.DeliveryPolled, At: t0.Add(time.Hour),
					Reason: "INBOX: imapsource: IDLE in \"INBOX\": connection closed by the server"},
				domain.MailboxDeliveryChanged{AccountID: "a1", Delivery: domain.DeliveryPushed, At: t0.Add(time.Hour + 2*time.Second)})
			mustAppend(t, store, "mailbox-delivery-a2", domain.MailboxDeliveryChanged{AccountID: "a2", Delivery: domain.DeliveryPolled, At: t0})
			want := []projections.MailboxStatusRow{
				{AccountID: "a3", Name: "Never run"},
				{AccountID: "a2", Name: "Polled", Delivery: "polled", DeliverySince: ptr(t0)},
				{AccountID: "a1", Name: "Pushed", Delivery: "pushed", DeliverySince: ptr(t0.Add(time.Hour + 2*time.Second)),
					LastPushError: "INBOX: imapsource: IDLE in \"INBOX\": connection closed by the server", LastPushErrorAt: ptr(t0.Add(time.Hour))},
			}
			all, err := store.ReadAll(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time is a redelivery
				err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
					for _, ev := range all {
						if err := p.Handle(ctx, tx, ev); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatalf("Handle() error = %v", err)
				}
				got, err := p.List(ctx)
				if err != nil {
					t.Fatalf("List() error = %v", err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("List() (-want +got):\n%s", diff)
				}
			}
		})
	}
}
