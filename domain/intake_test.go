package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func baseInput() domain.MailInput {
	return domain.MailInput{
		Mail:             newMail(),
		Account:          supportAccount(),
		Settings:         testSettings(),
		MessageIDKey:     testKey,
		OtherAccounts:    []domain.AccountRef{{ID: otherAccID, Address: otherAddr}},
		TakenUserNames:   map[string]bool{},
		NextTicketNumber: 1002,
	}
}

var knownMax = &domain.User{ID: "u-max", UserName: "max", Email: customer, Name: "Max Mustermann", LocationID: "loc-customer"}

// wantCreated is ticket 1002 opened from the mail under decision.
func wantCreated(in domain.MailInput, req domain.Requester, locationID string) domain.TicketCreated {
	return domain.TicketCreated{
		TicketID: domain.TicketIDFor(in.Mail.MailID), Number: 1002, Reference: "[Ticket#1002]",
		Subject: in.Mail.Subject, Status: domain.StatusNew, Requester: req, LocationID: locationID,
		ResourceID: "res-1st-level", Category: "hardware", Priority: "normal", AccountID: accID,
		MessageID: "m101@customer.example", SenderEmail: customer,
		MailReceivedAt: in.Mail.ReceivedAt, CreatedAt: in.Now, CausedBy: in.Mail.MailID,
	}
}

func wantAppended(in domain.MailInput) domain.MailAppended {
	return domain.MailAppended{
		TicketID: ticketID, MessageID: "m101@customer.example", From: in.Mail.From, Subject: in.Mail.Subject,
		MailReceivedAt: in.Mail.ReceivedAt, At: in.Now, CausedBy: in.Mail.MailID,
	}
}

func wantNotification(in domain.MailInput) domain.NotificationQueued {
	out := domain.OutgoingMailIDFor(domain.AutoMailCustomerAnswered, in.Mail.MailID)
	return domain.NotificationQueued{
		OutgoingMail: domain.OutgoingMail{OutgoingMailID: out, MessageID: domain.OutgoingMessageID(ticketID, out, domainName, testKey)},
		TicketID:     ticketID, Kind: domain.AutoMailCustomerAnswered, ResourceID: "res-1st-level",
		QueuedAt: in.Now, CausedBy: in.Mail.MailID, To: in.ResourceMembers, Subject: in.Referenced.Subject,
	}
}

// wantAnswer is the threading of an automatic answer to the mail.
func wantAnswer(in domain.MailInput, kind, ticket string) domain.OutgoingMail {
	out := domain.OutgoingMailIDFor(kind, in.Mail.MailID)
	return domain.OutgoingMail{
		OutgoingMailID: out, MessageID: domain.OutgoingMessageID(ticket, out, domainName, testKey),
		InReplyTo: "m101@customer.example", References: []string{"m101@customer.example"},
	}
}

func wantSkipped(in domain.MailInput, code, reason string) domain.MailSkipped {
	return domain.MailSkipped{
		MailID: in.Mail.MailID, AccountID: accID, SourceKey: "7:101", BlobRef: "sha256-abc", Size: 2048,
		ReceivedAt: in.Mail.ReceivedAt, MessageID: "m101@customer.example", Code: code, Reason: reason,
	}
}

func maxRequester() domain.Requester {
	return domain.Requester{UserID: "u-max", Email: customer, Name: "Max Mustermann", Source: domain.RequesterDirectory}
}

// ourAutoReplyID is the Message-ID of the auto-reply ticket 1001 got.
var ourAutoReplyID = domain.OutgoingMessageID(ticketID, domain.OutgoingMailIDFor(domain.AutoMailNewTicket, firstMailID), domainName, testKey)

