package ticketing

import "github.com/ledgerdesk/ledgerdesk/domain"

// ticketIDOf returns the ticket an event is about, "" for events that
// concern no ticket (a rejection on a reply-only account, say).
func ticketIDOf(e domain.Event) string {
	switch e := e.(type) {
	case domain.TicketCreated:
		return e.TicketID
	case domain.MailAppended:
		return e.TicketID
	case domain.MailBundled:
		return e.TicketID
	case domain.MailRejected:
		return e.TicketID
	case domain.TicketReactivated:
		return e.TicketID
	case domain.StatusLeftUnchanged:
		return e.TicketID
	case domain.TicketStatusChanged:
		return e.TicketID
	case domain.TicketAssigned:
		return e.TicketID
	case domain.TicketClosed:
		return e.TicketID
	case domain.TicketReopened:
		return e.TicketID
	case domain.TicketCategoryChanged:
		return e.TicketID
	case domain.TicketPriorityChanged:
		return e.TicketID
	case domain.NoteAdded:
		return e.TicketID
	case domain.DeliveryFailureRecorded:
		return e.TicketID
	case domain.ErrorMailQueued:
		return e.TicketID
	case domain.AutoReplyQueued:
		return e.TicketID
	case domain.NotificationQueued:
		return e.TicketID
	case domain.AutoMailSuppressed:
		return e.TicketID
	case domain.ReplyQueued:
		return e.TicketID
	}
	return ""
}
