package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// ticketNumbers hands out unique ticket numbers across the package's tests
// (the tickets table's number is unique).
var ticketNumbers = &seq

// appendDomain appends domain events to a stream as the intake would.
func (e *testEnv) appendDomain(tb testing.TB, stream string, expected int64, evs ...domain.Event) int64 {
	tb.Helper()
	req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: expected}
	for _, ev := range evs {
		name, v, payload, err := domain.MarshalEvent(ev)
		if err != nil {
			tb.Fatalf("marshal %T: %v", ev, err)
		}
		req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: v, Payload: payload,
			Metadata: eventstore.Metadata{Actor: "intake", OccurredAt: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}})
	}
	res, err := e.store.Append(context.Background(), req)
	if err != nil {
		tb.Fatalf("append to %s: %v", stream, err)
	}
	return res.LastPosition
}

// ticketSpec is what a seeded ticket looks like.
type ticketSpec struct {
	subject, requester, resource, category, priority string
	created                                          time.Time
}

// seedTicket stores a received mail and the ticket created from it, as the
// intake does, and returns the ticket id and the position of its event.
func (e *testEnv) seedTicket(tb testing.TB, subject string) (string, int64) {
	tb.Helper()
	return e.seedTicketSpec(tb, ticketSpec{subject: subject})
}

func (e *testEnv) seedTicketSpec(tb testing.TB, s ticketSpec) (string, int64) {
	tb.Helper()
	n := ticketNumbers.Add(1)
	if s.subject == "" {
		s.subject = fmt.Sprintf("Printer %d is broken", n)
	}
	if s.requester == "" {
		s.requester = "max@example.org"
	}
	if s.created.IsZero() {
		s.created = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second)
	}
	mailID := domain.MailIDFor("acc-1", fmt.Sprintf("uid-%d", n))
	ticketID := domain.TicketIDFor(mailID)
	e.appendDomain(tb, ticketing.MailStream(mailID), eventstore.NoStream, domain.MailReceived{
		MailID: mailID, AccountID: "acc-1", SourceKey: fmt.Sprintf("uid-%d", n), BlobRef: "blob-" + mailID, ReceivedAt: s.created,
		MessageID: fmt.Sprintf("m%d@example.org", n), Subject: s.subject, From: domain.Address{Name: "Max", Email: s.requester},
		To: []domain.Address{{Email: "support@example.org"}}, TextBody: "It prints nothing.", HTMLBody: "<p>It prints nothing.</p>",
	})
	pos := e.appendDomain(tb, domain.TicketStream(ticketID), eventstore.NoStream, domain.TicketCreated{
		TicketID: ticketID, Number: 100000 + n, Subject: s.subject, Status: domain.StatusNew,
		Requester:  domain.Requester{Email: s.requester, Name: "Max", Source: domain.RequesterAddress},
		ResourceID: s.resource, Category: s.category, Priority: s.priority, AccountID: "acc-1",
		MessageID: fmt.Sprintf("m%d@example.org", n), SenderEmail: s.requester, MailReceivedAt: s.created, CreatedAt: s.created,
		CausedBy: mailID,
	})
	return ticketID, pos
}

func (e *testEnv) seedUser(tb testing.TB) (string, int64) {
	tb.Helper()
	name := uniq("user")
	id := domain.UserIDFor(name + "@example.org")
	pos := e.appendDomain(tb, domain.UserStream(id), eventstore.NoStream, domain.UserCreated{UserID: id, UserName: name,
		Email: name + "@example.org", Name: "User " + name, At: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC), Actor: "token:x"})
	return id, pos
}

func (e *testEnv) seedLocation(tb testing.TB) int64 {
	tb.Helper()
	dom := uniq("loc") + ".example"
	id := domain.LocationIDFor(dom)
	return e.appendDomain(tb, domain.LocationStream(id), eventstore.NoStream, domain.LocationAutoCreated{LocationID: id,
		Name: dom, Domain: dom, At: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC), CausedBy: "m"})
}

func withTicket(suffix string) recipe {
	return func(tb testing.TB, e *testEnv) (string, any) {
		id, pos := e.seedTicket(tb, "")
		return fmt.Sprintf("/api/v1/tickets/%s%s?min_position=%d", id, suffix, pos), nil
	}
}

func withTicketBody(suffix string, body any) recipe {
	return func(tb testing.TB, e *testEnv) (string, any) {
		id, _ := e.seedTicket(tb, "")
		return "/api/v1/tickets/" + id + suffix, body
	}
}

