package domain

import "time"

// Stored name and schema version of the poll outcome event.
const (
	MailboxPolledName          = "MailboxPolled"
	MailboxPolledSchemaVersion = 1
)

// MailboxPolled records one poll of an inbound account: when it ran, what it
// committed, and on failure the server's exact words, so the mailbox-status
// view can show an admin why a mailbox is not being read. Failures counts the
// polls in a row that failed, this one included (0 after a good poll); an
// account with many is flagged, not silently retried for ever.
//
// Since issue 14 a poll is recorded only when it tells something new: it
// committed, finished or removed mails, or its outcome (error or success)
// differs from the last recorded one. An idle poll, or the same failure
// again, is not recorded (the scheduler keeps those in memory), so Failures
// is the count when that failure was first recorded.
type MailboxPolled struct {
	AccountID   string    `json:"account_id"`
	StartedAt   time.Time `json:"started_at"`
	FinishedAt  time.Time `json:"finished_at"`
	Fetched     int       `json:"fetched"`
	Failed      int       `json:"failed"`
	Oversize    int       `json:"oversize"`
	Skipped     int       `json:"skipped"`
	Deleted     int       `json:"deleted"`
	Error       string    `json:"error,omitempty"`
	ServerReply string    `json:"server_reply,omitempty"`
	Failures    int       `json:"failures,omitempty"`
}

// EventName implements Event.
func (MailboxPolled) EventName() string { return MailboxPolledName }

// Stored name and schema version of the delivery-mode event.
const (
	MailboxDeliveryChangedName          = "MailboxDeliveryChanged"
	MailboxDeliveryChangedSchemaVersion = 1
)

// How an inbound account's new mail reaches ledgerdesk.
const (
	// DeliveryPushed: an IMAP IDLE connection is open on every folder of
	// the account, and new mail is fetched as soon as the server tells.
	DeliveryPushed = "pushed"
	// DeliveryPolled: the account is read on its poll interval only (push
	// off, not IMAP, the server offers no IDLE, or an IDLE connection is
	// down and being re-established).
	DeliveryPolled = "polled"
)

// MailboxDeliveryChanged records that an inbound account's new mail now
// arrives by push or by polling, since At. Reason says why an account
// that should be pushed is polled: the IDLE connection's error, or that
// the server offers no IDLE; it is empty for an account whose push is
// off. Only changes are recorded (and the first state of each run of the
// service), so a healthy pushed mailbox adds nothing to the log.
type MailboxDeliveryChanged struct {
	AccountID string    `json:"account_id"`
	Delivery  string    `json:"delivery"`
	At        time.Time `json:"at"`
	Reason    string    `json:"reason,omitempty"`
}

// EventName implements Event.
func (MailboxDeliveryChanged) EventName() string { return MailboxDeliveryChangedName }
