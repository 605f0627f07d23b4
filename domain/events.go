package domain

import "time"

// This file holds the ticket, directory and outgoing-mail events. Rules for
// all of them (STYLE.md 4-6): the stored name (the Name constant, returned by
// EventName) never changes; fields are only added, with the zero value
// meaning the old behaviour; an incompatible change bumps the SchemaVersion
// constant and registers an upcaster in codec.go. Events caused by a mail
// carry the MailReceived's MailID in CausedBy; events caused by an agent or
// admin carry Actor.

// Stored names. They equal the Go type names of the day they were added.
const (
	TicketCreatedName           = "TicketCreated"
	MailAppendedName            = "MailAppended"
	MailBundledName             = "MailBundled"
	MailRejectedName            = "MailRejected"
	TicketReactivatedName       = "TicketReactivated"
	StatusLeftUnchangedName     = "StatusLeftUnchanged"
	TicketStatusChangedName     = "TicketStatusChanged"
	TicketAssignedName          = "TicketAssigned"
	TicketClosedName            = "TicketClosed"
	TicketReopenedName          = "TicketReopened"
	TicketCategoryChangedName   = "TicketCategoryChanged"
	TicketPriorityChangedName   = "TicketPriorityChanged"
	NoteAddedName               = "NoteAdded"
	DeliveryFailureRecordedName = "DeliveryFailureRecorded"
	UserAutoCreatedName         = "UserAutoCreated"
	UserCreatedName             = "UserCreated"
	UserUpdatedName             = "UserUpdated"
	LocationAutoCreatedName     = "LocationAutoCreated"
	LocationCreatedName         = "LocationCreated"
	ErrorMailQueuedName         = "ErrorMailQueued"
	AutoReplyQueuedName         = "AutoReplyQueued"
	NotificationQueuedName      = "NotificationQueued"
	AutoMailSuppressedName      = "AutoMailSuppressed"
	ReplyQueuedName             = "ReplyQueued"
	UserRemovedName             = "UserRemoved"
	LocationUpdatedName         = "LocationUpdated"
	LocationRemovedName         = "LocationRemoved"
)

// Schema versions of the payloads.
const (
	TicketCreatedSchemaVersion           = 2 // v1 had flat requester_* fields; see upcastTicketCreatedV1
	MailAppendedSchemaVersion            = 1
	MailBundledSchemaVersion             = 1
	MailRejectedSchemaVersion            = 1
	TicketReactivatedSchemaVersion       = 1
	StatusLeftUnchangedSchemaVersion     = 1
	TicketStatusChangedSchemaVersion     = 1
	TicketAssignedSchemaVersion          = 1
	TicketClosedSchemaVersion            = 1
	TicketReopenedSchemaVersion          = 1
	TicketCategoryChangedSchemaVersion   = 1
	TicketPriorityChangedSchemaVersion   = 1
	NoteAddedSchemaVersion               = 1
	DeliveryFailureRecordedSchemaVersion = 1
	UserAutoCreatedSchemaVersion         = 1
	UserCreatedSchemaVersion             = 1
	UserUpdatedSchemaVersion             = 1
	LocationAutoCreatedSchemaVersion     = 1
	LocationCreatedSchemaVersion         = 1
	ErrorMailQueuedSchemaVersion         = 1
	AutoReplyQueuedSchemaVersion         = 1
	NotificationQueuedSchemaVersion      = 1
	AutoMailSuppressedSchemaVersion      = 1
	ReplyQueuedSchemaVersion             = 1
	UserRemovedSchemaVersion             = 1
	LocationUpdatedSchemaVersion         = 1
	LocationRemovedSchemaVersion         = 1
)

// Where a ticket's requester came from (Requester.Source), RULES.md 3.4.
const (
	RequesterDirectory   = "directory"    // a known user with the sender's address
	RequesterAutoCreated = "auto_created" // created from the sender (create_unknown_users)
	RequesterFallback    = "fallback"     // the account's fallback_user
	RequesterAddress     = "address"      // nobody: the bare address
)

