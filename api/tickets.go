package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// Paging of the view lists (GET /tickets, /users, /locations).
const (
	viewDefaultLimit = 50
	viewMaxLimit     = 500
)

// listTickets serves GET /tickets: filters status, requester, resource,
// category, priority, created_after, created_before (RFC 3339, exclusive),
// q (case-insensitive subject substring); sort (projections.TicketSorts);
// limit and cursor (keyset, opaque).
func (s *server) listTickets(c echo.Context) error {
	p := s.opts.Projections.Tickets
	if p == nil {
		return unavailable("the ticket view")
	}
	limit, err := queryInt(c, "limit", viewDefaultLimit, 1, viewMaxLimit)
	if err != nil {
		return err
	}
	f := projections.TicketFilter{
		Status: c.QueryParam("status"), Requester: c.QueryParam("requester"), Resource: c.QueryParam("resource"),
		Category: c.QueryParam("category"), Priority: c.QueryParam("priority"), Query: c.QueryParam("q"),
		Sort: c.QueryParam("sort"), Limit: int(limit), Cursor: c.QueryParam("cursor"),
	}
	if f.Status != "" && !domain.TicketStatus(f.Status).Valid() {
		return invalid("status", "%q is not a ticket status", f.Status)
	}
	if f.Sort != "" && !slices.Contains(projections.TicketSorts, f.Sort) {
		return invalid("sort", "%q is not one of %s", f.Sort, strings.Join(projections.TicketSorts, ", "))
	}
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"created_after", &f.CreatedAfter}, {"created_before", &f.CreatedBefore}} {
		if raw := c.QueryParam(b.name); raw != "" {
			t, err := time.Parse(time.RFC3339Nano, raw)
			if err != nil {
				return invalid(b.name, "%q is not an RFC 3339 time", raw)
			}
			*b.dst = t
		}
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	page, err := p.ListTickets(c.Request().Context(), f)
	if errors.Is(err, projections.ErrBadCursor) {
		return invalid("cursor", "is not a cursor this API gave out for this sort order")
	}
	if err != nil {
		return err
	}
	// One write with a Content-Length, not a chunked stream, from a
	// reflection-free encoder: the list is the hottest read of the API.
	buf := listBuffers.Get().(*[]byte)
	defer listBuffers.Put(buf)
	*buf = page.AppendJSON((*buf)[:0])
	c.Response().Header().Set(echo.HeaderContentLength, strconv.Itoa(len(*buf)))
	return c.JSONBlob(http.StatusOK, *buf)
}

// listBuffers recycles the encoding buffers of GET /tickets.
var listBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// Paging of a ticket's articles (GET /tickets/{id}); anyone who writes a
// ticket's reference into a subject can add articles to it.
const (
	articlesDefaultLimit = 100
	articlesMaxLimit     = 200
	// listedBodyBytes bounds each of an article's text_body and html_body in
	// the ticket's listing; the body route has the whole.
	listedBodyBytes = 8 << 10
)

// ticketDetail is GET /tickets/{id}: the ticket's row and a page of its
// articles.
type ticketDetail struct {
	projections.Ticket
	Articles []articleView `json:"articles"`
	// ArticlesNextCursor continues the articles (articles_cursor); "" when
	// this page has the last one.
	ArticlesNextCursor string `json:"articles_next_cursor"`
	// RequesterRemoved: the requester is a user an admin removed since; the
	// ticket keeps them.
	RequesterRemoved bool `json:"requester_removed"`
}

