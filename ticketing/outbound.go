package ticketing

// The outbound saga: it takes on every queued mail (AutoReplyQueued,
// ErrorMailQueued, ReplyQueued, NotificationQueued) exactly once, applies
// loop protection, and sends it with the outgoing account that the ticket's
// resource, else its category, else the default names.
//
// Two halves share the tables of migration 0006:
//
//   - The subscription (HandleBatch) runs in the transaction that advances
//     its checkpoint, a batch of events at a time; it reads only the
//     queued-mail events (SubscribeOptions.Types). It inserts the batch's
//     mails into outbound_mails with one statement, keyed by their
//     OutgoingMailID (a re-delivered or re-decided event inserts nothing),
//     and for automatic mails it applies RULES.md section 4 there, where
//     the per-recipient counter in outbound_recipients is consistent with
//     the log: a suppressed mail gets OutboundMailSuppressed with the reason.
//   - The sender (Run's workers) claims a batch of due rows, committing
//     state "sending" and the attempt count before it talks SMTP or Graph;
//     then for each mail it renders the template, builds the message and
//     submits it: over the account's pooled SMTP connection, or for a
//     graph account as raw MIME to Graph's sendMail (adapters/graphsend),
//     the same bytes either way; then it commits the batch's
//     OutboundMailSent (with the server's reply) and OutboundMailFailed
//     events in one transaction, which also claims the worker's next batch
//     (one durable write per batch besides the take-on). Workers claim one
//     at a time. Temporary failures are retried with exponential back-off
//     up to MaxAttempts, and not before the server's Retry-After when it
//     gave one (Graph's 429 and 503).
//
// Delivery guarantee. The Message-ID is decided when the mail is queued
// (domain.OutgoingMessageID) and stored in the queued event before any
// attempt, so every attempt of one mail carries the same Message-ID, and a
// re-delivered queued event never sends again (outbound_mails is keyed by
// the OutgoingMailID). A mail is sent twice only when the process dies
// after the server's 250 reply to DATA (Graph's 202 Accepted) and before
// its batch's records are committed: rows found in "sending" when the
// sender starts are sent again (at least once, never lost). That window
// is bounded in time by one batch (its submissions, which stop being
// started after BatchTime [100ms], plus one local transaction) and in size
// by Workers * BatchSize mails [4 * 128];
// the second copy is the same mail with the same Message-ID, which
// receiving systems and mail clients fold into one. A broken connection
// after the 250 (QUIT failing, say) is not in the window: the send counts
// as done. Shutdown (ctx cancelled) never abandons an accepted mail: the
// batch's records are committed without the cancelled context.
//
// Several instances. A claimed mail carries its owner (Instance) and the
// claim's expiry (ClaimTTL). Recovery, at start and every recoverEvery,
// makes due again only the mails in "sending" whose owner is gone
// (OwnersGone) and whose claim expired; a worker starts no submission
// after half its claim's time, so a claim taken back is never being sent.
// cmd runs one saga per database at a time (adapters/lease.Exclusive);
// the claims keep a saga taking over from touching what a live instance
// sends.
//
// Each mail's fate goes to its own stream (domain.OutboundMailStream), so
// the saga never conflicts with the agents' or the intake's writes to the
// ticket.

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graphsend"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// OutboundSubscriber is the saga's subscriber name.
const OutboundSubscriber = "saga.outbound.v1"

// OutboundAccountsStream is the stream of the outgoing accounts registry.
const OutboundAccountsStream = "outbound-accounts"

// Take-on batch sizes: PostgreSQL takes on more mails per transaction
// with fewer commits and per-batch reads; on the embedded store, whose one
// writer the workers' records wait for, smaller take-ons keep them moving
// (benchmarked with 20, 40, 60, 100 and 250).
const (
	TakeOnBatchPostgres = 250
	TakeOnBatchEmbedded = 60
)

// notDue is next_attempt_at of rows that are not waiting for an attempt,
// so that the due index holds them past every real time.
const notDue int64 = math.MaxInt64

// The claim's SQL and the due index's predicate (migration 0008) spell
// notDue as 9223372036854775807; this fails to compile if it changes.
var _ [notDue - 9223372036854775807]struct{}

// Row states of outbound_mails (stateRelease only in an outcome: a
// claimed mail that was not attempted goes back to the queue).
const (
	stateRelease = "release"
	stateP       = "pending"
	stateSending = "sending"
	stateRetry   = "retry"
	stateSent    = "sent"
	stateFailed  = "failed"
	stateSupp    = "suppressed"
)

// Opener opens sealed secrets (*secretbox.Box).
type Opener interface {
	Open(sealed string) (string, error)
}

// OutboundOptions configure the saga.
type OutboundOptions struct {
	Store   eventstore.Store
	Secrets Opener // nil: accounts must not have secrets
	Now     func() time.Time
	Logger  *slog.Logger
	// Sender submits mail [a new smtpsend.Sender, closed by Run].
	Sender *smtpsend.Sender
	// GraphSender posts the mail of graph accounts to sendMail [a new
	// graphsend.Sender].
	GraphSender *graphsend.Sender
	// Workers send in parallel [4]; BatchSize rows are claimed at once [128].
	Workers   int
	BatchSize int
	// BatchTime ends a batch's sending early: once this much time has
	// passed since its first submission, the mails of the batch not yet
	// submitted go back to the queue unattempted, and the outcomes are
	// committed [100ms]. It bounds the at-least-once window in time when
	// the server is slow.
	BatchTime time.Duration
	// MaxAttempts bounds the tries of a mail with temporary failures [8].
	MaxAttempts int
	// Backoff is the pause after the first failed attempt, doubling up to
	// MaxBackoff [30s, 1h].
	Backoff, MaxBackoff time.Duration
	// PollInterval bounds how long a due mail waits [500ms].
	PollInterval time.Duration
	// RootCAs verifies SMTP and IMAP servers [system pool].
	RootCAs *x509.CertPool
	// AccessToken gets an OAuth2 access token of a connection for a
	// protocol (adapters/oauth.Manager.AccessToken): XOAUTH2 for SMTP and
	// for the Sent folder's IMAP login. Nil: such accounts fail with a
	// reason.
	AccessToken func(ctx context.Context, connectionID, protocol string) (string, error)
	// RenewAccessToken gets another token after a server refused rejected
	// (adapters/oauth.Manager.RenewAccessToken): Graph's 401 is retried
	// once with it. Nil: a 401 is recorded without a retry.
	RenewAccessToken func(ctx context.Context, connectionID, protocol, rejected string) (string, error)
	// GraphBaseURL returns the Microsoft Graph root of the OAuth
	// connection a graph account sends through (adapters/oauth.Manager.
	// GraphBaseURL; graph_base_url, for national clouds). Nil: graph
	// accounts fail with a reason.
	GraphBaseURL func(ctx context.Context, connectionID string) (string, error)
	// LocalName is the EHLO name [the Message-ID domain, else localhost].
	LocalName string
	// TakeOnBatch is how many queued mails the subscription takes on in
	// one transaction [100]; see TakeOnBatchPostgres, TakeOnBatchEmbedded.
	TakeOnBatch int
	// MaxAge suppresses mails queued longer ago than this when the saga
	// takes them on [24h], so that a saga started on an old log (a new
	// installation of this version, a renamed subscriber) does not send
	// yesterday's auto-replies.
	MaxAge time.Duration
	// Instance names this process as the owner of its claims [a random
	// name per start].
	Instance string
	// OwnersGone reports which of the owners of mails in "sending" are no
	// longer running (adapters/lease.Coordinator.OwnersGone). Nil: one
	// instance per database (the embedded store), so every owner but
	// Instance is gone, and its claims are taken back without waiting for
	// their expiry.
	OwnersGone func(ctx context.Context, owners []string) (map[string]bool, error)
	// ClaimTTL is how long a claim holds [15s]; see the package comment.
	ClaimTTL time.Duration
}

