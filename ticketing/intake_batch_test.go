package ticketing

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// decided is an event of a decision as the comparison sees it: all but
// the global position.
type decided struct {
	Stream  string
	Version int64
	ID      string
	Type    string
	Payload string
}

// TestProcessManager_BatchDecidesAsOneByOne: mails that depend on each
// other (a bundle, replies by number and by Message-ID, a duplicate, a
// user name taken by an earlier mail, a directory user created between
// them) decided in one batch give exactly the events they give decided
// one at a time, each in its own transaction.
func TestProcessManager_BatchDecidesAsOneByOne(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"embedded", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			if kind == "postgres" && testing.Short() {
				t.Skip("PostgreSQL")
			}
			batched := decideScenario(t, storetest.Open(t, kind), true)
			single := decideScenario(t, storetest.Open(t, kind), false)
			if diff := cmp.Diff(single, batched); diff != "" {
				t.Errorf("events decided in one batch (-one by one +batch):\n%s", diff)
			}
			types := map[string]int{}
			var names []string
			for _, e := range batched {
				types[e.Type]++
				if e.Type == domain.UserAutoCreatedName {
					var u domain.UserAutoCreated
					if err := json.Unmarshal([]byte(e.Payload), &u); err != nil {
						t.Fatal(err)
					}
					names = append(names, u.UserName)
				}
			}
			slices.Sort(names)
			if want := []string{"erika", "erika2", "max"}; !slices.Equal(names, want) {
				t.Errorf("users auto-created with names %v, want %v", names, want)
			}
			want := map[string]int{domain.TicketCreatedName: 4, domain.MailBundledName: 1, domain.MailAppendedName: 2,
				domain.MailSkippedName: 1, domain.UserAutoCreatedName: 3, domain.LocationAutoCreatedName: 3}
			for typ, n := range want {
				if types[typ] != n {
					t.Errorf("%d %s events, want %d; all: %v", types[typ], typ, n, types)
				}
			}
		})
	}
}

// decideScenario appends the scenario's events and has the intake decide
// them in one batch or one at a time; it returns the events of the
// decisions (and the directory's), by stream and version.
func decideScenario(t *testing.T, store eventstore.Store, batch bool) []decided {
	t.Helper()
	ctx := context.Background()
	pm := NewProcessManager(store, func() time.Time { return t0.Add(time.Hour) }, testKey, nil)
	account := domain.InboundAccount{ID: "acc", Name: "support", Enabled: true, Protocol: "imap", Host: "mail.example",
		Username: "support", AccountAddress: "support@desk.example", SenderAddress: "support@desk.example",
		CreateUnknownUsers: true, CreateLocationFromDomain: true, AutoBundle: true, PollIntervalSeconds: 3600}.WithDefaults()
	appendEvent(t, store, InboundAccountsStream, eventstore.NoStream, "acc-1", domain.InboundAccountCreated{Account: account, Actor: "test"})

	from := func(addr string) func(*domain.MailReceived) {
		return func(m *domain.MailReceived) { m.From = domain.Address{Email: addr} }
	}
	at := func(n int, minutes int, subject string, mutate ...func(*domain.MailReceived)) domain.MailReceived {
		return mail(n, subject, func(m *domain.MailReceived) {
			m.ReceivedAt = t0.Add(time.Duration(minutes) * time.Minute)
			for _, f := range mutate {
				f(m)
			}
		})
	}
	mails := []domain.MailReceived{
		at(1, 0, "Printer on fire"),
		at(2, 1, "Printer on fire"), // the same sender and subject: bundled
		at(3, 2, "Re: [Ticket#1001] and now the scanner"),
		at(4, 3, "Invoice", from("max@other.example")),
		at(5, 4, "Invoice", from("max@other.example"), func(m *domain.MailReceived) { m.MessageID = "m4@customer.example" }),
		at(6, 5, "thanks", from("max@other.example"), func(m *domain.MailReceived) { m.InReplyTo = "m1@customer.example" }),
		at(7, 6, "Another Erika", from("erika@third.example")), // user name "erika" is taken
		at(8, 7, "From the directory", from("dora@customer.example")),
	}
	for i, m := range mails {
		if i == len(mails)-1 {
			// A directory user created between the mails: the last mail is
			// hers, not a new user's.
			appendEvent(t, store, domain.UserStream("u-dora"), eventstore.NoStream, "u-dora-1",
				domain.UserCreated{UserID: "u-dora", Email: "dora@customer.example", UserName: "dora", Name: "Dora", Actor: "test"})
		}
		appendEvent(t, store, MailStream(m.MailID), eventstore.NoStream, m.MailID, m)
	}
	evs := storetest.ReadAllPaged(t, store, 100)
	handle := func(evs []eventstore.RecordedEvent) {
		t.Helper()
		if err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error { return pm.HandleBatch(ctx, tx, evs) }); err != nil {
			t.Fatalf("HandleBatch(%d events): %v", len(evs), err)
		}
	}
	if batch {
		handle(evs)
	} else {
		for _, e := range evs {
			handle([]eventstore.RecordedEvent{e})
		}
	}
	var out []decided
	for _, e := range storetest.ReadAllPaged(t, store, 100) {
		if e.Type == domain.MailReceivedName || strings.HasPrefix(e.Stream, InboundAccountsStream) {
			continue
		}
		out = append(out, decided{Stream: e.Stream, Version: e.StreamVersion, ID: e.ID, Type: e.Type, Payload: string(e.Payload)})
	}
	slices.SortFunc(out, func(a, b decided) int {
		return strings.Compare(fmt.Sprintf("%s/%09d", a.Stream, a.Version), fmt.Sprintf("%s/%09d", b.Stream, b.Version))
	})
	return out
}
