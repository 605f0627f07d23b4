package projections_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// appendDomain appends events encoded as the domain stores them.
func appendDomain(tb testing.TB, s eventstore.Store, stream string, evs ...domain.Event) int64 {
	tb.Helper()
	req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion}
	for _, e := range evs {
		name, v, payload, err := domain.MarshalEvent(e)
		if err != nil {
			tb.Fatalf("marshal %T: %v", e, err)
		}
		req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload,
			Metadata: eventstore.Metadata{OccurredAt: t0}})
	}
	res, err := s.Append(context.Background(), req)
	if err != nil {
		tb.Fatalf("append to %s: %v", stream, err)
	}
	return res.LastPosition
}

// seedTicket stores a mail and the ticket made from it, then a note, an
// answer by mail and the close; it returns the ticket id.
func seedTicket(tb testing.TB, s eventstore.Store, n int64) string {
	tb.Helper()
	mail := func(key, subject, body string) domain.MailReceived {
		id := domain.MailIDFor("acc", key)
		m := domain.MailReceived{MailID: id, AccountID: "acc", SourceKey: key, BlobRef: "blob-" + key, ReceivedAt: t0,
			MessageID: key + "@example.org", Subject: subject, From: domain.Address{Email: "max@example.org"},
			To: []domain.Address{{Name: "Support", Email: "support@example.org"}}, TextBody: body}
		appendDomain(tb, s, ticketing.MailStream(id), m)
		return m
	}
	first := mail(fmt.Sprintf("k%d-1", n), "Printer", "It is broken.")
	answer := mail(fmt.Sprintf("k%d-2", n), "Re: Printer", "Still broken.")
	id := domain.TicketIDFor(first.MailID)
	appendDomain(tb, s, domain.TicketStream(id),
		domain.TicketCreated{TicketID: id, Number: n, Subject: "Printer", Status: domain.StatusNew,
			Requester: domain.Requester{Email: "Max@Example.org", Name: "Max", Source: domain.RequesterAddress},
			AccountID: "acc", MessageID: first.MessageID, CreatedAt: t0, CausedBy: first.MailID},
		domain.NoteAdded{TicketID: id, NoteID: "n1", Text: "called", At: t0.Add(time.Minute), Actor: "token:a"},
		domain.StatusLeftUnchanged{TicketID: id, Status: domain.StatusNew, Code: domain.UnchangedAlready, At: t0.Add(2 * time.Minute)},
		domain.MailAppended{TicketID: id, MessageID: answer.MessageID, From: answer.From, Subject: answer.Subject,
			At: t0.Add(3 * time.Minute), CausedBy: answer.MailID},
		domain.TicketClosed{TicketID: id, From: domain.StatusNew, ClosedAt: t0.Add(4 * time.Minute), Actor: "token:a"},
	)
	return id
}

// readAll reads the whole log, every committed event (see
// storetest.ReadAllPaged).
func readAll(tb testing.TB, s eventstore.Store) []eventstore.RecordedEvent {
	tb.Helper()
	return storetest.ReadAllPaged(tb, s, 500)
}

