// Package ticketing is the application layer between the event store and
// the pure domain: the mail-intake process manager, which decides every
// MailReceived with domain.DecideMail, and the agents' ticket commands.
// It loads exactly the state a decision needs, runs the decision, and
// appends the resulting events atomically with optimistic concurrency.
package ticketing

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// IntakeSubscriber is the process manager's subscriber name. Renaming it
// makes the process manager decide every mail of the log again.
const IntakeSubscriber = "process.mail-intake.v1"

// Stream names of the registries.
const (
	InboundAccountsStream = "inbound-accounts"
	SettingsStream        = "settings"
)

// MailStream is the stream of a fetched mail (its MailReceived is version
// 1); decisions that concern no ticket are appended there.
func MailStream(mailID string) string { return "mail-" + mailID }

// ProcessManager decides each MailReceived once.
type ProcessManager struct {
	store  eventstore.Store
	now    func() time.Time
	key    domain.MessageIDKey
	logger *slog.Logger

	mu        sync.Mutex
	accounts  registry[domain.InboundAccounts]
	settings  registry[domain.Settings]
	resources registry[domain.Resources]
}

// NewProcessManager returns a process manager over store; now is the clock
// that stamps decisions (cmd passes time.Now), key keys our Message-IDs
// (cmd derives it from the secret key with domain.DeriveMessageIDKey).
func NewProcessManager(store eventstore.Store, now func() time.Time, key domain.MessageIDKey, logger *slog.Logger) *ProcessManager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ProcessManager{
		store: store, now: now, key: key, logger: logger,
		accounts:  registry[domain.InboundAccounts]{stream: InboundAccountsStream, evolve: domain.EvolveInboundAccounts},
		settings:  registry[domain.Settings]{stream: SettingsStream, evolve: domain.EvolveSettings, state: domain.DefaultSettings()},
		resources: registry[domain.Resources]{stream: domain.ResourcesStream, evolve: domain.EvolveResources},
	}
}

// IntakeBatchSize is how many events of the log one transaction of the
// intake takes. A MailReceived holds up to two body prefixes of 64 KB
// (domain.MailBodyPrefixBytes), so a batch of them holds at most 32 MiB in
// memory, the bound a fetcher's sink keeps a batch to; a batch of ordinary
// mails costs the database some fifteen statements whatever its size.
const IntakeBatchSize = 250

// Run decides mails until ctx is done, IntakeBatchSize events at a time (see
// HandleBatch). A mail the intake keeps failing on is set aside
// (SetAsideRecorder) so that the next mails still become tickets: a batch
// that keeps failing is taken apart, and the failing mail set aside alone.
func (pm *ProcessManager) Run(ctx context.Context) error {
	return pm.store.SubscribeBatch(ctx, IntakeSubscriber, pm.HandleBatch, WithSetAside(eventstore.SubscribeOptions{
		BatchSize: IntakeBatchSize, Types: []string{domain.MailReceivedName, domain.UserCreatedName, domain.UserUpdatedName}}))
}

// Handle decides one event as HandleBatch does a batch of one.
func (pm *ProcessManager) Handle(ctx context.Context, tx eventstore.Tx, re eventstore.RecordedEvent) error {
	return pm.HandleBatch(ctx, tx, []eventstore.RecordedEvent{re})
}

// HandleBatch is the subscription handler: it decides the MailReceived
// events of a batch, in the log's order, and keeps the user index in step
// with users created elsewhere. It runs in the subscription's transaction:
// every decision's events, the index rows and the checkpoint commit
// together, so a crash decides the batch's mails again from scratch and a
// committed decision is never repeated. Each decision sees the ones before
// it in the batch exactly as if they had committed on their own (see
// intakeBatch); a decision is all or nothing, as the batch is.
func (pm *ProcessManager) HandleBatch(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
	var run []pending
	for _, re := range evs {
		switch re.Type {
		case domain.MailReceivedName:
			ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
			if err != nil {
				return fmt.Errorf("ticketing: event at position %d: %w", re.Position, err)
			}
			run = append(run, pending{mail: ev.(domain.MailReceived), re: re})
		case domain.UserCreatedName, domain.UserUpdatedName:
			// The mails before a directory change are decided without it,
			// those after with it.
			if err := pm.decideMails(ctx, tx, run); err != nil {
				return err
			}
			run = nil
			if err := reindexUser(ctx, tx, strings.TrimPrefix(re.Stream, domain.UserStream(""))); err != nil {
				return fmt.Errorf("ticketing: index user of event at position %d: %w", re.Position, err)
			}
		}
	}
	return pm.decideMails(ctx, tx, run)
}

