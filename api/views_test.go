package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

func TestSettings_ReadChangeAndLoad(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]

			// given no change yet, the defaults are served
			var got domain.Settings
			e.mustJSON(t, http.MethodGet, "/api/v1/settings", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &got)
			if diff := cmp.Diff(domain.DefaultSettings(), got); diff != "" {
				t.Errorf("GET /settings (-want +got):\n%s", diff)
			}

			// when an admin changes two of them, the rest keep their value
			var out struct {
				domain.Settings
				Position int64 `json:"position"`
			}
			e.mustJSON(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"mailboxes_disabled": true, "error_folder": "Broken"},
				http.StatusOK, &out)
			want := domain.DefaultSettings()
			want.MailboxesDisabled, want.ErrorFolder = true, "Broken"
			if diff := cmp.Diff(want, out.Settings); diff != "" || out.Position <= 0 {
				t.Errorf("PUT /settings position %d (-want +got):\n%s", out.Position, diff)
			}
			loaded, err := LoadSettings(context.Background(), e.store)
			if err != nil {
				t.Fatalf("LoadSettings() error = %v", err)
			}
			if diff := cmp.Diff(want, loaded); diff != "" {
				t.Errorf("LoadSettings() (-want +got):\n%s", diff)
			}

			// and invalid values name their field, unknown fields too
			p := e.problem(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"error_folder": " ", "reactivation_window_seconds": -1},
				http.StatusUnprocessableEntity)
			if len(p.Errors) != 2 {
				t.Errorf("errors = %+v, want two", p.Errors)
			}
			p = e.problem(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"auto_replys": false}, http.StatusBadRequest)
			if len(p.Errors) != 1 || p.Errors[0].Field != "auto_replys" {
				t.Errorf("errors = %+v, want one for auto_replys", p.Errors)
			}
			p = e.problem(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"auto_replies": "yes"}, http.StatusBadRequest)
			if len(p.Errors) != 1 || p.Errors[0].Field != "auto_replies" {
				t.Errorf("errors = %+v, want one for auto_replies", p.Errors)
			}
		})
	}
}

func TestMailboxes_ReadYourWrites(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]

			// given an account created through the API
			var created accountOut
			e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, account("Support"), http.StatusCreated, &created)

			// when the view is read at the write's position, it shows the account at once
			var page struct {
				Items []projections.MailboxStatusRow `json:"items"`
			}
			resp := e.mustJSON(t, http.MethodGet, "/api/v1/mailboxes?min_position="+strconv.FormatInt(created.Position, 10),
				e.tokens[domain.RoleAnalyst], nil, http.StatusOK, &page)
			if got := resp.Header.Get(HeaderCaughtUp); got != "true" {
				t.Errorf("%s = %q, want true", HeaderCaughtUp, got)
			}
			if diff := cmp.Diff([]projections.MailboxStatusRow{{AccountID: created.ID, Name: "Support"}}, page.Items); diff != "" {
				t.Errorf("GET /mailboxes after create (-want +got):\n%s", diff)
			}

			// when two mails of the account are received, the intake skips
			// one, and the scheduler records a failed poll
			t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
			poll := domain.MailboxPolled{AccountID: created.ID, StartedAt: t0, FinishedAt: t0.Add(2 * time.Second), Fetched: 2,
				Error: "login: authentication failed", ServerReply: "NO [AUTHENTICATIONFAILED] Invalid credentials", Failures: 1}
			req := func(stream string, e domain.Event) eventstore.AppendRequest {
				payload, _ := json.Marshal(e)
				return eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion,
					Events: []eventstore.NewEvent{{Type: e.EventName(), SchemaVersion: 1, Payload: payload}}}
			}
			res, err := e.store.Append(context.Background(),
				req("mail-x1", domain.MailReceived{MailID: "x1", AccountID: created.ID}),
				req("mail-x2", domain.MailReceived{MailID: "x2", AccountID: created.ID}),
				req("mail-x2", domain.MailSkipped{MailID: "x2", AccountID: created.ID, Code: domain.SkipBounce}),
				req("mailbox-"+created.ID, poll))
			if err != nil {
				t.Fatalf("append poll: %v", err)
			}

			// then a read at its position shows the server's words and the counts
			e.mustJSON(t, http.MethodGet, "/api/v1/mailboxes?min_position="+strconv.FormatInt(res.LastPosition, 10),
				e.tokens[domain.RoleAgent], nil, http.StatusOK, &page)
			start, finish := t0, t0.Add(2*time.Second)
			want := []projections.MailboxStatusRow{{AccountID: created.ID, Name: "Support", LastPollAt: &start, LastFinishedAt: &finish,
				LastError: poll.Error, ServerReply: poll.ServerReply, ConsecutiveFailures: 1, Polls: 1, Fetched: 2, Skipped: 1}}
			if diff := cmp.Diff(want, page.Items); diff != "" {
				t.Errorf("GET /mailboxes after poll (-want +got):\n%s", diff)
			}
			var raw struct {
				Items      []map[string]any `json:"items"`
				Checkpoint int64            `json:"checkpoint"`
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/mailboxes", admin, nil, http.StatusOK, &raw)
			for _, k := range []string{"account_id", "name", "last_poll_at", "last_error", "fetched", "failed", "skipped", "oversize", "server_reply"} {
				if _, ok := raw.Items[0][k]; !ok {
					t.Errorf("mailbox item has no %q: %v", k, raw.Items[0])
				}
			}
			if raw.Checkpoint != res.LastPosition {
				t.Errorf("checkpoint = %d, want the poll's position %d", raw.Checkpoint, res.LastPosition)
			}

			// and a bad min_position names the parameter
			p := e.problem(t, http.MethodGet, "/api/v1/mailboxes?min_position=soon", admin, nil, http.StatusBadRequest)
			if len(p.Errors) != 1 || p.Errors[0].Field != "min_position" {
				t.Errorf("errors = %+v, want one for min_position", p.Errors)
			}
		})
	}
}