func apply(s eventstore.Store, h eventstore.Handler, evs ...eventstore.RecordedEvent) error {
	return s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		for _, ev := range evs {
			if err := h(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestTickets_Handle(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			p := projections.NewTickets(store, reader, nil)
			id := seedTicket(t, store, 1001)
			evs := readAll(t, store)

			// when every event is delivered twice, in batches and one by one
			if err := apply(store, p.Handle, evs...); err != nil {
				t.Fatalf("first delivery: %v", err)
			}
			for _, ev := range evs {
				if err := apply(store, p.Handle, ev); err != nil {
					t.Fatalf("redelivery of %s: %v", ev.Type, err)
				}
			}

			// then the ticket counts each once
			got, arts, err := p.Ticket(context.Background(), id)
			if err != nil {
				t.Fatalf("Ticket() error = %v", err)
			}
			closed := t0.Add(4 * time.Minute)
			want := projections.Ticket{ID: id, Number: 1001, Subject: "Printer", Status: "closed", RequesterEmail: "max@example.org",
				RequesterName: "Max", AccountID: "acc", ArticleCount: 3, CreatedAt: t0, UpdatedAt: closed, ClosedAt: &closed, Version: 5}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Ticket() (-want +got):\n%s", diff)
			}
			type art struct {
				Seq                          int64
				Kind, From, To, Subject, Txt string
			}
			var gotArts []art
			for _, a := range arts {
				gotArts = append(gotArts, art{a.Seq, a.Kind, a.From, a.To, a.Subject, a.TextBody})
			}
			wantArts := []art{
				{1, "mail", "max@example.org", `"Support" <support@example.org>`, "Printer", "It is broken."},
				{2, "note", "token:a", "", "", "called"},
				{4, "mail", "max@example.org", `"Support" <support@example.org>`, "Re: Printer", "Still broken."},
			}
			if diff := cmp.Diff(wantArts, gotArts); diff != "" {
				t.Errorf("articles (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTickets_Handle_RefusesAnEventBeforeAnEarlierOne(t *testing.T) {
	t.Parallel()
	store, reader := openEmbedded(t)
	p := projections.NewTickets(store, reader, nil)
	seedTicket(t, store, 1002)
	var ticketEvents []eventstore.RecordedEvent
	for _, ev := range readAll(t, store) {
		if strings.HasPrefix(ev.Stream, "ticket-") {
			ticketEvents = append(ticketEvents, ev)
		}
	}
	if err := apply(store, p.Handle, ticketEvents[0]); err != nil {
		t.Fatalf("create: %v", err)
	}
	// version 3 before version 2 must fail, so the subscription delivers it again later
	if err := apply(store, p.Handle, ticketEvents[2]); err == nil {
		t.Fatalf("Handle(version 3 after version 1) = nil, want an error")
	}
	if err := apply(store, p.Handle, ticketEvents[1:]...); err != nil {
		t.Fatalf("in order: %v", err)
	}
}

// run starts a projection's Run until the test ends.
func run(tb testing.TB, f func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = f(ctx)
	}()
	tb.Cleanup(func() { cancel(); wg.Wait() })
}

func waitFor(tb testing.TB, store eventstore.Store, name func() string, pos int64) {
	tb.Helper()
	ok, err := projections.WaitReached(context.Background(), store, name(), pos, 20*time.Second)
	if err != nil || !ok {
		tb.Fatalf("WaitReached(%s, %d) = %v, %v", name(), pos, ok, err)
	}
}

// snapshot is every ticket of the view with its articles.
func snapshot(tb testing.TB, p *projections.Tickets) map[string]projections.Ticket {
	tb.Helper()
	page, err := p.ListTickets(context.Background(), projections.TicketFilter{Limit: 500})
	if err != nil {
		tb.Fatalf("ListTickets() error = %v", err)
	}
	out := map[string]projections.Ticket{}
	for _, t := range page.Items {
		out[t.ID] = t
	}
	return out
}

func articlesOf(tb testing.TB, p *projections.Tickets, id string) []projections.Article {
	tb.Helper()
	_, arts, err := p.Ticket(context.Background(), id)
	if err != nil {
		tb.Fatalf("Ticket(%s) error = %v", id, err)
	}
	return arts
}

func TestRebuild_SwapsInFreshTablesWhileServing(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			dialect := projections.DialectSQLite
			if b.name == "postgres" {
				dialect = projections.DialectPostgres
			}
			live := projections.NewTickets(store, reader, nil)
			users := projections.NewUsers(store, reader, nil)
			locs := projections.NewLocations(store, reader, nil)
			live.Options.PollInterval, users.Options.PollInterval, locs.Options.PollInterval = 20*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
			run(t, live.Run)
			run(t, users.Run)
			run(t, locs.Run)
			var ids []string
			for n := range int64(20) {
				ids = append(ids, seedTicket(t, store, 2000+n))
			}
			uid := domain.UserIDFor("ann@example.org")
			appendDomain(t, store, domain.UserStream(uid), domain.UserCreated{UserID: uid, UserName: "ann",
				Email: "ann@example.org", At: t0, Actor: "token:a"})
			lid := domain.LocationIDFor("example.org")
			pos := appendDomain(t, store, domain.LocationStream(lid), domain.LocationAutoCreated{LocationID: lid, Name: "Example",
				Domain: "example.org", At: t0, CausedBy: "m"})
			waitFor(t, store, live.Name, pos)
			waitFor(t, store, users.Name, pos)
			waitFor(t, store, locs.Name, pos)
			before := snapshot(t, live)
			beforeArts := articlesOf(t, live, ids[3])

			// when notes keep arriving on one ticket while all views are rebuilt
			busy := ids[0]
			stop := make(chan struct{})
			appended := make(chan int)
			go func() {
				n := 0
				for {
					select {
					case <-stop:
						appended <- n
						return
					default:
					}
					appendDomain(t, store, domain.TicketStream(busy), domain.NoteAdded{TicketID: busy, NoteID: fmt.Sprint(n),
						Text: fmt.Sprintf("note %d", n), At: t0.Add(time.Hour), Actor: "token:b"})
					n++
					time.Sleep(2 * time.Millisecond)
				}
			}()
			var reports []projections.RebuildProgress
			prog, err := projections.Rebuild(context.Background(), store, reader, nil, projections.RebuildOptions{
				Dialect: dialect, Every: time.Nanosecond, PageSize: 7, // a report per page
				Progress: func(p projections.RebuildProgress) { reports = append(reports, p) },
			})
			close(stop)
			notes := <-appended
			t.Logf("%d notes appended during the rebuild", notes)
			if err != nil {
				t.Fatalf("Rebuild() error = %v", err)
			}
			if !prog.Swapped() || prog.Generation != 2 || prog.Percent() != 100 || prog.Position < prog.End {
				t.Errorf("Rebuild() = %+v, want generation 2 swapped in after every event", prog)
			}
			if len(reports) < 3 || reports[0].Phase != "reading" {
				t.Errorf("progress reported %d times, first %+v; want several, from reading", len(reports), reports)
			}

			// then the same rows serve, and the running projections keep them current
			pos = appendDomain(t, store, domain.UserStream(uid), domain.UserUpdated{UserID: uid, Email: "ann@example.org",
				Name: "Ann", At: t0, Actor: "token:a"})
			waitFor(t, store, live.Name, pos)
			waitFor(t, store, users.Name, pos)
			after := snapshot(t, live)
			wantBusy := before[busy]
			wantBusy.ArticleCount += int64(notes)
			wantBusy.Version += int64(notes)
			wantBusy.UpdatedAt = t0.Add(time.Hour)
			before[busy] = wantBusy
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("tickets after the rebuild (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(beforeArts, articlesOf(t, live, ids[3])); diff != "" {
				t.Errorf("articles after the rebuild (-before +after):\n%s", diff)
			}
			// versions 3 and 5 (StatusLeftUnchanged, TicketClosed) add no article
			wantSeqs := []int64{1, 2, 4}
			for n := range int64(notes) {
				wantSeqs = append(wantSeqs, 6+n)
			}
			var seqs []int64
			for _, a := range articlesOf(t, live, busy) {
				seqs = append(seqs, a.Seq)
			}
			if diff := cmp.Diff(wantSeqs, seqs); diff != "" {
				t.Errorf("articles of the busy ticket, lost or doubled (-want +got):\n%s", diff)
			}
			if u, err := users.User(context.Background(), uid); err != nil || u.Name != "Ann" || u.Version != 2 {
				t.Errorf("user updated after the swap = %+v, %v", u, err)
			}
			if page, err := locs.ListLocations(context.Background(), 10, ""); err != nil || len(page.Items) != 1 || page.Items[0].Name != "Example" {
				t.Errorf("locations after the swap = %+v, %v", page, err)
			}
			if _, _, err := live.Ticket(context.Background(), "nope"); !errors.Is(err, projections.ErrTicketNotFound) {
				t.Errorf("Ticket(nope) error = %v, want ErrTicketNotFound", err)
			}

			// and a second rebuild of one view takes the next generation
			prog, err = projections.Rebuild(context.Background(), store, reader, []string{"tickets"}, projections.RebuildOptions{Dialect: dialect})
			if err != nil || prog.Generation != 3 {
				t.Errorf("second Rebuild() = %+v, %v; want generation 3", prog, err)
			}
			if diff := cmp.Diff(after, snapshot(t, live)); diff != "" {
				t.Errorf("tickets after the second rebuild (-want +got):\n%s", diff)
			}

			// and an interrupted rebuild changes nothing that serves; the next drops its tables
			ctx, cancel := context.WithCancel(context.Background())
			_, err = projections.Rebuild(ctx, store, reader, []string{"tickets"}, projections.RebuildOptions{Dialect: dialect,
				PageSize: 7, Every: time.Nanosecond, Progress: func(projections.RebuildProgress) { cancel() }})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Rebuild() error = %v, want context.Canceled", err)
			}
			if diff := cmp.Diff(after, snapshot(t, live)); diff != "" {
				t.Errorf("tickets after an interrupted rebuild (-want +got):\n%s", diff)
			}
			// as a release before migration 0010 would have left it too
			if err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				_, err := tx.Exec(ctx, `CREATE TABLE ticket_articles_g4 (ticket_id TEXT)`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			prog, err = projections.Rebuild(context.Background(), store, reader, []string{"tickets"}, projections.RebuildOptions{Dialect: dialect})
			if err != nil || prog.Generation != 5 {
				t.Errorf("Rebuild() after an interrupted one = %+v, %v; want generation 5", prog, err)
			}
			for _, table := range []string{"tickets_g4", "ticket_articles_g4"} {
				if rows, err := reader.Query(context.Background(), `SELECT count(*) FROM `+table); err == nil {
					for rows.Next() {
					}
					if rows.Err() == nil {
						t.Errorf("%s of the interrupted rebuild still exists", table)
					}
					_ = rows.Close()
				}
			}
		})
	}
}