// recoverEvery is how often the saga looks for the claims of instances
// that are gone.
const recoverEvery = 2 * time.Second

// Outbound is the outbound saga.
type Outbound struct {
	o    OutboundOptions
	wake chan struct{}

	// The subscription's folds read through its transaction and the
	// workers' through the store, each set under its own lock: a worker
	// waiting for a pool connection must never block the subscription,
	// which holds one.
	guardMu       sync.Mutex
	guardOutbound fold[domain.OutboundAccounts]
	guardInbound  fold[domain.InboundAccounts]

	mu        sync.Mutex
	outbound  fold[domain.OutboundAccounts]
	inbound   fold[domain.InboundAccounts]
	settings  fold[domain.Settings]
	templates fold[domain.Templates]
	resources fold[domain.Resources]

	// claimMu lets one worker claim at a time: workers that selected the
	// same due rows concurrently would otherwise wait for each other's row
	// locks (PostgreSQL) and then find them taken.
	claimMu sync.Mutex

	// crashAfterAccept, set by tests, makes a worker stop as if the
	// process died right after the server accepted a mail.
	crashAfterAccept func(outgoingMailID string) bool
}

// NewOutbound returns the saga; Run starts it.
func NewOutbound(o OutboundOptions) *Outbound {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 128
	}
	if o.BatchTime <= 0 {
		o.BatchTime = 100 * time.Millisecond
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 8
	}
	if o.Backoff <= 0 {
		o.Backoff = 30 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Hour
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.TakeOnBatch <= 0 {
		o.TakeOnBatch = 100
	}
	if o.GraphSender == nil {
		o.GraphSender = graphsend.NewSender()
	}
	if o.Instance == "" {
		o.Instance = randomInstance()
	}
	if o.ClaimTTL <= 0 {
		o.ClaimTTL = 15 * time.Second
	}
	return &Outbound{
		o: o, wake: make(chan struct{}, 1),
		guardOutbound: fold[domain.OutboundAccounts]{stream: OutboundAccountsStream, evolve: domain.EvolveOutboundAccounts},
		guardInbound:  fold[domain.InboundAccounts]{stream: InboundAccountsStream, evolve: domain.EvolveInboundAccounts},
		outbound:      fold[domain.OutboundAccounts]{stream: OutboundAccountsStream, evolve: domain.EvolveOutboundAccounts},
		inbound:       fold[domain.InboundAccounts]{stream: InboundAccountsStream, evolve: domain.EvolveInboundAccounts},
		settings:      fold[domain.Settings]{stream: SettingsStream, evolve: domain.EvolveSettings, state: domain.DefaultSettings()},
		templates:     fold[domain.Templates]{stream: TemplatesStream, evolve: domain.EvolveTemplates},
		resources:     fold[domain.Resources]{stream: domain.ResourcesStream, evolve: domain.EvolveResources},
	}
}

// fold is a cached fold of one registry stream that reads only the events
// appended since its last use, through whichever reader the caller has (a
// Tx inside the subscription, the store elsewhere).
type fold[S any] struct {
	stream  string
	evolve  func(S, domain.Event) S
	state   S
	version int64
}

type streamReader func(ctx context.Context, stream string, from, to int64) ([]eventstore.RecordedEvent, error)

func (f *fold[S]) load(ctx context.Context, read streamReader) (S, error) {
	evs, err := read(ctx, f.stream, f.version+1, 0)
	if err != nil {
		return f.state, fmt.Errorf("read %s: %w", f.stream, err)
	}
	for _, re := range evs {
		if re.StreamVersion != f.version+1 {
			continue
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return f.state, fmt.Errorf("read %s: %w", f.stream, err)
		}
		f.state = f.evolve(f.state, ev)
		f.version = re.StreamVersion
	}
	return f.state, nil
}

// Run runs the subscription and the sender until ctx is done.
func (s *Outbound) Run(ctx context.Context) error {
	if s.o.Sender == nil {
		s.o.Sender = smtpsend.NewSender()
		defer func() { _ = s.o.Sender.Close() }() // the saga stops; nothing left to flush
	}
	if err := s.recover(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, s.o.Workers+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- s.o.Store.SubscribeBatch(ctx, OutboundSubscriber, s.HandleBatch, s.takeOnOptions())
		cancel()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.recoverEvery(ctx)
	}()
	for range s.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.work(ctx); err != nil && ctx.Err() == nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return fmt.Errorf("ticketing: outbound: %w", errors.Join(all...))
	}
	return ctx.Err()
}

// recoverEvery runs recover until ctx ends: an instance that dies while
// this saga runs leaves claims that only its death frees.
func (s *Outbound) recoverEvery(ctx context.Context) {
	t := time.NewTicker(recoverEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.recover(ctx); err != nil && ctx.Err() == nil {
			s.o.Logger.Error("outbound: recover", "err", err)
		}
	}
}

// recover makes due again the mails that a stopped instance was sending
// (the documented at-least-once window): those in "sending" whose owner is
// gone and, with several instances, whose claim expired. The claims of
// live instances, this one's included, are left alone.
func (s *Outbound) recover(ctx context.Context) error {
	var owners []string
	err := s.o.Store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		owners = owners[:0]
		rows, err := tx.Query(ctx, `SELECT DISTINCT claimed_by FROM outbound_mails WHERE state = $1`, stateSending)
		if err != nil {
			return err
		}
		for rows.Next() {
			var o string
			if err := rows.Scan(&o); err != nil {
				_ = rows.Close()
				return err
			}
			owners = append(owners, o)
		}
		return errors.Join(rows.Err(), rows.Close())
	})
	if err != nil {
		return fmt.Errorf("ticketing: outbound: recover in-flight mails: %w", err)
	}
	if len(owners) == 0 {
		return nil
	}
	gone := map[string]bool{}
	expiredBefore := int64(math.MaxInt64) // one instance: no need to wait for the expiry
	if s.o.OwnersGone != nil {
		if gone, err = s.o.OwnersGone(ctx, owners); err != nil {
			return fmt.Errorf("ticketing: outbound: recover in-flight mails: %w", err)
		}
		expiredBefore = s.o.Now().UnixMilli()
	} else {
		for _, o := range owners {
			gone[o] = o != s.o.Instance
		}
	}
	var n int64
	for _, o := range owners {
		if !gone[o] || o == s.o.Instance {
			continue
		}
		err := s.o.Store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			m, err := tx.Exec(ctx, `UPDATE outbound_mails SET state = $1, next_attempt_at = $2
				WHERE state = $3 AND claimed_by = $4 AND claim_expires_at < $5`,
				stateRetry, s.o.Now().UnixMilli(), stateSending, o, expiredBefore)
			n += m
			return err
		})
		if err != nil {
			return fmt.Errorf("ticketing: outbound: recover the mails of instance %q: %w", o, err)
		}
	}
	if n > 0 {
		s.o.Logger.Warn("outbound: mails were in flight when their instance stopped; sending them again with their Message-IDs", "count", n)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// randomInstance names a saga that was given no Instance.
func randomInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return "saga-" + hex.EncodeToString(b)
}