func TestMailboxes_SaysWhenNotCaughtUp(t *testing.T) {
	t.Parallel()
	// a projection that is not running never reaches the position
	e := newEnv(t, backend{"embedded", openEmbedded}, func(o *Options, r projections.Reader) {
		o.Projections.MailboxStatus = projections.NewMailboxStatus(o.Store, r, nil)
		o.Projections.Wait = 50 * time.Millisecond
	})
	var created accountOut
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", e.tokens[domain.RoleAdmin], account("Support"), http.StatusCreated, &created)
	var page struct {
		Items []projections.MailboxStatusRow `json:"items"`
	}
	resp := e.mustJSON(t, http.MethodGet, fmt.Sprintf("/api/v1/mailboxes?min_position=%d", created.Position), e.tokens[domain.RoleAdmin], nil,
		http.StatusOK, &page)
	if got := resp.Header.Get(HeaderCaughtUp); got != "false" || len(page.Items) != 0 {
		t.Errorf("%s = %q with %d items, want false and the view as it stands (empty)", HeaderCaughtUp, got, len(page.Items))
	}
}

type eventsPage struct {
	Items []struct {
		Position      int64           `json:"position"`
		Type          string          `json:"type"`
		Stream        string          `json:"stream"`
		StreamVersion int64           `json:"stream_version"`
		RecordedAt    time.Time       `json:"recorded_at"`
		Payload       json.RawMessage `json:"payload"`
	} `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func TestEvents_PagingAndTypeFilter(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin, auditor := e.tokens[domain.RoleAdmin], e.tokens[domain.RoleAuditor]
			var last struct{ Position int64 }
			for i := range 3 {
				e.createAccount(t, fmt.Sprintf("Box %d", i))
				e.mustJSON(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"error_folder": fmt.Sprintf("Errors %d", i)}, http.StatusOK, &last)
			}
			all := e.logThrough(t, last.Position)
			if want := len(domain.Roles) + 6; len(all) != want { // a token per role, three accounts, three settings changes
				t.Fatalf("log has %d events, want %d", len(all), want)
			}

			// paging by 3 returns the whole log in order, then an empty cursor.
			// On PostgreSQL the log shows an event only once no older
			// transaction is in flight (a projection's checkpoint may be), so
			// the last event can lag a moment: page again until it shows.
			var got []int64
			for deadline := time.Now().Add(5 * time.Second); ; {
				got = pageEvents(t, e, auditor)
				if len(got) > 0 && got[len(got)-1] >= last.Position || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			var want []int64
			for _, ev := range all {
				want = append(want, ev.Position)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("paged positions (-want +got):\n%s", diff)
			}

			// the type filter keeps paging until the limit is met
			var page eventsPage
			e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=2&type=SettingsChanged", admin, nil, http.StatusOK, &page)
			if len(page.Items) != 2 || page.NextCursor == nil || *page.NextCursor == "" {
				t.Fatalf("first filtered page: %d items, cursor %v; want 2 items and a cursor", len(page.Items), page.NextCursor)
			}
			for _, it := range page.Items {
				if it.Type != domain.SettingsChangedName {
					t.Errorf("filtered item of type %s", it.Type)
				}
			}
			var rest eventsPage
			e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=2&type=SettingsChanged&after="+*page.NextCursor, admin, nil, http.StatusOK, &rest)
			if len(rest.Items) != 1 || rest.NextCursor == nil || *rest.NextCursor != "" {
				t.Errorf("second filtered page: %d items, cursor %v; want the last item and an empty cursor", len(rest.Items), rest.NextCursor)
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/events?type=InboundAccountCreated,APITokenIssued", admin, nil, http.StatusOK, &page)
			if want := len(domain.Roles) + 3; len(page.Items) != want {
				t.Errorf("two types: %d items, want %d", len(page.Items), want)
			}

			// and bad parameters name themselves
			for q, field := range map[string]string{"limit=0": "limit", "limit=501": "limit", "after=x": "after", "type=Nope": "type", "after=999999": "after"} {
				p := e.problem(t, http.MethodGet, "/api/v1/events?"+q, admin, nil, http.StatusBadRequest)
				if len(p.Errors) != 1 || p.Errors[0].Field != field {
					t.Errorf("?%s: errors = %+v, want one for %s", q, p.Errors, field)
				}
			}
		})
	}
}

// The scheduler records a poll only when it tells something new; when the
// account was last polled comes from its liveness port.
func TestMailboxes_ShowTheLatestPollFromLiveness(t *testing.T) {
	t.Parallel()
	checked := time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	var liveFor string
	e := newEnv(t, backend{"embedded", openEmbedded}, func(o *Options, _ projections.Reader) {
		o.MailboxLiveness = func(id string) (MailboxLiveness, bool) {
			if id != liveFor {
				return MailboxLiveness{}, false
			}
			return MailboxLiveness{CheckedAt: checked, Failures: 7}, true
		}
	})
	admin := e.tokens[domain.RoleAdmin]
	var polled, idle accountOut
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, account("Polled"), http.StatusCreated, &polled)
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, account("Not yet"), http.StatusCreated, &idle)
	liveFor = polled.ID
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	payload, _ := json.Marshal(domain.MailboxPolled{AccountID: polled.ID, StartedAt: t0, FinishedAt: t0.Add(time.Second),
		Error: "login: refused", Failures: 1})
	res, err := e.store.Append(context.Background(), eventstore.AppendRequest{Stream: "mailbox-" + polled.ID,
		ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{{Type: domain.MailboxPolledName, SchemaVersion: 1, Payload: payload}}})
	if err != nil {
		t.Fatal(err)
	}

	var page struct {
		Items []map[string]any `json:"items"`
	}
	e.mustJSON(t, http.MethodGet, "/api/v1/mailboxes?min_position="+strconv.FormatInt(res.LastPosition, 10), admin, nil, http.StatusOK, &page)

	byName := map[string]map[string]any{}
	for _, it := range page.Items {
		byName[it["name"].(string)] = it
	}
	p := byName["Polled"]
	if p["last_checked_at"] != "2026-11-23T09:30:00Z" || p["last_poll_at"] != "2026-11-23T08:00:00Z" || p["consecutive_failures"] != 7.0 {
		t.Errorf("polled account = %v, want last_checked_at from liveness, last_poll_at from the event, 7 failures", p)
	}
	if _, ok := byName["Not yet"]["last_checked_at"]; ok {
		t.Errorf("account never polled shows last_checked_at: %v", byName["Not yet"])
	}
}

// pageEvents reads the whole log through GET /events three at a time and
// returns the positions, checking each page's cursor.
func pageEvents(t *testing.T, e *testEnv, token string) []int64 {
	t.Helper()
	var got []int64
	after := "0"
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		var page eventsPage
		e.mustJSON(t, http.MethodGet, "/api/v1/events?limit=3&after="+after, token, nil, http.StatusOK, &page)
		if page.NextCursor == nil {
			t.Fatal("next_cursor is missing")
		}
		for _, it := range page.Items {
			got = append(got, it.Position)
			if it.Type == "" || it.Stream == "" || it.StreamVersion < 1 || it.RecordedAt.IsZero() || len(it.Payload) == 0 {
				t.Errorf("item %+v lacks a field", it)
			}
		}
		if *page.NextCursor == "" {
			break
		}
		if want := strconv.FormatInt(page.Items[len(page.Items)-1].Position, 10); *page.NextCursor != want {
			t.Errorf("next_cursor = %q, want the last item's position %s", *page.NextCursor, want)
		}
		after = *page.NextCursor
	}
	return got
}