// TestReadmeQueries runs the README's example queries ("Querying the views
// with SQL") on both stores.
func TestReadmeQueries(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			seedTicket(t, store, 3001)
			if _, err := projections.Rebuild(context.Background(), store, reader, nil, projections.RebuildOptions{Dialect: dialectOf(b)}); err != nil {
				t.Fatalf("Rebuild() error = %v", err)
			}
			for _, q := range []string{
				`SELECT resource, status, count(*) AS tickets, max(updated_at) AS last_change
FROM tickets WHERE status <> 'closed'
GROUP BY resource, status ORDER BY resource, status`,
				`SELECT t.requester_email, count(*) AS mails, count(DISTINCT t.id) AS tickets
FROM ticket_articles a JOIN tickets t ON t.id = a.ticket_id
WHERE a.kind = 'mail' AND a.created_at >= '2026-11-01' AND a.created_at < '2026-12-01'
GROUP BY t.requester_email ORDER BY mails DESC LIMIT 20`,
			} {
				rows, err := reader.Query(context.Background(), q)
				if err != nil {
					t.Fatalf("query %q: %v", q, err)
				}
				n := 0
				for rows.Next() {
					n++
				}
				if err := rows.Err(); err != nil {
					t.Errorf("query %q: %v", q, err)
				}
				_ = rows.Close()
				if strings.Contains(q, "ticket_articles") && n != 1 {
					t.Errorf("mails per requester: %d rows, want 1 (max@example.org, 2 mails)", n)
				}
			}
		})
	}
}