// queued is a queued-mail event in the form the saga uses.
type queued struct {
	domain.OutgoingMail
	Kind      string
	TicketID  string
	AccountID string // inbound account of auto-replies and error mails
	Template  string
	To        []domain.Address
	Cc        []domain.Address
	Subject   string
	Body      string
	Reason    string
	CausedBy  string
	QueuedAt  time.Time
	Automatic bool
	// Unsendable says why a mail cannot be sent at all, "" when it can.
	Unsendable string
}

func toQueued(ev domain.Event) (queued, bool) {
	switch e := ev.(type) {
	case domain.AutoReplyQueued:
		return queued{OutgoingMail: e.OutgoingMail, Kind: domain.AutoMailNewTicket, TicketID: e.TicketID, AccountID: e.AccountID,
			Template: e.Template, To: []domain.Address{e.To}, Subject: e.Subject, CausedBy: e.CausedBy, QueuedAt: e.QueuedAt, Automatic: true}, true
	case domain.ErrorMailQueued:
		kind := domain.AutoMailError
		if e.Template == domain.TemplateTicketClosed {
			kind = domain.AutoMailTicketClosed
		}
		return queued{OutgoingMail: e.OutgoingMail, Kind: kind, TicketID: e.TicketID, AccountID: e.AccountID, Template: e.Template,
			To: []domain.Address{e.To}, Subject: e.Subject, Reason: e.Reason, CausedBy: e.CausedBy, QueuedAt: e.QueuedAt, Automatic: true}, true
	case domain.ReplyQueued:
		return queued{OutgoingMail: e.OutgoingMail, Kind: domain.OutgoingReply, TicketID: e.TicketID, Template: TemplateReply,
			To: e.To, Cc: e.Cc, Subject: e.Subject, Body: e.Body, QueuedAt: e.QueuedAt}, true
	case domain.NotificationQueued:
		q := queued{OutgoingMail: e.OutgoingMail, Kind: e.Kind, TicketID: e.TicketID, Template: e.Kind, To: e.To, Subject: e.Subject,
			CausedBy: e.CausedBy, QueuedAt: e.QueuedAt, Automatic: true}
		if len(e.To) == 0 {
			q.Unsendable = "the members of resource " + e.ResourceID + " have no known mail addresses"
		}
		return q, true
	}
	return queued{}, false
}

// takeOnOptions are the saga subscription's: only the queued-mail events
// (the database skips the rest of the log), TakeOnBatch at a time.
func (s *Outbound) takeOnOptions() eventstore.SubscribeOptions {
	return WithSetAside(eventstore.SubscribeOptions{BatchSize: s.o.TakeOnBatch, Types: queuedTypes})
}

// queuedTypes are the events the saga takes on; its subscription reads
// no others.
var queuedTypes = []string{domain.AutoReplyQueuedName, domain.ErrorMailQueuedName, domain.ReplyQueuedName, domain.NotificationQueuedName}

func isQueuedType(t string) bool { return slices.Contains(queuedTypes, t) }

// Handle takes on one event (HandleBatch for a batch of one).
func (s *Outbound) Handle(ctx context.Context, tx eventstore.Tx, re eventstore.RecordedEvent) error {
	return s.HandleBatch(ctx, tx, []eventstore.RecordedEvent{re})
}

// takeOnColumns is how many values HandleBatch's INSERT binds per mail
// (the constant attempts = 0 comes after them).
const takeOnColumns = 11

// takeOn is a queued mail of a subscription batch.
type takeOn struct {
	q        queued
	re       eventstore.RecordedEvent
	queuedAt time.Time
}

// recipientAt is an automatic mail counted against its recipient's limit.
type recipientAt struct {
	recipient string
	at        time.Time
}

// HandleBatch is the subscription handler: it takes on each queued mail of
// a batch once, with one INSERT for the batch's mails (and one for their
// recipients) in the checkpoint's transaction.
func (s *Outbound) HandleBatch(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
	var takes []takeOn
	for _, re := range evs {
		if !isQueuedType(re.Type) {
			continue
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("ticketing: outbound: event at position %d: %w", re.Position, err)
		}
		q, _ := toQueued(ev)
		if q.OutgoingMailID == "" {
			return fmt.Errorf("ticketing: outbound: %s at position %d has no outgoing mail id", re.Type, re.Position)
		}
		queuedAt := q.QueuedAt
		if queuedAt.IsZero() {
			queuedAt = re.Metadata.OccurredAt
		}
		takes = append(takes, takeOn{q: q, re: re, queuedAt: queuedAt})
	}
	if len(takes) == 0 {
		return nil
	}
	// Mails taken on before (a re-delivery or a re-decided mail) are
	// skipped, and so is a second event for one mail within the batch.
	seen, err := s.takenOn(ctx, tx, takes)
	if err != nil {
		return fmt.Errorf("ticketing: outbound: %w", err)
	}
	facts, err := s.readGuardFacts(ctx, tx, takes)
	if err != nil {
		return fmt.Errorf("ticketing: outbound: guard: %w", err)
	}
	var (
		mails, recipients []any
		outcomes          []eventstore.AppendRequest
	)
	now := s.o.Now().UnixMilli()
	for _, t := range takes {
		q := t.q
		if seen[q.OutgoingMailID] {
			continue
		}
		seen[q.OutgoingMailID] = true
		code, reason := s.guard(q, t.queuedAt, &facts)
		state, dueAt := stateP, now
		if code != "" {
			state, dueAt = stateSupp, notDue
		}
		mails = append(mails, q.OutgoingMailID, q.Kind, q.TicketID, q.MessageID, t.re.Type, t.re.SchemaVersion, string(t.re.Payload), state,
			dueAt, t.queuedAt.UnixMilli(), boolInt(code != ""))
		switch {
		case code != "":
			to := ""
			if len(q.To) > 0 {
				to = q.To[0].Email
			}
			sup := domain.OutboundMailSuppressed{OutgoingMailID: q.OutgoingMailID, TicketID: q.TicketID, Kind: q.Kind, To: to,
				Code: code, Reason: reason, At: t.queuedAt}
			req, err := outcomeRequest(q.OutgoingMailID, 0, sup, t.re.ID)
			if err != nil {
				return fmt.Errorf("ticketing: outbound: %w", err)
			}
			outcomes = append(outcomes, req)
		case q.Automatic:
			for _, a := range q.To {
				r := normalizeAddr(a.Email)
				recipients = append(recipients, r, q.OutgoingMailID, t.queuedAt.UnixMilli())
				facts.counted = append(facts.counted, recipientAt{recipient: r, at: t.queuedAt})
			}
		}
	}
	if len(mails) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO outbound_mails (outgoing_mail_id, kind, ticket_id, message_id, event_type, schema_version,
		payload, state, next_attempt_at, queued_at, stream_version, attempts) VALUES `+valueRows(len(mails)/takeOnColumns, takeOnColumns, "0")+`
		ON CONFLICT (outgoing_mail_id) DO NOTHING`, mails...); err != nil {
		return fmt.Errorf("ticketing: outbound: take on %d mails: %w", len(mails)/takeOnColumns, err)
	}
	if len(recipients) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO outbound_recipients (recipient, outgoing_mail_id, queued_at) VALUES `+
			valueRows(len(recipients)/3, 3, "")+` ON CONFLICT (recipient, outgoing_mail_id) DO NOTHING`, recipients...); err != nil {
			return fmt.Errorf("ticketing: outbound: count %d recipients: %w", len(recipients)/3, err)
		}
	}
	if len(outcomes) > 0 {
		if _, err := tx.Append(ctx, outcomes...); err != nil {
			return fmt.Errorf("ticketing: outbound: record %d suppressed mails: %w", len(outcomes), err)
		}
	}
	if len(outcomes) < len(mails)/takeOnColumns {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// takenOn returns which of the mails outbound_mails already holds.
func (s *Outbound) takenOn(ctx context.Context, tx eventstore.Tx, takes []takeOn) (map[string]bool, error) {
	ids := make([]any, len(takes))
	for i, t := range takes {
		ids[i] = t.q.OutgoingMailID
	}
	rows, err := tx.Query(ctx, `SELECT outgoing_mail_id FROM outbound_mails WHERE outgoing_mail_id IN (`+placeholders(1, len(ids))+`)`, ids...)
	if err != nil {
		return nil, fmt.Errorf("look up %d mails: %w", len(ids), err)
	}
	seen := make(map[string]bool, len(takes))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("look up %d mails: %w", len(ids), err)
		}
		seen[id] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("look up %d mails: %w", len(ids), err)
	}
	return seen, nil
}