func TestDecideMail(t *testing.T) {
	t.Parallel()
	reactivationEnd := closedAt.Add(14 * 24 * time.Hour)
	tests := []struct {
		name    string
		given   func(tb testing.TB, in *domain.MailInput) // the state the application layer loads
		when    func(m *domain.MailReceived)              // the mail
		then    func(in domain.MailInput) []domain.Event
		wantErr error
	}{
		// RULES.md 3.4: new tickets and requesters.
		{
			name:  "a first mail from a known user opens a ticket with the account's category, priority and resource",
			given: func(_ testing.TB, in *domain.MailInput) { in.Sender = knownMax },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		{
			name: "an unknown sender with create_unknown_users becomes a user named after the local part",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.CreateUnknownUsers = true
			},
			then: func(in domain.MailInput) []domain.Event {
				uid := domain.UserIDFor(customer)
				return []domain.Event{
					domain.UserAutoCreated{UserID: uid, UserName: "max", Email: customer, Name: "Max Mustermann", At: in.Now, CausedBy: in.Mail.MailID},
					wantCreated(in, domain.Requester{UserID: uid, Email: customer, Name: "Max Mustermann", Source: domain.RequesterAutoCreated}, ""),
				}
			},
		},
		{
			name: "an auto-created user whose local part is taken gets the next free numeric suffix",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.CreateUnknownUsers = true
				in.TakenUserNames = map[string]bool{"max": true, "max2": true, "max4": true}
			},
			then: func(in domain.MailInput) []domain.Event {
				uid := domain.UserIDFor(customer)
				return []domain.Event{
					domain.UserAutoCreated{UserID: uid, UserName: "max3", Email: customer, Name: "Max Mustermann", At: in.Now, CausedBy: in.Mail.MailID},
					wantCreated(in, domain.Requester{UserID: uid, Email: customer, Name: "Max Mustermann", Source: domain.RequesterAutoCreated}, ""),
				}
			},
		},
		{
			name: "the first unknown sender of a domain creates its location, and the user belongs to it",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.CreateUnknownUsers = true
				in.Account.CreateLocationFromDomain = true
			},
			then: func(in domain.MailInput) []domain.Event {
				uid, lid := domain.UserIDFor(customer), domain.LocationIDFor("customer.example")
				return []domain.Event{
					domain.LocationAutoCreated{LocationID: lid, Name: "customer.example", Domain: "customer.example", At: in.Now, CausedBy: in.Mail.MailID},
					domain.UserAutoCreated{UserID: uid, UserName: "max", Email: customer, Name: "Max Mustermann", LocationID: lid, At: in.Now, CausedBy: in.Mail.MailID},
					wantCreated(in, domain.Requester{UserID: uid, Email: customer, Name: "Max Mustermann", Source: domain.RequesterAutoCreated}, lid),
				}
			},
		},
		{
			name: "a second unknown sender of a known domain reuses its location instead of creating it again",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.CreateUnknownUsers = true
				in.Account.CreateLocationFromDomain = true
				in.Location = &domain.Location{ID: domain.LocationIDFor("customer.example"), Name: "customer.example", Domain: "customer.example", Version: 1}
			},
			then: func(in domain.MailInput) []domain.Event {
				uid, lid := domain.UserIDFor(customer), domain.LocationIDFor("customer.example")
				return []domain.Event{
					domain.UserAutoCreated{UserID: uid, UserName: "max", Email: customer, Name: "Max Mustermann", LocationID: lid, At: in.Now, CausedBy: in.Mail.MailID},
					wantCreated(in, domain.Requester{UserID: uid, Email: customer, Name: "Max Mustermann", Source: domain.RequesterAutoCreated}, lid),
				}
			},
		},
		{
			name: "an unknown sender whose derived user id an admin gave another address goes to the fallback user, creating none",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.CreateUnknownUsers = true
				in.Account.FallbackUserID = "u-hotline"
				in.AutoUserIDTaken = true
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, domain.Requester{UserID: "u-hotline", Email: customer, Name: "Max Mustermann", Source: domain.RequesterFallback}, "")}
			},
		},
		{
			name:  "an unknown sender without create_unknown_users goes to the fallback user",
			given: func(_ testing.TB, in *domain.MailInput) { in.Account.FallbackUserID = "u-hotline" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, domain.Requester{UserID: "u-hotline", Email: customer, Name: "Max Mustermann", Source: domain.RequesterFallback}, "")}
			},
		},
		{
			name:  "an unknown sender with neither user creation nor a fallback user keeps the bare address",
			given: func(_ testing.TB, in *domain.MailInput) {},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, domain.Requester{Email: customer, Name: "Max Mustermann", Source: domain.RequesterAddress}, "")}
			},
		},
		// RULES.md 3.5 and 4: auto-reply and loop protection.
		{
			name: "a new ticket on an account with an auto-reply template queues the auto-reply with the reference",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.Account.AutoReplyTemplate = "received"
			},
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				return []domain.Event{
					wantCreated(in, maxRequester(), "loc-customer"),
					domain.AutoReplyQueued{
						OutgoingMail: wantAnswer(in, domain.AutoMailNewTicket, tid), TicketID: tid, AccountID: accID,
						Template: "received", To: domain.Address{Name: "Max Mustermann", Email: customer},
						Subject: "[Ticket#1002] Printer broken", QueuedAt: in.Now, CausedBy: in.Mail.MailID,
					},
				}
			},
		},
		{
			name: "the auto-reply goes to the Reply-To address when there is one",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) {
				m.ReplyTo = []domain.Address{{Name: "Max at home", Email: "max@home.example"}}
			},
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				return []domain.Event{
					wantCreated(in, maxRequester(), "loc-customer"),
					domain.AutoReplyQueued{
						OutgoingMail: wantAnswer(in, domain.AutoMailNewTicket, tid), TicketID: tid, AccountID: accID,
						Template: "received", To: domain.Address{Name: "Max at home", Email: "max@home.example"},
						Subject: "[Ticket#1002] Printer broken", QueuedAt: in.Now, CausedBy: in.Mail.MailID,
					},
				}
			},
		},
		{
			name: "auto-replies switched off in the settings are recorded as suppressed",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.Account.AutoReplyTemplate = "received"
				in.Settings.AutoReplies = false
			},
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				return []domain.Event{
					wantCreated(in, maxRequester(), "loc-customer"),
					domain.AutoMailSuppressed{TicketID: tid, Kind: domain.AutoMailNewTicket, To: customer, Reason: "auto replies are switched off", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "an automatic mail opens a ticket but is never answered automatically",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) { m.AutoSubmitted = "auto-replied" },
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				return []domain.Event{
					wantCreated(in, maxRequester(), "loc-customer"),
					domain.AutoMailSuppressed{TicketID: tid, Kind: domain.AutoMailNewTicket, To: customer, Reason: "automatic mail (auto-submitted: auto-replied)", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "a mail from a no-reply address gets no auto-reply",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) {
				m.From = domain.Address{Name: "Shop", Email: "no-reply@customer.example"}
			},
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				c := wantCreated(in, domain.Requester{Email: "no-reply@customer.example", Name: "Shop", Source: domain.RequesterAddress}, "")
				c.SenderEmail = "no-reply@customer.example"
				return []domain.Event{c,
					domain.AutoMailSuppressed{TicketID: tid, Kind: domain.AutoMailNewTicket, To: "no-reply@customer.example", Reason: "system address no-reply@customer.example", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "a mail from another of our own accounts gets no auto-reply (no mail loop between accounts)",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) { m.From = domain.Address{Name: "Sales", Email: otherAddr} },
			then: func(in domain.MailInput) []domain.Event {
				tid := domain.TicketIDFor(in.Mail.MailID)
				c := wantCreated(in, domain.Requester{Email: otherAddr, Name: "Sales", Source: domain.RequesterAddress}, "")
				c.SenderEmail = otherAddr
				return []domain.Event{c,
					domain.AutoMailSuppressed{TicketID: tid, Kind: domain.AutoMailNewTicket, To: otherAddr, Reason: "own account address " + otherAddr, At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		// RULES.md 3.1: references to open tickets.
		{
			name:  "a reply quoting an open ticket's number is appended and marks it customer answered",
			given: func(tb testing.TB, in *domain.MailInput) { in.Referenced = ptr(fold(tb, ticketCreated())) },
			when:  func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusNew, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in),
				}
			},
		},
		{
			name: "RE: AW: WG: Fwd: noise around the reference does not hide it",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), statusChanged(domain.StatusNew, domain.StatusWaiting)))
			},
			when: func(m *domain.MailReceived) { m.Subject = "RE: AW: WG: Fwd:[ticket# 1001 ]  Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusWaiting, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in),
				}
			},
		},
		{
			name:  "a reply threaded by In-Reply-To to our own Message-ID, without a subject reference, is appended",
			given: func(tb testing.TB, in *domain.MailInput) { in.Referenced = ptr(fold(tb, ticketCreated())) },
			when: func(m *domain.MailReceived) {
				m.Subject = "Re: your mail"
				m.InReplyTo = "<" + ourAutoReplyID + ">"
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusNew, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in),
				}
			},
		},
		{
			name:  "a reply threaded by References to the ticket's first mail, without a subject reference, is appended",
			given: func(tb testing.TB, in *domain.MailInput) { in.Referenced = ptr(fold(tb, ticketCreated())) },
			when: func(m *domain.MailReceived) {
				m.Subject = "Re: Printer broken"
				m.References = []string{"<first@customer.example>", "<cc-reply@elsewhere.example>"}
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusNew, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in),
				}
			},
		},
		{
			name: "a second customer answer leaves the status as it is and says why",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), statusChanged(domain.StatusNew, domain.StatusConfirmedUnread)))
				in.Settings.CustomerAnsweredMails = false
			},
			when: func(m *domain.MailReceived) { m.Subject = "[Ticket#1001] and another thing" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.StatusLeftUnchanged{TicketID: ticketID, Status: domain.StatusConfirmedUnread, Code: domain.UnchangedAlready,
						Reason: "the ticket already waits for an agent after a customer answer", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "a resource member's reply with no_status_change_for_resource_members leaves the status and sends no notification",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), statusChanged(domain.StatusNew, domain.StatusInProgress)))
				in.SenderIsResourceMember = true
				in.Settings.NoStatusChangeForResourceMembers = true
			},
			when: func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.StatusLeftUnchanged{TicketID: ticketID, Status: domain.StatusInProgress, Code: domain.UnchangedResourceMember,
						Reason: "the sender is a member of the ticket's resource and no_status_change_for_resource_members is set", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "a resource member's reply without the global option changes the status like anyone's",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), statusChanged(domain.StatusNew, domain.StatusInProgress)))
				in.SenderIsResourceMember = true
			},
			when: func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusInProgress, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in),
				}
			},
		},
		{
			name: "a customer's reply tells the members of the ticket's resource, to their addresses",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), statusChanged(domain.StatusNew, domain.StatusInProgress)))
				in.ResourceMembers = []domain.Address{{Name: "Anna Agent", Email: "anna@desk.example"}, {Email: "bert@desk.example"}}
				in.Settings.NoStatusChangeForResourceMembers = true
			},
			when: func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusInProgress, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
					wantNotification(in), // To: both members; Subject: the ticket's
				}
			},
		},
		// RULES.md 3.1: closed tickets and the reactivation window.
		{
			name: "a reply exactly at the end of the reactivation window reactivates the ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), closed(closedAt)))
			},
			when: func(m *domain.MailReceived) {
				m.Subject = "Re: [Ticket#1001] Printer broken"
				m.ReceivedAt = reactivationEnd
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					domain.TicketReactivated{TicketID: ticketID, Status: domain.StatusConfirmedUnread, ClosedAt: closedAt, WindowSeconds: 14 * 24 * 3600, At: in.Now, CausedBy: in.Mail.MailID},
					wantAppended(in),
					wantNotification(in),
				}
			},
		},
		{
			name: "a reply one second after the reactivation window is rejected with the ticket-closed mail",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), closed(closedAt)))
			},
			when: func(m *domain.MailReceived) {
				m.Subject = "Re: [Ticket#1001] Printer broken"
				m.ReceivedAt = reactivationEnd.Add(time.Second)
			},
			then: func(in domain.MailInput) []domain.Event {
				reason := "ticket 1001 was closed at 2026-03-01T09:00:00Z, longer than the reactivation window of 336h0m0s before the mail arrived"
				return []domain.Event{
					domain.MailRejected{TicketID: ticketID, Code: domain.RejectTicketClosed, Reason: reason, At: in.Now, CausedBy: in.Mail.MailID},
					domain.ErrorMailQueued{
						OutgoingMail: wantAnswer(in, domain.AutoMailTicketClosed, ticketID), TicketID: ticketID, AccountID: accID,
						Template: domain.TemplateTicketClosed, To: domain.Address{Name: "Max Mustermann", Email: customer},
						Subject: "Re: [Ticket#1001] Printer broken", Reason: reason, QueuedAt: in.Now, CausedBy: in.Mail.MailID,
					},
				}
			},
		},
		{
			name: "a resource member's reply to a recently closed ticket reactivates it as always, without notification",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), closed(closedAt)))
				in.SenderIsResourceMember = true
				in.Settings.NoStatusChangeForResourceMembers = true
			},
			when: func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					domain.TicketReactivated{TicketID: ticketID, Status: domain.StatusConfirmedUnread, ClosedAt: closedAt, WindowSeconds: 14 * 24 * 3600, At: in.Now, CausedBy: in.Mail.MailID},
					wantAppended(in),
				}
			},
		},
		{
			name: "an out-of-office reply to a long-closed ticket is rejected without an error mail",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), closed(closedAt)))
			},
			when: func(m *domain.MailReceived) {
				m.Subject = "Out of office: [Ticket#1001] Printer broken"
				m.ReceivedAt = reactivationEnd.Add(time.Hour)
				m.LoopHeaders = map[string]string{"x-autoreply": "yes"}
			},
			then: func(in domain.MailInput) []domain.Event {
				reason := "ticket 1001 was closed at 2026-03-01T09:00:00Z, longer than the reactivation window of 336h0m0s before the mail arrived"
				return []domain.Event{
					domain.MailRejected{TicketID: ticketID, Code: domain.RejectTicketClosed, Reason: reason, At: in.Now, CausedBy: in.Mail.MailID},
					domain.AutoMailSuppressed{TicketID: ticketID, Kind: domain.AutoMailTicketClosed, To: customer, Reason: "automatic mail (header x-autoreply)", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name:  "an out-of-office reply to an open ticket is appended without marking it customer answered",
			given: func(tb testing.TB, in *domain.MailInput) { in.Referenced = ptr(fold(tb, ticketCreated())) },
			when: func(m *domain.MailReceived) {
				m.Subject = "Automatic reply: [Ticket#1001] Printer broken"
				m.AutoSubmitted = "auto-replied"
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.StatusLeftUnchanged{TicketID: ticketID, Status: domain.StatusNew, Code: domain.UnchangedAutomatic,
						Reason: "automatic mail (auto-submitted: auto-replied) changes no status", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name: "an out-of-office reply to a recently closed ticket is appended but does not reactivate it",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), closed(closedAt)))
			},
			when: func(m *domain.MailReceived) {
				m.Subject = "Abwesenheitsnotiz: [Ticket#1001] Printer broken"
				m.LoopHeaders = map[string]string{"x-autoreply": "yes"}
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.StatusLeftUnchanged{TicketID: ticketID, Status: domain.StatusClosed, Code: domain.UnchangedAutomatic,
						Reason: "automatic mail (header x-autoreply) changes no status", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name:  "a subject reference to an unknown ticket counts as no reference and opens a ticket",
			given: func(_ testing.TB, in *domain.MailInput) { in.Sender = knownMax },
			when:  func(m *domain.MailReceived) { m.Subject = "Re: [Ticket#999999] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		// RULES.md 3.2: reply-only accounts.
		{
			name:  "a mail without reference on a no_new_tickets account is rejected with the error mail",
			given: func(_ testing.TB, in *domain.MailInput) { in.Account.NoNewTickets = true },
			then: func(in domain.MailInput) []domain.Event {
				reason := "the account opens no new tickets and the mail references none"
				return []domain.Event{
					domain.MailRejected{Code: domain.RejectNoNewTickets, Reason: reason, At: in.Now, CausedBy: in.Mail.MailID},
					domain.ErrorMailQueued{
						OutgoingMail: wantAnswer(in, domain.AutoMailError, ""), AccountID: accID,
						Template: domain.TemplateError, To: domain.Address{Name: "Max Mustermann", Email: customer},
						Subject: "Re: Printer broken", Reason: reason, QueuedAt: in.Now, CausedBy: in.Mail.MailID,
					},
				}
			},
		},
		{
			name: "a mail with a valid reference on a no_new_tickets account is appended to its ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Account.NoNewTickets = true
				in.Referenced = ptr(fold(tb, ticketCreated()))
				in.Settings.CustomerAnsweredMails = false
			},
			when: func(m *domain.MailReceived) { m.Subject = "AW: [Ticket#1001] Printer broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					wantAppended(in),
					domain.TicketStatusChanged{TicketID: ticketID, From: domain.StatusNew, To: domain.StatusConfirmedUnread, At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		{
			name:  "an automatic mail without reference on a no_new_tickets account gets no error mail",
			given: func(_ testing.TB, in *domain.MailInput) { in.Account.NoNewTickets = true },
			when:  func(m *domain.MailReceived) { m.Precedence = "bulk" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{
					domain.MailRejected{Code: domain.RejectNoNewTickets, Reason: "the account opens no new tickets and the mail references none", At: in.Now, CausedBy: in.Mail.MailID},
					domain.AutoMailSuppressed{Kind: domain.AutoMailError, To: customer, Reason: "automatic mail (precedence: bulk)", At: in.Now, CausedBy: in.Mail.MailID},
				}
			},
		},
		// RULES.md 3.3: bundling across polling intervals (300 s, aligned to the epoch).
		{
			name: "the same sender and subject in the same polling interval is bundled into the ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Account.AutoBundle = true
				in.BundleCandidates = []domain.Ticket{bundleCandidate(tb, t0.Add(10*time.Second))}
			},
			when: func(m *domain.MailReceived) { m.ReceivedAt = t0.Add(299 * time.Second) },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantBundled(in, t0, 0)}
			},
		},
		{
			name: "the same sender and subject in the next polling interval is bundled into the ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Account.AutoBundle = true
				in.BundleCandidates = []domain.Ticket{bundleCandidate(tb, t0.Add(299*time.Second))}
			},
			when: func(m *domain.MailReceived) { m.ReceivedAt = t0.Add(300 * time.Second) },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantBundled(in, t0, 1)}
			},
		},
		{
			name: "the same sender and subject in the interval after the next opens a new ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Account.AutoBundle = true
				in.Sender = knownMax
				in.BundleCandidates = []domain.Ticket{bundleCandidate(tb, t0.Add(299*time.Second))}
			},
			when: func(m *domain.MailReceived) { m.ReceivedAt = t0.Add(600 * time.Second) },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		{
			name: "the same sender with another subject is not bundled",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Account.AutoBundle = true
				in.Sender = knownMax
				in.BundleCandidates = []domain.Ticket{bundleCandidate(tb, t0.Add(10*time.Second))}
			},
			when: func(m *domain.MailReceived) { m.Subject = "Scanner broken" },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		{
			name: "without auto_bundle the same sender and subject opens a new ticket",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.BundleCandidates = []domain.Ticket{bundleCandidate(tb, t0.Add(10*time.Second))}
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		// RULES.md 2.7: several accounts, one Message-ID.
		{
			name:  "a mail addressed first to another account we read is skipped by this one",
			given: func(_ testing.TB, in *domain.MailInput) { in.Sender = knownMax },
			when: func(m *domain.MailReceived) {
				m.To = []domain.Address{{Email: "Sales@Ours.example"}, {Email: ourAddr}}
			},
			then: func(in domain.MailInput) []domain.Event {
				s := wantSkipped(in, domain.SkipOtherAccount, "account acc-sales (sales@ours.example) is addressed first and imports the mail")
				s.ImportedBy = otherAccID
				return []domain.Event{s}
			},
		},
		{
			name:  "an account named in To imports the mail even when another account comes first in Cc",
			given: func(_ testing.TB, in *domain.MailInput) { in.Sender = knownMax },
			when: func(m *domain.MailReceived) {
				m.To = []domain.Address{{Email: "someone@customer.example"}, {Email: ourAddr}}
				m.Cc = []domain.Address{{Email: otherAddr}}
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantCreated(in, maxRequester(), "loc-customer")}
			},
		},
		{
			name:  "with neither account in To the first account in Cc imports",
			given: func(_ testing.TB, in *domain.MailInput) { in.Sender = knownMax },
			when: func(m *domain.MailReceived) {
				m.To = []domain.Address{{Email: "someone@customer.example"}}
				m.Cc = []domain.Address{{Email: otherAddr}, {Email: ourAddr}}
			},
			then: func(in domain.MailInput) []domain.Event {
				s := wantSkipped(in, domain.SkipOtherAccount, "account acc-sales (sales@ours.example) is addressed first and imports the mail")
				s.ImportedBy = otherAccID
				return []domain.Event{s}
			},
		},
		{
			name: "the same Message-ID arriving through a second account is skipped as a duplicate",
			given: func(tb testing.TB, in *domain.MailInput) {
				// Ticket 1001 was opened from the copy the sales account fetched.
				c := ticketCreated()
				c.MessageID = "m101@customer.example"
				c.CausedBy = domain.MailIDFor(otherAccID, "3:55")
				in.DuplicateOf = ptr(fold(tb, c))
			},
			when: func(m *domain.MailReceived) { m.To = []domain.Address{{Email: "bcc-alias@ours.example"}} },
			then: func(in domain.MailInput) []domain.Event {
				s := wantSkipped(in, domain.SkipDuplicate, "ticket 1001 already holds Message-ID m101@customer.example")
				s.DuplicateOf = ticketID
				return []domain.Event{s}
			},
		},
		{
			name: "deciding the same mail again gives no events",
			given: func(tb testing.TB, in *domain.MailInput) {
				c := ticketCreated()
				c.MessageID = "m101@customer.example"
				c.CausedBy = in.Mail.MailID
				in.DuplicateOf = ptr(fold(tb, c))
			},
			then: func(domain.MailInput) []domain.Event { return nil },
		},
		// RULES.md 3.6: bounces.
		{
			name:  "a delivery status notification about our auto-reply is recorded on its ticket",
			given: func(tb testing.TB, in *domain.MailInput) { in.Referenced = ptr(fold(tb, ticketCreated())) },
			when: func(m *domain.MailReceived) {
				m.From = domain.Address{Name: "Mail Delivery System", Email: "MAILER-DAEMON@mx.customer.example"}
				m.Subject = "Undelivered Mail Returned to Sender"
				m.ContentType, m.ReportType = "multipart/report", "delivery-status"
				m.ReturnPathEmpty = true
				m.BouncedMessageID = ourAutoReplyID
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{domain.DeliveryFailureRecorded{TicketID: ticketID, BouncedMessageID: ourAutoReplyID, Reason: "delivery status notification", At: in.Now, CausedBy: in.Mail.MailID}}
			},
		},
		{
			name: "a bounce of a Message-ID made before the keys is recorded on the ticket that sent it",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated(), domain.AutoReplyQueued{TicketID: ticketID,
					OutgoingMail: domain.OutgoingMail{OutgoingMailID: "old", MessageID: unkeyedMessageID(ticketID, "old", domainName)}}))
			},
			when: func(m *domain.MailReceived) {
				m.From = domain.Address{Email: "MAILER-DAEMON@mx.customer.example"}
				m.ContentType, m.ReportType = "multipart/report", "delivery-status"
				m.BouncedMessageID = unkeyedMessageID(ticketID, "old", domainName)
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{domain.DeliveryFailureRecorded{TicketID: ticketID, BouncedMessageID: unkeyedMessageID(ticketID, "old", domainName),
					Reason: "delivery status notification", At: in.Now, CausedBy: in.Mail.MailID}}
			},
		},
		{
			name:  "a bounce of a forged Message-ID naming a ticket creates nothing",
			given: func(testing.TB, *domain.MailInput) {}, // the application finds no ticket it names
			when: func(m *domain.MailReceived) {
				m.From = domain.Address{Email: "MAILER-DAEMON@mx.customer.example"}
				m.ContentType, m.ReportType = "multipart/report", "delivery-status"
				m.BouncedMessageID = unkeyedMessageID(ticketID, "never-sent", domainName)
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantSkipped(in, domain.SkipBounce, "bounce (delivery status notification) of a mail that is not one of our tickets'")}
			},
		},
		{
			name: "a ticket named only by a forged Message-ID is inconsistent input",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated()))
			},
			when: func(m *domain.MailReceived) {
				m.Subject = "Re: your mail"
				m.InReplyTo = "<ledgerdesk." + ticketID + ".never-sent.k000000000000000000000000@" + domainName + ">"
			},
			wantErr: domain.ErrInconsistentInput,
		},
		{
			name: "a bounce that quotes a ticket number but not one of our Message-IDs creates nothing",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) {
				m.From = domain.Address{Email: "postmaster@customer.example"}
				m.Subject = "Delivery failure: [Ticket#1001] Printer broken"
				m.BouncedMessageID = "someone-elses@customer.example"
			},
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantSkipped(in, domain.SkipBounce, "bounce (sender postmaster@customer.example) of a mail that is not one of our tickets'")}
			},
		},
		{
			name: "a mail with an empty Return-Path never opens a ticket",
			given: func(_ testing.TB, in *domain.MailInput) {
				in.Sender = knownMax
				in.Account.AutoReplyTemplate = "received"
			},
			when: func(m *domain.MailReceived) { m.ReturnPathEmpty = true },
			then: func(in domain.MailInput) []domain.Event {
				return []domain.Event{wantSkipped(in, domain.SkipBounce, "bounce (empty return-path) of a mail that is not one of our tickets'")}
			},
		},
		// Inconsistent or malformed input is an error, not a decision.
		{
			name: "a referenced ticket the mail does not reference is inconsistent input",
			given: func(tb testing.TB, in *domain.MailInput) {
				in.Referenced = ptr(fold(tb, ticketCreated()))
			},
			when:    func(m *domain.MailReceived) { m.Subject = "[Ticket#1002] something else" },
			wantErr: domain.ErrInconsistentInput,
		},
		{
			name:    "a new ticket without a ticket number is inconsistent input",
			given:   func(_ testing.TB, in *domain.MailInput) { in.NextTicketNumber = 0 },
			wantErr: domain.ErrInconsistentInput,
		},
		{
			name:    "a mail of another account is invalid input",
			given:   func(_ testing.TB, in *domain.MailInput) { in.Account.ID = otherAccID },
			wantErr: domain.ErrInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := baseInput()
			if tc.when != nil {
				tc.when(&in.Mail)
			}
			in.Now = in.Mail.ReceivedAt.Add(3 * time.Second)
			tc.given(t, &in)
			got, err := domain.DecideMail(in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("DecideMail() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecideMail() error = %v", err)
			}
			diffEvents(t, "DecideMail()", tc.then(in), got)
		})
	}
}