// pending is a MailReceived of the batch.
type pending struct {
	mail domain.MailReceived
	re   eventstore.RecordedEvent
}

// decideMails marks the mails decided (those marked before are left
// alone), loads what their decisions read for all of them at once,
// decides each in order and writes the decisions (intakeBatch).
func (pm *ProcessManager) decideMails(ctx context.Context, tx eventstore.Tx, mails []pending) error {
	mails, err := markDecided(ctx, tx, mails)
	if err != nil || len(mails) == 0 {
		return err
	}
	pm.mu.Lock()
	accounts, err := pm.accounts.load(ctx, tx)
	var settings domain.Settings
	if err == nil {
		settings, err = pm.settings.load(ctx, tx)
	}
	pm.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ticketing: %w", err)
	}
	batch := make([]intakeMail, len(mails))
	for i, p := range mails {
		account, ok := accounts.ByID[p.mail.AccountID]
		if !ok {
			// The account was deleted after the mail was fetched: decide with
			// the defaults rather than lose the mail.
			account = domain.InboundAccount{ID: p.mail.AccountID, Name: p.mail.AccountID}
		}
		account = account.WithDefaults()
		batch[i] = intakeMail{pending: p, account: account, lookups: domain.MailLookups(p.mail, account, settings, pm.key)}
	}
	b := newIntakeBatch(tx)
	if err := b.prefetch(ctx, batch); err != nil {
		return fmt.Errorf("ticketing: load state for %d mails: %w", len(batch), err)
	}
	for _, p := range batch {
		in, l, err := pm.loadInput(ctx, b, p, accounts, settings)
		if err != nil {
			return fmt.Errorf("ticketing: load state for mail %s: %w", p.mail.MailID, err)
		}
		events, err := domain.DecideMail(in)
		if err != nil {
			return fmt.Errorf("ticketing: decide mail %s: %w", p.mail.MailID, err)
		}
		reqs, err := decisionRequests(events, l, p.mail, p.re)
		if err != nil {
			return fmt.Errorf("ticketing: mail %s: %w", p.mail.MailID, err)
		}
		b.record(events, reqs, p.mail)
	}
	if err := b.flush(ctx); err != nil {
		return fmt.Errorf("ticketing: %w", err)
	}
	return nil
}