func dialectOf(b backend) string {
	if b.name == "postgres" {
		return projections.DialectPostgres
	}
	return projections.DialectSQLite
}

// TestRebuild_GivesTheRowsOfTheHandlers feeds a ticket with every kind of
// event through the running projection's handlers and through a rebuild's
// in-memory fold, and wants the same rows from both.
func TestRebuild_GivesTheRowsOfTheHandlers(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			p := projections.NewTickets(store, reader, nil)
			id := seedTicket(t, store, 4001)
			bounce := domain.MailIDFor("acc", "bounce")
			appendDomain(t, store, ticketing.MailStream(bounce), domain.MailReceived{MailID: bounce, AccountID: "acc",
				SourceKey: "bounce", ReceivedAt: t0, MessageID: "b@mta", Subject: "Undeliverable", From: domain.Address{Email: "mailer-daemon@mta"},
				TextBody: "550 no such user", HTMLBody: "<p>550</p>"})
			at := t0.Add(time.Hour)
			out := domain.OutgoingMail{OutgoingMailID: "o1", MessageID: "o1@ledgerdesk.invalid"}
			appendDomain(t, store, domain.TicketStream(id),
				domain.TicketReactivated{TicketID: id, Status: domain.StatusConfirmedUnread, ClosedAt: t0, At: at},
				domain.TicketAssigned{TicketID: id, ResourceID: "team-a", At: at.Add(time.Minute), Actor: "token:a"},
				domain.TicketCategoryChanged{TicketID: id, Category: "hardware", At: at.Add(2 * time.Minute), Actor: "token:a"},
				domain.TicketPriorityChanged{TicketID: id, Priority: "high", At: at.Add(3 * time.Minute), Actor: "token:a"},
				domain.ReplyQueued{OutgoingMail: out, TicketID: id, To: []domain.Address{{Name: `Max "M" \ Mustermann`, Email: "max@example.org"},
					{Email: "cc@example.org"}, {Name: "Zoë", Email: "zoe@example.org"}},
					Subject: "Re: [Ticket#4001] Printer", Body: "Fixed.", QueuedAt: at.Add(4 * time.Minute), Actor: "token:a"},
				domain.AutoReplyQueued{OutgoingMail: domain.OutgoingMail{OutgoingMailID: "o2", MessageID: "o2@x"}, TicketID: id,
					AccountID: "acc", Template: "new_ticket", To: domain.Address{Email: "max@example.org"}, Subject: "Re: Printer",
					QueuedAt: at.Add(5 * time.Minute)},
				domain.ErrorMailQueued{OutgoingMail: domain.OutgoingMail{OutgoingMailID: "o3", MessageID: "o3@x"}, TicketID: id,
					AccountID: "acc", Template: "ticket_closed", To: domain.Address{Email: "max@example.org"}, Subject: "closed",
					Reason: "ticket closed", QueuedAt: at.Add(6 * time.Minute)},
				domain.DeliveryFailureRecorded{TicketID: id, BouncedMessageID: "o1@ledgerdesk.invalid", Reason: "550", At: at.Add(7 * time.Minute),
					CausedBy: bounce},
				// one bounce reporting a second failure: the rebuild has let
				// go of the mail after its first article and reads it again
				domain.DeliveryFailureRecorded{TicketID: id, BouncedMessageID: "o2@x", Reason: "550", At: at.Add(7 * time.Minute),
					CausedBy: bounce},
				domain.NotificationQueued{OutgoingMail: domain.OutgoingMail{OutgoingMailID: "o4", MessageID: "o4@x"}, TicketID: id,
					Kind: domain.AutoMailCustomerAnswered, QueuedAt: at.Add(8 * time.Minute)},
				domain.TicketClosed{TicketID: id, From: domain.StatusConfirmedUnread, ClosedAt: at.Add(9 * time.Minute), Actor: "token:a"},
				domain.TicketReopened{TicketID: id, Status: domain.StatusWaiting, At: at.Add(10 * time.Minute), Actor: "token:a"},
				// a mail the log does not hold (the article keeps what its
				// event says) and no time of its own (the recorded one)
				domain.MailBundled{TicketID: id, MessageID: "gone@x", From: domain.Address{Name: `Bob "B"`, Email: "bob@x"},
					CausedBy: "missing"},
			)
			if err := apply(store, p.Handle, readAll(t, store)...); err != nil {
				t.Fatalf("handlers: %v", err)
			}
			wantTicket, wantArts, err := p.Ticket(context.Background(), id)
			if err != nil {
				t.Fatalf("Ticket() error = %v", err)
			}
			if wantTicket.Version != 18 || wantTicket.ArticleCount != 9 || wantTicket.Status != "waiting" || wantTicket.ClosedAt != nil {
				t.Errorf("ticket from the handlers = %+v, want version 18, 9 articles, waiting and open", wantTicket)
			}
			if n := len(wantArts); n != 9 || wantArts[6].TextBody != "550 no such user" || wantArts[7].TextBody != "550 no such user" ||
				wantArts[8].From != `"Bob \"B\"" <bob@x>` || wantArts[3].To != `"Max \"M\" \\ Mustermann" <max@example.org>, cc@example.org, "Zoë" <zoe@example.org>` {
				t.Errorf("articles from the handlers = %d, want 9, the 7th and 8th with the bounce's body: %+v", n, wantArts)
			}
			// the SQL view gives analysts the same articles
			if diff := cmp.Diff(wantArts, viewArticles(t, reader, id)); diff != "" {
				t.Errorf("articles (-Ticket +view ticket_articles):\n%s", diff)
			}
			rawTimes := func() string {
				// as stored: SQLite keeps the text it was given
				rows, err := reader.Query(context.Background(), `SELECT CAST(created_at AS TEXT) || '|' || CAST(updated_at AS TEXT)
					FROM tickets WHERE id = $1`, id)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = rows.Close() }()
				var s string
				for rows.Next() {
					if err := rows.Scan(&s); err != nil {
						t.Fatal(err)
					}
				}
				return s
			}
			wantRaw := rawTimes()
			if _, err := projections.Rebuild(context.Background(), store, reader, []string{"tickets"},
				projections.RebuildOptions{Dialect: dialectOf(b)}); err != nil {
				t.Fatalf("Rebuild() error = %v", err)
			}
			if got := rawTimes(); got != wantRaw || got == "" {
				t.Errorf("times as stored by the rebuild = %q, by the handlers %q", got, wantRaw)
			}
			gotTicket, gotArts, err := p.Ticket(context.Background(), id)
			if err != nil {
				t.Fatalf("Ticket() after the rebuild error = %v", err)
			}
			if diff := cmp.Diff(wantTicket, gotTicket); diff != "" {
				t.Errorf("ticket (-handlers +rebuild):\n%s", diff)
			}
			if diff := cmp.Diff(wantArts, gotArts); diff != "" {
				t.Errorf("articles (-handlers +rebuild):\n%s", diff)
			}
		})
	}
}