type ticketPage struct {
	Items      []projections.Ticket `json:"items"`
	NextCursor string               `json:"next_cursor"`
}

type ticketDetailOut struct {
	projections.Ticket
	Articles           []articleView `json:"articles"`
	ArticlesNextCursor string        `json:"articles_next_cursor"`
}

type written struct {
	Position int64    `json:"position"`
	Version  int64    `json:"version"`
	Events   []string `json:"events"`
	NoteID   string   `json:"note_id"`
}

func TestTickets_CommandsAndReadYourWrites(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			agent := e.tokens[domain.RoleAgent]
			id, pos := e.seedTicket(t, "Beamer flackert")

			// given a ticket created from a mail, its detail shows the mail as the first article
			var got ticketDetailOut
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", id, pos), agent, nil, http.StatusOK, &got)
			if got.Subject != "Beamer flackert" || got.Status != "new" || got.ArticleCount != 1 || len(got.Articles) != 1 ||
				got.Articles[0].Kind != projections.ArticleMail || got.Articles[0].TextBody == nil || *got.Articles[0].TextBody != "It prints nothing." ||
				got.Articles[0].HasHTML == nil || !*got.Articles[0].HasHTML || got.Articles[0].From != `"Max" <max@example.org>` {
				t.Fatalf("GET ticket = %+v, want the new ticket with its mail article and bodies", got)
			}

			// when an agent adds a note, assigns, changes the status and replies
			var w written
			resp := e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/notes", agent, map[string]any{"text": "called back"}, http.StatusCreated, &w)
			if w.Position <= 0 || resp.Header.Get(HeaderPosition) != fmt.Sprint(w.Position) || w.NoteID == "" ||
				!cmp.Equal(w.Events, []string{domain.NoteAddedName}) {
				t.Errorf("POST notes = %+v (header %q), want a position, the header and NoteAdded", w, resp.Header.Get(HeaderPosition))
			}
			teamA := e.createResource(t, "team-a")
			e.problem(t, http.MethodPost, "/api/v1/tickets/"+id+"/assign", agent, map[string]any{"resource": "no such team"}, http.StatusUnprocessableEntity)
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/assign", agent, map[string]any{"resource": teamA}, http.StatusOK, &w)
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/status", agent, map[string]any{"status": "in_progress"}, http.StatusOK, &w)
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/replies", agent, map[string]any{"body": "Fixed it."}, http.StatusCreated, &w)
			if !cmp.Equal(w.Events, []string{domain.ReplyQueuedName}) || w.Version != 5 {
				t.Errorf("POST replies = %+v, want ReplyQueued at version 5", w)
			}

			// then a read with min_position sees all of it
			resp = e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s?min_position=%d", id, w.Position), agent, nil, http.StatusOK, &got)
			if resp.Header.Get(HeaderCaughtUp) != "true" {
				t.Errorf("%s = %q, want true", HeaderCaughtUp, resp.Header.Get(HeaderCaughtUp))
			}
			var kinds []string
			for _, a := range got.Articles {
				kinds = append(kinds, a.Kind)
			}
			if diff := cmp.Diff([]string{"mail", "note", "reply"}, kinds); diff != "" || got.Resource != teamA ||
				got.Status != "in_progress" || got.ArticleCount != 3 || got.Version != 5 {
				t.Errorf("ticket after commands = %+v, kinds (-want +got):\n%s", got.Ticket, diff)
			}

			// when it is closed, a change is refused, and a status reopens it
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/status", agent, map[string]any{"status": "closed"}, http.StatusOK, &w)
			if !cmp.Equal(w.Events, []string{domain.TicketClosedName}) {
				t.Errorf("close: events %v, want TicketClosed", w.Events)
			}
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/status", agent, map[string]any{"status": "closed"}, http.StatusOK, &w)
			if w.Position != 0 || len(w.Events) != 0 {
				t.Errorf("closing a closed ticket = %+v, want nothing recorded", w)
			}
			e.problem(t, http.MethodPost, "/api/v1/tickets/"+id+"/assign", agent, map[string]any{}, http.StatusUnprocessableEntity)
			e.mustJSON(t, http.MethodPost, "/api/v1/tickets/"+id+"/status", agent, map[string]any{"status": "waiting"}, http.StatusOK, &w)
			if !cmp.Equal(w.Events, []string{domain.TicketReopenedName}) {
				t.Errorf("status on a closed ticket: events %v, want TicketReopened", w.Events)
			}

			// and errors map to 404, 422 and 400
			e.problem(t, http.MethodPost, "/api/v1/tickets/nope/notes", agent, map[string]any{"text": "x"}, http.StatusNotFound)
			p := e.problem(t, http.MethodPost, "/api/v1/tickets/"+id+"/notes", agent, map[string]any{"text": " "}, http.StatusUnprocessableEntity)
			if len(p.Errors) != 1 || p.Errors[0].Field != "text" {
				t.Errorf("empty note: errors %+v, want one for text", p.Errors)
			}
			e.problem(t, http.MethodPost, "/api/v1/tickets/"+id+"/status", agent, map[string]any{"status": "done"}, http.StatusUnprocessableEntity)
			e.problem(t, http.MethodPost, "/api/v1/tickets/"+id+"/replies", agent, map[string]any{"body": "x", "to": []map[string]string{{"email": "not-an-address"}}},
				http.StatusUnprocessableEntity)
			e.problem(t, http.MethodGet, "/api/v1/tickets/nope", agent, nil, http.StatusNotFound)
			e.problem(t, http.MethodGet, "/api/v1/tickets/nope/history", agent, nil, http.StatusNotFound)

			// and the history gives the ticket as it stood at a time
			var h struct {
				Items  []eventItem   `json:"items"`
				Ticket domain.Ticket `json:"ticket"`
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/tickets/"+id+"/history", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &h)
			if len(h.Items) != 7 || h.Ticket.Status != domain.StatusWaiting || h.Items[0].Type != domain.TicketCreatedName {
				t.Fatalf("history = %d events, ticket %+v; want 7 events and the waiting ticket", len(h.Items), h.Ticket)
			}
			asOf := h.Items[0].RecordedAt.Format(time.RFC3339Nano)
			e.mustJSON(t, http.MethodGet, "/api/v1/tickets/"+id+"/history?as_of="+url.QueryEscape(asOf), e.tokens[domain.RoleAuditor], nil, http.StatusOK, &h)
			if h.Items[len(h.Items)-1].RecordedAt.After(h.Items[0].RecordedAt) || h.Ticket.ID != id {
				t.Errorf("history as_of %s: last event recorded %s, ticket %+v", asOf, h.Items[len(h.Items)-1].RecordedAt, h.Ticket)
			}
			e.problem(t, http.MethodGet, "/api/v1/tickets/"+id+"/history?as_of=2000-01-01T00:00:00Z", e.tokens[domain.RoleAuditor], nil, http.StatusNotFound)
			e.problem(t, http.MethodGet, "/api/v1/tickets/"+id+"/history?as_of=yesterday", e.tokens[domain.RoleAuditor], nil, http.StatusBadRequest)
		})
	}
}

