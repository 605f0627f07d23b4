package projections

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// TicketsName is the subscriber name of the ticket projection. Changing it
// makes the projection start again from the first event into the same
// tables: bump it only together with a migration that empties them (or
// use `ledgerdesk projections rebuild`, which keeps it).
const TicketsName = "projection.tickets.v1"

// Kinds of ticket articles (ticket_articles.kind).
const (
	ArticleMail            = "mail"             // an inbound mail: the first, an answer or a bundled one
	ArticleNote            = "note"             // an agent's internal note
	ArticleReply           = "reply"            // an agent's reply, queued for sending
	ArticleAutoReply       = "auto_reply"       // the automatic answer to a new ticket
	ArticleErrorMail       = "error_mail"       // an error mail to the sender (e.g. ticket closed)
	ArticleDeliveryFailure = "delivery_failure" // a bounce of one of the ticket's mails
)

// Tickets projects every ticket stream ("ticket-<id>") into the table
// tickets (one row per ticket).
//
// Idempotence and order: a row keeps the version of the last event of its
// stream applied to it, and an event at version v changes the row only
// while it is at v-1, so a redelivered event changes nothing and an event
// can never overtake an earlier one of the same ticket (the projection then
// fails the batch and is delivered it again).
//
// Articles (mails, notes, replies, automatic mails, bounces) are not copied
// into a table: each is one event of the ticket's stream, and a mail's
// content is in the MailReceived its event names (CausedBy). Ticket reads
// them from the log, up to the row's version, and the SQL view
// ticket_articles (migration 0010) gives analysts the same rows. A mail body
// is so stored once, not once in the log and again in a view, and a rebuild
// writes one row per ticket instead of one per article.
type Tickets struct {
	*view
	tickets string // table name
	// Options tunes the subscription (zero: the store's defaults).
	Options eventstore.SubscribeOptions
}

// NewTickets returns the ticket projection over store; reader reads its
// tables for the API. A nil logger discards.
func NewTickets(store eventstore.Store, reader Reader, logger *slog.Logger) *Tickets {
	return newTickets(store, reader, logger, "")
}

func newTickets(store eventstore.Store, reader Reader, logger *slog.Logger, suffix string) *Tickets {
	return &Tickets{view: newView("tickets", TicketsName, store, reader, logger),
		tickets: "tickets" + suffix}
}

// Run keeps the tables up to date until ctx ends; it returns ctx.Err() then,
// or the store's error when the subscription cannot go on.
func (p *Tickets) Run(ctx context.Context) error { return p.runBatch(ctx, p.HandleBatch, p.Options) }

// HandleBatch applies a batch of events through tx, as Handle does each;
// it is the subscription's handler. The batch's new tickets are inserted
// together, in multi-row statements, before any later event of one of
// them: an import of thousands of mails costs a statement per hundred
// tickets, not one per ticket.
func (p *Tickets) HandleBatch(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
	var creates []createdTicket
	pending := map[string]bool{}
	flush := func() error {
		for part := range slices.Chunk(creates, createChunk) {
			if err := p.createAll(ctx, tx, part); err != nil {
				return err
			}
		}
		creates = creates[:0]
		clear(pending)
		return nil
	}
	for _, ev := range evs {
		id, ok := streamID(ev.Stream, domain.TicketStream(""))
		if !ok {
			continue
		}
		if ev.Type == domain.TicketCreatedName {
			if e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload); err == nil {
				if c, ok := e.(domain.TicketCreated); ok {
					creates = append(creates, createdTicket{id: id, c: c, version: ev.StreamVersion})
					pending[id] = true
					continue
				}
			}
		}
		if pending[id] {
			if err := flush(); err != nil {
				return err
			}
		}
		if err := p.Handle(ctx, tx, ev); err != nil {
			return err
		}
	}
	return flush()
}

// createdTicket is a TicketCreated waiting for its row.
type createdTicket struct {
	id      string
	c       domain.TicketCreated
	version int64
}

// createChunk bounds the rows of one INSERT (14 values each).
const createChunk = 100

