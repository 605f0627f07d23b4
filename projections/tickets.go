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

// Tickets projects every ticket stream ("ticket-<id>") into the tables
// tickets (one row per ticket) and ticket_articles (one row per mail, note,
// reply, automatic mail and bounce, seq = the event's stream version).
//
// Idempotence and order: a row keeps the version of the last event of its
// stream applied to it, and an event at version v changes the row only
// while it is at v-1, so a redelivered event changes nothing and an event
// can never overtake an earlier one of the same ticket (the projection then
// fails the batch and is delivered it again).
//
// Bodies: ticket events name the MailReceived they come from (CausedBy); the
// handler reads that event from the mail's stream ("mail-<MailID>", version
// 1) inside its transaction with tx.ReadStream, so bodies are not copied
// into a side table and a rebuild sees exactly what was stored.
type Tickets struct {
	*view
	tickets, articles string // table names
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
		tickets: "tickets" + suffix, articles: "ticket_articles" + suffix}
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
	article     *article
	needsMailOf string // MailID whose MailReceived fills article
}

// article is one row of ticket_articles.
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
		ch = changeOf(e, ev)
	}
	if ch.needsMailOf != "" {
		if err := fillFromMail(ctx, tx, ch.article, ch.needsMailOf); err != nil {
			return fmt.Errorf("projections: ticket %s version %d: %w", id, ev.StreamVersion, err)
		}
	}
	delta := 0
	if ch.article != nil {
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
	if ch.article != nil {
		return p.insertArticle(ctx, tx, id, ev.StreamVersion, ch.article)
	}
	return nil
}

func (p *Tickets) create(ctx context.Context, tx eventstore.Tx, id string, c domain.TicketCreated, ev eventstore.RecordedEvent) error {
	a := &article{kind: ArticleMail, mailID: c.CausedBy, messageID: c.MessageID, subject: c.Subject, at: c.CreatedAt}
	if c.CausedBy != "" {
		if err := fillFromMail(ctx, tx, a, c.CausedBy); err != nil {
			return fmt.Errorf("projections: ticket %s: %w", id, err)
		}
	}
	n, err := tx.Exec(ctx, `INSERT INTO `+p.tickets+` (id, number, subject, status, requester_email, requester_name,
		requester_user_id, location_id, resource, category, priority, account_id, article_count, created_at, updated_at,
		closed_at, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $13, NULL, $14)
		ON CONFLICT (id) DO NOTHING`,
		id, c.Number, c.Subject, string(c.Status), strings.ToLower(c.Requester.Email), c.Requester.Name, c.Requester.UserID,
		c.LocationID, c.ResourceID, c.Category, c.Priority, c.AccountID, c.CreatedAt.UTC(), ev.StreamVersion)
	if err != nil {
		return fmt.Errorf("projections: create ticket %s: %w", id, err)
	}
	if n == 0 {
		return nil // a redelivery
	}
	return p.insertArticle(ctx, tx, id, ev.StreamVersion, a)
}

func (p *Tickets) insertArticle(ctx context.Context, tx eventstore.Tx, id string, seq int64, a *article) error {
	_, err := tx.Exec(ctx, `INSERT INTO `+p.articles+` (ticket_id, seq, kind, mail_id, message_id, from_addr, to_addr,
		subject, text_body, html_body, blob_ref, actor, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (ticket_id, seq) DO NOTHING`,
		id, seq, a.kind, a.mailID, a.messageID, a.from, a.to, a.subject, a.text, a.html, a.blobRef, a.actor, a.at.UTC())
	if err != nil {
		return fmt.Errorf("projections: article %d of ticket %s: %w", seq, id, err)
	}
	return nil
}

// fillFromMail completes a mail article from the MailReceived of mailID.
// A mail stream without it leaves the article as the ticket event gave it.
func fillFromMail(ctx context.Context, tx eventstore.Tx, a *article, mailID string) error {
	evs, err := tx.ReadStream(ctx, ticketing.MailStream(mailID), 1, 1)
	if err != nil {
		return fmt.Errorf("read mail %s: %w", mailID, err)
	}
	if b, ok := mailBodyOf(evs); ok {
		a.fill(b)
	}
	return nil
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

// mailFields is what an article shows of a MailReceived: decoding all of
// it (its header maps and lists) costs a rebuild a third more.
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
	return fmt.Sprintf("%q <%s>", a.Name, a.Email)
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
func changeOf(e domain.Event, ev eventstore.RecordedEvent) ticketChange {
	var ch ticketChange
	switch e := e.(type) {
	case domain.MailAppended:
		ch.updatedAt = at(e.At)
		ch.article = &article{kind: ArticleMail, mailID: e.CausedBy, messageID: e.MessageID, from: formatAddress(e.From),
			subject: e.Subject, at: e.At}
		ch.needsMailOf = e.CausedBy
	case domain.MailBundled:
		ch.updatedAt = at(e.At)
		ch.article = &article{kind: ArticleMail, mailID: e.CausedBy, messageID: e.MessageID, from: formatAddress(e.From),
			subject: e.Subject, at: e.At}
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
		ch.article = &article{kind: ArticleNote, text: e.Text, actor: e.Actor, from: e.Actor, at: e.At}
	case domain.DeliveryFailureRecorded:
		ch.article = &article{kind: ArticleDeliveryFailure, mailID: e.CausedBy, text: e.Reason, at: e.At,
			subject: "delivery failed: " + e.BouncedMessageID}
		ch.needsMailOf = e.CausedBy
	case domain.ReplyQueued:
		ch.updatedAt = at(e.QueuedAt)
		ch.article = &article{kind: ArticleReply, messageID: e.MessageID, to: formatAddresses(e.To), subject: e.Subject,
			text: e.Body, actor: e.Actor, from: e.Actor, at: e.QueuedAt}
	case domain.AutoReplyQueued:
		ch.article = &article{kind: ArticleAutoReply, messageID: e.MessageID, to: formatAddress(e.To), subject: e.Subject,
			text: "template " + e.Template, at: e.QueuedAt}
	case domain.ErrorMailQueued:
		ch.article = &article{kind: ArticleErrorMail, messageID: e.MessageID, to: formatAddress(e.To), subject: e.Subject,
			text: e.Reason, at: e.QueuedAt}
	}
	if ch.article != nil && ch.article.at.IsZero() {
		ch.article.at = ev.RecordedAt
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

// Article is one row of the ticket_articles view.
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
	rows, err = p.reader.Query(ctx, `SELECT seq, kind, mail_id, message_id, from_addr, to_addr, subject, text_body,
		html_body, blob_ref, actor, created_at FROM `+p.articles+` WHERE ticket_id = $1 ORDER BY seq`, id)
	if err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	arts := []Article{}
	for rows.Next() {
		var a Article
		if err := rows.Scan(&a.Seq, &a.Kind, &a.MailID, &a.MessageID, &a.From, &a.To, &a.Subject, &a.TextBody,
			&a.HTMLBody, &a.BlobRef, &a.Actor, &a.CreatedAt); err != nil {
			return Ticket{}, nil, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
		}
		a.CreatedAt = a.CreatedAt.UTC()
		arts = append(arts, a)
	}
	if err := rows.Err(); err != nil {
		return Ticket{}, nil, fmt.Errorf("projections: articles of ticket %s: %w", id, err)
	}
	return t, arts, nil
}