// Requester is the person a ticket is for. Email is where replies go; for a
// fallback user it is still the sender's address.
type Requester struct {
	UserID string `json:"user_id,omitempty"`
	Email  string `json:"email,omitempty"`
	Name   string `json:"name,omitempty"`
	Source string `json:"source"`
}

// TicketCreated opens a ticket from the mail CausedBy, which is its first
// article. Number is human-friendly and Reference is Number in the subject
// reference format at the time. MailReceivedAt is when that mail was fetched;
// bundling measures polling intervals from it.
type TicketCreated struct {
	TicketID       string       `json:"ticket_id"`
	Number         int64        `json:"number"`
	Reference      string       `json:"reference"`
	Subject        string       `json:"subject"`
	Status         TicketStatus `json:"status"`
	Requester      Requester    `json:"requester"`
	LocationID     string       `json:"location_id,omitempty"`
	ResourceID     string       `json:"resource_id,omitempty"`
	Category       string       `json:"category,omitempty"`
	Priority       string       `json:"priority,omitempty"`
	AccountID      string       `json:"account_id"`
	MessageID      string       `json:"message_id"`
	SenderEmail    string       `json:"sender_email"`
	MailReceivedAt time.Time    `json:"mail_received_at"`
	CreatedAt      time.Time    `json:"created_at"`
	CausedBy       string       `json:"caused_by"`
}

// EventName implements Event.
func (TicketCreated) EventName() string { return TicketCreatedName }

// MailAppended adds the mail CausedBy to a ticket as an answer to it (the
// mail referenced the ticket).
type MailAppended struct {
	TicketID       string    `json:"ticket_id"`
	MessageID      string    `json:"message_id"`
	From           Address   `json:"from"`
	Subject        string    `json:"subject"`
	MailReceivedAt time.Time `json:"mail_received_at"`
	At             time.Time `json:"at"`
	CausedBy       string    `json:"caused_by"`
}

// EventName implements Event.
func (MailAppended) EventName() string { return MailAppendedName }

// MailBundled adds the mail CausedBy to a ticket created shortly before from
// a mail with the same sender and subject (auto_bundle). The intervals are
// the polling intervals (see PollInterval) of the ticket's first mail and of
// this one.
type MailBundled struct {
	TicketID        string    `json:"ticket_id"`
	MessageID       string    `json:"message_id"`
	From            Address   `json:"from"`
	Subject         string    `json:"subject"`
	MailReceivedAt  time.Time `json:"mail_received_at"`
	TicketInterval  int64     `json:"ticket_interval"`
	MailInterval    int64     `json:"mail_interval"`
	IntervalSeconds int64     `json:"interval_seconds"`
	At              time.Time `json:"at"`
	CausedBy        string    `json:"caused_by"`
}

// EventName implements Event.
func (MailBundled) EventName() string { return MailBundledName }

// Why a mail was turned away (MailRejected.Code). The set only grows.
const (
	RejectTicketClosed = "ticket_closed"  // the referenced ticket closed longer than the reactivation window
	RejectNoNewTickets = "no_new_tickets" // no reference, and the account opens no tickets
)