// createAll inserts the rows of new tickets as create does one.
func (p *Tickets) createAll(ctx context.Context, tx eventstore.Tx, part []createdTicket) error {
	vals := make([]string, len(part))
	args := make([]any, 0, 14*len(part))
	for i, t := range part {
		ph := make([]string, 14)
		for j := range ph {
			ph[j] = fmt.Sprintf("$%d", 14*i+j+1)
		}
		// article_count 1, updated_at = created_at, closed_at NULL
		vals[i] = fmt.Sprintf("(%s, 1, %s, %s, NULL, %s)", strings.Join(ph[:12], ", "), ph[12], ph[12], ph[13])
		c := t.c
		args = append(args, t.id, c.Number, c.Subject, string(c.Status), strings.ToLower(c.Requester.Email), c.Requester.Name,
			c.Requester.UserID, c.LocationID, c.ResourceID, c.Category, c.Priority, c.AccountID, c.CreatedAt.UTC(), t.version)
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+p.tickets+` (id, number, subject, status, requester_email, requester_name,
		requester_user_id, location_id, resource, category, priority, account_id, article_count, created_at, updated_at,
		closed_at, version) VALUES `+strings.Join(vals, ", ")+` ON CONFLICT (id) DO NOTHING`, args...)
	if err != nil {
		return fmt.Errorf("projections: create %d tickets: %w", len(part), err)
	}
	return nil // rows not inserted: redeliveries
}

// ticketChange is what one event does to a ticket's row.
type ticketChange struct {
	updatedAt   sql.NullTime
	status      sql.NullString
	setClosed   bool
	closedAt    sql.NullTime
	resource    sql.NullString
	category    sql.NullString
	priority    sql.NullString
	addsArticle bool // see articleOf
}

// Handle applies one event through tx; it is the subscription's handler,
// exported so that tests and rebuilds can feed events directly.
func (p *Tickets) Handle(ctx context.Context, tx eventstore.Tx, ev eventstore.RecordedEvent) error {
	id, ok := streamID(ev.Stream, domain.TicketStream(""))
	if !ok {
		return nil
	}
	e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload)
	if err != nil {
		// The payload will not change: count the version and go on, rather
		// than block every later event; the log says what was skipped.
		p.logger.Error("tickets: undecodable event applied as a version bump only", "position", ev.Position,
			"type", ev.Type, "stream", ev.Stream, "err", err)
		e = nil
	}
	if c, ok := e.(domain.TicketCreated); ok {
		return p.create(ctx, tx, id, c, ev)
	}
	var ch ticketChange
	if e != nil {
		ch = changeOf(e)
	}
	delta := 0
	if ch.addsArticle {
		delta = 1
	}
	n, err := tx.Exec(ctx, `UPDATE `+p.tickets+` SET version = $2,
		article_count = article_count + $3,
		updated_at = COALESCE($4, updated_at),
		status = COALESCE($5, status),
		closed_at = CASE WHEN $6 THEN $7 ELSE closed_at END,
		resource = COALESCE($8, resource),
		category = COALESCE($9, category),
		priority = COALESCE($10, priority)
		WHERE id = $1 AND version = $11`,
		id, ev.StreamVersion, int64(delta), ch.updatedAt, ch.status, ch.setClosed, ch.closedAt,
		ch.resource, ch.category, ch.priority, ev.StreamVersion-1)
	if err != nil {
		return fmt.Errorf("projections: ticket %s version %d: %w", id, ev.StreamVersion, err)
	}
	if n == 0 {
		g, err := checkVersion(ctx, tx, p.tickets, id, ev.StreamVersion)
		if err != nil {
			return fmt.Errorf("projections: ticket %s version %d: %w", id, ev.StreamVersion, err)
		}
		switch g {
		case guardSeen:
			return nil
		case guardMissing:
			p.logger.Error("tickets: event of a ticket that was never created skipped", "position", ev.Position,
				"type", ev.Type, "stream", ev.Stream)
			return nil
		default:
			return fmt.Errorf("projections: ticket %s: event version %d arrived before an earlier one", id, ev.StreamVersion)
		}
	}
	return nil
}

func (p *Tickets) create(ctx context.Context, tx eventstore.Tx, id string, c domain.TicketCreated, ev eventstore.RecordedEvent) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+p.tickets+` (id, number, subject, status, requester_email, requester_name,
		requester_user_id, location_id, resource, category, priority, account_id, article_count, created_at, updated_at,
		closed_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13, NULL, $14)
		ON CONFLICT (id) DO NOTHING`,
		id, c.Number, c.Subject, string(c.Status), strings.ToLower(c.Requester.Email), c.Requester.Name, c.Requester.UserID,
		c.LocationID, c.ResourceID, c.Category, c.Priority, c.AccountID, c.CreatedAt.UTC(), ev.StreamVersion)
	if err != nil {
		return fmt.Errorf("projections: create ticket %s: %w", id, err)
	}
	return nil // 0 rows: a redelivery
}