func TestTickets_ListFiltersSortsAndPages(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			analyst := e.tokens[domain.RoleAnalyst]
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var ids []string
			var last int64
			for i := range 7 {
				s := ticketSpec{subject: fmt.Sprintf("Case %d: VPN_down 100%%", i), requester: fmt.Sprintf("r%d@example.org", i%2),
					category: []string{"it", "facility"}[i%2], priority: "high", created: base.Add(time.Duration(i) * time.Hour)}
				if i == 3 {
					s.subject = "Drucker"
				}
				id, pos := e.seedTicketSpec(t, s)
				ids, last = append(ids, id), pos
			}
			get := func(query string) ticketPage {
				t.Helper()
				var p ticketPage
				e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/tickets?min_position=%d&%s", last, query), analyst, nil, http.StatusOK, &p)
				return p
			}
			idsOf := func(p ticketPage) []string {
				out := []string{}
				for _, t := range p.Items {
					out = append(out, t.ID)
				}
				return out
			}
			window := "created_after=" + url.QueryEscape(base.Add(-time.Second).Format(time.RFC3339)) +
				"&created_before=" + url.QueryEscape(base.Add(7*time.Hour).Format(time.RFC3339))

			// paging by created_at ascending, 3 at a time, visits each once in order
			var seen []string
			cur := ""
			for range 5 {
				p := get(window + "&sort=created_at&limit=3&cursor=" + cur)
				seen = append(seen, idsOf(p)...)
				if cur = p.NextCursor; cur == "" {
					break
				}
			}
			if diff := cmp.Diff(ids, seen); diff != "" {
				t.Errorf("paged by created_at (-want +got):\n%s", diff)
			}
			// the default order is newest number first, and filters combine
			p := get(window + "&category=it&requester=R0@EXAMPLE.ORG")
			if diff := cmp.Diff([]string{ids[6], ids[4], ids[2], ids[0]}, idsOf(p)); diff != "" || p.NextCursor != "" {
				t.Errorf("category=it&requester (-want +got):\n%s (next %q)", diff, p.NextCursor)
			}
			// q is a case-insensitive substring with LIKE's wildcards taken literally
			if diff := cmp.Diff([]string{ids[3]}, idsOf(get(window+"&q=dRUCK"))); diff != "" {
				t.Errorf("q=dRUCK (-want +got):\n%s", diff)
			}
			if got := idsOf(get(window + "&q=" + url.QueryEscape("case_"))); len(got) != 0 {
				t.Errorf("q=case_ = %v, want none (_ is literal)", got)
			}
			if got := idsOf(get(window + "&q=" + url.QueryEscape("100%"))); len(got) != 6 {
				t.Errorf("q=100%% = %d tickets, want 6", len(got))
			}
			p = get("created_after=" + url.QueryEscape(base.Add(5*time.Hour).Format(time.RFC3339)) + "&created_before=" +
				url.QueryEscape(base.Add(7*time.Hour).Format(time.RFC3339)) + "&sort=-updated_at")
			if diff := cmp.Diff([]string{ids[6]}, idsOf(p)); diff != "" {
				t.Errorf("created_after (-want +got):\n%s", diff)
			}

			// bad parameters are 400s naming the field
			for q, field := range map[string]string{"limit=501": "limit", "sort=subject": "sort", "status=gone": "status",
				"cursor=xyz": "cursor", "created_after=monday": "created_after"} {
				pr := e.problem(t, http.MethodGet, "/api/v1/tickets?"+q, analyst, nil, http.StatusBadRequest)
				if len(pr.Errors) != 1 || pr.Errors[0].Field != field {
					t.Errorf("GET /tickets?%s: errors %+v, want one for %s", q, pr.Errors, field)
				}
			}
			// a cursor of one sort order is refused for another
			p = get(window + "&sort=created_at&limit=2")
			pr := e.problem(t, http.MethodGet, "/api/v1/tickets?sort=number&cursor="+p.NextCursor, analyst, nil, http.StatusBadRequest)
			if !strings.Contains(pr.Detail, "cursor") {
				t.Errorf("cursor of another sort: %q", pr.Detail)
			}
		})
	}
}

