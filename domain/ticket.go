package domain

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// TicketStatus is a closed enum; new statuses are only added.
type TicketStatus string

// Ticket statuses.
const (
	StatusNew             TicketStatus = "new"
	StatusConfirmedUnread TicketStatus = "confirmed_unread" // "customer answered" (i-net: Bestätigt-ungelesen)
	StatusInProgress      TicketStatus = "in_progress"
	StatusWaiting         TicketStatus = "waiting"
	StatusClosed          TicketStatus = "closed"
)

// Valid reports whether s is one of the statuses.
func (s TicketStatus) Valid() bool {
	switch s {
	case StatusNew, StatusConfirmedUnread, StatusInProgress, StatusWaiting, StatusClosed:
		return true
	}
	return false
}

// TicketIDFor derives a ticket's id from the MailID of the mail that created
// it, so a re-delivered mail gives the same ticket id (and the store's
// "stream must not exist" check turns a second creation into a conflict).
func TicketIDFor(mailID string) string { return hashID("ticket", mailID) }

// NoteIDFor derives a note's id from its ticket and the command that added
// it, so a retried command adds the same note.
func NoteIDFor(ticketID, commandID string) string { return hashID("note", ticketID, commandID) }

// OutgoingReply is the OutgoingMailIDFor kind of agents' replies.
const OutgoingReply = "reply"

// OutgoingMailIDFor derives the id of a queued mail from its kind (one of
// the AutoMail* kinds or OutgoingReply) and its cause (the MailID of the
// mail answered, or ticket id and command id), so deciding the same input
// again queues the same mail, which the saga sends once.
func OutgoingMailIDFor(kind string, cause ...string) string {
	return hashID("outgoing/"+kind, cause...)
}

// TicketStream is the event stream of ticket id.
func TicketStream(id string) string { return "ticket-" + id }

