package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func TestTicket_Evolve(t *testing.T) {
	t.Parallel()
	reply := domain.MailAppended{TicketID: ticketID, MessageID: "<r1@customer.example>", At: t0, CausedBy: "m2"}
	got := fold(t, ticketCreated(),
		statusChanged(domain.StatusNew, domain.StatusInProgress),
		reply,
		closed(closedAt),
		domain.TicketReactivated{TicketID: ticketID, Status: domain.StatusConfirmedUnread, ClosedAt: closedAt, At: t0, CausedBy: "m3"},
		domain.TicketAssigned{TicketID: ticketID, ResourceID: "res-2", At: t0, Actor: "a"},
		domain.NoteAdded{TicketID: ticketID, NoteID: "n1", Text: "x", At: t0, Actor: "a"},
		domain.ReplyQueued{OutgoingMail: domain.OutgoingMail{MessageID: "ledgerdesk.x@ours.example"}, TicketID: ticketID, QueuedAt: t0.Add(time.Minute), Actor: "a"},
		domain.StatusLeftUnchanged{TicketID: ticketID, Status: domain.StatusConfirmedUnread, At: t0, CausedBy: "m4"},
		domain.TicketAssigned{TicketID: "another-ticket", ResourceID: "res-9", At: t0, Actor: "a"},
		domain.UserCreated{UserID: "u"},
	)
	want := domain.Ticket{
		ID: ticketID, Number: 1001, Subject: "Printer broken", Status: domain.StatusConfirmedUnread,
		Requester: maxRequester(), ResourceID: "res-2", Category: "hardware", Priority: "normal", AccountID: accID,
		SenderEmail: customer, MailReceivedAt: createdAt, CreatedAt: createdAt, UpdatedAt: t0.Add(time.Minute),
		MessageIDs:           []string{"first@customer.example", "r1@customer.example", "ledgerdesk.x@ours.example"},
		MailIDs:              []string{firstMailID, "m2"},
		LastInboundMessageID: "r1@customer.example", Notes: 1, Version: 9,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("EvolveTicket() (-want +got):\n%s", diff)
	}
	if !got.HoldsMessageID("<r1@customer.example>") || got.HoldsMessageID("nope@x") {
		t.Error("HoldsMessageID() does not match the ticket's mails")
	}
}

