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
func (p *Tickets) Run(ctx context.Context) error { return p.run(ctx, p.Handle, p.Options) }

// ticketChange is what one event does to a ticket's row.
type ticketChange struct {
	updatedAt   sql.NullTime
	status      sql.NullString
	setClosed   bool
	closedAt    sql.NullTime
	resource    sql.NullString
	category    sql.NullString
	priority    sql.NullString
	addsArticle bool
	article     *article // the article added, when asked for (see changeOf)
	needsMailOf string   // MailID whose MailReceived fills article
}

// article is one article of a ticket (see Article).
type article struct {
	kind, mailID, messageID, from, to, subject, text, html, blobRef, actor string
	at                                                                     time.Time
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
		ch = changeOf(e, ev, false)
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

// mailBody is what a mail article takes from its MailReceived.
type mailBody struct {
	mailID, messageID, subject, from, to, text, html, blobRef string
}

// mailBodyOf decodes the MailReceived that opens a mail stream; an
// undecodable one leaves the article without body (the ticket stays right).
func mailBodyOf(evs []eventstore.RecordedEvent) (mailBody, bool) {
	if len(evs) == 0 || evs[0].Type != domain.MailReceivedName || evs[0].StreamVersion != 1 {
		return mailBody{}, false
	}
	var m mailFields
	if err := json.Unmarshal(evs[0].Payload, &m); err != nil {
		return mailBody{}, false
	}
	return m.body(), true
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
}

func (m mailFields) body() mailBody {
	return mailBody{mailID: m.MailID, messageID: m.MessageID, subject: m.Subject, from: formatAddress(m.From),
		to: formatAddresses(m.To), text: m.TextBody, html: m.HTMLBody, blobRef: m.BlobRef}
}

func (a *article) fill(b mailBody) {
	a.mailID = b.mailID
	if a.messageID == "" {
		a.messageID = b.messageID
	}
	if a.subject == "" {
		a.subject = b.subject
	}
	a.from, a.to, a.text, a.html, a.blobRef = b.from, b.to, b.text, b.html, b.blobRef
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
// Events that only record a decision change nothing but the version. The
// article an event adds is made only when withArticle: the tickets table
// counts articles, Ticket shows them.
func changeOf(e domain.Event, ev eventstore.RecordedEvent, withArticle bool) ticketChange {
	var ch ticketChange
	var mk func() *article // the event's article
	switch e := e.(type) {
	case domain.MailAppended:
		ch.updatedAt = at(e.At)
		mk = func() *article {
			return &article{kind: ArticleMail, mailID: e.CausedBy, messageID: e.MessageID, from: formatAddress(e.From),
				subject: e.Subject, at: e.At}
		}
		ch.needsMailOf = e.CausedBy
	case domain.MailBundled:
		ch.updatedAt = at(e.At)
		mk = func() *article {
			return &article{kind: ArticleMail, mailID: e.CausedBy, messageID: e.MessageID, from: formatAddress(e.From),
				subject: e.Subject, at: e.At}
		}
		ch.needsMailOf = e.CausedBy
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
		ch.updatedAt = at(e.At)
		mk = func() *article {
			return &article{kind: ArticleNote, text: e.Text, actor: e.Actor, from: e.Actor, at: e.At}
		}
	case domain.DeliveryFailureRecorded:
		mk = func() *article {
			return &article{kind: ArticleDeliveryFailure, mailID: e.CausedBy, text: e.Reason, at: e.At,
				subject: "delivery failed: " + e.BouncedMessageID}
		}
		ch.needsMailOf = e.CausedBy
	case domain.ReplyQueued:
		ch.updatedAt = at(e.QueuedAt)
		mk = func() *article {
			return &article{kind: ArticleReply, messageID: e.MessageID, to: formatAddresses(e.To), subject: e.Subject,
				text: e.Body, actor: e.Actor, from: e.Actor, at: e.QueuedAt}
		}
	case domain.AutoReplyQueued:
		mk = func() *article {
			return &article{kind: ArticleAutoReply, messageID: e.MessageID, to: formatAddress(e.To), subject: e.Subject,
				text: "template " + e.Template, at: e.QueuedAt}
		}
	case domain.ErrorMailQueued:
		mk = func() *article {
			return &article{kind: ArticleErrorMail, messageID: e.MessageID, to: formatAddress(e.To), subject: e.Subject,
				text: e.Reason, at: e.QueuedAt}
		}
	}
	ch.addsArticle = mk != nil
	if mk != nil && withArticle {
		ch.article = mk()
		if ch.article.at.IsZero() {
			ch.article.at = ev.RecordedAt
		}
	}
	return ch
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

// Ticket returns one ticket and its articles, oldest first.
func (p *Tickets) Ticket(ctx context.Context, id string) (Ticket, []Article, error) {
	rows, err := p.reader.Query(ctx, `SELECT `+ticketColumns+` FROM `+p.tickets+` WHERE id = $1`, id)
	if err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: ticket %s: %w", id, err)
	}
	var t Ticket
	found := false
	for rows.Next() {
		if t, err = scanTicket(rows); err != nil {
			_ = rows.Close()
			return Ticket{}, nil, fmt.Errorf("projections: ticket %s: %w", id, err)
		}
		found = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: ticket %s: %w", id, err)
	}
	if !found {
		return Ticket{}, nil, fmt.Errorf("projections: ticket %s: %w", id, ErrTicketNotFound)
	}
	evs, err := p.store.ReadStream(ctx, domain.TicketStream(id), 1, t.Version)
	if err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	arts, err := articlesOf(ctx, p.store, evs)
	if err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	return t, arts, nil
}

// articlesOf gives the articles of a ticket's events (its stream from
// version 1), in order, the mails' content read from their streams in one
// round trip. An event that does not decode gives no article, as it gives
// the ticket's row nothing but its version.
func articlesOf(ctx context.Context, store eventstore.Store, evs []eventstore.RecordedEvent) ([]Article, error) {
	type entry struct {
		seq  int64
		a    *article
		mail string // stream of the MailReceived that completes a
	}
	var (
		entries []entry
		streams []string
		created bool
	)
	for _, ev := range evs {
		e, err := domain.UnmarshalEvent(ev.Type, ev.SchemaVersion, ev.Payload)
		if err != nil {
			continue
		}
		var x entry
		if c, ok := e.(domain.TicketCreated); ok {
			if created {
				continue
			}
			created = true
			x.a = &article{kind: ArticleMail, mailID: c.CausedBy, messageID: c.MessageID, subject: c.Subject, at: c.CreatedAt}
			if c.CausedBy != "" {
				x.mail = ticketing.MailStream(c.CausedBy)
			}
		} else {
			ch := changeOf(e, ev, true)
			x.a = ch.article
			if ch.needsMailOf != "" {
				x.mail = ticketing.MailStream(ch.needsMailOf)
			}
		}
		if x.a == nil {
			continue
		}
		x.seq = ev.StreamVersion
		entries = append(entries, x)
		if x.mail != "" {
			streams = append(streams, x.mail)
		}
	}
	bodies := map[string]mailBody{}
	if len(streams) > 0 {
		mails, err := store.ReadStreams(ctx, streams)
		if err != nil {
			return nil, fmt.Errorf("read %d mails: %w", len(streams), err)
		}
		for i := range mails {
			if b, ok := mailBodyOf(mails[i : i+1]); ok {
				bodies[mails[i].Stream] = b
			}
		}
	}
	arts := make([]Article, 0, len(entries))
	for _, x := range entries {
		a := x.a
		if b, ok := bodies[x.mail]; ok {
			a.fill(b)
		}
		arts = append(arts, Article{Seq: x.seq, Kind: a.kind, MailID: a.mailID, MessageID: a.messageID, From: a.from, To: a.to,
			Subject: a.subject, TextBody: a.text, HTMLBody: a.html, BlobRef: a.blobRef, Actor: a.actor, CreatedAt: a.at.UTC()})
	}
	return arts, nil
}
