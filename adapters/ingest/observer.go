package ingest

import (
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Observer is told what the scheduler and its sinks do, for the metrics;
// cmd wires the Prometheus implementation (adapters/metrics). Calls come
// from every account's worker at once and lie on the polling path, so an
// implementation must be safe for concurrent use and must not block.
type Observer interface {
	// Polled reports one finished poll (not one a shutdown interrupted).
	Polled(PollReport)
	// Committed reports one commit of a batch of mails of an account.
	Committed(accountID string, mails int, took time.Duration, err error)
	// Mode reports how an account's new mail is noticed: pushed (IMAP
	// IDLE) or polled. The scheduler reports polled when an account's
	// worker starts; push code reports the changes (IDLE up or down).
	Mode(accountID string, pushed bool)
	// Stopped reports that an account's worker ended: the account was
	// disabled, deleted or changed (a changed one starts again at once).
	Stopped(accountID string)
}

// PollReport is one poll of an account as the Observer sees it.
type PollReport struct {
	AccountID  string
	FinishedAt time.Time
	Took       time.Duration
	Result     mailsource.PollResult
	// Err is the poll's error; nil when it succeeded.
	Err error
	// Failures counts the polls in a row that failed, this one included.
	Failures int
}

// nopObserver observes nothing (no Observer configured).
type nopObserver struct{}

func (nopObserver) Polled(PollReport)                           {}
func (nopObserver) Committed(string, int, time.Duration, error) {}
func (nopObserver) Mode(string, bool)                           {}
func (nopObserver) Stopped(string)                              {}
