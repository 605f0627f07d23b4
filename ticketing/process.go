// Package ticketing is the application layer between the event store and
// the pure domain: the mail-intake process manager, which decides every
// MailReceived with domain.DecideMail, and the agents' ticket commands.
// It loads exactly the state a decision needs, runs the decision, and
// appends the resulting events atomically with optimistic concurrency.
package ticketing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Run decides mails until ctx is done. A mail the intake keeps failing on
// is set aside (SetAsideRecorder) so that the next mails still become
// tickets.
func (pm *ProcessManager) Run(ctx context.Context) error {
	return pm.store.Subscribe(ctx, IntakeSubscriber, pm.Handle, WithSetAside(eventstore.SubscribeOptions{BatchSize: 100}))
}

// Handle is the subscription handler: it decides MailReceived events and
// keeps the user index in step with users created elsewhere.
func (pm *ProcessManager) Handle(ctx context.Context, tx eventstore.Tx, re eventstore.RecordedEvent) error {
	switch re.Type {
	case domain.MailReceivedName:
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("ticketing: event at position %d: %w", re.Position, err)
		}
		return pm.decideMail(ctx, tx, ev.(domain.MailReceived), re)
	case domain.UserCreatedName, domain.UserUpdatedName:
		return reindexUser(ctx, tx, strings.TrimPrefix(re.Stream, domain.UserStream("")))
	}
	return nil
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

// decideMail loads the decision's input, decides, and appends. It runs in
// the subscription's transaction: the events, the index rows and the
// checkpoint commit together, so a crash decides the mail again from
// scratch and a committed decision is never repeated.
func (pm *ProcessManager) decideMail(ctx context.Context, tx eventstore.Tx, m domain.MailReceived, re eventstore.RecordedEvent) error {
	n, err := tx.Exec(ctx, `INSERT INTO intake_decided (mail_id) VALUES ($1) ON CONFLICT (mail_id) DO NOTHING`, m.MailID)
	if err != nil {
		return fmt.Errorf("ticketing: mark mail %s: %w", m.MailID, err)
	}
	if n == 0 {
		pm.logger.Info("mail already decided", "mail_id", m.MailID)
		return nil
	}
	pm.mu.Lock()
	accounts, err := pm.accounts.load(ctx, tx)
	if err == nil {
		var s domain.Settings
		s, err = pm.settings.load(ctx, tx)
		pm.mu.Unlock()
		return pm.decideWith(ctx, tx, m, re, accounts, s, err)
	}
	pm.mu.Unlock()
	return fmt.Errorf("ticketing: %w", err)
}

func (pm *ProcessManager) decideWith(ctx context.Context, tx eventstore.Tx, m domain.MailReceived, re eventstore.RecordedEvent,
	accounts domain.InboundAccounts, settings domain.Settings, loadErr error,
) error {
	if loadErr != nil {
		return fmt.Errorf("ticketing: %w", loadErr)
	}
	in, l, err := pm.loadInput(ctx, tx, m, accounts, settings)
	if err != nil {
		return fmt.Errorf("ticketing: load state for mail %s: %w", m.MailID, err)
	}
	events, err := domain.DecideMail(in)
	if err != nil {
		return fmt.Errorf("ticketing: decide mail %s: %w", m.MailID, err)
	}
	if err := appendDecision(ctx, tx, events, l, m, re); err != nil {
		return fmt.Errorf("ticketing: mail %s: %w", m.MailID, err)
	}
	return indexDecision(ctx, tx, events, m)
}

