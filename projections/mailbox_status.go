package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// MailboxStatusName is the subscriber name of the mailbox-status projection.
// Changing it makes the projection start again from the first event; bump
// the version suffix only together with a migration that empties the table.
// v2 (migration 0014) counts the mails from their intake events.
const MailboxStatusName = "projection.mailbox_status.v2"

// MailboxStatus projects, per inbound account, the last poll and its outcome
// (the server's exact words on failure) and the totals fetched, failed,
// oversize, skipped and deleted, into the table mailbox_status. It handles
// MailboxPolled and InboundAccountCreated/Updated/Deleted (for the name),
// SubscriberEventSetAside/SubscriberEventRetried of a mail's event (the
// account's mails that a subscriber set aside and nobody retried since, in
// table mailbox_set_aside, and the last reason), and the mails' events of
// record: fetched counts MailReceived, failed and oversize MailFailed,
// skipped MailSkipped. A poll killed mid-way records no MailboxPolled, but
// the mails it committed are counted all the same; deleted is the polls'
// own tally (a removal from the server is no event). MailboxDeliveryChanged
// says whether the account is pushed or polled.
//
// Idempotence: each row keeps the last applied version of the account's
// stream "mailbox-<id>" (poll_version), of its "mailbox-delivery-<id>"
// (delivery_version) and of "inbound-accounts" (account_version); an event
// at or below them changes nothing. A mail's event is counted once: its id
// goes into mailbox_counted in the same statement batch, and an id already
// there counts nothing. So a redelivered batch never counts twice. mailbox_set_aside is keyed by the
// subscriber and the event's position, and the last reason only moves
// forward in time.
type MailboxStatus struct {
	store  eventstore.Store
	reader Reader
	logger *slog.Logger
	// Options tunes the subscription (zero: the store's defaults, and the
	// types the projection reads).
	Options eventstore.SubscribeOptions
}

// mailboxStatusTypes are the events the projection reads.
var mailboxStatusTypes = []string{domain.MailboxPolledName, domain.InboundAccountCreatedName, domain.InboundAccountUpdatedName,
	domain.InboundAccountDeletedName, domain.SubscriberEventSetAsideName, domain.SubscriberEventRetriedName,
	domain.MailReceivedName, domain.MailFailedName, domain.MailSkippedName, domain.MailboxDeliveryChangedName}

// NewMailboxStatus returns the projection over store; reader reads its table
// for List. A nil logger discards.
func NewMailboxStatus(store eventstore.Store, reader Reader, logger *slog.Logger) *MailboxStatus {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &MailboxStatus{store: store, reader: reader, logger: logger}
}

// Name is the projection's subscriber name (for Store.Reached).
func (p *MailboxStatus) Name() string { return MailboxStatusName }

// Run keeps the table up to date until ctx ends; it returns ctx.Err() then,
// or the store's error when the subscription cannot go on. It takes the
// log in batches: an import of thousands of mails costs one count update
// per account and batch, not one per mail.
func (p *MailboxStatus) Run(ctx context.Context) error {
	opts := p.Options
	if opts.Types == nil {
		opts.Types = mailboxStatusTypes
	}
	if opts.BatchSize == 0 {
		// It reads the mails' events, bodies and all, as the intake does.
		opts.BatchSize = ticketing.IntakeBatchSize
	}
	err := p.store.SubscribeBatch(ctx, MailboxStatusName, p.HandleBatch, ticketing.WithSetAside(opts))
	if err != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("projections: %s: %w", MailboxStatusName, err)
	}
	return err
}

// Handle applies one event through tx, as HandleBatch does; it is
// exported so that tests and rebuild tools can feed events directly.
func (p *MailboxStatus) Handle(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
	return p.HandleBatch(ctx, tx, []eventstore.RecordedEvent{ev})
}