// markDecided records the mails as decided and returns those that were not
// before: a MailReceived delivered twice is decided once.
func markDecided(ctx context.Context, tx eventstore.Tx, mails []pending) ([]pending, error) {
	fresh := map[string]bool{}
	for part := range slices.Chunk(mails, inChunk) {
		args := make([]any, len(part))
		vals := make([]string, len(part))
		for i, p := range part {
			args[i], vals[i] = p.mail.MailID, fmt.Sprintf("($%d)", i+1)
		}
		rows, err := tx.Query(ctx, `INSERT INTO intake_decided (mail_id) VALUES `+strings.Join(vals, ", ")+
			` ON CONFLICT (mail_id) DO NOTHING RETURNING mail_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("ticketing: mark %d mails decided: %w", len(part), err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("ticketing: mark mails decided: %w", err)
			}
			fresh[id] = true
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("ticketing: mark mails decided: %w", err)
		}
	}
	out := mails[:0:0]
	for _, p := range mails {
		if fresh[p.mail.MailID] {
			out = append(out, p)
		}
	}
	return out, nil
}

// registry is a small cached fold of one stream (accounts, settings); each
// use reads only the events appended since the last.
type registry[S any] struct {
	stream  string
	evolve  func(S, domain.Event) S
	state   S
	version int64
}

func (r *registry[S]) load(ctx context.Context, tx eventstore.Tx) (S, error) {
	evs, err := tx.ReadStream(ctx, r.stream, r.version+1, 0)
	if err != nil {
		return r.state, fmt.Errorf("read %s: %w", r.stream, err)
	}
	for _, re := range evs {
		if re.StreamVersion != r.version+1 {
			continue
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return r.state, fmt.Errorf("read %s: %w", r.stream, err)
		}
		r.state = r.evolve(r.state, ev)
		r.version = re.StreamVersion
	}
	return r.state, nil
}

// loaded is the state one decision read, with the versions to append at.
type loaded struct {
	versions map[string]int64 // stream -> version it was read at
}

func (l *loaded) ticket(ctx context.Context, tx eventstore.Tx, id string) (domain.Ticket, error) {
	return foldInto(ctx, tx, l, domain.TicketStream(id), domain.EvolveTicket)
}

// user and location fold one stream each: the directory's commands
// (directory.go) decide on them; the intake reads them through its batch.
func (l *loaded) user(ctx context.Context, tx eventstore.Tx, id string) (domain.User, error) {
	return foldInto(ctx, tx, l, domain.UserStream(id), domain.EvolveUser)
}

func (l *loaded) location(ctx context.Context, tx eventstore.Tx, id string) (domain.Location, error) {
	return foldInto(ctx, tx, l, domain.LocationStream(id), domain.EvolveLocation)
}

// foldInto reads a whole stream in tx, folds it, and remembers the version
// it was read at, which the decision's append then expects.
func foldInto[S any](ctx context.Context, tx eventstore.Tx, l *loaded, stream string, evolve func(S, domain.Event) S) (S, error) {
	var s S
	evs, err := tx.ReadStream(ctx, stream, 1, 0)
	if err != nil {
		return s, fmt.Errorf("read %s: %w", stream, err)
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return s, fmt.Errorf("read %s: %w", stream, err)
		}
		s = evolve(s, ev)
	}
	l.versions[stream] = 0
	if len(evs) > 0 {
		l.versions[stream] = evs[len(evs)-1].StreamVersion
	}
	return s, nil
}

func (pm *ProcessManager) loadInput(ctx context.Context, b *intakeBatch, p intakeMail, accounts domain.InboundAccounts,
	settings domain.Settings,
) (domain.MailInput, *loaded, error) {
	l := &loaded{versions: map[string]int64{}}
	m, account, lk := p.mail, p.account, p.lookups
	in := domain.MailInput{Mail: m, Account: account, Settings: settings, MessageIDKey: pm.key, Now: pm.now().UTC()}
	for id, a := range accounts.ByID {
		if id != account.ID && a.Enabled && a.AccountAddress != "" {
			in.OtherAccounts = append(in.OtherAccounts, domain.AccountRef{ID: id, Address: a.AccountAddress})
		}
	}

	ref, err := findReferenced(ctx, b, l, lk)
	if err != nil {
		return in, nil, err
	}
	in.Referenced = ref
	if err := pm.loadResourceMembers(ctx, b.tx, &in, lk.SenderEmail); err != nil {
		return in, nil, err
	}

	if lk.MessageID != "" {
		ids, err := b.ticketsHolding(ctx, lk.MessageID)
		if err != nil {
			return in, nil, err
		}
		if len(ids) > 0 {
			t, err := b.ticket(ctx, l, ids[0])
			if err != nil {
				return in, nil, err
			}
			if t.Exists() {
				in.DuplicateOf = &t
			}
		}
	}
	if lk.SenderEmail != "" {
		userID, err := b.userByEmail(ctx, lk.SenderEmail)
		if err != nil {
			return in, nil, err
		}
		if userID != "" {
			u, err := b.user(ctx, l, userID)
			if err != nil {
				return in, nil, err
			}
			if u.Exists() {
				in.Sender = &u
			}
		}
	}
	if in.Sender == nil && account.CreateUnknownUsers {
		// A user auto-created for this sender gets UserIDFor(address): its
		// stream must be read so the append can expect it empty.
		u, err := b.user(ctx, l, domain.UserIDFor(lk.SenderEmail))
		if err != nil {
			return in, nil, err
		}
		in.AutoUserIDTaken = u.Exists()
		taken, err := b.takenUserNames(ctx, lk.SenderEmail)
		if err != nil {
			return in, nil, err
		}
		in.TakenUserNames = taken
	}
	if lk.SenderDomain != "" && account.CreateLocationFromDomain {
		loc, err := b.location(ctx, l, domain.LocationIDFor(lk.SenderDomain))
		if err != nil {
			return in, nil, err
		}
		if loc.Exists() {
			in.Location = &loc
		}
	}
	if account.AutoBundle && lk.SenderEmail != "" {
		ids, err := b.bundleCandidates(ctx, lk.SenderEmail, lk.BundleSince)
		if err != nil {
			return in, nil, err
		}
		for _, id := range ids {
			t, err := b.ticket(ctx, l, id)
			if err != nil {
				return in, nil, err
			}
			if t.Exists() {
				in.BundleCandidates = append(in.BundleCandidates, t)
			}
		}
	}
	if in.NextTicketNumber, err = b.nextTicketNumber(ctx); err != nil {
		return in, nil, err
	}
	// A new ticket's stream is expected empty.
	l.versions[domain.TicketStream(domain.TicketIDFor(m.MailID))] = 0
	return in, l, nil
}

// findReferenced follows MailInput.Referenced's order: subject number, our
// own Message-IDs, then any Message-ID a ticket holds.
func findReferenced(ctx context.Context, b *intakeBatch, l *loaded, lk domain.Lookups) (*domain.Ticket, error) {
	if lk.TicketNumber > 0 {
		id, err := b.ticketByNumber(ctx, lk.TicketNumber)
		if err != nil {
			return nil, err
		}
		if id != "" {
			t, err := b.ticket(ctx, l, id)
			if err != nil {
				return nil, err
			}
			if t.Exists() {
				return &t, nil
			}
		}
	}
	for _, o := range lk.Own {
		t, err := b.ticket(ctx, l, o.TicketID)
		if err != nil {
			return nil, err
		}
		if o.Names(t) {
			return &t, nil
		}
	}
	for _, mid := range lk.MessageIDs {
		ids, err := b.ticketsHolding(ctx, mid)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			t, err := b.ticket(ctx, l, id)
			if err != nil {
				return nil, err
			}
			if t.Exists() {
				return &t, nil
			}
		}
	}
	return nil, nil
}

// escapeLike makes s a literal LIKE prefix in both dialects (which treat
// backslash differently, so the wildcards are simply dropped: the result is
// a superset, which is harmless for a "taken" set).
func escapeLike(s string) string {
	return strings.NewReplacer("%", "", "_", "", `\`, "").Replace(s)
}

// streamOf names the stream an event of a mail decision belongs to: the
// ticket's, the user's or the location's, else the mail's own.
func streamOf(e domain.Event, mailID string) string {
	switch e := e.(type) {
	case domain.UserAutoCreated:
		return domain.UserStream(e.UserID)
	case domain.LocationAutoCreated:
		return domain.LocationStream(e.LocationID)
	}
	if id := ticketIDOf(e); id != "" {
		return domain.TicketStream(id)
	}
	return MailStream(mailID)
}

// decisionRequests groups a decision's events by stream, in order, each
// stream at the version it was read at.
func decisionRequests(events []domain.Event, l *loaded, m domain.MailReceived, re eventstore.RecordedEvent,
) ([]eventstore.AppendRequest, error) {
	var order []string
	byStream := map[string][]eventstore.NewEvent{}
	for i, e := range events {
		name, version, payload, err := domain.MarshalEvent(e)
		if err != nil {
			return nil, err
		}
		stream := streamOf(e, m.MailID)
		if _, seen := byStream[stream]; !seen {
			order = append(order, stream)
		}
		byStream[stream] = append(byStream[stream], eventstore.NewEvent{
			ID: fmt.Sprintf("%s-d%d", m.MailID, i), Type: name, SchemaVersion: version, Payload: payload,
			Metadata: eventstore.Metadata{CorrelationID: m.MailID, CausationID: re.ID, Actor: "intake", OccurredAt: m.ReceivedAt},
		})
	}
	reqs := make([]eventstore.AppendRequest, 0, len(order))
	for _, stream := range order {
		expected, ok := l.versions[stream]
		if !ok {
			expected = eventstore.AnyVersion // the mail's own stream
		}
		reqs = append(reqs, eventstore.AppendRequest{Stream: stream, ExpectedVersion: expected, Events: byStream[stream]})
	}
	return reqs, nil
}
