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
