package viewbench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// eventsPerTicket is the size of one generated ticket's history.
const eventsPerTicket = 10

// ticketsPerAppend tickets share one append (one transaction).
const ticketsPerAppend = 100

var body = strings.Repeat("The printer on the second floor prints blank pages since this morning. ", 4)

// generate appends events/eventsPerTicket tickets' histories in global
// order as the intake and agents would: each ticket's two mails, then its
// eight ticket events; every tenth ticket's assignment is replaced by the
// auto-creation of its requester and every hundredth's last event by the
// auto-creation of a location, so that every view has rows.
func generate(ctx context.Context, s eventstore.Store, events int) (int, error) {
	tickets := events / eventsPerTicket
	base := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	statuses := []domain.TicketStatus{domain.StatusInProgress, domain.StatusWaiting, domain.StatusConfirmedUnread}
	var reqs []eventstore.AppendRequest
	add := func(stream string, evs ...domain.Event) error {
		req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream}
		for _, e := range evs {
			name, v, payload, err := domain.MarshalEvent(e)
			if err != nil {
				return err
			}
			req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload,
				Metadata: eventstore.Metadata{Actor: "viewbench", OccurredAt: base}})
		}
		reqs = append(reqs, req)
		return nil
	}
	for i := range tickets {
		at := base.Add(time.Duration(i) * time.Second)
		requester := fmt.Sprintf("customer%d@example%d.org", i%5000, i%50)
		key1, key2 := fmt.Sprintf("%d.1", i), fmt.Sprintf("%d.2", i)
		m1, m2 := domain.MailIDFor("bench", key1), domain.MailIDFor("bench", key2)
		id := domain.TicketIDFor(m1)
		subject := fmt.Sprintf("Printer %d prints blank pages", i)
		for _, m := range []struct{ id, key, subject string }{{m1, key1, subject}, {m2, key2, "Re: " + subject}} {
			if err := add(ticketing.MailStream(m.id), domain.MailReceived{MailID: m.id, AccountID: "bench", SourceKey: m.key,
				BlobRef: "sha256-" + m.id, Size: 2048, ReceivedAt: at, MessageID: m.key + "@example.org", Subject: m.subject,
				From: domain.Address{Name: "Customer", Email: requester}, To: []domain.Address{{Email: "support@example.org"}},
				TextBody: body, HTMLBody: "<p>" + body + "</p>"}); err != nil {
				return 0, err
			}
		}
		evs := []domain.Event{
			domain.TicketCreated{TicketID: id, Number: 10000 + int64(i), Subject: subject, Status: domain.StatusNew,
				Requester: domain.Requester{Email: requester, Name: "Customer", Source: domain.RequesterAddress},
				Category:  []string{"hardware", "software", "network"}[i%3], Priority: "normal", AccountID: "bench",
				MessageID: key1 + "@example.org", SenderEmail: requester, MailReceivedAt: at, CreatedAt: at, CausedBy: m1},
			domain.AutoReplyQueued{OutgoingMail: domain.OutgoingMail{OutgoingMailID: "ar-" + id, MessageID: "ar-" + id + "@ledgerdesk.invalid"},
				TicketID: id, AccountID: "bench", Template: "new_ticket", To: domain.Address{Email: requester},
				Subject: "[Ticket#" + fmt.Sprint(10000+i) + "] " + subject, QueuedAt: at, CausedBy: m1},
			domain.NoteAdded{TicketID: id, NoteID: "n-" + id, Text: "Called the customer, toner is fine.", At: at.Add(time.Minute), Actor: "token:agent"},
			domain.MailAppended{TicketID: id, MessageID: key2 + "@example.org", From: domain.Address{Email: requester},
				Subject: "Re: " + subject, MailReceivedAt: at.Add(2 * time.Minute), At: at.Add(2 * time.Minute), CausedBy: m2},
			domain.TicketStatusChanged{TicketID: id, From: domain.StatusNew, To: statuses[i%3], At: at.Add(3 * time.Minute), Actor: "token:agent"},
			domain.ReplyQueued{OutgoingMail: domain.OutgoingMail{OutgoingMailID: "r-" + id, MessageID: "r-" + id + "@ledgerdesk.invalid"},
				TicketID: id, To: []domain.Address{{Email: requester}}, Subject: "Re: " + subject, Body: "We replaced the drum.",
				QueuedAt: at.Add(4 * time.Minute), Actor: "token:agent"},
		}
		if i%10 != 0 {
			evs = append(evs, domain.TicketAssigned{TicketID: id, ResourceID: fmt.Sprintf("team-%d", i%7), At: at.Add(5 * time.Minute), Actor: "token:agent"})
		}
		if i%100 != 0 {
			if i%2 == 0 {
				evs = append(evs, domain.TicketClosed{TicketID: id, From: statuses[i%3], ClosedAt: at.Add(6 * time.Minute), Actor: "token:agent"})
			} else {
				evs = append(evs, domain.TicketPriorityChanged{TicketID: id, Priority: "high", Previous: "normal", At: at.Add(6 * time.Minute), Actor: "token:agent"})
			}
		}
		if err := add(domain.TicketStream(id), evs...); err != nil {
			return 0, err
		}
		if i%10 == 0 {
			uid := domain.UserIDFor(fmt.Sprintf("user%d@example.org", i))
			if err := add(domain.UserStream(uid), domain.UserAutoCreated{UserID: uid, UserName: fmt.Sprintf("user%d", i),
				Email: fmt.Sprintf("user%d@example.org", i), At: at, CausedBy: m1}); err != nil {
				return 0, err
			}
		}
		if i%100 == 0 {
			dom := fmt.Sprintf("example%d.org", i)
			lid := domain.LocationIDFor(dom)
			if err := add(domain.LocationStream(lid), domain.LocationAutoCreated{LocationID: lid, Name: dom, Domain: dom, At: at, CausedBy: m1}); err != nil {
				return 0, err
			}
		}
		if (i+1)%ticketsPerAppend == 0 || i == tickets-1 {
			if _, err := s.Append(ctx, reqs...); err != nil {
				return 0, fmt.Errorf("viewbench: generate tickets up to %d: %w", i, err)
			}
			reqs = reqs[:0]
		}
	}
	return tickets, nil
}
