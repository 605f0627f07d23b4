package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

const ticketsE2EToken = "tickets-e2e-admin-token-0123456789"

// ticketsAPI calls a running serve as admin and decodes JSON answers.
type ticketsAPI struct {
	tb   testing.TB
	base string
}

func (c ticketsAPI) call(method, path string, body any, want int, out any) http.Header {
	c.tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+ticketsE2EToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.tb.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.tb.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.Header
}

// seedDirectory appends what the intake would: mails with their tickets, a
// user and a location; it returns the ticket ids and the last position.
func seedDirectory(tb testing.TB, s eventstore.Store) ([]string, string, int64) {
	tb.Helper()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	var pos int64
	put := func(stream string, e domain.Event) {
		name, v, payload, err := domain.MarshalEvent(e)
		if err != nil {
			tb.Fatalf("marshal: %v", err)
		}
		res, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{{Type: name, SchemaVersion: v, Payload: payload, Metadata: eventstore.Metadata{OccurredAt: at}}}})
		if err != nil {
			tb.Fatalf("append to %s: %v", stream, err)
		}
		pos = res.LastPosition
	}
	var ids []string
	for i := range 3 {
		key := fmt.Sprintf("uid-%d", i)
		mailID := domain.MailIDFor("acc", key)
		id := domain.TicketIDFor(mailID)
		subject := fmt.Sprintf("Printer %d", i)
		put(ticketing.MailStream(mailID), domain.MailReceived{MailID: mailID, AccountID: "acc", SourceKey: key, ReceivedAt: at,
			MessageID: key + "@example.org", Subject: subject, From: domain.Address{Email: "max@example.org"}, TextBody: "broken " + key})
		put(domain.TicketStream(id), domain.TicketCreated{TicketID: id, Number: 1001 + int64(i), Subject: subject, Status: domain.StatusNew,
			Requester: domain.Requester{Email: "max@example.org", Source: domain.RequesterAddress}, AccountID: "acc",
			MessageID: key + "@example.org", CreatedAt: at.Add(time.Duration(i) * time.Minute), CausedBy: mailID})
		ids = append(ids, id)
	}
	uid := domain.UserIDFor("ann@example.org")
	put(domain.UserStream(uid), domain.UserCreated{UserID: uid, UserName: "ann", Email: "ann@example.org", At: at, Actor: "token:x"})
	lid := domain.LocationIDFor("example.org")
	put(domain.LocationStream(lid), domain.LocationAutoCreated{LocationID: lid, Name: "example.org", Domain: "example.org", At: at, CausedBy: "m"})
	return ids, uid, pos
}