// viewArticles reads a ticket's rows of the SQL view ticket_articles.
func viewArticles(tb testing.TB, reader projections.Reader, id string) []projections.Article {
	tb.Helper()
	rows, err := reader.Query(context.Background(), `SELECT seq, kind, mail_id, message_id, from_addr, to_addr, subject,
		text_body, html_body, blob_ref, actor, created_at FROM ticket_articles WHERE ticket_id = $1 ORDER BY seq`, id)
	if err != nil {
		tb.Fatalf("query ticket_articles: %v", err)
	}
	defer func() { _ = rows.Close() }()
	var out []projections.Article
	for rows.Next() {
		var (
			a  projections.Article
			at any
		)
		if err := rows.Scan(&a.Seq, &a.Kind, &a.MailID, &a.MessageID, &a.From, &a.To, &a.Subject, &a.TextBody, &a.HTMLBody,
			&a.BlobRef, &a.Actor, &at); err != nil {
			tb.Fatalf("scan ticket_articles: %v", err)
		}
		switch v := at.(type) {
		case time.Time: // PostgreSQL's timestamptz
			a.CreatedAt = v.UTC()
		case string: // SQLite's view gives the events' RFC 3339 text
			if a.CreatedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
				tb.Fatalf("created_at %q: %v", v, err)
			}
			a.CreatedAt = a.CreatedAt.UTC()
		default:
			tb.Fatalf("created_at is %T %v", at, at)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read ticket_articles: %v", err)
	}
	return out
}