func (pm *ProcessManager) loadInput(ctx context.Context, tx eventstore.Tx, m domain.MailReceived,
	accounts domain.InboundAccounts, settings domain.Settings,
) (domain.MailInput, *loaded, error) {
	l := &loaded{versions: map[string]int64{}}
	account, ok := accounts.ByID[m.AccountID]
	if !ok {
		// The account was deleted after the mail was fetched: decide with
		// the defaults rather than lose the mail.
		account = domain.InboundAccount{ID: m.AccountID, Name: m.AccountID}
	}
	account = account.WithDefaults()
	in := domain.MailInput{Mail: m, Account: account, Settings: settings, MessageIDKey: pm.key, Now: pm.now().UTC()}
	for id, a := range accounts.ByID {
		if id != account.ID && a.Enabled && a.AccountAddress != "" {
			in.OtherAccounts = append(in.OtherAccounts, domain.AccountRef{ID: id, Address: a.AccountAddress})
		}
	}
	lk := domain.MailLookups(m, account, settings, pm.key)

	ref, err := findReferenced(ctx, tx, l, lk)
	if err != nil {
		return in, nil, err
	}
	in.Referenced = ref
	if err := pm.loadResourceMembers(ctx, tx, &in, lk.SenderEmail); err != nil {
		return in, nil, err
	}

	if lk.MessageID != "" {
		ids, err := ticketsHolding(ctx, tx, lk.MessageID)
		if err != nil {
			return in, nil, err
		}
		if len(ids) > 0 {
			t, err := l.ticket(ctx, tx, ids[0])
			if err != nil {
				return in, nil, err
			}
			if t.Exists() {
				in.DuplicateOf = &t
			}
		}
	}
	if lk.SenderEmail != "" {
		var userID string
		err := tx.QueryRow(ctx, `SELECT user_id FROM intake_users WHERE email = $1 ORDER BY user_id LIMIT 1`, lk.SenderEmail).Scan(&userID)
		switch {
		case errors.Is(err, eventstore.ErrNoRows):
		case err != nil:
			return in, nil, fmt.Errorf("look up user %s: %w", lk.SenderEmail, err)
		default:
			u, err := l.user(ctx, tx, userID)
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
		u, err := l.user(ctx, tx, domain.UserIDFor(lk.SenderEmail))
		if err != nil {
			return in, nil, err
		}
		in.AutoUserIDTaken = u.Exists()
		taken, err := takenUserNames(ctx, tx, lk.SenderEmail)
		if err != nil {
			return in, nil, err
		}
		in.TakenUserNames = taken
	}
	if lk.SenderDomain != "" && account.CreateLocationFromDomain {
		loc, err := l.location(ctx, tx, domain.LocationIDFor(lk.SenderDomain))
		if err != nil {
			return in, nil, err
		}
		if loc.Exists() {
			in.Location = &loc
		}
	}
	if account.AutoBundle && lk.SenderEmail != "" {
		ids, err := queryStrings(ctx, tx, `SELECT ticket_id FROM intake_tickets WHERE sender_email = $1 AND received_at >= $2 ORDER BY number`,
			lk.SenderEmail, lk.BundleSince.Unix())
		if err != nil {
			return in, nil, fmt.Errorf("bundle candidates: %w", err)
		}
		for _, id := range ids {
			t, err := l.ticket(ctx, tx, id)
			if err != nil {
				return in, nil, err
			}
			if t.Exists() {
				in.BundleCandidates = append(in.BundleCandidates, t)
			}
		}
	}
	var maxNumber int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(number), 0) FROM intake_tickets`).Scan(&maxNumber); err != nil {
		return in, nil, fmt.Errorf("next ticket number: %w", err)
	}
	in.NextTicketNumber = max(maxNumber+1, domain.FirstTicketNumber)
	// A new ticket's stream is expected empty.
	l.versions[domain.TicketStream(domain.TicketIDFor(m.MailID))] = 0
	return in, l, nil
}

// findReferenced follows MailInput.Referenced's order: subject number, our
// own Message-IDs, then any Message-ID a ticket holds.
func findReferenced(ctx context.Context, tx eventstore.Tx, l *loaded, lk domain.Lookups) (*domain.Ticket, error) {
	if lk.TicketNumber > 0 {
		var id string
		err := tx.QueryRow(ctx, `SELECT ticket_id FROM intake_tickets WHERE number = $1`, lk.TicketNumber).Scan(&id)
		switch {
		case errors.Is(err, eventstore.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("look up ticket number %d: %w", lk.TicketNumber, err)
		default:
			t, err := l.ticket(ctx, tx, id)
			if err != nil {
				return nil, err
			}
			if t.Exists() {
				return &t, nil
			}
		}
	}
	for _, o := range lk.Own {
		t, err := l.ticket(ctx, tx, o.TicketID)
		if err != nil {
			return nil, err
		}
		if o.Names(t) {
			return &t, nil
		}
	}
	for _, mid := range lk.MessageIDs {
		ids, err := ticketsHolding(ctx, tx, mid)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			t, err := l.ticket(ctx, tx, id)
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

func ticketsHolding(ctx context.Context, tx eventstore.Tx, messageID string) ([]string, error) {
	ids, err := queryStrings(ctx, tx, `SELECT ticket_id FROM intake_message_ids WHERE message_id = $1 ORDER BY ticket_id`, messageID)
	if err != nil {
		return nil, fmt.Errorf("look up Message-ID %s: %w", messageID, err)
	}
	return ids, nil
}

func takenUserNames(ctx context.Context, tx eventstore.Tx, email string) (map[string]bool, error) {
	local, _, _ := strings.Cut(email, "@")
	local = strings.ToLower(local)
	names, err := queryStrings(ctx, tx, `SELECT user_name FROM intake_users WHERE user_name = $1 OR user_name LIKE $2`,
		local, escapeLike(local)+"%")
	if err != nil {
		return nil, fmt.Errorf("taken user names: %w", err)
	}
	taken := make(map[string]bool, len(names))
	for _, n := range names {
		taken[n] = true
	}
	return taken, nil
}

// escapeLike makes s a literal LIKE prefix in both dialects (which treat
// backslash differently, so the wildcards are simply dropped: the result is
// a superset, which is harmless for a "taken" set).
func escapeLike(s string) string {
	return strings.NewReplacer("%", "", "_", "", `\`, "").Replace(s)
}

func queryStrings(ctx context.Context, tx eventstore.Tx, q string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
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

// appendDecision appends a decision's events, grouped by stream in order,
// each stream at the version it was read at.
func appendDecision(ctx context.Context, tx eventstore.Tx, events []domain.Event, l *loaded, m domain.MailReceived,
	re eventstore.RecordedEvent,
) error {
	var order []string
	byStream := map[string][]eventstore.NewEvent{}
	for i, e := range events {
		name, version, payload, err := domain.MarshalEvent(e)
		if err != nil {
			return err
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
	if len(reqs) == 0 {
		return nil
	}
	if _, err := tx.Append(ctx, reqs...); err != nil {
		return fmt.Errorf("append %d events: %w", len(events), err)
	}
	return nil
}

// indexDecision records what later decisions look up: new tickets, the
// Message-IDs tickets hold, auto-created users.
func indexDecision(ctx context.Context, tx eventstore.Tx, events []domain.Event, m domain.MailReceived) error {
	for _, e := range events {
		var err error
		switch e := e.(type) {
		case domain.TicketCreated:
			_, err = tx.Exec(ctx, `INSERT INTO intake_tickets (ticket_id, number, sender_email, account_id, received_at)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ticket_id) DO NOTHING`,
				e.TicketID, e.Number, strings.ToLower(strings.TrimSpace(m.From.Email)), m.AccountID, m.ReceivedAt.Unix())
			if err == nil {
				err = indexMessageID(ctx, tx, m.MessageID, e.TicketID)
			}
		case domain.MailAppended:
			err = indexMessageID(ctx, tx, m.MessageID, e.TicketID)
		case domain.MailBundled:
			err = indexMessageID(ctx, tx, m.MessageID, e.TicketID)
		case domain.UserAutoCreated:
			err = indexUser(ctx, tx, e)
		}
		if err != nil {
			return fmt.Errorf("ticketing: index %s of mail %s: %w", e.EventName(), m.MailID, err)
		}
	}
	return nil
}

func indexMessageID(ctx context.Context, tx eventstore.Tx, messageID, ticketID string) error {
	messageID = strings.Trim(strings.TrimSpace(messageID), "<>")
	if messageID == "" {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO intake_message_ids (message_id, ticket_id) VALUES ($1, $2)
		ON CONFLICT (message_id, ticket_id) DO NOTHING`, messageID, ticketID)
	return err
}

func indexUser(ctx context.Context, tx eventstore.Tx, e domain.Event) error {
	var id, email, name string
	switch e := e.(type) {
	case domain.UserAutoCreated:
		id, email, name = e.UserID, e.Email, e.UserName
	default:
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO intake_users (user_id, email, user_name) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO NOTHING`, id, strings.ToLower(strings.TrimSpace(email)), strings.ToLower(name))
	return err
}