// HandleBatch applies a batch of events through tx; it is the
// subscription's handler. The mails' events are counted together at the
// end of the batch (counts commute with the other events' changes).
func (p *MailboxStatus) HandleBatch(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
	var mails []countedMail
	for _, ev := range evs {
		switch ev.Type {
		case domain.MailReceivedName, domain.MailFailedName, domain.MailSkippedName:
			var e struct {
				AccountID string `json:"account_id"`
				Oversize  bool   `json:"oversize"`
			}
			if err := json.Unmarshal(ev.Payload, &e); err != nil {
				if err := p.skip(ev, err); err != nil {
					return err
				}
				continue
			}
			if e.AccountID == "" {
				continue
			}
			c := countedMail{eventID: ev.ID, accountID: e.AccountID}
			switch {
			case ev.Type == domain.MailReceivedName:
				c.fetched = 1
			case ev.Type == domain.MailSkippedName:
				c.skipped = 1
			case e.Oversize:
				c.oversize = 1
			default:
				c.failed = 1
			}
			mails = append(mails, c)
		default:
			if err := p.handle(ctx, tx, ev); err != nil {
				return err
			}
		}
	}
	return p.count(ctx, tx, mails)
}

// countedMail is one mail's event as the counts see it.
type countedMail struct {
	eventID, accountID                 string
	fetched, failed, oversize, skipped int64
}

// countChunk bounds the rows of one INSERT into mailbox_counted; a fixed
// size keeps the statement texts few (prepared once on both stores).
const countChunk = 100

const addCounts = `INSERT INTO mailbox_status (account_id, fetched, failed, oversize, skipped)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id) DO UPDATE SET
	fetched = mailbox_status.fetched + excluded.fetched,
	failed = mailbox_status.failed + excluded.failed,
	oversize = mailbox_status.oversize + excluded.oversize,
	skipped = mailbox_status.skipped + excluded.skipped`

// count adds the mails' events not counted before to their accounts' rows:
// the ids are inserted into mailbox_counted, and only those the insert
// took (RETURNING) count.
func (p *MailboxStatus) count(ctx context.Context, tx eventstore.Tx, mails []countedMail) error {
	byID := make(map[string]countedMail, len(mails))
	for _, m := range mails {
		byID[m.eventID] = m
	}
	totals := map[string]*countedMail{}
	var accounts []string
	for start := 0; start < len(mails); start += countChunk {
		part := mails[start:min(start+countChunk, len(mails))]
		ph := make([]string, len(part))
		args := make([]any, len(part))
		for i, m := range part {
			ph[i], args[i] = fmt.Sprintf("($%d)", i+1), m.eventID
		}
		rows, err := tx.Query(ctx, `INSERT INTO mailbox_counted (event_id) VALUES `+strings.Join(ph, ", ")+
			` ON CONFLICT (event_id) DO NOTHING RETURNING event_id`, args...)
		if err != nil {
			return fmt.Errorf("projections: mailbox status: count %d mail events: %w", len(part), err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				_ = rows.Close()
				return fmt.Errorf("projections: mailbox status: count mail events: %w", err)
			}
			m := byID[id]
			t := totals[m.accountID]
			if t == nil {
				t = &countedMail{accountID: m.accountID}
				totals[m.accountID] = t
				accounts = append(accounts, m.accountID)
			}
			t.fetched, t.failed, t.oversize, t.skipped = t.fetched+m.fetched, t.failed+m.failed, t.oversize+m.oversize, t.skipped+m.skipped
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("projections: mailbox status: count mail events: %w", err)
		}
	}
	for _, id := range accounts {
		t := totals[id]
		if _, err := tx.Exec(ctx, addCounts, id, t.fetched, t.failed, t.oversize, t.skipped); err != nil {
			return fmt.Errorf("projections: mailbox status of %s: counts: %w", id, err)
		}
	}
	return nil
}