// TestTickets_EndToEnd drives every ticket, user and location route of a
// running serve through real HTTP, on both stores, and rebuilds the views
// with `ledgerdesk projections rebuild` while it serves.
func TestTickets_EndToEnd(t *testing.T) {
	t.Parallel()
	type setup struct {
		name  string
		env   func(t *testing.T) map[string]string
		store func(t *testing.T, env map[string]string) eventstore.Store
	}
	setups := []setup{{
		name: "embedded",
		env:  func(t *testing.T) map[string]string { return map[string]string{envDataDir: t.TempDir()} },
		store: func(t *testing.T, env map[string]string) eventstore.Store {
			db, err := embedded.OpenDB(filepath.Join(env[envDataDir], "ledgerdesk.db"))
			if err != nil {
				t.Fatalf("open sqlite: %v", err)
			}
			s := embedded.New(db, nil)
			t.Cleanup(func() { _ = s.Close(); _ = db.Close() })
			return s
		},
	}}
	if !testing.Short() {
		setups = append(setups, setup{
			name: "postgres",
			env: func(t *testing.T) map[string]string {
				return map[string]string{envDataDir: t.TempDir(), envDatabaseURL: pgtest.NewDatabase(t), envSecretKey: strings.Repeat("cd", 32)}
			},
			store: func(t *testing.T, env map[string]string) eventstore.Store {
				pool, err := pgxpool.New(context.Background(), env[envDatabaseURL])
				if err != nil {
					t.Fatalf("pool: %v", err)
				}
				s, err := postgres.New(pool, nil)
				if err != nil {
					t.Fatalf("store: %v", err)
				}
				t.Cleanup(func() { _ = s.Close(); pool.Close() })
				return s
			},
		})
	}
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			t.Parallel()
			env := su.env(t)
			env[envAdminToken] = ticketsE2EToken
			srv := startServe(t, env)
			api := ticketsAPI{tb: t, base: srv.URL + "/api/v1"}
			ids, uid, pos := seedDirectory(t, su.store(t, env))

			// the views serve what the log holds, waiting for it with min_position
			var page struct {
				Items []struct {
					ID           string `json:"id"`
					Number       int64  `json:"number"`
					ArticleCount int64  `json:"article_count"`
				} `json:"items"`
				NextCursor string `json:"next_cursor"`
			}
			h := api.call(http.MethodGet, fmt.Sprintf("/tickets?limit=2&sort=number&min_position=%d", pos), nil, http.StatusOK, &page)
			if h.Get("Ledgerdesk-Caught-Up") != "true" || len(page.Items) != 2 || page.Items[0].Number != 1001 || page.NextCursor == "" {
				t.Fatalf("GET /tickets = %+v (caught up %q), want the first 2 of 3 and a cursor", page, h.Get("Ledgerdesk-Caught-Up"))
			}
			api.call(http.MethodGet, "/tickets?limit=2&sort=number&cursor="+page.NextCursor, nil, http.StatusOK, &page)
			if len(page.Items) != 1 || page.Items[0].ID != ids[2] || page.NextCursor != "" {
				t.Fatalf("second page = %+v, want the third ticket and no cursor", page)
			}

			// agent commands answer with a position that reads can wait for
			var w struct{ Position int64 }
			// tickets name a resource by id
			var team struct{ ID string }
			api.call(http.MethodPost, "/resources", map[string]any{"name": "team-a"}, http.StatusCreated, &team)
			api.call(http.MethodPost, "/tickets/"+ids[0]+"/assign", map[string]any{"resource": team.ID}, http.StatusOK, &w)
			api.call(http.MethodPost, "/tickets/"+ids[0]+"/status", map[string]any{"status": "waiting"}, http.StatusOK, &w)
			api.call(http.MethodPost, "/tickets/"+ids[0]+"/replies", map[string]any{"body": "On it."}, http.StatusCreated, &w)
			api.call(http.MethodPost, "/tickets/"+ids[0]+"/notes", map[string]any{"text": "first note"}, http.StatusCreated, &w)
			var detail struct {
				Status, Resource string
				Articles         []struct {
					Kind     string `json:"kind"`
					TextBody string `json:"text_body"`
				} `json:"articles"`
			}
			api.call(http.MethodGet, fmt.Sprintf("/tickets/%s?min_position=%d", ids[0], w.Position), nil, http.StatusOK, &detail)
			if detail.Status != "waiting" || detail.Resource != team.ID || len(detail.Articles) != 3 || detail.Articles[0].TextBody != "broken uid-0" {
				t.Fatalf("ticket after commands = %+v", detail)
			}
			var hist struct {
				Items []struct{ Type string } `json:"items"`
			}
			api.call(http.MethodGet, "/tickets/"+ids[0]+"/history", nil, http.StatusOK, &hist)
			if len(hist.Items) != 5 || hist.Items[0].Type != domain.TicketCreatedName {
				t.Errorf("history = %+v, want 5 events from TicketCreated", hist.Items)
			}
			var users, locations struct {
				Items []map[string]any `json:"items"`
			}
			api.call(http.MethodGet, fmt.Sprintf("/users?min_position=%d", pos), nil, http.StatusOK, &users)
			api.call(http.MethodGet, fmt.Sprintf("/users/%s?min_position=%d", uid, pos), nil, http.StatusOK, nil)
			api.call(http.MethodGet, fmt.Sprintf("/locations?min_position=%d", pos), nil, http.StatusOK, &locations)
			if len(users.Items) != 1 || len(locations.Items) != 1 {
				t.Errorf("users %v, locations %v; want one each", users.Items, locations.Items)
			}

			// when the views are rebuilt while serve runs
			var out, errOut bytes.Buffer
			if code := run(context.Background(), []string{"projections", "rebuild"}, envOf(env), &out, &errOut); code != exitOK {
				t.Fatalf("projections rebuild exit %d; stdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), "swapped in") || !strings.Contains(out.String(), "tickets, users, locations: generation 2 serving") {
				t.Errorf("rebuild output does not say generation 2 of all views was swapped in:\n%s", out.String())
			}

			// then serve answers from the fresh tables and keeps them current
			api.call(http.MethodPost, "/tickets/"+ids[0]+"/notes", map[string]any{"text": "after the rebuild"}, http.StatusCreated, &w)
			h = api.call(http.MethodGet, fmt.Sprintf("/tickets/%s?min_position=%d", ids[0], w.Position), nil, http.StatusOK, &detail)
			if h.Get("Ledgerdesk-Caught-Up") != "true" || len(detail.Articles) != 4 || detail.Articles[3].TextBody != "after the rebuild" {
				t.Errorf("ticket after the rebuild = %+v (caught up %q), want the new note as the 4th article", detail, h.Get("Ledgerdesk-Caught-Up"))
			}
		})
	}
}