// TestTicketArticles_PagesAndSingleArticlesMatchTheWholeList holds the
// paged and single-article reads to what Ticket lists, over a ticket whose
// stream mixes articles with events that add none.
func TestTicketArticles_PagesAndSingleArticlesMatchTheWholeList(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			p := projections.NewTickets(store, reader, nil)
			id := seedTicket(t, store, 5001)
			appendDomain(t, store, domain.TicketStream(id),
				domain.TicketReopened{TicketID: id, Status: domain.StatusWaiting, At: t0.Add(time.Hour), Actor: "token:a"},
				domain.NoteAdded{TicketID: id, NoteID: "n2", Text: "again", At: t0.Add(2 * time.Hour), Actor: "token:a"},
				domain.TicketAssigned{TicketID: id, ResourceID: "team-a", At: t0.Add(3 * time.Hour), Actor: "token:a"},
				domain.NoteAdded{TicketID: id, NoteID: "n3", Text: "done", At: t0.Add(4 * time.Hour), Actor: "token:a"},
				// a note the view has not applied yet: beyond the row's version
			)
			if err := apply(store, p.Handle, readAll(t, store)...); err != nil {
				t.Fatal(err)
			}
			appendDomain(t, store, domain.TicketStream(id),
				domain.NoteAdded{TicketID: id, NoteID: "n4", Text: "later", At: t0.Add(5 * time.Hour), Actor: "token:a"})
			ctx := context.Background()
			tk, whole, err := p.Ticket(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(whole) != 5 || tk.Version != 9 {
				t.Fatalf("Ticket() = version %d, %d articles; want 9 and 5", tk.Version, len(whole))
			}
			for limit := 1; limit <= 6; limit++ {
				var got []projections.Article
				after, pages := int64(0), 0
				for {
					_, arts, next, err := p.TicketArticles(ctx, id, after, limit)
					if err != nil {
						t.Fatal(err)
					}
					got, pages = append(got, arts...), pages+1
					if next == 0 {
						break
					}
					if len(arts) != limit || next != arts[len(arts)-1].Seq {
						t.Fatalf("limit %d: a page of %d articles continues after %d", limit, len(arts), next)
					}
					after = next
				}
				if diff := cmp.Diff(whole, got); diff != "" {
					t.Errorf("limit %d: pages joined (-Ticket +TicketArticles):\n%s", limit, diff)
				}
				if want := (len(whole) + limit - 1) / limit; pages != want {
					t.Errorf("limit %d: %d pages, want %d", limit, pages, want)
				}
			}
			bySeq := map[int64]projections.Article{}
			for _, a := range whole {
				bySeq[a.Seq] = a
			}
			for seq := int64(0); seq <= tk.Version+1; seq++ {
				a, err := p.Article(ctx, id, seq)
				want, isArticle := bySeq[seq]
				switch {
				case isArticle && err != nil:
					t.Errorf("Article(%d) error = %v", seq, err)
				case isArticle:
					if diff := cmp.Diff(want, a); diff != "" {
						t.Errorf("Article(%d) (-Ticket +Article):\n%s", seq, diff)
					}
				case !errors.Is(err, projections.ErrArticleNotFound):
					t.Errorf("Article(%d) = %+v, %v; want ErrArticleNotFound", seq, a, err)
				}
			}
			if _, err := p.Article(ctx, "nope", 1); !errors.Is(err, projections.ErrTicketNotFound) {
				t.Errorf("Article of an unknown ticket: %v, want ErrTicketNotFound", err)
			}
		})
	}
}