func TestDecideTicket(t *testing.T) {
	t.Parallel()
	at := t0.Add(time.Hour)
	open := func(tb testing.TB) domain.Ticket {
		return fold(tb, ticketCreated(), domain.MailAppended{TicketID: ticketID, MessageID: "r1@customer.example", At: t0, CausedBy: "m2"})
	}
	closedTicket := func(tb testing.TB) domain.Ticket { return fold(tb, ticketCreated(), closed(closedAt)) }
	replyID := domain.OutgoingMailIDFor(domain.OutgoingReply, ticketID, "cmd-1")
	tests := []struct {
		name    string
		given   func(tb testing.TB) domain.Ticket
		when    domain.TicketCommand
		want    []domain.Event
		wantErr error
	}{
		{
			name: "an agent moves an open ticket to waiting", given: open,
			when: domain.ChangeStatus{Status: domain.StatusWaiting, Actor: "anna", At: at},
			want: []domain.Event{domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusNew, To: domain.StatusWaiting, At: at, Actor: "anna"}},
		},
		{
			name: "changing to the current status records nothing", given: open,
			when: domain.ChangeStatus{Status: domain.StatusNew, Actor: "anna", At: at},
		},
		{
			name: "closing through a status change is refused", given: open,
			when: domain.ChangeStatus{Status: domain.StatusClosed, Actor: "anna", At: at}, wantErr: domain.ErrInvalid,
		},
		{
			name: "an unknown status is refused", given: open,
			when: domain.ChangeStatus{Status: "escalated", Actor: "anna", At: at}, wantErr: domain.ErrInvalid,
		},
		{
			name: "a status change on a closed ticket is refused", given: closedTicket,
			when: domain.ChangeStatus{Status: domain.StatusWaiting, Actor: "anna", At: at}, wantErr: domain.ErrTicketClosed,
		},
		{
			name: "closing records the time the reactivation window starts from", given: open,
			when: domain.CloseTicket{Actor: "anna", At: at},
			want: []domain.Event{domain.TicketClosed{TicketID: ticketID, From: domain.StatusNew, ClosedAt: at, Actor: "anna"}},
		},
		{
			name: "closing a closed ticket records nothing", given: closedTicket,
			when: domain.CloseTicket{Actor: "anna", At: at},
		},
		{
			name: "reopening a closed ticket puts it in progress", given: closedTicket,
			when: domain.ReopenTicket{Actor: "anna", At: at},
			want: []domain.Event{domain.TicketReopened{TicketID: ticketID, Status: domain.StatusInProgress, At: at, Actor: "anna"}},
		},
		{
			name: "reopening an open ticket records nothing", given: open,
			when: domain.ReopenTicket{Actor: "anna", At: at},
		},
		{
			name: "assigning another resource names the previous one", given: open,
			when: domain.AssignResource{ResourceID: "res-2nd-level", Actor: "anna", At: at},
			want: []domain.Event{domain.TicketAssigned{TicketID: ticketID, ResourceID: "res-2nd-level", Previous: "res-1st-level", At: at, Actor: "anna"}},
		},
		{
			name: "setting the category", given: open,
			when: domain.SetCategory{Category: "network", Actor: "anna", At: at},
			want: []domain.Event{domain.TicketCategoryChanged{TicketID: ticketID, Category: "network", Previous: "hardware", At: at, Actor: "anna"}},
		},
		{
			name: "setting the priority", given: closedTicket,
			when: domain.SetPriority{Priority: "high", Actor: "anna", At: at},
			want: []domain.Event{domain.TicketPriorityChanged{TicketID: ticketID, Priority: "high", Previous: "normal", At: at, Actor: "anna"}},
		},
		{
			name: "an internal note gets an id derived from the command", given: open,
			when: domain.AddNote{CommandID: "cmd-1", Text: "called him back", Actor: "anna", At: at},
			want: []domain.Event{domain.NoteAdded{TicketID: ticketID, NoteID: domain.NoteIDFor(ticketID, "cmd-1"), Text: "called him back", At: at, Actor: "anna"}},
		},
		{
			name: "an empty note is refused", given: open,
			when: domain.AddNote{CommandID: "cmd-1", Text: "  ", Actor: "anna", At: at}, wantErr: domain.ErrInvalid,
		},
		{
			name: "a reply by mail goes to the requester, threaded to their last mail, with the reference", given: open,
			when: domain.ReplyByMail{CommandID: "cmd-1", Body: "Please restart it.", Actor: "anna", At: at},
			want: []domain.Event{domain.ReplyQueued{
				OutgoingMail: domain.OutgoingMail{
					OutgoingMailID: replyID, MessageID: domain.OutgoingMessageID(ticketID, replyID, domainName, testKey),
					InReplyTo: "r1@customer.example", References: []string{"first@customer.example", "r1@customer.example"},
				},
				TicketID: ticketID, To: []domain.Address{{Name: "Max Mustermann", Email: customer}},
				Subject: "Re: [Ticket#1001] Printer broken", Body: "Please restart it.", QueuedAt: at, Actor: "anna",
			}},
		},
		{
			name: "a reply whose subject carries the reference keeps it", given: open,
			when: domain.ReplyByMail{CommandID: "cmd-1", Subject: "AW: [Ticket#1001] Drucker", To: []domain.Address{{Email: "boss@customer.example"}}, Body: "b", Actor: "anna", At: at},
			want: []domain.Event{domain.ReplyQueued{
				OutgoingMail: domain.OutgoingMail{
					OutgoingMailID: replyID, MessageID: domain.OutgoingMessageID(ticketID, replyID, domainName, testKey),
					InReplyTo: "r1@customer.example", References: []string{"first@customer.example", "r1@customer.example"},
				},
				TicketID: ticketID, To: []domain.Address{{Email: "boss@customer.example"}},
				Subject: "AW: [Ticket#1001] Drucker", Body: "b", QueuedAt: at, Actor: "anna",
			}},
		},
		{
			name: "the reference goes after the reply prefixes of a given subject", given: open,
			when: domain.ReplyByMail{CommandID: "cmd-1", Subject: "AW: WG: Drucker", Body: "b", Actor: "anna", At: at},
			want: []domain.Event{domain.ReplyQueued{
				OutgoingMail: domain.OutgoingMail{
					OutgoingMailID: replyID, MessageID: domain.OutgoingMessageID(ticketID, replyID, domainName, testKey),
					InReplyTo: "r1@customer.example", References: []string{"first@customer.example", "r1@customer.example"},
				},
				TicketID: ticketID, To: []domain.Address{{Name: "Max Mustermann", Email: customer}},
				Subject: "AW: WG: [Ticket#1001] Drucker", Body: "b", QueuedAt: at, Actor: "anna",
			}},
		},
		{
			name: "a reply to an invalid address is refused", given: open,
			when: domain.ReplyByMail{CommandID: "cmd-1", To: []domain.Address{{Email: "not an address"}}, Body: "b", Actor: "anna", At: at}, wantErr: domain.ErrInvalid,
		},
		{
			name: "a command without an actor is refused", given: open,
			when: domain.CloseTicket{At: at}, wantErr: domain.ErrInvalid,
		},
		{
			name: "a command on a ticket that does not exist is refused", given: func(testing.TB) domain.Ticket { return domain.Ticket{} },
			when: domain.CloseTicket{Actor: "anna", At: at}, wantErr: domain.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := domain.DecideTicket(tc.given(t), testSettings(), testKey, tc.when)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("DecideTicket() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecideTicket() error = %v", err)
			}
			diffEvents(t, "DecideTicket()", tc.want, got)
		})
	}
}