// articleView is an article as the API shows it. A mail's HTML as received
// never leaves: it may carry script, and a client that shows it would run
// it. HasHTML says there is HTML, which BodyURL serves sanitised. Bodies go
// to the roles that may read the body routes, cut to listedBodyBytes
// (BodyTruncated then says so); an analyst sees the articles without their
// bodies, everywhere.
type articleView struct {
	Seq           int64     `json:"seq"`
	Kind          string    `json:"kind"`
	MailID        string    `json:"mail_id,omitempty"`
	MessageID     string    `json:"message_id,omitempty"`
	From          string    `json:"from"`
	To            string    `json:"to"`
	Subject       string    `json:"subject"`
	TextBody      *string   `json:"text_body,omitempty"`
	HasHTML       *bool     `json:"has_html,omitempty"`
	BodyTruncated bool      `json:"body_truncated,omitempty"`
	BodyURL       string    `json:"body_url,omitempty"`
	BlobRef       string    `json:"blob_ref,omitempty"`
	Actor         string    `json:"actor,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
}

// mayReadBodies says whether a role may read article bodies: the roles of
// the body routes (routes.go), so that the ticket and the body routes
// follow one rule.
func mayReadBodies(r domain.Role) bool { return slices.Contains(rolesReaders, r) }

// articleViews shows the articles of ticket id to role.
func articleViews(id string, arts []projections.Article, role domain.Role) []articleView {
	out := make([]articleView, len(arts))
	bodies := mayReadBodies(role)
	for i, a := range arts {
		v := articleView{Seq: a.Seq, Kind: a.Kind, MailID: a.MailID, MessageID: a.MessageID, From: a.From, To: a.To,
			Subject: a.Subject, BlobRef: a.BlobRef, Actor: a.Actor, CreatedAt: a.CreatedAt}
		if bodies {
			text, textCut := domain.BodyPrefix(a.TextBody, listedBodyBytes)
			hasHTML := a.HTMLBody != ""
			v.TextBody, v.HasHTML = &text, &hasHTML
			v.BodyTruncated = a.BodyTruncated || textCut
			v.BodyURL = fmt.Sprintf("%s/tickets/%s/articles/%d/body", Prefix, url.PathEscape(id), a.Seq)
		}
		out[i] = v
	}
	return out
}

func (s *server) getTicket(c echo.Context) error {
	p := s.opts.Projections.Tickets
	if p == nil {
		return unavailable("the ticket view")
	}
	limit, err := queryInt(c, "articles_limit", articlesDefaultLimit, 1, articlesMaxLimit)
	if err != nil {
		return err
	}
	var after int64
	if raw := c.QueryParam("articles_cursor"); raw != "" {
		// The cursor is the seq of the page's last article; clients treat
		// it as opaque.
		if after, err = strconv.ParseInt(raw, 10, 64); err != nil || after < 1 {
			return invalid("articles_cursor", "is not a cursor this API gave out")
		}
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	id := c.Param("id")
	t, arts, next, err := p.TicketArticles(c.Request().Context(), id, after, int(limit))
	if errors.Is(err, projections.ErrTicketNotFound) {
		return newProblem(http.StatusNotFound, "there is no ticket with this id")
	}
	if err != nil {
		return err
	}
	out := ticketDetail{Ticket: t, Articles: articleViews(id, arts, principal(c).Role)}
	if s.opts.Directory != nil && t.RequesterUserID != "" {
		// From the user's stream, not the users view, which may lag behind
		// the tickets view.
		u, err := s.opts.Directory.User(c.Request().Context(), t.RequesterUserID)
		if err != nil {
			return err
		}
		out.RequesterRemoved = u.Removed
	}
	if next > 0 {
		out.ArticlesNextCursor = strconv.FormatInt(next, 10)
	}
	setETag(c, t.Version)
	return c.JSON(http.StatusOK, out)
}

// ticketHistory serves GET /tickets/{id}/history: the ticket's events as
// stored, oldest first, and the ticket folded from them. With ?as_of= only
// events recorded at or before that time count, which gives the ticket as
// it stood then. It reads the event store, not a projection.
func (s *server) ticketHistory(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	var asOf time.Time
	if raw := c.QueryParam("as_of"); raw != "" {
		t, err := time.Parse(time.RFC3339Nano, raw)
		if err != nil {
			return invalid("as_of", "%q is not an RFC 3339 time", raw)
		}
		asOf = t
	}
	id := c.Param("id")
	evs, err := s.store.ReadStream(c.Request().Context(), domain.TicketStream(id), 1, 0)
	if err != nil {
		return fmt.Errorf("api: ticket history: %w", err)
	}
	var t domain.Ticket
	items := []eventItem{}
	for _, re := range evs {
		if !asOf.IsZero() && re.RecordedAt.After(asOf) {
			break
		}
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: ticket history: event %d: %w", re.StreamVersion, err)
		}
		t = domain.EvolveTicket(t, ev)
		items = append(items, eventItem{Position: re.Position, ID: re.ID, Type: re.Type, SchemaVersion: re.SchemaVersion,
			Stream: re.Stream, StreamVersion: re.StreamVersion, RecordedAt: re.RecordedAt.UTC(), Metadata: re.Metadata,
			Payload: payloadOrNull(re.Payload)})
	}
	if len(items) == 0 {
		if len(evs) > 0 {
			return newProblem(http.StatusNotFound, "the ticket did not exist yet at %s", asOf.UTC().Format(time.RFC3339))
		}
		return newProblem(http.StatusNotFound, "there is no ticket with this id")
	}
	out := map[string]any{"items": items, "ticket": t}
	if !asOf.IsZero() {
		out["as_of"] = asOf.UTC()
	}
	return c.JSON(http.StatusOK, out)
}

// commandWritten answers a ticket command: where its last event landed
// (position 0 when it changed nothing), the ticket's version after it and
// the names of the events it recorded.
type commandWritten struct {
	Position int64    `json:"position"`
	Version  int64    `json:"version"`
	Events   []string `json:"events"`
	NoteID   string   `json:"note_id,omitempty"`
	MailID   string   `json:"outgoing_mail_id,omitempty"`
}

// runCommand hands cmd to ticketing.Commands and answers with status.
func (s *server) runCommand(c echo.Context, status int, cmd domain.TicketCommand) error {
	if s.opts.Commands == nil {
		return unavailable("ticket commands")
	}
	res, err := s.opts.Commands.Handle(c.Request().Context(), c.Param("id"), cmd)
	if err != nil {
		return commandError(err)
	}
	out := commandWritten{Position: res.Position, Version: res.Version, Events: []string{}}
	for _, e := range res.Events {
		out.Events = append(out.Events, e.EventName())
		switch e := e.(type) {
		case domain.NoteAdded:
			out.NoteID = e.NoteID
		case domain.ReplyQueued:
			out.MailID = e.OutgoingMailID
		}
	}
	setPosition(c, res.Position)
	setETag(c, res.Version)
	return c.JSON(status, out)
}

// commandError maps a refused command: no such ticket 404, closed 409,
// invalid 422 naming the fields; anything else stays an internal error.
func commandError(err error) error {
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return &problemError{status: http.StatusNotFound, detail: "there is no ticket with this id", cause: err}
	case errors.Is(err, domain.ErrTicketClosed):
		return &problemError{status: http.StatusConflict, detail: "the ticket is closed; reopen it first", cause: err}
	case errors.Is(err, eventstore.ErrVersionConflict):
		return err
	case errors.Is(err, domain.ErrInvalid):
		p := unprocessable(invalidFields(err))
		p.cause = err
		return p
	}
	return err
}

// invalidFields digs the joined "field: problem" errors out of a domain
// ErrInvalid ("...: %w: %w", ErrInvalid, errors.Join(...)); a message
// without them is returned as it is.
func invalidFields(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if m, ok := e.(interface{ Unwrap() []error }); ok {
			errs := m.Unwrap()
			if len(errs) == 2 && errors.Is(errs[0], domain.ErrInvalid) {
				return errs[1]
			}
		}
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, domain.ErrInvalid.Error()+": "); i >= 0 {
		return errors.New(msg[i+len(domain.ErrInvalid.Error())+2:])
	}
	return err
}

func (s *server) commandMeta(c echo.Context) (string, time.Time) {
	return principal(c).Actor(), s.opts.Now().UTC()
}

// commandID is the client's Idempotency-Key (scoped to the token), or else a
// fresh id. The note id and the outgoing mail's id derive from it, so a
// retried reply queues the same mail, which the saga sends once.
func commandID(c echo.Context) (string, error) {
	if k := strings.TrimSpace(c.Request().Header.Get("Idempotency-Key")); k != "" {
		if len(k) > 200 {
			return "", invalid("Idempotency-Key", "is longer than 200 characters")
		}
		return "key:" + principal(c).TokenID + ":" + k, nil
	}
	return newID()
}

// postStatus serves POST /tickets/{id}/status {"status": ...}: "closed"
// closes, another status reopens a closed ticket into it and otherwise
// changes the status.
func (s *server) postStatus(c echo.Context) error {
	var in struct {
		Status string `json:"status"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	st := domain.TicketStatus(in.Status)
	if !st.Valid() {
		return unprocessable(fmt.Errorf("status: %q is not a ticket status", in.Status))
	}
	actor, now := s.commandMeta(c)
	if st == domain.StatusClosed {
		return s.runCommand(c, http.StatusOK, domain.CloseTicket{Actor: actor, At: now})
	}
	// Closed or not decides between reopening and a change; a close racing
	// this read makes the change fail with 409, which the client retries.
	evs, err := s.store.ReadStream(c.Request().Context(), domain.TicketStream(c.Param("id")), 1, 0)
	if err != nil {
		return fmt.Errorf("api: read ticket: %w", err)
	}
	var t domain.Ticket
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: read ticket: event %d: %w", re.StreamVersion, err)
		}
		t = domain.EvolveTicket(t, ev)
	}
	if t.Exists() && !t.Open() {
		return s.runCommand(c, http.StatusOK, domain.ReopenTicket{Status: st, Actor: actor, At: now})
	}
	return s.runCommand(c, http.StatusOK, domain.ChangeStatus{Status: st, Actor: actor, At: now})
}