// mailOf decodes the MailReceived that opens a mail stream; an
// undecodable one leaves the article without body (the ticket stays right).
func mailOf(ev eventstore.RecordedEvent) (mailFields, bool) {
	var m mailFields
	if ev.Type != domain.MailReceivedName || ev.StreamVersion != 1 || json.Unmarshal(ev.Payload, &m) != nil {
		return mailFields{}, false
	}
	return m, true
}

// mailFields is what an article shows of a MailReceived (not its header
// maps and lists).
type mailFields struct {
	MailID    string           `json:"mail_id"`
	BlobRef   string           `json:"blob_ref"`
	MessageID string           `json:"message_id"`
	Subject   string           `json:"subject"`
	From      domain.Address   `json:"from"`
	To        []domain.Address `json:"to"`
	TextBody  string           `json:"text_body"`
	HTMLBody  string           `json:"html_body"`

	TextBodyTruncated bool `json:"text_body_truncated"`
	HTMLBodyTruncated bool `json:"html_body_truncated"`
}

// fill completes a mail's article with the mail: its addresses, bodies and
// raw message, and its id and subject where the ticket event has none.
func (a *Article) fill(m mailFields) {
	a.MailID = m.MailID
	if a.MessageID == "" {
		a.MessageID = m.MessageID
	}
	if a.Subject == "" {
		a.Subject = m.Subject
	}
	a.From, a.To, a.TextBody, a.HTMLBody, a.BlobRef = formatAddress(m.From), formatAddresses(m.To), m.TextBody, m.HTMLBody, m.BlobRef
	a.BodyTruncated = m.TextBodyTruncated || m.HTMLBodyTruncated
}