// bundleCandidate is ticket 1001 opened from Max's mail "Printer broken"
// received at at.
func bundleCandidate(tb testing.TB, at time.Time) domain.Ticket {
	tb.Helper()
	c := ticketCreated()
	c.MailReceivedAt, c.CreatedAt = at, at
	return fold(tb, c)
}

func wantBundled(in domain.MailInput, ticketIntervalStart time.Time, later int64) domain.MailBundled {
	iv := ticketIntervalStart.Unix() / 300
	return domain.MailBundled{
		TicketID: ticketID, MessageID: "m101@customer.example", From: in.Mail.From, Subject: in.Mail.Subject,
		MailReceivedAt: in.Mail.ReceivedAt, TicketInterval: iv, MailInterval: iv + later, IntervalSeconds: 300,
		At: in.Now, CausedBy: in.Mail.MailID,
	}
}

// TestDecideMail_redelivery checks that the same mail decided twice (a crash
// before the decision was stored) yields identical events and ids.
func TestDecideMail_redelivery(t *testing.T) {
	t.Parallel()
	in := baseInput()
	in.Now = t0.Add(time.Hour)
	in.Account.CreateUnknownUsers = true
	in.Account.CreateLocationFromDomain = true
	in.Account.AutoReplyTemplate = "received"
	first, err := domain.DecideMail(in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := domain.DecideMail(in)
	if err != nil {
		t.Fatal(err)
	}
	diffEvents(t, "DecideMail() twice", first, again)
	if len(first) != 4 {
		t.Errorf("DecideMail() = %d events, want 4 (location, user, ticket, auto-reply)", len(first))
	}
}

func TestMailLookups(t *testing.T) {
	t.Parallel()
	own := domain.OutgoingMessageID("tkt-7", "out-1", domainName, testKey)
	tests := []struct {
		name string
		mail func(m *domain.MailReceived)
		acc  func(a *domain.InboundAccount)
		want domain.Lookups
	}{
		{
			name: "a plain first mail needs the sender and its domain",
			want: domain.Lookups{MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example"},
		},
		{
			name: "reply noise around the subject reference is ignored",
			mail: func(m *domain.MailReceived) { m.Subject = "RE: AW: WG: Fwd: SV: Antw: [Ticket#1001] Printer broken" },
			want: domain.Lookups{TicketNumber: 1001, MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example"},
		},
		{
			name: "our own Message-IDs give ticket ids, other ids are looked up as they are, newest first",
			mail: func(m *domain.MailReceived) {
				m.InReplyTo = "<other@customer.example>"
				m.References = []string{"<first@customer.example>", "<" + own + ">", "<other@customer.example>"}
			},
			want: domain.Lookups{
				Own: []domain.OwnMessageID{{TicketID: "tkt-7", MessageID: own, Keyed: true}}, MessageIDs: []string{"other@customer.example", "first@customer.example"},
				MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example",
			},
		},
		{
			name: "a bounce's returned message id comes first",
			mail: func(m *domain.MailReceived) { m.BouncedMessageID = own },
			want: domain.Lookups{Own: []domain.OwnMessageID{{TicketID: "tkt-7", MessageID: own, Keyed: true}}, MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example"},
		},
		{
			name: "a bounce is looked up by our own Message-IDs only, not by its subject or foreign ids",
			mail: func(m *domain.MailReceived) {
				m.From = domain.Address{Email: "MAILER-DAEMON@mx.customer.example"}
				m.Subject = "Undelivered: [Ticket#1001] Printer broken"
				m.InReplyTo = "<foreign@customer.example>"
				m.BouncedMessageID = own
			},
			want: domain.Lookups{Own: []domain.OwnMessageID{{TicketID: "tkt-7", MessageID: own, Keyed: true}}, MessageID: "m101@customer.example", SenderEmail: "mailer-daemon@mx.customer.example", SenderDomain: "mx.customer.example"},
		},
		{
			name: "a returned message that is not ours is not looked up",
			mail: func(m *domain.MailReceived) { m.BouncedMessageID = "<foreign@customer.example>" },
			want: domain.Lookups{MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example"},
		},
		{
			name: "auto_bundle asks for candidates since the start of the previous polling interval",
			acc:  func(a *domain.InboundAccount) { a.AutoBundle = true },
			want: domain.Lookups{
				MessageID: "m101@customer.example", SenderEmail: customer, SenderDomain: "customer.example",
				BundleSince: t0.Add(-300 * time.Second),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, a := newMail(), supportAccount()
			if tc.mail != nil {
				tc.mail(&m)
			}
			if tc.acc != nil {
				tc.acc(&a)
			}
			got := domain.MailLookups(m, a, testSettings(), testKey)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("MailLookups() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPollInterval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		at   time.Time
		secs int64
		want int64
	}{
		{"the start of an interval belongs to it", time.Unix(600, 0), 300, 2},
		{"one second before the boundary is the previous interval", time.Unix(599, 0), 300, 1},
		{"times before the epoch round down", time.Unix(-1, 0), 300, -1},
		{"a zero interval means the 5 minute default", time.Unix(600, 0), 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := domain.PollInterval(tc.at, tc.secs); got != tc.want {
				t.Errorf("PollInterval(%v, %d) = %d, want %d", tc.at.Unix(), tc.secs, got, tc.want)
			}
		})
	}
}