// placeholders returns "$from, $from+1, ..." for n arguments.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$")
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

// valueRows returns the VALUES rows of a multi-row INSERT: n rows of cols
// placeholders each, numbered on from $1, each followed by the constant
// extra when it is not empty.
func valueRows(n, cols int, extra string) string {
	var b strings.Builder
	for r := range n {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		b.WriteString(placeholders(r*cols+1, cols))
		if extra != "" {
			b.WriteString(", ")
			b.WriteString(extra)
		}
		b.WriteString(")")
	}
	return b.String()
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func normalizeAddr(a string) string { return strings.ToLower(strings.Trim(strings.TrimSpace(a), "<>")) }

// guardFacts is what the guard of one batch reads, with a query each:
// the mails its automatic mails answer, the automatic mails their
// recipients got within the window, and our own addresses.
type guardFacts struct {
	answered map[string]domain.MailReceived // by mail id
	// counted are automatic mails counted against the per-recipient limit:
	// those stored, and this batch's earlier ones as they are taken on.
	counted []recipientAt
	own     []string
}

// readGuardFacts reads the facts the automatic mails among takes need.
func (s *Outbound) readGuardFacts(ctx context.Context, tx eventstore.Tx, takes []takeOn) (guardFacts, error) {
	var (
		f          guardFacts
		streams    []string
		recipients []any
		seen       = map[string]bool{}
		oldest     time.Time
	)
	for _, t := range takes {
		q := t.q
		if !q.Automatic || q.Unsendable != "" || len(q.To) == 0 {
			continue
		}
		if q.CausedBy != "" {
			streams = append(streams, MailStream(q.CausedBy))
		}
		if r := normalizeAddr(q.To[0].Email); !seen[r] {
			seen[r] = true
			recipients = append(recipients, r)
		}
		if oldest.IsZero() || t.queuedAt.Before(oldest) {
			oldest = t.queuedAt
		}
	}
	if len(recipients) == 0 {
		return f, nil
	}
	evs, err := tx.ReadStreams(ctx, streams)
	if err != nil {
		return f, fmt.Errorf("read the answered mails: %w", err)
	}
	f.answered = map[string]domain.MailReceived{}
	for _, re := range evs {
		if re.StreamVersion != 1 || re.Type != domain.MailReceivedName {
			continue
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return f, fmt.Errorf("read the answered mail %s: %w", re.Stream, err)
		}
		f.answered[strings.TrimPrefix(re.Stream, MailStream(""))] = ev.(domain.MailReceived)
	}
	rows, err := tx.Query(ctx, `SELECT recipient, queued_at FROM outbound_recipients WHERE queued_at > $1 AND recipient IN (`+
		placeholders(2, len(recipients))+`)`, append([]any{eventstore.PlanEachCall, oldest.Add(-domain.RecipientWindow).UnixMilli()}, recipients...)...)
	if err != nil {
		return f, fmt.Errorf("count the recipients' automatic mails: %w", err)
	}
	for rows.Next() {
		var (
			r  string
			at int64
		)
		if err := rows.Scan(&r, &at); err != nil {
			_ = rows.Close()
			return f, fmt.Errorf("count the recipients' automatic mails: %w", err)
		}
		f.counted = append(f.counted, recipientAt{recipient: r, at: time.UnixMilli(at)})
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return f, fmt.Errorf("count the recipients' automatic mails: %w", err)
	}
	s.guardMu.Lock()
	out, err1 := s.guardOutbound.load(ctx, tx.ReadStream)
	in, err2 := s.guardInbound.load(ctx, tx.ReadStream)
	s.guardMu.Unlock()
	if err := errors.Join(err1, err2); err != nil {
		return f, err
	}
	for _, a := range out.ByID {
		f.own = append(f.own, a.SenderAddress)
	}
	for _, a := range in.ByID {
		f.own = append(f.own, a.AccountAddress, a.SenderAddress)
	}
	return f, nil
}

// guard applies RULES.md section 4 to automatic mails: the answered mail's
// headers (domain.IsAutomatic, again, in case the mail was decided by an
// older intake), system addresses, our own addresses, the per-recipient
// limit over f (readGuardFacts). Agents' replies only need a recipient.
func (s *Outbound) guard(q queued, at time.Time, f *guardFacts) (code, reason string) {
	if q.Unsendable != "" {
		return domain.SuppressNoRecipient, q.Unsendable
	}
	if age := s.o.Now().Sub(at); age > s.o.MaxAge {
		return domain.SuppressExpired, fmt.Sprintf("queued %s ago, more than the %s a queued mail is sent within", age.Round(time.Second), s.o.MaxAge)
	}
	if len(q.To) == 0 {
		return domain.SuppressNoRecipient, "no recipient"
	}
	if !q.Automatic {
		return "", ""
	}
	if m, ok := f.answered[q.CausedBy]; ok && q.CausedBy != "" {
		if auto, why := domain.IsAutomatic(m); auto {
			return domain.SuppressAutomaticMail, "automatic mail (" + why + ")"
		}
	}
	to := normalizeAddr(q.To[0].Email)
	// in milliseconds, as outbound_recipients stores them
	since := at.Add(-domain.RecipientWindow).UnixMilli()
	var recent int
	for _, c := range f.counted {
		if c.recipient == to && c.at.UnixMilli() > since {
			recent++
		}
	}
	return domain.AutoMailGuard(q.To[0].Email, f.own, recent)
}

func outcomeRequest(outgoingMailID string, version int64, ev domain.Event, causation string) (eventstore.AppendRequest, error) {
	name, sv, payload, err := domain.MarshalEvent(ev)
	if err != nil {
		return eventstore.AppendRequest{}, err
	}
	var at time.Time
	switch e := ev.(type) {
	case domain.OutboundMailSent:
		at = e.SentAt
	case domain.OutboundMailFailed:
		at = e.At
	case domain.OutboundMailSuppressed:
		at = e.At
	}
	return eventstore.AppendRequest{Stream: domain.OutboundMailStream(outgoingMailID), ExpectedVersion: version,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: sv, Payload: payload,
			Metadata: eventstore.Metadata{CorrelationID: outgoingMailID, CausationID: causation, Actor: "outbound", OccurredAt: at}}}}, nil
}

