package projections_test

import (
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// TestTicketArticlesView_DropsNUL holds the SQL view ticket_articles to a
// mail whose subject and bodies carry NUL characters (JSON "\u0000", which
// PostgreSQL cannot turn into text): the view still gives the rows, with
// the NULs dropped, and leaves a body's literal text `\u0000` as it is.
func TestTicketArticlesView_DropsNUL(t *testing.T) {
	t.Parallel()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store, reader := b.open(t)
			mailID := domain.MailIDFor("acc", "nul")
			appendDomain(t, store, ticketing.MailStream(mailID), domain.MailReceived{MailID: mailID, AccountID: "acc",
				SourceKey: "nul", ReceivedAt: t0, MessageID: "nul@example.org", Subject: "Print\x00er",
				From: domain.Address{Name: "Max\x00", Email: "max@example.org"}, To: []domain.Address{{Email: "support@example.org"}},
				TextBody: "It is\x00 broken.\x00\x00 Literally \\u0000, \\\x00.", HTMLBody: "<p>\x00</p>"})
			id := domain.TicketIDFor(mailID)
			appendDomain(t, store, domain.TicketStream(id),
				domain.TicketCreated{TicketID: id, Number: 1001, Subject: "Print\x00er", Status: domain.StatusNew,
					Requester: domain.Requester{Email: "max@example.org", Source: domain.RequesterAddress},
					AccountID: "acc", MessageID: "nul@example.org", CreatedAt: t0, CausedBy: mailID},
				domain.NoteAdded{TicketID: id, NoteID: "n1", Text: "called\x00", At: t0, Actor: "token:a"})

			got := viewArticles(t, reader, id)
			if len(got) != 2 {
				t.Fatalf("ticket_articles rows of the ticket = %d, want the mail and the note: %+v", len(got), got)
			}
			mail, note := got[0], got[1]
			if want := "It is broken. Literally \\u0000, \\."; mail.TextBody != want {
				t.Errorf("text_body = %q, want %q", mail.TextBody, want)
			}
			if mail.Subject != "Printer" || mail.HTMLBody != "<p></p>" || mail.From != `"Max" <max@example.org>` || mail.MailID != mailID {
				t.Errorf("mail row = subject %q, html %q, from %q, mail %q; want Printer, <p></p>, \"Max\" <max@example.org>, %s",
					mail.Subject, mail.HTMLBody, mail.From, mail.MailID, mailID)
			}
			if note.TextBody != "called" {
				t.Errorf("note text_body = %q, want called", note.TextBody)
			}
		})
	}
}