// handle applies one event other than a mail's.
func (p *MailboxStatus) handle(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case domain.MailboxPolledName:
		var e domain.MailboxPolled
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applyPoll(ctx, tx, e, ev.StreamVersion)
	case domain.MailboxDeliveryChangedName:
		var e domain.MailboxDeliveryChanged
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applyDelivery(ctx, tx, e, ev.StreamVersion)
	case domain.InboundAccountCreatedName, domain.InboundAccountUpdatedName:
		var e struct {
			Account struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"account"`
		}
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applyAccount(ctx, tx, e.Account.ID, e.Account.Name, false, ev.StreamVersion)
	case domain.InboundAccountDeletedName:
		var e domain.InboundAccountDeleted
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applyAccount(ctx, tx, e.AccountID, "", true, ev.StreamVersion)
	case domain.SubscriberEventSetAsideName:
		var e domain.SubscriberEventSetAside
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applySetAside(ctx, tx, e)
	case domain.SubscriberEventRetriedName:
		var e domain.SubscriberEventRetried
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			return p.skip(ev, err)
		}
		return p.applyRetried(ctx, tx, e)
	}
	return nil
}

// skip logs an event that cannot be decoded. Retrying would block every
// later event for ever, and the payload will not change; the view stays
// without it and the log says so.
func (p *MailboxStatus) skip(ev eventstore.RecordedEvent, err error) error {
	p.logger.Error("mailbox status: undecodable event skipped", "position", ev.Position, "type", ev.Type,
		"stream", ev.Stream, "err", err)
	return nil
}

// upsertPoll applies a recorded poll: its outcome and the mails it
// removed. The mails it fetched, failed or skipped are counted from their
// own events (see count), which a killed poll does not lose.
const upsertPoll = `INSERT INTO mailbox_status (account_id, last_poll_at, last_finished_at, last_error, server_reply,
	consecutive_failures, polls, deleted, poll_version)
VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)
ON CONFLICT (account_id) DO UPDATE SET
	last_poll_at = excluded.last_poll_at,
	last_finished_at = excluded.last_finished_at,
	last_error = excluded.last_error,
	server_reply = excluded.server_reply,
	consecutive_failures = excluded.consecutive_failures,
	polls = mailbox_status.polls + 1,
	deleted = mailbox_status.deleted + excluded.deleted,
	poll_version = excluded.poll_version
WHERE mailbox_status.poll_version < excluded.poll_version`

func (p *MailboxStatus) applyPoll(ctx context.Context, tx eventstore.Tx, e domain.MailboxPolled, version int64) error {
	if e.AccountID == "" {
		return nil
	}
	_, err := tx.Exec(ctx, upsertPoll, e.AccountID, nullTime(e.StartedAt), nullTime(e.FinishedAt), e.Error, e.ServerReply,
		int64(e.Failures), int64(e.Deleted), version)
	if err != nil {
		return fmt.Errorf("projections: mailbox status of %s: %w", e.AccountID, err)
	}
	return nil
}

// upsertDelivery sets whether the account is pushed or polled; a reason
// (a pushed account fell back to polling) is kept as the last push error.
const upsertDelivery = `INSERT INTO mailbox_status (account_id, delivery, delivery_since, last_push_error, last_push_error_at, delivery_version)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id) DO UPDATE SET
	delivery = excluded.delivery,
	delivery_since = excluded.delivery_since,
	last_push_error = CASE WHEN excluded.last_push_error = '' THEN mailbox_status.last_push_error ELSE excluded.last_push_error END,
	last_push_error_at = CASE WHEN excluded.last_push_error = '' THEN mailbox_status.last_push_error_at ELSE excluded.last_push_error_at END,
	delivery_version = excluded.delivery_version