// claimed is a row the sender took.
type claimed struct {
	id       string
	ticketID string
	typ      string
	sv       int
	payload  string
	attempts int
	version  int64
	// until is when this instance stops starting submissions under the
	// claim: half its time, as this process's clock measures it.
	until time.Time
}

// work claims due mails and sends them until ctx is done. The outcomes of
// a batch are committed in the same transaction that claims the next one
// (settle), right after the batch's last submission, so a batch costs one
// durable write besides the take-on.
func (s *Outbound) work(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-timer.C:
		}
		var outs []outcome
		for {
			rows, err := s.settle(ctx, outs)
			outs = nil
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.o.Logger.Error("outbound: claim due mails", "err", err)
				break
			}
			if len(rows) == 0 {
				break
			}
			var stopped bool
			outs, stopped = s.sendBatch(ctx, rows)
			if stopped {
				// Shutdown or a simulated crash: commit what was accepted,
				// claim nothing more.
				if err := s.record(context.WithoutCancel(ctx), outs); err != nil {
					s.o.Logger.Error("outbound: record results", "err", err)
				}
				s.copySent(ctx, outs)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return nil
			}
		}
		timer.Reset(s.o.PollInterval)
	}
}

// settle commits the outcomes of the last batch and claims the next one in
// one transaction. When that transaction fails the outcomes are recorded
// on their own (the claim is retried at the next poll), so that a claim
// that cannot run never holds back the records of mails already sent.
func (s *Outbound) settle(ctx context.Context, outs []outcome) ([]claimed, error) {
	if len(outs) == 0 {
		return s.claim(ctx, nil)
	}
	if ctx.Err() != nil {
		err := s.record(context.WithoutCancel(ctx), outs)
		s.copySent(ctx, outs)
		return nil, errors.Join(ctx.Err(), err)
	}
	// The records must not be lost to a cancelled context.
	rows, err := s.claim(context.WithoutCancel(ctx), outs)
	if err != nil {
		if rerr := s.record(context.WithoutCancel(ctx), outs); rerr != nil {
			s.o.Logger.Error("outbound: record results", "err", rerr)
		}
		s.copySent(ctx, outs)
		return nil, err
	}
	s.copySent(ctx, outs)
	if ctx.Err() != nil {
		// Shutting down: leave the rows just claimed for the next start
		// (they were never sent, so this is no second copy).
		return nil, ctx.Err()
	}
	return rows, nil
}

// claim records outs (if any) and takes the next batch of due rows in one
// transaction.
func (s *Outbound) claim(ctx context.Context, outs []outcome) ([]claimed, error) {
	rec, err := s.recording(outs)
	if err != nil {
		return nil, err
	}
	var out []claimed
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	err = s.o.Store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		out = out[:0]
		if err := rec(ctx, tx); err != nil {
			return fmt.Errorf("record %d results: %w", len(outs), err)
		}
		// Due rows are exactly the pending and retrying ones (every
		// other state is notDue), and the UPDATE below checks it; a state
		// filter here would make PostgreSQL sort every due row rather
		// than walk the due index, whose predicate (migration 0008) the
		// query repeats word for word. Planned per call: a plan made
		// while the table was small scans all of it.
		rows, err := tx.Query(ctx, `SELECT outgoing_mail_id, ticket_id, event_type, schema_version, payload, attempts, stream_version
			FROM outbound_mails WHERE next_attempt_at <= $1 AND next_attempt_at < 9223372036854775807
			ORDER BY next_attempt_at, outgoing_mail_id LIMIT $2`,
			eventstore.PlanEachCall, s.o.Now().UnixMilli(), s.o.BatchSize)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c claimed
			if err := rows.Scan(&c.id, &c.ticketID, &c.typ, &c.sv, &c.payload, &c.attempts, &c.version); err != nil {
				_ = rows.Close()
				return err
			}
			out = append(out, c)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		// One statement for the batch: the rows were selected in this
		// transaction, and only one sender runs per database.
		until := time.Now().Add(s.o.ClaimTTL / 2)
		args := []any{stateSending, notDue, stateP, stateRetry, s.o.Instance, s.o.Now().Add(s.o.ClaimTTL).UnixMilli()}
		for _, c := range out {
			args = append(args, c.id)
		}
		n, err := tx.Exec(ctx, `UPDATE outbound_mails SET state = $1, next_attempt_at = $2, attempts = attempts + 1,
			claimed_by = $5, claim_expires_at = $6
			WHERE state IN ($3, $4) AND outgoing_mail_id IN (`+placeholders(7, len(out))+`)`, args...)
		if err != nil {
			return err
		}
		if n != int64(len(out)) {
			return fmt.Errorf("claimed %d of %d rows: is a second sender running on this database?", n, len(out))
		}
		for i := range out {
			out[i].attempts++
			out[i].until = until
		}
		return nil
	})
	return out, err
}

// prepared is a mail ready to send.
type prepared struct {
	q       queued
	account domain.OutboundAccount
	// send submits raw over the account's protocol and returns the
	// server's reply.
	send     func(ctx context.Context) (string, error)
	env      smtpsend.Envelope
	raw      []byte
	subject  string
	sentCopy *smtpsend.SentFolder
}

// failure is why a mail could not be sent on this attempt.
type failure struct {
	stage     string
	code      int
	reply     string
	temporary bool
	// retryAfter is the server's Retry-After, 0 when it gave none.
	retryAfter time.Duration
}

// outcome is one attempt's result, recorded with the rest of its batch.
type outcome struct {
	c     claimed
	event domain.Event
	state string
	next  time.Time
	copy  *smtpsend.SentFolder
	raw   []byte
	at    time.Time
}