// MailRejected records that the mail CausedBy changed no ticket: it
// referenced TicketID, closed for too long, or it had no reference on a
// reply-only account. The mail itself stays in the MailReceived event.
type MailRejected struct {
	TicketID string    `json:"ticket_id,omitempty"`
	Code     string    `json:"code"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
	CausedBy string    `json:"caused_by"`
}

// EventName implements Event.
func (MailRejected) EventName() string { return MailRejectedName }

// TicketReactivated reopens a closed ticket because the mail CausedBy
// answered it within the reactivation window after ClosedAt.
type TicketReactivated struct {
	TicketID      string       `json:"ticket_id"`
	Status        TicketStatus `json:"status"`
	ClosedAt      time.Time    `json:"closed_at"`
	WindowSeconds int64        `json:"window_seconds"`
	At            time.Time    `json:"at"`
	CausedBy      string       `json:"caused_by"`
}

// EventName implements Event.
func (TicketReactivated) EventName() string { return TicketReactivatedName }

// Why a status was left as it was (StatusLeftUnchanged.Code).
const (
	// UnchangedResourceMember: the sender is a member of the ticket's resource
	// and no_status_change_for_resource_members is set.
	UnchangedResourceMember = "resource_member"
	// UnchangedAlready: the ticket already is in the target status.
	UnchangedAlready = "already_in_status"
	// UnchangedAutomatic: an automatic mail (IsAutomatic, e.g. an
	// out-of-office reply) neither marks a ticket customer-answered nor
	// reactivates it, as Zammad and osTicket do.
	UnchangedAutomatic = "automatic_mail"
)

// StatusLeftUnchanged records the decision not to change a ticket's status
// on the mail CausedBy ("nothing changed" is a decision, STYLE.md 6).
type StatusLeftUnchanged struct {
	TicketID string       `json:"ticket_id"`
	Status   TicketStatus `json:"status"`
	Code     string       `json:"code"`
	Reason   string       `json:"reason"`
	At       time.Time    `json:"at"`
	CausedBy string       `json:"caused_by"`
}

// EventName implements Event.
func (StatusLeftUnchanged) EventName() string { return StatusLeftUnchangedName }

// TicketStatusChanged moves an open ticket between open statuses, because of
// the mail CausedBy (customer answered) or an agent (Actor).
type TicketStatusChanged struct {
	TicketID string       `json:"ticket_id"`
	From     TicketStatus `json:"from"`
	To       TicketStatus `json:"to"`
	At       time.Time    `json:"at"`
	CausedBy string       `json:"caused_by,omitempty"`
	Actor    string       `json:"actor,omitempty"`
}

// EventName implements Event.
func (TicketStatusChanged) EventName() string { return TicketStatusChangedName }

// TicketAssigned gives a ticket to a resource (team); empty ResourceID
// unassigns it.
type TicketAssigned struct {
	TicketID   string    `json:"ticket_id"`
	ResourceID string    `json:"resource_id"`
	Previous   string    `json:"previous,omitempty"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (TicketAssigned) EventName() string { return TicketAssignedName }

// TicketClosed closes a ticket. ClosedAt starts the reactivation window.
type TicketClosed struct {
	TicketID string       `json:"ticket_id"`
	From     TicketStatus `json:"from"`
	ClosedAt time.Time    `json:"closed_at"`
	Actor    string       `json:"actor"`
}

// EventName implements Event.
func (TicketClosed) EventName() string { return TicketClosedName }

// TicketReopened reopens a closed ticket by an agent's decision.
type TicketReopened struct {
	TicketID string       `json:"ticket_id"`
	Status   TicketStatus `json:"status"`
	At       time.Time    `json:"at"`
	Actor    string       `json:"actor"`
}

// EventName implements Event.
func (TicketReopened) EventName() string { return TicketReopenedName }

// TicketCategoryChanged sets a ticket's category.
type TicketCategoryChanged struct {
	TicketID string    `json:"ticket_id"`
	Category string    `json:"category"`
	Previous string    `json:"previous,omitempty"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
}

// EventName implements Event.
func (TicketCategoryChanged) EventName() string { return TicketCategoryChangedName }

// TicketPriorityChanged sets a ticket's priority.
type TicketPriorityChanged struct {
	TicketID string    `json:"ticket_id"`
	Priority string    `json:"priority"`
	Previous string    `json:"previous,omitempty"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
}

// EventName implements Event.
func (TicketPriorityChanged) EventName() string { return TicketPriorityChangedName }

// NoteAdded adds an internal note, never sent to the requester.
type NoteAdded struct {
	TicketID string    `json:"ticket_id"`
	NoteID   string    `json:"note_id"`
	Text     string    `json:"text"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
}

// EventName implements Event.
func (NoteAdded) EventName() string { return NoteAddedName }

// DeliveryFailureRecorded attaches the bounce CausedBy to the ticket whose
// outgoing mail BouncedMessageID could not be delivered.
type DeliveryFailureRecorded struct {
	TicketID         string    `json:"ticket_id"`
	BouncedMessageID string    `json:"bounced_message_id"`
	Reason           string    `json:"reason"`
	At               time.Time `json:"at"`
	CausedBy         string    `json:"caused_by"`
}

// EventName implements Event.
func (DeliveryFailureRecorded) EventName() string { return DeliveryFailureRecordedName }

// UserAutoCreated adds a user made from an unknown sender (create_unknown_users).
// UserName is the address's local part, made unique with a numeric suffix.
type UserAutoCreated struct {
	UserID     string    `json:"user_id"`
	UserName   string    `json:"user_name"`
	Email      string    `json:"email"`
	Name       string    `json:"name,omitempty"`
	LocationID string    `json:"location_id,omitempty"`
	At         time.Time `json:"at"`
	CausedBy   string    `json:"caused_by"`
}

// EventName implements Event.
func (UserAutoCreated) EventName() string { return UserAutoCreatedName }

// UserCreated adds a user by an admin.
type UserCreated struct {
	UserID     string    `json:"user_id"`
	UserName   string    `json:"user_name"`
	Email      string    `json:"email"`
	Name       string    `json:"name,omitempty"`
	LocationID string    `json:"location_id,omitempty"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (UserCreated) EventName() string { return UserCreatedName }

// UserUpdated replaces a user's editable fields. UserName is set only
// when it changed (empty: kept, as in events stored before it could).
type UserUpdated struct {
	UserID     string    `json:"user_id"`
	UserName   string    `json:"user_name,omitempty"`
	Email      string    `json:"email"`
	Name       string    `json:"name,omitempty"`
	LocationID string    `json:"location_id,omitempty"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (UserUpdated) EventName() string { return UserUpdatedName }

// UserRemoved removes a user from the directory (an admin's decision); the
// user's tickets keep them.
type UserRemoved struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
}

// EventName implements Event.
func (UserRemoved) EventName() string { return UserRemovedName }

// LocationUpdated replaces a location's name and domain.
type LocationUpdated struct {
	LocationID string    `json:"location_id"`
	Name       string    `json:"name"`
	Domain     string    `json:"domain,omitempty"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (LocationUpdated) EventName() string { return LocationUpdatedName }

// LocationRemoved removes a location (an admin's decision).
type LocationRemoved struct {
	LocationID string    `json:"location_id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (LocationRemoved) EventName() string { return LocationRemovedName }

// LocationAutoCreated adds a location (customer) for a sender's mail domain
// (create_location_from_domain). Its id is LocationIDFor(Domain), so it can
// be created once only.
type LocationAutoCreated struct {
	LocationID string    `json:"location_id"`
	Name       string    `json:"name"`
	Domain     string    `json:"domain"`
	At         time.Time `json:"at"`
	CausedBy   string    `json:"caused_by"`
}

// EventName implements Event.
func (LocationAutoCreated) EventName() string { return LocationAutoCreatedName }

// LocationCreated adds a location by an admin.
type LocationCreated struct {
	LocationID string    `json:"location_id"`
	Name       string    `json:"name"`
	Domain     string    `json:"domain,omitempty"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// EventName implements Event.
func (LocationCreated) EventName() string { return LocationCreatedName }

// Template names of the automatic mails the intake queues.
const (
	TemplateError        = "error"         // "Fehlermeldung (an Benutzer)": reply-only account
	TemplateTicketClosed = "ticket_closed" // answer to a ticket closed too long ago
)

// Kinds of automatic mail (AutoMailSuppressed.Kind, NotificationQueued.Kind).
const (
	AutoMailNewTicket        = "new_ticket"        // auto-reply on a new ticket
	AutoMailError            = "error"             // error mail, reply-only account
	AutoMailTicketClosed     = "ticket_closed"     // error mail, ticket closed
	AutoMailCustomerAnswered = "customer_answered" // notification to the ticket's resource
)

// OutgoingMail is what every queued mail carries: its id (unique, derived
// from the cause so a re-decided input queues the same mail, which the saga
// sends once), the Message-ID it will carry (OutgoingMessageID) and the
// threading headers.
type OutgoingMail struct {
	OutgoingMailID string   `json:"outgoing_mail_id"`
	MessageID      string   `json:"message_id"`
	InReplyTo      string   `json:"in_reply_to,omitempty"`
	References     []string `json:"references,omitempty"`
}

// ErrorMailQueued queues an error mail (Template TemplateError or
// TemplateTicketClosed) to the sender of the mail CausedBy, sent from the
// inbound account AccountID's sender address.
type ErrorMailQueued struct {
	OutgoingMail
	TicketID  string    `json:"ticket_id,omitempty"`
	AccountID string    `json:"account_id"`
	Template  string    `json:"template"`
	To        Address   `json:"to"`
	Subject   string    `json:"subject"`
	Reason    string    `json:"reason"`
	QueuedAt  time.Time `json:"queued_at"`
	CausedBy  string    `json:"caused_by"`
}

// EventName implements Event.
func (ErrorMailQueued) EventName() string { return ErrorMailQueuedName }

// AutoReplyQueued queues the account's auto-reply template to the requester
// of a ticket just created from the mail CausedBy. Subject carries the
// ticket reference so that answers find the ticket.
type AutoReplyQueued struct {
	OutgoingMail
	TicketID  string    `json:"ticket_id"`
	AccountID string    `json:"account_id"`
	Template  string    `json:"template"`
	To        Address   `json:"to"`
	Subject   string    `json:"subject"`
	QueuedAt  time.Time `json:"queued_at"`
	CausedBy  string    `json:"caused_by"`
}

// EventName implements Event.
func (AutoReplyQueued) EventName() string { return AutoReplyQueuedName }

// NotificationQueued queues an internal notification of Kind (e.g.
// AutoMailCustomerAnswered) to the members of the ticket's resource: To
// holds their addresses as the directory had them when the mail was
// decided (MailInput.ResourceMembers). Events stored before To existed
// have none, and the saga records them as unsendable.
type NotificationQueued struct {
	OutgoingMail
	TicketID   string    `json:"ticket_id"`
	Kind       string    `json:"kind"`
	ResourceID string    `json:"resource_id,omitempty"`
	QueuedAt   time.Time `json:"queued_at"`
	CausedBy   string    `json:"caused_by"`
	To         []Address `json:"to,omitempty"`
	// Subject is the ticket's subject, for the notification's template.
	Subject string `json:"subject,omitempty"`
}

// EventName implements Event.
func (NotificationQueued) EventName() string { return NotificationQueuedName }

// AutoMailSuppressed records that an automatic mail of Kind that the rules
// would send was not queued, and why (loop protection, the kind switched
// off, the per-recipient limit).
type AutoMailSuppressed struct {
	TicketID string    `json:"ticket_id,omitempty"`
	Kind     string    `json:"kind"`
	To       string    `json:"to,omitempty"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
	CausedBy string    `json:"caused_by"`
}

// EventName implements Event.
func (AutoMailSuppressed) EventName() string { return AutoMailSuppressedName }

// ReplyQueued queues an agent's reply by mail on a ticket.
type ReplyQueued struct {
	OutgoingMail
	TicketID string    `json:"ticket_id"`
	To       []Address `json:"to"`
	Cc       []Address `json:"cc,omitempty"`
	Subject  string    `json:"subject"`
	Body     string    `json:"body"`
	QueuedAt time.Time `json:"queued_at"`
	Actor    string    `json:"actor"`
}

// EventName implements Event.
func (ReplyQueued) EventName() string { return ReplyQueuedName }