// Ticket is a ticket's state, folded from its events by EvolveTicket. The
// zero Ticket is a ticket that does not exist.
type Ticket struct {
	ID         string       `json:"id"`
	Number     int64        `json:"number"`
	Subject    string       `json:"subject"`
	Status     TicketStatus `json:"status"`
	Requester  Requester    `json:"requester"`
	LocationID string       `json:"location_id,omitempty"`
	ResourceID string       `json:"resource_id,omitempty"`
	Category   string       `json:"category,omitempty"`
	Priority   string       `json:"priority,omitempty"`
	AccountID  string       `json:"account_id,omitempty"`
	// SenderEmail is the normalised address of the mail that created the
	// ticket (bundling compares it); empty for tickets not made from mail.
	SenderEmail string `json:"sender_email,omitempty"`
	// MailReceivedAt is when the creating mail was fetched.
	MailReceivedAt time.Time `json:"mail_received_at"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// ClosedAt is set while the ticket is closed; it starts the
	// reactivation window.
	ClosedAt time.Time `json:"closed_at"`
	// MessageIDs holds the Message-IDs of the ticket's inbound mails and of
	// the mails queued from it, oldest first.
	MessageIDs []string `json:"message_ids,omitempty"`
	// MailIDs are the MailReceived ids of the ticket's inbound mails.
	MailIDs []string `json:"mail_ids,omitempty"`
	// LastInboundMessageID is the Message-ID of the latest mail received
	// into the ticket; replies set In-Reply-To to it.
	LastInboundMessageID string `json:"last_inbound_message_id,omitempty"`
	DeliveryFailures     int    `json:"delivery_failures,omitempty"`
	Notes                int    `json:"notes,omitempty"`
	// Version counts the ticket events folded in, for optimistic appends.
	Version int64 `json:"version"`
}

// Exists reports whether the ticket was created.
func (t Ticket) Exists() bool { return t.ID != "" }

// Open reports whether the ticket exists and is not closed.
func (t Ticket) Open() bool { return t.Exists() && t.Status != StatusClosed }

// HoldsMessageID reports whether a mail with Message-ID id belongs to t.
func (t Ticket) HoldsMessageID(id string) bool {
	id = normalizeMessageID(id)
	return id != "" && contains(t.MessageIDs, id)
}

// EvolveTicket folds one event into t. It accepts every event ever stored:
// events of other aggregates, and events about other tickets, leave t as it
// is. Events that only record a decision (StatusLeftUnchanged, MailRejected,
// AutoMailSuppressed) still count towards Version.
func EvolveTicket(t Ticket, e Event) Ticket {
	switch e := e.(type) {
	case TicketCreated:
		if t.Exists() {
			return t
		}
		t = Ticket{
			ID: e.TicketID, Number: e.Number, Subject: e.Subject, Status: e.Status,
			Requester: e.Requester, LocationID: e.LocationID, ResourceID: e.ResourceID,
			Category: e.Category, Priority: e.Priority, AccountID: e.AccountID,
			SenderEmail: e.SenderEmail, MailReceivedAt: e.MailReceivedAt,
			CreatedAt: e.CreatedAt, UpdatedAt: e.CreatedAt,
		}
		t.addInbound(e.MessageID, e.CausedBy)
	case MailAppended:
		if e.TicketID != t.ID {
			return t
		}
		t.addInbound(e.MessageID, e.CausedBy)
		t.UpdatedAt = e.At
	case MailBundled:
		if e.TicketID != t.ID {
			return t
		}
		t.addInbound(e.MessageID, e.CausedBy)
		t.UpdatedAt = e.At
	case TicketReactivated:
		if e.TicketID != t.ID {
			return t
		}
		t.Status, t.ClosedAt, t.UpdatedAt = e.Status, time.Time{}, e.At
	case TicketStatusChanged:
		if e.TicketID != t.ID {
			return t
		}
		t.Status, t.UpdatedAt = e.To, e.At
	case TicketClosed:
		if e.TicketID != t.ID {
			return t
		}
		t.Status, t.ClosedAt, t.UpdatedAt = StatusClosed, e.ClosedAt, e.ClosedAt
	case TicketReopened:
		if e.TicketID != t.ID {
			return t
		}
		t.Status, t.ClosedAt, t.UpdatedAt = e.Status, time.Time{}, e.At
	case TicketAssigned:
		if e.TicketID != t.ID {
			return t
		}
		t.ResourceID, t.UpdatedAt = e.ResourceID, e.At
	case TicketCategoryChanged:
		if e.TicketID != t.ID {
			return t
		}
		t.Category, t.UpdatedAt = e.Category, e.At
	case TicketPriorityChanged:
		if e.TicketID != t.ID {
			return t
		}
		t.Priority, t.UpdatedAt = e.Priority, e.At
	case NoteAdded:
		if e.TicketID != t.ID {
			return t
		}
		t.Notes++
		t.UpdatedAt = e.At
	case DeliveryFailureRecorded:
		if e.TicketID != t.ID {
			return t
		}
		t.DeliveryFailures++
	case ReplyQueued:
		if e.TicketID != t.ID {
			return t
		}
		t.addOutgoing(e.MessageID)
		t.UpdatedAt = e.QueuedAt
	case AutoReplyQueued:
		if e.TicketID != t.ID {
			return t
		}
		t.addOutgoing(e.MessageID)
	case ErrorMailQueued:
		if e.TicketID == "" || e.TicketID != t.ID {
			return t
		}
		t.addOutgoing(e.MessageID)
	case NotificationQueued:
		if e.TicketID != t.ID {
			return t
		}
	case StatusLeftUnchanged:
		if e.TicketID != t.ID {
			return t
		}
	case MailRejected:
		if e.TicketID == "" || e.TicketID != t.ID {
			return t
		}
	case AutoMailSuppressed:
		if e.TicketID == "" || e.TicketID != t.ID {
			return t
		}
	default:
		return t
	}
	t.Version++
	return t
}

func (t *Ticket) addInbound(id, mailID string) {
	if mailID != "" && !contains(t.MailIDs, mailID) {
		t.MailIDs = append(t.MailIDs, mailID)
	}
	id = normalizeMessageID(id)
	if id == "" {
		return
	}
	t.LastInboundMessageID = id
	if !contains(t.MessageIDs, id) {
		t.MessageIDs = append(t.MessageIDs, id)
	}
}

func (t *Ticket) addOutgoing(id string) {
	id = normalizeMessageID(id)
	if id != "" && !contains(t.MessageIDs, id) {
		t.MessageIDs = append(t.MessageIDs, id)
	}
}

// TicketCommand is an agent's command on one ticket; see DecideTicket.
type TicketCommand interface {
	ticketCommand() (actor string, at time.Time)
}

// ChangeStatus moves an open ticket to another open status.
// Closing and reopening have their own commands.
type ChangeStatus struct {
	Status TicketStatus
	Actor  string
	At     time.Time
}

// CloseTicket closes a ticket; At is its ClosedAt.
type CloseTicket struct {
	Actor string
	At    time.Time
}

// ReopenTicket reopens a closed ticket into Status (in_progress if empty).
type ReopenTicket struct {
	Status TicketStatus
	Actor  string
	At     time.Time
}

// AssignResource gives the ticket to a resource; empty ResourceID unassigns.
type AssignResource struct {
	ResourceID string
	Actor      string
	At         time.Time
}

// SetCategory sets the ticket's category.
type SetCategory struct {
	Category string
	Actor    string
	At       time.Time
}

// SetPriority sets the ticket's priority.
type SetPriority struct {
	Priority string
	Actor    string
	At       time.Time
}

// AddNote adds an internal note. CommandID is unique per command (the API's
// idempotency key); the note id derives from it.
type AddNote struct {
	CommandID string
	Text      string
	Actor     string
	At        time.Time
}

// ReplyByMail queues a reply to the requester (or to To, when given).
// CommandID is unique per command; the outgoing mail's id derives from it, so
// a retried command queues the same mail, which the saga sends once. An
// empty Subject becomes "Re: <ticket subject>"; the ticket reference is
// added when the subject lacks it.
type ReplyByMail struct {
	CommandID string
	To        []Address
	Cc        []Address
	Subject   string
	Body      string
	Actor     string
	At        time.Time
}

func (c ChangeStatus) ticketCommand() (string, time.Time)   { return c.Actor, c.At }
func (c CloseTicket) ticketCommand() (string, time.Time)    { return c.Actor, c.At }
func (c ReopenTicket) ticketCommand() (string, time.Time)   { return c.Actor, c.At }
func (c AssignResource) ticketCommand() (string, time.Time) { return c.Actor, c.At }
func (c SetCategory) ticketCommand() (string, time.Time)    { return c.Actor, c.At }
func (c SetPriority) ticketCommand() (string, time.Time)    { return c.Actor, c.At }
func (c AddNote) ticketCommand() (string, time.Time)        { return c.Actor, c.At }
func (c ReplyByMail) ticketCommand() (string, time.Time)    { return c.Actor, c.At }

// DecideTicket decides an agent's command on ticket t. A command that would
// change nothing (closing a closed ticket, assigning the current resource)
// returns no events and no error, so retries are harmless. Errors: ErrNotFound
// when t does not exist, ErrTicketClosed for a status change on a closed
// ticket, ErrInvalid for a malformed command.
//
// key keys the Message-ID of a reply (OutgoingMessageID); it comes from the
// server's secret and is never stored.
func DecideTicket(t Ticket, s Settings, key MessageIDKey, cmd TicketCommand) ([]Event, error) {
	if cmd == nil {
		return nil, fmt.Errorf("ticket command: %w: no command", ErrInvalid)
	}
	actor, at := cmd.ticketCommand()
	if errs := checkActor(actor, at); len(errs) > 0 {
		return nil, fmt.Errorf("ticket command %T: %w: %w", cmd, ErrInvalid, errors.Join(errs...))
	}
	if !t.Exists() {
		return nil, fmt.Errorf("ticket command %T: ticket %w", cmd, ErrNotFound)
	}
	switch c := cmd.(type) {
	case ChangeStatus:
		if !c.Status.Valid() || c.Status == StatusClosed {
			return nil, fmt.Errorf("change status of ticket %d: %w: status %q is not an open status (close with CloseTicket)", t.Number, ErrInvalid, c.Status)
		}
		if !t.Open() {
			return nil, fmt.Errorf("change status of ticket %d: %w", t.Number, ErrTicketClosed)
		}
		if t.Status == c.Status {
			return nil, nil
		}
		return []Event{TicketStatusChanged{TicketID: t.ID, From: t.Status, To: c.Status, At: c.At, Actor: c.Actor}}, nil
	case CloseTicket:
		if !t.Open() {
			return nil, nil
		}
		return []Event{TicketClosed{TicketID: t.ID, From: t.Status, ClosedAt: c.At, Actor: c.Actor}}, nil
	case ReopenTicket:
		status := c.Status
		if status == "" {
			status = StatusInProgress
		}
		if !status.Valid() || status == StatusClosed {
			return nil, fmt.Errorf("reopen ticket %d: %w: status %q is not an open status", t.Number, ErrInvalid, c.Status)
		}
		if t.Open() {
			return nil, nil
		}
		return []Event{TicketReopened{TicketID: t.ID, Status: status, At: c.At, Actor: c.Actor}}, nil
	case AssignResource:
		if t.ResourceID == c.ResourceID {
			return nil, nil
		}
		return []Event{TicketAssigned{TicketID: t.ID, ResourceID: c.ResourceID, Previous: t.ResourceID, At: c.At, Actor: c.Actor}}, nil
	case SetCategory:
		if t.Category == c.Category {
			return nil, nil
		}
		return []Event{TicketCategoryChanged{TicketID: t.ID, Category: c.Category, Previous: t.Category, At: c.At, Actor: c.Actor}}, nil
	case SetPriority:
		if t.Priority == c.Priority {
			return nil, nil
		}
		return []Event{TicketPriorityChanged{TicketID: t.ID, Priority: c.Priority, Previous: t.Priority, At: c.At, Actor: c.Actor}}, nil
	case AddNote:
		var errs []error
		if c.CommandID == "" {
			errs = append(errs, errors.New("command_id: is empty"))
		}
		if strings.TrimSpace(c.Text) == "" {
			errs = append(errs, errors.New("text: is empty"))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("add note to ticket %d: %w: %w", t.Number, ErrInvalid, err)
		}
		return []Event{NoteAdded{TicketID: t.ID, NoteID: NoteIDFor(t.ID, c.CommandID), Text: c.Text, At: c.At, Actor: c.Actor}}, nil
	case ReplyByMail:
		return decideReply(t, s, key, c)
	default:
		return nil, fmt.Errorf("ticket command %T: %w: unknown command", cmd, ErrInvalid)
	}
}

func decideReply(t Ticket, s Settings, key MessageIDKey, c ReplyByMail) ([]Event, error) {
	to := c.To
	if len(to) == 0 && t.Requester.Email != "" {
		to = []Address{{Name: t.Requester.Name, Email: t.Requester.Email}}
	}
	var errs []error
	if c.CommandID == "" {
		errs = append(errs, errors.New("command_id: is empty"))
	}
	if strings.TrimSpace(c.Body) == "" {
		errs = append(errs, errors.New("body: is empty"))
	}
	if len(to) == 0 {
		errs = append(errs, errors.New("to: no recipient and the requester has no address"))
	}
	for _, a := range append(append([]Address(nil), to...), c.Cc...) {
		if !validEmail(a.Email) {
			errs = append(errs, fmt.Errorf("to/cc: %q is not a mail address", a.Email))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("reply on ticket %d: %w: %w", t.Number, ErrInvalid, err)
	}
	subject := c.Subject
	if strings.TrimSpace(subject) == "" {
		subject = replySubject(t.Subject)
	}
	subject = withReference(subject, t.Number, s.ReferenceFormat)
	outID := OutgoingMailIDFor(OutgoingReply, t.ID, c.CommandID)
	return []Event{ReplyQueued{
		OutgoingMail: outgoingMail(t, outID, s.MessageIDDomain, key),
		TicketID:     t.ID,
		To:           to,
		Cc:           c.Cc,
		Subject:      subject,
		Body:         c.Body,
		QueuedAt:     c.At,
		Actor:        c.Actor,
	}}, nil
}

// outgoingMail threads a mail of ticket t: In-Reply-To the latest inbound
// mail, References the first mail and that one (RFC 5322 section 3.6.4).
func outgoingMail(t Ticket, outgoingMailID, domain string, key MessageIDKey) OutgoingMail {
	m := OutgoingMail{
		OutgoingMailID: outgoingMailID,
		MessageID:      OutgoingMessageID(t.ID, outgoingMailID, domain, key),
		InReplyTo:      t.LastInboundMessageID,
	}
	if len(t.MessageIDs) > 0 {
		m.References = append(m.References, t.MessageIDs[0])
	}
	if t.LastInboundMessageID != "" && !contains(m.References, t.LastInboundMessageID) {
		m.References = append(m.References, t.LastInboundMessageID)
	}
	return m
}

// withReference puts the ticket reference into subject, after any reply
// prefixes ("Re: [Ticket#1001] Printer"), unless it already carries the
// reference to number.
func withReference(subject string, number int64, format string) string {
	if n, ok := ParseTicketReference(subject, format); ok && n == number {
		return subject
	}
	prefix, rest := splitReplyPrefixes(subject)
	return prefix + FormatTicketReference(number, format) + " " + rest
}

// replyPrefixes are the reply and forward markers mail clients put in front
// of a subject, lower case, without the colon.
var replyPrefixes = map[string]bool{
	"re": true, "aw": true, "wg": true, "fw": true, "fwd": true, "sv": true, "vs": true, "antw": true, "tr": true, "rif": true,
}

// splitReplyPrefixes splits "RE: AW: Printer" into "RE: AW: " and "Printer".
func splitReplyPrefixes(subject string) (prefix, rest string) {
	rest = strings.TrimLeft(subject, " \t")
	for {
		word, after, ok := strings.Cut(rest, ":")
		if !ok || !replyPrefixes[strings.ToLower(strings.TrimSpace(word))] {
			return subject[:len(subject)-len(rest)], rest
		}
		rest = strings.TrimLeft(after, " \t")
	}
}

// replySubject is subject as an answer: "Re: " in front unless it already
// starts with a reply prefix.
func replySubject(subject string) string {
	if p, _ := splitReplyPrefixes(subject); p != "" {
		return subject
	}
	return "Re: " + subject
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func checkActor(actor string, at time.Time) []error {
	var errs []error
	if strings.TrimSpace(actor) == "" {
		errs = append(errs, errors.New("actor: is empty"))
	}
	if at.IsZero() {
		errs = append(errs, errors.New("at: time is zero"))
	}
	return errs
}