// TestTicket_lifecycle runs mail and agent decisions in turn, folding each
// decision back, as the application layer does.
func TestTicket_lifecycle(t *testing.T) {
	t.Parallel()
	in := baseInput()
	in.Sender = knownMax
	in.Now = t0.Add(time.Minute)
	created, err := domain.DecideMail(in)
	if err != nil {
		t.Fatal(err)
	}
	tk := fold(t, created...)
	apply := func(cmd domain.TicketCommand) {
		t.Helper()
		ev, err := domain.DecideTicket(tk, testSettings(), testKey, cmd)
		if err != nil {
			t.Fatalf("DecideTicket(%T) error = %v", cmd, err)
		}
		for _, e := range ev {
			tk = domain.EvolveTicket(tk, e)
		}
	}
	apply(domain.ChangeStatus{Status: domain.StatusInProgress, Actor: "anna", At: t0.Add(time.Hour)})
	apply(domain.CloseTicket{Actor: "anna", At: t0.Add(2 * time.Hour)})
	if tk.Status != domain.StatusClosed || !tk.ClosedAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("after close: status %s closed at %v", tk.Status, tk.ClosedAt)
	}
	answer := newMail()
	answer.MailID, answer.SourceKey = domain.MailIDFor(accID, "7:200"), "7:200"
	answer.MessageID = "answer@customer.example"
	answer.Subject = "Re: [Ticket#1002] Printer broken"
	answer.ReceivedAt = t0.Add(24 * time.Hour)
	in2 := baseInput()
	in2.Mail, in2.Referenced, in2.Now = answer, &tk, answer.ReceivedAt
	ev, err := domain.DecideMail(in2)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		tk = domain.EvolveTicket(tk, e)
	}
	if tk.Status != domain.StatusConfirmedUnread || !tk.ClosedAt.IsZero() || tk.LastInboundMessageID != "answer@customer.example" {
		t.Errorf("after the answer: status %s, closed at %v, last mail %q; want confirmed_unread, reopened, answer@customer.example",
			tk.Status, tk.ClosedAt, tk.LastInboundMessageID)
	}
}

// TestTicket_EvolveIgnoresOthers folds every kind of event that is not about
// this ticket (other tickets, other aggregates, a second TicketCreated) and
// expects the ticket unchanged: Evolve must accept every event ever stored.
func TestTicket_EvolveIgnoresOthers(t *testing.T) {
	t.Parallel()
	base := fold(t, ticketCreated())
	for _, e := range sampleEvents() {
		if got := domain.EvolveTicket(base, e); !cmp.Equal(base, got) {
			t.Errorf("EvolveTicket(%T about another ticket) changed the ticket:\n%s", e, cmp.Diff(base, got))
		}
	}
	u := domain.EvolveUser(domain.User{}, domain.UserCreated{UserID: "u1", UserName: "anna"})
	l := domain.EvolveLocation(domain.Location{}, domain.LocationCreated{LocationID: "l1", Name: "HQ"})
	s := domain.DefaultSettings()
	for _, e := range sampleEvents() {
		if _, isUser := e.(domain.UserUpdated); !isUser {
			if got := domain.EvolveUser(u, e); !cmp.Equal(u, got) {
				t.Errorf("EvolveUser(%T) changed another user", e)
			}
		}
		if got := domain.EvolveLocation(l, e); !cmp.Equal(l, got) {
			t.Errorf("EvolveLocation(%T) changed an existing location", e)
		}
		if _, isSettings := e.(domain.SettingsChanged); !isSettings {
			if got := domain.EvolveSettings(s, e); !cmp.Equal(s, got) {
				t.Errorf("EvolveSettings(%T) changed the settings", e)
			}
		}
	}
}