// snapshot is the configuration one batch is sent with.
type snapshot struct {
	accounts  domain.OutboundAccounts
	inbound   domain.InboundAccounts
	settings  domain.Settings
	templates domain.Templates
	resources domain.Resources
	// tickets holds the tickets read for this batch (all of them with one
	// query, loadTickets), so that a batch reads each ticket once however
	// many of its mails concern it; broken holds those whose events do not
	// decode.
	tickets map[string]domain.Ticket
	broken  map[string]error
}

// loadTickets reads the tickets of rows with one query.
func (s *Outbound) loadTickets(ctx context.Context, snap *snapshot, rows []claimed) error {
	var streams []string
	for _, c := range rows {
		if c.ticketID != "" {
			streams = append(streams, domain.TicketStream(c.ticketID))
		}
	}
	if len(streams) == 0 {
		return nil
	}
	evs, err := s.o.Store.ReadStreams(ctx, streams)
	if err != nil {
		return err
	}
	snap.tickets, snap.broken = map[string]domain.Ticket{}, map[string]error{}
	for _, c := range rows {
		if c.ticketID != "" {
			snap.tickets[c.ticketID] = domain.Ticket{} // read, whether it exists or not
		}
	}
	for _, re := range evs {
		id := strings.TrimPrefix(re.Stream, domain.TicketStream(""))
		if snap.broken[id] != nil {
			continue
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			snap.broken[id] = err
			continue
		}
		snap.tickets[id] = domain.EvolveTicket(snap.tickets[id], ev)
	}
	return nil
}

// ticket returns the ticket as it stands now, read once per batch. A
// ticket whose events cannot be decoded is a permanent failure.
func (s *Outbound) ticket(ctx context.Context, snap *snapshot, id string) (t domain.Ticket, permanent bool, err error) {
	if err := snap.broken[id]; err != nil {
		return domain.Ticket{}, true, err
	}
	if t, ok := snap.tickets[id]; ok {
		return t, false, nil
	}
	evs, err := s.o.Store.ReadStream(ctx, domain.TicketStream(id), 1, 0)
	if err != nil {
		return domain.Ticket{}, false, err
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return domain.Ticket{}, true, err
		}
		t = domain.EvolveTicket(t, ev)
	}
	if snap.tickets == nil {
		snap.tickets = map[string]domain.Ticket{}
	}
	snap.tickets[id] = t
	return t, false, nil
}

func (s *Outbound) snapshot(ctx context.Context) (snapshot, error) {
	read := s.o.Store.ReadStream
	s.mu.Lock()
	defer s.mu.Unlock()
	var snap snapshot
	var err1, err2, err3, err4 error
	snap.accounts, err1 = s.outbound.load(ctx, read)
	snap.inbound, err2 = s.inbound.load(ctx, read)
	snap.settings, err3 = s.settings.load(ctx, read)
	snap.templates, err4 = s.templates.load(ctx, read)
	var err5 error
	snap.resources, err5 = s.resources.load(ctx, read)
	return snap, errors.Join(err1, err2, err3, err4, err5)
}

// sendBatch sends the claimed rows one after the other and returns their
// outcomes, which the caller commits in one transaction (with the next
// claim). Batching the records is what keeps the saga near a bare SMTP
// loop's speed; it also sets the size of the at-least-once window: a crash
// after a mail's 250 loses the records of at most BatchSize mails per
// worker, which are then sent again. stopped reports that sending stopped
// early (shutdown, or the test's simulated crash): outs then holds the
// mails handled before that.
func (s *Outbound) sendBatch(ctx context.Context, rows []claimed) (outs []outcome, stopped bool) {
	snap, err := s.snapshot(ctx)
	if err == nil {
		err = s.loadTickets(ctx, &snap, rows)
	}
	outs = make([]outcome, 0, len(rows))
	start := time.Now()
	for i, c := range rows {
		if (i > 0 && time.Since(start) >= s.o.BatchTime) || !time.Now().Before(c.until) {
			for _, c := range rows[i:] {
				outs = append(outs, outcome{c: c, state: stateRelease})
			}
			return outs, false
		}
		var o outcome
		if err != nil {
			o = s.failed(c, queued{}, "", nil, failure{stage: "load", reply: err.Error(), temporary: true})
		} else {
			o = s.sendOne(ctx, c, &snap)
		}
		if o.event == nil { // stopped: shutdown or a simulated crash
			return outs, true
		}
		outs = append(outs, o)
	}
	return outs, false
}

// copySent appends the copies of recorded mails to their Sent folders.
func (s *Outbound) copySent(ctx context.Context, outs []outcome) {
	for _, o := range outs {
		if o.copy != nil {
			if err := smtpsend.AppendSent(ctx, *o.copy, o.raw, o.at); err != nil {
				s.o.Logger.Warn("outbound: copy to the Sent folder failed", "outgoing_mail_id", o.c.id, "err", err)
			}
		}
	}
}

// record commits outs in a transaction of its own.
func (s *Outbound) record(ctx context.Context, outs []outcome) error {
	if len(outs) == 0 {
		return nil
	}
	rec, err := s.recording(outs)
	if err != nil {
		return err
	}
	if err := s.o.Store.Update(ctx, rec); err != nil {
		return fmt.Errorf("record %d results: %w", len(outs), err)
	}
	return nil
}