func formatAddress(a domain.Address) string {
	if a.Name == "" {
		return a.Email
	}
	// a quoted string as in RFC 5322, which the SQL view ticket_articles
	// writes the same way
	return `"` + strings.ReplaceAll(strings.ReplaceAll(a.Name, `\`, `\\`), `"`, `\"`) + `" <` + a.Email + ">"
}

func formatAddresses(as []domain.Address) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = formatAddress(a)
	}
	return strings.Join(parts, ", ")
}

func at(t time.Time) sql.NullTime { return sql.NullTime{Time: t.UTC(), Valid: !t.IsZero()} }

func str(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// changeOf maps a ticket event (other than TicketCreated) to its change.
// Events that only record a decision change nothing but the version.
func changeOf(e domain.Event) ticketChange {
	var ch ticketChange
	switch e := e.(type) {
	case domain.MailAppended:
		ch.updatedAt, ch.addsArticle = at(e.At), true
	case domain.MailBundled:
		ch.updatedAt, ch.addsArticle = at(e.At), true
	case domain.TicketReactivated:
		ch.updatedAt, ch.status, ch.setClosed = at(e.At), str(string(e.Status)), true
	case domain.TicketStatusChanged:
		ch.updatedAt, ch.status = at(e.At), str(string(e.To))
	case domain.TicketClosed:
		ch.updatedAt, ch.status, ch.setClosed, ch.closedAt = at(e.ClosedAt), str(string(domain.StatusClosed)), true, at(e.ClosedAt)
	case domain.TicketReopened:
		ch.updatedAt, ch.status, ch.setClosed = at(e.At), str(string(e.Status)), true
	case domain.TicketAssigned:
		ch.updatedAt, ch.resource = at(e.At), str(e.ResourceID)
	case domain.TicketCategoryChanged:
		ch.updatedAt, ch.category = at(e.At), str(e.Category)
	case domain.TicketPriorityChanged:
		ch.updatedAt, ch.priority = at(e.At), str(e.Priority)
	case domain.NoteAdded:
		ch.updatedAt, ch.addsArticle = at(e.At), true
	case domain.DeliveryFailureRecorded:
		ch.addsArticle = true
	case domain.ReplyQueued:
		ch.updatedAt, ch.addsArticle = at(e.QueuedAt), true
	case domain.AutoReplyQueued, domain.ErrorMailQueued:
		ch.addsArticle = true
	}
	return ch
}

// articleOf is the article a ticket event adds (nil for none; changeOf
// says addsArticle for the same events other than TicketCreated, as
// TestArticleOf_WhereChangeOfCounts holds) and the mail whose MailReceived
// completes it (see Article.fill). An article without a time of its own
// gets recordedAt, but for the ticket's first, which has its creation's.
func articleOf(e domain.Event, recordedAt time.Time) (a *Article, mailID string) {
	switch e := e.(type) {
	case domain.TicketCreated:
		return &Article{Kind: ArticleMail, MailID: e.CausedBy, MessageID: e.MessageID, Subject: e.Subject, CreatedAt: e.CreatedAt},
			e.CausedBy
	case domain.MailAppended:
		a, mailID = &Article{Kind: ArticleMail, MailID: e.CausedBy, MessageID: e.MessageID, From: formatAddress(e.From),
			Subject: e.Subject, CreatedAt: e.At}, e.CausedBy
	case domain.MailBundled:
		a, mailID = &Article{Kind: ArticleMail, MailID: e.CausedBy, MessageID: e.MessageID, From: formatAddress(e.From),
			Subject: e.Subject, CreatedAt: e.At}, e.CausedBy
	case domain.NoteAdded:
		a = &Article{Kind: ArticleNote, TextBody: e.Text, Actor: e.Actor, From: e.Actor, CreatedAt: e.At}
	case domain.DeliveryFailureRecorded:
		a, mailID = &Article{Kind: ArticleDeliveryFailure, MailID: e.CausedBy, TextBody: e.Reason, CreatedAt: e.At,
			Subject: "delivery failed: " + e.BouncedMessageID}, e.CausedBy
	case domain.ReplyQueued:
		a = &Article{Kind: ArticleReply, MessageID: e.MessageID, To: formatAddresses(e.To), Subject: e.Subject,
			TextBody: e.Body, Actor: e.Actor, From: e.Actor, CreatedAt: e.QueuedAt}
	case domain.AutoReplyQueued:
		a = &Article{Kind: ArticleAutoReply, MessageID: e.MessageID, To: formatAddress(e.To), Subject: e.Subject,
			TextBody: "template " + e.Template, CreatedAt: e.QueuedAt}
	case domain.ErrorMailQueued:
		a = &Article{Kind: ArticleErrorMail, MessageID: e.MessageID, To: formatAddress(e.To), Subject: e.Subject,
			TextBody: e.Reason, CreatedAt: e.QueuedAt}
	}
	if a != nil && a.CreatedAt.IsZero() {
		a.CreatedAt = recordedAt
	}
	return a, mailID
}

// Ticket is one row of the tickets view.
type Ticket struct {
	ID              string     `json:"id"`
	Number          int64      `json:"number"`
	Subject         string     `json:"subject"`
	Status          string     `json:"status"`
	RequesterEmail  string     `json:"requester_email"`
	RequesterName   string     `json:"requester_name"`
	RequesterUserID string     `json:"requester_user_id"`
	LocationID      string     `json:"location_id"`
	Resource        string     `json:"resource"`
	Category        string     `json:"category"`
	Priority        string     `json:"priority"`
	AccountID       string     `json:"account_id"`
	ArticleCount    int64      `json:"article_count"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	ClosedAt        *time.Time `json:"closed_at"`
	Version         int64      `json:"version"`
}

// Article is one article of a ticket: what Ticket gives, and one row of
// the SQL view ticket_articles.
type Article struct {
	Seq       int64     `json:"seq"`
	Kind      string    `json:"kind"`
	MailID    string    `json:"mail_id,omitempty"`
	MessageID string    `json:"message_id,omitempty"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Subject   string    `json:"subject"`
	TextBody  string    `json:"text_body"`
	HTMLBody  string    `json:"html_body"`
	BlobRef   string    `json:"blob_ref,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// BodyTruncated: TextBody or HTMLBody is a prefix (a mail's event keeps
	// domain.MailBodyPrefixBytes of each body); the whole is in the raw
	// mail, BlobRef. The SQL view ticket_articles has no such column: its
	// bodies are the same prefixes.
	BodyTruncated bool `json:"body_truncated"`
}

const ticketColumns = `id, number, subject, status, requester_email, requester_name, requester_user_id, location_id,
	resource, category, priority, account_id, article_count, created_at, updated_at, closed_at, version`

func scanTicket(rows eventstore.Rows) (Ticket, error) {
	var (
		t      Ticket
		closed sql.NullTime
	)
	err := rows.Scan(&t.ID, &t.Number, &t.Subject, &t.Status, &t.RequesterEmail, &t.RequesterName, &t.RequesterUserID,
		&t.LocationID, &t.Resource, &t.Category, &t.Priority, &t.AccountID, &t.ArticleCount, &t.CreatedAt, &t.UpdatedAt,
		&closed, &t.Version)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	if closed.Valid {
		c := closed.Time.UTC()
		t.ClosedAt = &c
	}
	return t, err
}

// ErrTicketNotFound is returned by Ticket for an id the view does not hold.
var ErrTicketNotFound = errors.New("projections: ticket not found")

// ErrArticleNotFound is returned by Article for a seq that is no article of
// the ticket (yet).
var ErrArticleNotFound = errors.New("projections: article not found")

// row reads one ticket's row.
func (p *Tickets) row(ctx context.Context, id string) (Ticket, error) {
	rows, err := p.reader.Query(ctx, `SELECT `+ticketColumns+` FROM `+p.tickets+` WHERE id = $1`, id)
	if err != nil {
		return Ticket{}, fmt.Errorf("projections: ticket %s: %w", id, err)
	}
	var t Ticket
	found := false
	for rows.Next() {
		if t, err = scanTicket(rows); err != nil {
			_ = rows.Close()
			return Ticket{}, fmt.Errorf("projections: ticket %s: %w", id, err)
		}
		found = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return Ticket{}, fmt.Errorf("projections: ticket %s: %w", id, err)
	}
	if !found {
		return Ticket{}, fmt.Errorf("projections: ticket %s: %w", id, ErrTicketNotFound)
	}
	return t, nil
}

// Ticket returns one ticket and all its articles, oldest first. It reads
// every article's mail; the API pages them with TicketArticles instead.
func (p *Tickets) Ticket(ctx context.Context, id string) (Ticket, []Article, error) {
	t, arts, _, err := p.TicketArticles(ctx, id, 0, 0)
	return t, arts, err
}

// TicketArticles returns one ticket and at most limit of its articles (0:
// all), oldest first, those after seq after (0: from the first). next is
// the seq to pass as after for the next page, 0 when there is none. It
// reads the ticket's stream in windows up to the row's version, and only
// the mails of the articles it returns, in one query.
func (p *Tickets) TicketArticles(ctx context.Context, id string, after int64, limit int) (t Ticket, arts []Article, next int64, err error) {
	t, err = p.row(ctx, id)
	if err != nil {
		return Ticket{}, nil, 0, err
	}
	sc := articleScanner{store: p.store, stream: domain.TicketStream(id)}
	arts, next, err = sc.scan(ctx, max(after, 0), t.Version, limit)
	if err != nil {
		return Ticket{}, nil, 0, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	if err := fillMails(ctx, p.store, arts); err != nil {
		return Ticket{}, nil, 0, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	return t, arts, next, nil
}

// Article returns article seq of ticket id, reading only that event of the
// ticket's stream and, for a mail, that one mail: a ticket anyone can append
// mails to (a subject with its reference) costs no more to read from than
// any other. A seq past the row's version is not found yet, as in Ticket.
func (p *Tickets) Article(ctx context.Context, id string, seq int64) (Article, error) {
	t, err := p.row(ctx, id)
	if err != nil {
		return Article{}, err
	}
	if seq < 1 || seq > t.Version {
		return Article{}, fmt.Errorf("projections: ticket %s article %d: %w", id, seq, ErrArticleNotFound)
	}
	sc := articleScanner{store: p.store, stream: domain.TicketStream(id)}
	arts, _, err := sc.scan(ctx, seq-1, seq, 1)
	if err != nil {
		return Article{}, fmt.Errorf("projections: ticket %s article %d: %w", id, seq, err)
	}
	if len(arts) != 1 || arts[0].Seq != seq {
		return Article{}, fmt.Errorf("projections: ticket %s article %d: %w", id, seq, ErrArticleNotFound)
	}
	if err := fillMails(ctx, p.store, arts); err != nil {
		return Article{}, fmt.Errorf("projections: ticket %s article %d: %w", id, seq, err)
	}
	return arts[0], nil
}

// articleScanner reads a ticket's articles from its stream.
type articleScanner struct {
	store  eventstore.Store
	stream string
	// created: a TicketCreated was met (the row keeps the first only).
	created bool
}

// scanWindow is how many events of a ticket's stream one read takes; most
// events of a ticket are articles, so a page needs about one window.
const scanWindow = 128

// scan returns the articles of the events after version after up to
// version to, at most limit (0: all), and the seq to continue after when
// more articles follow (0: none). The mails are not read (see fillMails).
// An event that does not decode gives no article, as it gives the ticket's
// row nothing but its version.
func (sc *articleScanner) scan(ctx context.Context, after, to int64, limit int) ([]Article, int64, error) {
	arts := []Article{}
	for from := after + 1; from <= to; {
		end := to
		if limit > 0 {
			end = min(to, from+int64(max(limit+1, scanWindow))-1)
		}
		evs, err := sc.store.ReadStream(ctx, sc.stream, from, end)
		if err != nil {
			return nil, 0, fmt.Errorf("read %s from %d: %w", sc.stream, from, err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			a, err := sc.article(ctx, ev)
			if err != nil {
				return nil, 0, err
			}
			if a == nil {
				continue
			}
			if limit > 0 && len(arts) == limit {
				return arts, arts[limit-1].Seq, nil // one more exists
			}
			arts = append(arts, *a)
		}
		from = evs[len(evs)-1].StreamVersion + 1
	}
	return arts, 0, nil
}

// article is the article one event of the stream adds, nil for none.
func (sc *articleScanner) article(ctx context.Context, ev eventstore.RecordedEvent) (*Article, error) {
	e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload)
	if err != nil {
		return nil, nil //nolint:nilerr // an undecodable event is skipped by design, as Handle skips it
	}
	if _, ok := e.(domain.TicketCreated); ok {
		first, err := sc.firstCreated(ctx, ev.StreamVersion)
		if err != nil || !first {
			return nil, err
		}
	}
	a, mailID := articleOf(e, ev.RecordedAt)
	if a == nil {
		return nil, nil
	}
	if mailID != "" {
		a.MailID = mailID // the mail fillMails completes the article with
	}
	a.Seq, a.CreatedAt = ev.StreamVersion, a.CreatedAt.UTC()
	return a, nil
}

// firstCreated reports whether the TicketCreated at version v is the
// stream's first. A scan that starts at version 1 knows it; one that starts
// later looks at the types of the events before (a second TicketCreated in
// a stream is a repair case, so this read is rare).
func (sc *articleScanner) firstCreated(ctx context.Context, v int64) (bool, error) {
	if sc.created {
		return false, nil
	}
	sc.created = true
	if v == 1 {
		return true, nil
	}
	evs, err := sc.store.ReadStream(ctx, sc.stream, 1, v-1)
	if err != nil {
		return false, fmt.Errorf("read %s before %d: %w", sc.stream, v, err)
	}
	for _, e := range evs {
		if e.Type == domain.TicketCreatedName {
			return false, nil
		}
	}
	return true, nil
}

// fillMails completes the mail articles with their mails' content, read
// from their streams in one round trip. An article whose mail the log does
// not hold keeps what its event says.
func fillMails(ctx context.Context, store eventstore.Store, arts []Article) error {
	var streams []string
	for _, a := range arts {
		if a.MailID != "" {
			streams = append(streams, ticketing.MailStream(a.MailID))
		}
	}
	if len(streams) == 0 {
		return nil
	}
	evs, err := store.ReadStreams(ctx, streams)
	if err != nil {
		return fmt.Errorf("read %d mails: %w", len(streams), err)
	}
	mails := make(map[string]mailFields, len(evs))
	for _, ev := range evs {
		if m, ok := mailOf(ev); ok {
			mails[ev.Stream] = m
		}
	}
	for i := range arts {
		if arts[i].MailID == "" {
			continue
		}
		if m, ok := mails[ticketing.MailStream(arts[i].MailID)]; ok {
			arts[i].fill(m)
		}
	}
	return nil
}