func TestUsersAndLocations_List(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			var ids []string
			var pos int64
			for range 3 {
				id, p := e.seedUser(t)
				ids, pos = append(ids, id), p
			}
			var page struct {
				Items      []projections.User `json:"items"`
				NextCursor string             `json:"next_cursor"`
			}
			var seen []string
			cur := ""
			for range 4 {
				e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/users?limit=2&min_position=%d&cursor=%s", pos, cur), e.tokens[domain.RoleAnalyst], nil, http.StatusOK, &page)
				for _, u := range page.Items {
					seen = append(seen, u.ID)
				}
				if cur = page.NextCursor; cur == "" {
					break
				}
			}
			if len(seen) != 3 {
				t.Errorf("users paged: %v, want all 3", seen)
			}
			// when a user is updated, the row follows
			u := domain.UserUpdated{UserID: ids[0], Email: "new@example.org", Name: "Renamed", At: time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC), Actor: "token:x"}
			pos = e.appendDomain(t, domain.UserStream(ids[0]), 1, u)
			var got projections.User
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/users/%s?min_position=%d", ids[0], pos), e.tokens[domain.RoleAgent], nil, http.StatusOK, &got)
			if got.Email != "new@example.org" || got.Name != "Renamed" || got.Version != 2 {
				t.Errorf("user after update = %+v", got)
			}
			e.problem(t, http.MethodGet, "/api/v1/users/nope", e.tokens[domain.RoleAgent], nil, http.StatusNotFound)
			pos = e.seedLocation(t)
			var locs struct {
				Items []projections.Location `json:"items"`
			}
			e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/locations?min_position=%d", pos), e.tokens[domain.RoleAuditor], nil, http.StatusOK, &locs)
			if len(locs.Items) != 1 || !strings.HasSuffix(locs.Items[0].Domain, ".example") {
				t.Errorf("locations = %+v, want the one seeded", locs.Items)
			}
		})
	}
}