// TestTickets_HandleBatch: a batch that creates tickets and changes them
// gives the rows of the events handled one by one, and delivered again
// changes nothing.
func TestTickets_HandleBatch(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			// list returns the tickets after the first delivery and after
			// the second.
			list := func(batch bool) [2][]projections.Ticket {
				store, reader := b.open(t)
				p := projections.NewTickets(store, reader, nil)
				for n := range int64(3) {
					seedTicket(t, store, 1001+n)
				}
				evs := readAll(t, store)
				var out [2][]projections.Ticket
				for i := range out {
					err := store.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
						if batch {
							return p.HandleBatch(ctx, tx, evs)
						}
						for _, ev := range evs {
							if err := p.Handle(ctx, tx, ev); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						t.Fatalf("deliver (batch %v): %v", batch, err)
					}
					page, err := p.ListTickets(context.Background(), projections.TicketFilter{Limit: 10})
					if err != nil {
						t.Fatal(err)
					}
					out[i] = page.Items
				}
				return out
			}
			single, batched := list(false), list(true)
			if len(single[0]) != 3 || single[0][0].Version != 5 {
				t.Fatalf("one by one: %d tickets, the first at version %d; want 3 at version 5", len(single[0]), single[0][0].Version)
			}
			if diff := cmp.Diff(single, batched); diff != "" {
				t.Errorf("tickets handled in one batch (-one by one +batch):\n%s", diff)
			}
		})
	}
}