// recording returns the writes that record outs: each mail's event in its
// own stream and its row's new state.
func (s *Outbound) recording(outs []outcome) (func(ctx context.Context, tx eventstore.Tx) error, error) {
	if len(outs) == 0 {
		return func(context.Context, eventstore.Tx) error { return nil }, nil
	}
	reqs := make([]eventstore.AppendRequest, 0, len(outs))
	var sent, released []any
	for _, o := range outs {
		if o.state == stateRelease {
			released = append(released, o.c.id)
			continue
		}
		req, err := outcomeRequest(o.c.id, o.c.version, o.event, "")
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, req)
		if o.state == stateSent {
			sent = append(sent, o.c.id)
		}
	}
	now := s.o.Now().UnixMilli()
	return func(ctx context.Context, tx eventstore.Tx) error {
		if len(reqs) > 0 {
			if _, err := tx.Append(ctx, reqs...); err != nil {
				return err
			}
		}
		if len(released) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE outbound_mails SET state = CASE WHEN attempts > 1 THEN $1 ELSE $2 END,
				next_attempt_at = $3, attempts = attempts - 1 WHERE state = $4 AND outgoing_mail_id IN (`+placeholders(5, len(released))+`)`,
				append([]any{stateRetry, stateP, now, stateSending}, released...)...); err != nil {
				return err
			}
		}
		if len(sent) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE outbound_mails SET state = $1, next_attempt_at = $2, stream_version = stream_version + 1
				WHERE outgoing_mail_id IN (`+placeholders(3, len(sent))+`)`, append([]any{stateSent, notDue}, sent...)...); err != nil {
				return err
			}
		}
		for _, o := range outs {
			if o.state == stateSent || o.state == stateRelease {
				continue
			}
			next := notDue
			if o.state == stateRetry {
				next = o.next.UnixMilli()
			}
			if _, err := tx.Exec(ctx, `UPDATE outbound_mails SET state = $1, next_attempt_at = $2, stream_version = stream_version + 1
				WHERE outgoing_mail_id = $3`, o.state, next, o.c.id); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

// sendOne makes one attempt. An outcome without event means the worker
// stops without recording (shutdown, or the test's simulated crash).
func (s *Outbound) sendOne(ctx context.Context, c claimed, snap *snapshot) outcome {
	ev, err := domain.UnmarshalEvent(c.typ, c.sv, []byte(c.payload))
	if err != nil {
		return s.failed(c, queued{}, "", nil, failure{stage: "decode", reply: err.Error()})
	}
	q, _ := toQueued(ev)
	p, f := s.prepare(ctx, q, snap)
	if f != nil {
		return s.failed(c, q, p.account.ID, nil, *f)
	}
	reply, err := p.send(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{} // shutdown: the row stays "sending" and is retried on start
		}
		return s.failed(c, q, p.account.ID, p.env.To, sendFailure(err))
	}
	if s.crashAfterAccept != nil && s.crashAfterAccept(c.id) {
		return outcome{}
	}
	now := s.o.Now().UTC()
	sent := domain.OutboundMailSent{OutgoingMailID: q.OutgoingMailID, MessageID: q.MessageID, TicketID: q.TicketID, Kind: q.Kind,
		AccountID: p.account.ID, From: p.env.From, To: p.env.To, Subject: p.subject, Attempt: c.attempts, Reply: reply, SentAt: now}
	return outcome{c: c, event: sent, state: stateSent, next: now, copy: p.sentCopy, raw: p.raw, at: now}
}

func (s *Outbound) failed(c claimed, q queued, accountID string, to []string, f failure) outcome {
	now := s.o.Now().UTC()
	permanent := !f.temporary || c.attempts >= s.o.MaxAttempts
	reply := f.reply
	if f.temporary && permanent {
		reply += fmt.Sprintf(" (gave up after %d attempts)", c.attempts)
	}
	ev := domain.OutboundMailFailed{OutgoingMailID: c.id, MessageID: q.MessageID, TicketID: q.TicketID, Kind: q.Kind, AccountID: accountID,
		To: to, Attempt: c.attempts, Stage: f.stage, Code: f.code, Reply: reply, Permanent: permanent, At: now}
	o := outcome{c: c, state: stateFailed}
	if !permanent {
		o.state = stateRetry
		o.next = now.Add(s.pause(c.attempts, f.retryAfter))
		ev.NextAttemptAt = o.next
	}
	o.event = ev
	s.o.Logger.Warn("outbound: send failed", "outgoing_mail_id", c.id, "attempt", c.attempts, "stage", f.stage, "code", f.code,
		"reply", reply, "permanent", permanent)
	return o
}

// sendFailure is how a sender's error is recorded, alike for SMTP and
// Graph: the stage, the server's code and words (SMTP's enhanced code and
// reply; Graph's error.code and error.message), whether another attempt
// may succeed, and the server's Retry-After. An error of neither kind is
// temporary.
func sendFailure(err error) failure {
	var se *smtpsend.Error
	var ge *graphsend.Error
	switch {
	case errors.As(err, &se):
		return failure{stage: se.Stage, code: se.Code, reply: strings.TrimSpace(se.Enhanced + " " + se.Reply), temporary: se.Temporary}
	case errors.As(err, &ge):
		return failure{stage: ge.Stage, code: ge.Code, reply: ge.Reply, temporary: ge.Temporary, retryAfter: ge.RetryAfter}
	}
	return failure{stage: "send", reply: err.Error(), temporary: true}
}

// pause is the wait after a temporary failure of attempt n: the back-off,
// or the server's Retry-After when that is longer, capped at MaxBackoff.
func (s *Outbound) pause(n int, retryAfter time.Duration) time.Duration {
	return max(s.backoff(n), min(retryAfter, s.o.MaxBackoff))
}

// backoff is the pause after attempt n: Backoff * 2^(n-1), capped.
func (s *Outbound) backoff(n int) time.Duration {
	d := s.o.Backoff
	for i := 1; i < n && d < s.o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, s.o.MaxBackoff)
}