// postAssign serves POST /tickets/{id}/assign {"resource": ...}; an empty
// resource unassigns.
func (s *server) postAssign(c echo.Context) error {
	var in struct {
		Resource *string `json:"resource"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.Resource == nil {
		return unprocessable(errors.New("resource: is missing (send \"\" to unassign)"))
	}
	resource := strings.TrimSpace(*in.Resource)
	if err := s.checkResourceRef(c.Request().Context(), "resource", resource); err != nil {
		return err
	}
	actor, now := s.commandMeta(c)
	return s.runCommand(c, http.StatusOK, domain.AssignResource{ResourceID: resource, Actor: actor, At: now})
}

// postNote serves POST /tickets/{id}/notes {"text": ...}.
func (s *server) postNote(c echo.Context) error {
	var in struct {
		Text string `json:"text"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	id, err := commandID(c)
	if err != nil {
		return err
	}
	actor, now := s.commandMeta(c)
	return s.runCommand(c, http.StatusCreated, domain.AddNote{CommandID: id, Text: in.Text, Actor: actor, At: now})
}

// postReply serves POST /tickets/{id}/replies {"body", "subject"?, "to"?,
// "cc"?}: the reply is queued for the outbound saga to send.
func (s *server) postReply(c echo.Context) error {
	var in struct {
		Body    string           `json:"body"`
		Subject string           `json:"subject"`
		To      []domain.Address `json:"to"`
		Cc      []domain.Address `json:"cc"`
	}
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	id, err := commandID(c)
	if err != nil {
		return err
	}
	actor, now := s.commandMeta(c)
	return s.runCommand(c, http.StatusCreated, domain.ReplyByMail{CommandID: id, To: in.To, Cc: in.Cc, Subject: in.Subject,
		Body: in.Body, Actor: actor, At: now})
}