WHERE mailbox_status.delivery_version < excluded.delivery_version`

func (p *MailboxStatus) applyDelivery(ctx context.Context, tx eventstore.Tx, e domain.MailboxDeliveryChanged, version int64) error {
	if e.AccountID == "" {
		return nil
	}
	delivery := e.Delivery
	if delivery != domain.DeliveryPushed {
		delivery = domain.DeliveryPolled
	}
	var reasonAt sql.NullTime
	if e.Reason != "" {
		reasonAt = nullTime(e.At)
	}
	if _, err := tx.Exec(ctx, upsertDelivery, e.AccountID, delivery, nullTime(e.At), e.Reason, reasonAt, version); err != nil {
		return fmt.Errorf("projections: mailbox status of %s: delivery: %w", e.AccountID, err)
	}
	return nil
}

const upsertAccount = `INSERT INTO mailbox_status (account_id, name, account_deleted, account_version)
VALUES ($1, $2, $3, $4)
ON CONFLICT (account_id) DO UPDATE SET
	name = CASE WHEN excluded.account_deleted THEN mailbox_status.name ELSE excluded.name END,
	account_deleted = excluded.account_deleted,
	account_version = excluded.account_version
WHERE mailbox_status.account_version < excluded.account_version`

func (p *MailboxStatus) applyAccount(ctx context.Context, tx eventstore.Tx, id, name string, deleted bool, version int64) error {
	if id == "" {
		return nil
	}
	if _, err := tx.Exec(ctx, upsertAccount, id, name, deleted, version); err != nil {
		return fmt.Errorf("projections: mailbox status of %s: %w", id, err)
	}
	return nil
}

const (
	upsertSetAside = `INSERT INTO mailbox_set_aside (subscriber, position, account_id, event_id, error, set_aside_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (subscriber, position) DO UPDATE SET
	account_id = excluded.account_id,
	event_id = excluded.event_id,
	error = excluded.error,
	set_aside_at = excluded.set_aside_at`
	upsertLastSetAside = `INSERT INTO mailbox_status (account_id, last_set_aside_error, last_set_aside_at)
VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO UPDATE SET
	last_set_aside_error = excluded.last_set_aside_error,
	last_set_aside_at = excluded.last_set_aside_at
WHERE mailbox_status.last_set_aside_at IS NULL OR mailbox_status.last_set_aside_at <= excluded.last_set_aside_at`
)

// applySetAside counts a mail's event set aside on its account's row.
func (p *MailboxStatus) applySetAside(ctx context.Context, tx eventstore.Tx, e domain.SubscriberEventSetAside) error {
	if e.AccountID == "" {
		return nil // not a mail's event
	}
	at := nullTime(e.At)
	if _, err := tx.Exec(ctx, upsertSetAside, e.Subscriber, e.Position, e.AccountID, e.EventID, e.Error, at); err != nil {
		return fmt.Errorf("projections: mailbox status of %s: set-aside event %d: %w", e.AccountID, e.Position, err)
	}
	if _, err := tx.Exec(ctx, upsertLastSetAside, e.AccountID, e.Error, at); err != nil {
		return fmt.Errorf("projections: mailbox status of %s: %w", e.AccountID, err)
	}
	return nil
}

// applyRetried stops counting a set-aside event that was asked to be
// handled again (if it fails again, it is set aside again).
func (p *MailboxStatus) applyRetried(ctx context.Context, tx eventstore.Tx, e domain.SubscriberEventRetried) error {
	if _, err := tx.Exec(ctx, `DELETE FROM mailbox_set_aside WHERE subscriber = $1 AND position = $2`, e.Subscriber, e.Position); err != nil {
		return fmt.Errorf("projections: mailbox status: retried event %d of %s: %w", e.Position, e.Subscriber, err)
	}
	return nil
}

// nullTime stores the zero time as NULL and others in UTC.
func nullTime(t time.Time) sql.NullTime {
	if t.IsZero() {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: t.UTC(), Valid: true}
}

// timeOrNil returns a stored time in UTC, nil for NULL.
func timeOrNil(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

// MailboxStatusRow is one account's row of the view.
type MailboxStatusRow struct {
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	// LastPollAt is when the last poll started, nil before the first.
	LastPollAt     *time.Time `json:"last_poll_at"`
	LastFinishedAt *time.Time `json:"last_finished_at"`
	// LastError is empty when the last poll succeeded; ServerReply holds the
	// server's exact words when the failure came from the server.
	LastError           string `json:"last_error"`
	ServerReply         string `json:"server_reply"`
	ConsecutiveFailures int64  `json:"consecutive_failures"`
	Polls               int64  `json:"polls"`
	Fetched             int64  `json:"fetched"`
	Failed              int64  `json:"failed"`
	Oversize            int64  `json:"oversize"`
	Skipped             int64  `json:"skipped"`
	Deleted             int64  `json:"deleted"`
	// SetAside counts the account's mails a subscriber (the intake, a view)
	// gave up on after its handler kept failing, and that were not retried
	// since (ledgerdesk events retry); LastSetAsideError is the reason of
	// the last one set aside, LastSetAsideAt when.
	SetAside          int64      `json:"set_aside"`
	LastSetAsideError string     `json:"last_set_aside_error"`
	LastSetAsideAt    *time.Time `json:"last_set_aside_at"`
	// Delivery is domain.DeliveryPushed (an IMAP IDLE connection watches
	// every folder) or domain.DeliveryPolled, since DeliverySince; both
	// empty until the scheduler has run the account. LastPushError is the last reason the
	// account fell back to polling (an IDLE connection's error, a server
	// without IDLE), LastPushErrorAt when; both stay once it is pushed
	// again.
	Delivery        string     `json:"delivery"`
	DeliverySince   *time.Time `json:"delivery_since"`
	LastPushError   string     `json:"last_push_error"`
	LastPushErrorAt *time.Time `json:"last_push_error_at"`
}

// List returns the rows of accounts that exist, by name then id.
func (p *MailboxStatus) List(ctx context.Context) ([]MailboxStatusRow, error) {
	rows, err := p.reader.Query(ctx, `SELECT m.account_id, m.name, m.last_poll_at, m.last_finished_at, m.last_error, m.server_reply,
		m.consecutive_failures, m.polls, m.fetched, m.failed, m.oversize, m.skipped, m.deleted,
		(SELECT count(*) FROM mailbox_set_aside s WHERE s.account_id = m.account_id), m.last_set_aside_error, m.last_set_aside_at,
		m.delivery, m.delivery_since, m.last_push_error, m.last_push_error_at
		FROM mailbox_status m WHERE NOT m.account_deleted ORDER BY m.name, m.account_id`)
	if err != nil {
		return nil, fmt.Errorf("projections: list mailbox status: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []MailboxStatusRow{}
	for rows.Next() {
		var (
			r             MailboxStatusRow
			poll, finish  sql.NullTime
			asideAt       sql.NullTime
			since, pushAt sql.NullTime
			failures      int64
			counts        [6]int64
			lastErr, repl string
		)
		if err := rows.Scan(&r.AccountID, &r.Name, &poll, &finish, &lastErr, &repl, &failures,
			&counts[0], &counts[1], &counts[2], &counts[3], &counts[4], &counts[5],
			&r.SetAside, &r.LastSetAsideError, &asideAt, &r.Delivery, &since, &r.LastPushError, &pushAt); err != nil {
			return nil, fmt.Errorf("projections: list mailbox status: %w", err)
		}
		r.LastError, r.ServerReply, r.ConsecutiveFailures = lastErr, repl, failures
		r.Polls, r.Fetched, r.Failed, r.Oversize, r.Skipped, r.Deleted = counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
		if poll.Valid {
			t := poll.Time.UTC()
			r.LastPollAt = &t
		}
		if finish.Valid {
			t := finish.Time.UTC()
			r.LastFinishedAt = &t
		}
		r.LastSetAsideAt, r.DeliverySince, r.LastPushErrorAt = timeOrNil(asideAt), timeOrNil(since), timeOrNil(pushAt)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projections: list mailbox status: %w", err)
	}
	return out, nil
}