// prepare picks the account, renders the template and builds the message.
func (s *Outbound) prepare(ctx context.Context, q queued, snap *snapshot) (prepared, *failure) {
	p := prepared{q: q}
	fail := func(stage, reply string, temporary bool) (prepared, *failure) {
		return p, &failure{stage: stage, reply: reply, temporary: temporary}
	}
	accounts, inbound, settings, stored := snap.accounts, snap.inbound, snap.settings, snap.templates
	var t domain.Ticket
	if q.TicketID != "" {
		var permanent bool
		var err error
		if t, permanent, err = s.ticket(ctx, snap, q.TicketID); err != nil {
			return fail("load", err.Error(), !permanent)
		}
	}
	acc, ok := domain.SendingAccountFor(accounts, snap.resources, t.ResourceID, t.Category)
	if !ok {
		return fail("settings", "no enabled outgoing account applies (resource, category or default)", true)
	}
	p.account = acc
	if acc.Protocol != domain.OutboundSMTP && acc.Protocol != domain.OutboundGraph {
		return fail("settings", fmt.Sprintf("outgoing account %s: protocol %q is not one of smtp, graph", acc.ID, acc.Protocol), false)
	}
	tpl, ok := stored.ByName[q.Template]
	if !ok {
		tpl, ok = shipped[q.Template]
	}
	if !ok {
		return fail("template", fmt.Sprintf("template %q does not exist", q.Template), false)
	}
	from := smtpsend.Address{Name: acc.SenderName, Email: acc.SenderAddress}
	if in, ok := inbound.ByID[q.AccountID]; ok && in.SenderAddress != "" {
		// Auto-replies and error mails come from the mailbox written to.
		from = smtpsend.Address{Name: in.SenderName, Email: in.SenderAddress}
	}
	data := TemplateData{TicketNumber: t.Number, Subject: q.Subject, Body: q.Body, Reason: q.Reason,
		SenderName: from.Name, SenderAddress: from.Email}
	if from.Name == "" {
		data.SenderName = from.Email
	}
	if t.Exists() {
		data.Reference = domain.FormatTicketReference(t.Number, settings.ReferenceFormat)
	}
	if len(q.To) > 0 {
		data.RequesterName, data.RequesterEmail = q.To[0].Name, q.To[0].Email
	}
	if data.RequesterName == "" && t.Requester.Email == data.RequesterEmail {
		data.RequesterName = t.Requester.Name
	}
	if q.Kind == domain.AutoMailCustomerAnswered {
		// Told to the resource's members: the requester is the customer.
		data.RequesterName, data.RequesterEmail = t.Requester.Name, t.Requester.Email
	}
	subject, body, err := render(tpl, data)
	if err != nil {
		return fail("template", err.Error(), false)
	}
	if t.Exists() {
		if n, ok := domain.ParseTicketReference(subject, settings.ReferenceFormat); !ok || n != t.Number {
			subject = data.Reference + " " + subject
		}
	}
	p.subject = subject
	msg := smtpsend.Message{From: from, Subject: subject, MessageID: q.MessageID, InReplyTo: q.InReplyTo, References: q.References,
		Date: s.o.Now(), Automatic: q.Automatic, Body: body, Encoding: acc.BodyEncoding}
	for _, a := range q.To {
		msg.To = append(msg.To, smtpsend.Address{Name: a.Name, Email: a.Email})
		p.env.To = append(p.env.To, a.Email)
	}
	for _, a := range q.Cc {
		msg.Cc = append(msg.Cc, smtpsend.Address{Name: a.Name, Email: a.Email})
		p.env.To = append(p.env.To, a.Email)
	}
	p.env.From = acc.SenderAddress
	raw, err := smtpsend.Build(msg)
	if err != nil {
		return fail("build", err.Error(), false)
	}
	p.raw = raw
	if acc.Protocol == domain.OutboundGraph {
		return s.prepareGraph(ctx, p)
	}
	server, err := s.smtpAccount(acc, settings)
	if err != nil {
		return fail("settings", err.Error(), false)
	}
	env := p.env
	p.send = func(ctx context.Context) (string, error) {
		res, err := s.o.Sender.Send(ctx, server, env, raw)
		return res.Reply, err
	}
	if acc.SentFolderAccountID != "" {
		if in, ok := inbound.ByID[acc.SentFolderAccountID]; ok && in.Protocol == domain.ProtocolIMAP && s.mailHostAllowed(settings, in) {
			// The Sent folder is logged into exactly as the account's
			// fetcher logs in: its OAuth connection, prevent_plain_login,
			// allow_plaintext_auth and extra CA apply here too.
			folder := smtpsend.SentFolder{Host: in.Host, Port: in.Port, Security: in.Security, TLSSkipVerify: in.TLSSkipVerify,
				TLSServerName: in.TLSServerName, RootCAs: s.o.RootCAs, CACertPEM: []byte(in.CACertPEM), Username: in.Username,
				PreventPlainLogin: in.PreventPlainLogin, AllowPlaintextAuth: in.AllowPlaintextAuth,
				AllowAddr: settings.MailHostPolicy().AddrCheck(in.Host), Folder: acc.SentFolder}
			var err error
			if in.OAuthConnectionID != "" {
				folder.TokenSource = s.tokenSource(in.OAuthConnectionID, domain.ProtocolIMAP)
			} else {
				folder.Password, err = s.open(in.Password)
			}
			if err == nil {
				p.sentCopy = &folder
			} else {
				s.o.Logger.Warn("outbound: sent folder account's password cannot be opened", "account", in.ID, "err", err)
			}
		}
	}
	return p, nil
}

// prepareGraph readies the send of a graph account: Graph's root in the
// connection's cloud and a token source that renews a refused token. There
// is no Sent-folder copy of our own: sendMail saves the message in the
// mailbox's Sent Items.
func (s *Outbound) prepareGraph(ctx context.Context, p prepared) (prepared, *failure) {
	acc := p.account
	fail := func(reply string, temporary bool) (prepared, *failure) {
		return p, &failure{stage: graphsend.StageSettings, reply: reply, temporary: temporary}
	}
	switch {
	case acc.OAuthConnectionID == "":
		return fail("graph accounts send through an OAuth connection; name one (oauth_connection_id)", false)
	case s.o.GraphBaseURL == nil:
		return fail("Graph sending is not wired in this process", true)
	}
	base, err := s.o.GraphBaseURL(ctx, acc.OAuthConnectionID)
	if err != nil {
		// A deleted connection can be fixed while the mail waits, as a
		// token that cannot be had can.
		return fail("graph base URL: "+err.Error(), true)
	}
	token := s.tokenSource(acc.OAuthConnectionID, domain.ProtocolGraph)
	account := graphsend.Account{BaseURL: base, Mailbox: acc.Mailbox, MaxSize: acc.MaxSize,
		TokenSource: func(ctx context.Context, rejected string) (string, error) {
			if rejected == "" || s.o.RenewAccessToken == nil {
				return token(ctx)
			}
			return s.o.RenewAccessToken(ctx, acc.OAuthConnectionID, domain.ProtocolGraph, rejected)
		}}
	raw := p.raw
	p.send = func(ctx context.Context) (string, error) { return s.o.GraphSender.Send(ctx, account, raw) }
	return p, nil
}

// smtpAccount is how an SMTP account's server is reached and logged into,
// its password opened.
func (s *Outbound) smtpAccount(acc domain.OutboundAccount, settings domain.Settings) (smtpsend.Account, error) {
	password, err := s.open(acc.Password)
	if err != nil {
		return smtpsend.Account{}, fmt.Errorf("open the account's password: %w", err)
	}
	localName := s.o.LocalName
	if localName == "" {
		localName = settings.MessageIDDomain
	}
	server := smtpsend.Account{Host: acc.Host, Port: acc.Port, Security: acc.Security, TLSSkipVerify: acc.TLSSkipVerify,
		TLSServerName: acc.TLSServerName, RootCAs: s.o.RootCAs, Auth: acc.Auth, Username: acc.Username, Password: password,
		MaxSize: acc.MaxSize, LocalName: localName}
	if acc.Auth == domain.AuthXOAuth2 {
		server.OAuthToken = s.tokenSource(acc.OAuthConnectionID, domain.ProtocolSMTP)
	}
	return server, nil
}

func (s *Outbound) open(sealed string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	if s.o.Secrets == nil {
		return "", errors.New("no secret key configured")
	}
	return s.o.Secrets.Open(sealed)
}

// mailHostAllowed says whether the Sent-folder copy may connect to the
// inbound account's host (allowed_mail_hosts); a refusal is logged and the
// mail goes out without the copy.
func (s *Outbound) mailHostAllowed(settings domain.Settings, in domain.InboundAccount) bool {
	if err := settings.CheckMailHost(in.Host); err != nil {
		s.o.Logger.Warn("outbound: no copy to the sent folder", "account", in.ID, "err", err)
		return false
	}
	return true
}

// tokenSource is the XOAUTH2 token of a connection for a protocol.
func (s *Outbound) tokenSource(connectionID, protocol string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		switch {
		case connectionID == "":
			return "", errors.New("auth xoauth2 needs an OAuth connection (oauth_connection_id)")
		case s.o.AccessToken == nil:
			return "", errors.New("OAuth logins are not wired in this process")
		}
		return s.o.AccessToken(ctx, connectionID, protocol)
	}
}

// OutboundStatus counts the saga's mails by state (for tests and the
// closing note's figures).
func OutboundStatus(ctx context.Context, store eventstore.Store) (map[string]int, error) {
	out := map[string]int{}
	err := store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		rows, err := tx.Query(ctx, `SELECT state, COUNT(*) FROM outbound_mails GROUP BY state`)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var st string
			var n int
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			out[st] = n
		}
		return rows.Err()
	})
	return out, err
}
