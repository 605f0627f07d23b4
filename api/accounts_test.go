package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

type accountOut struct {
	ID                  string `json:"id"`
	Name                string `json:"name"`
	Host                string `json:"host"`
	Port                int    `json:"port"`
	Username            string `json:"username"`
	Enabled             bool   `json:"enabled"`
	PasswordSet         bool   `json:"password_set"`
	PollIntervalSeconds int    `json:"poll_interval_seconds"`
	Position            int64  `json:"position"`
}

type historyOut struct {
	Items []struct {
		Type    string      `json:"type"`
		Actor   string      `json:"actor"`
		Changed []string    `json:"changed"`
		Account *accountOut `json:"account"`
	} `json:"items"`
}

func TestAccounts_CRUDWithHistoryAndNoSecretsOut(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]
			var adminID string
			{
				var toks struct{ Items []tokenView }
				e.mustJSON(t, http.MethodGet, "/api/v1/tokens", admin, nil, http.StatusOK, &toks)
				for _, tok := range toks.Items {
					if tok.Role == domain.RoleAdmin {
						adminID = tok.ID
					}
				}
			}
			const password, newPassword = "correct horse battery staple", "Tr0ub4dor&3"

			// when an admin creates an account
			body := account("Support")
			body["password"] = password
			var created accountOut
			resp := e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusCreated, &created)
			if created.ID == "" || !created.PasswordSet || created.Position <= 0 || !created.Enabled {
				t.Fatalf("created = %+v, want an id, password_set, enabled and a position", created)
			}
			if got, want := resp.Header.Get("Location"), "/api/v1/inbound-accounts/"+created.ID; got != want {
				t.Errorf("Location = %q, want %q", got, want)
			}
			path := "/api/v1/inbound-accounts/" + created.ID

			// then an agent reads it without the secret
			var got accountOut
			e.mustJSON(t, http.MethodGet, path, e.tokens[domain.RoleAgent], nil, http.StatusOK, &got)
			want := accountOut{ID: created.ID, Name: "Support", Host: "imap.example.org", Port: 993, Username: "support@example.org",
				Enabled: true, PasswordSet: true, PollIntervalSeconds: 60}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("GET account (-want +got):\n%s", diff)
			}

			// when a client sends back what it read, nothing changes
			var asRead map[string]any
			e.mustJSON(t, http.MethodGet, path, admin, nil, http.StatusOK, &asRead)
			var roundTrip accountOut
			e.mustJSON(t, http.MethodPut, path, admin, asRead, http.StatusOK, &roundTrip)
			if roundTrip.Position != 0 || !roundTrip.PasswordSet {
				t.Errorf("PUT of the GET representation = %+v, want no change and the password kept", roundTrip)
			}

			// when the admin changes the host and the password, and sends the port unchanged
			var updated accountOut
			e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"host": "mail.example.org", "port": 993, "password": newPassword},
				http.StatusOK, &updated)
			if updated.Host != "mail.example.org" || updated.Position <= created.Position {
				t.Errorf("updated = %+v, want host mail.example.org and a later position", updated)
			}
			// and sends the same password again: nothing changes
			var same accountOut
			e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"password": newPassword}, http.StatusOK, &same)
			if same.Position != 0 {
				t.Errorf("re-sent password: position %d, want 0 (no event)", same.Position)
			}

			// then the stored account holds the new password sealed
			accs, _, err := LoadInboundAccounts(context.Background(), e.store)
			if err != nil {
				t.Fatalf("LoadInboundAccounts() error = %v", err)
			}
			if plain, err := e.box.Open(accs.ByID[created.ID].Password); err != nil || plain != newPassword {
				t.Errorf("stored password opens to %q, %v; want the new password", plain, err)
			}

			// when it is deleted
			var deleted struct{ Position int64 }
			e.mustJSON(t, http.MethodDelete, path, admin, nil, http.StatusOK, &deleted)
			e.problem(t, http.MethodGet, path, admin, nil, http.StatusNotFound)
			e.problem(t, http.MethodDelete, path, admin, nil, http.StatusNotFound)

			// then the history names the actor and the changed fields
			var h historyOut
			e.mustJSON(t, http.MethodGet, path+"/history", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &h)
			actor := "token:" + adminID
			if len(h.Items) != 3 {
				t.Fatalf("history has %d items, want 3: %+v", len(h.Items), h.Items)
			}
			for i, wantType := range []string{domain.InboundAccountCreatedName, domain.InboundAccountUpdatedName, domain.InboundAccountDeletedName} {
				if h.Items[i].Type != wantType || h.Items[i].Actor != actor {
					t.Errorf("history[%d] = %s by %s, want %s by %s", i, h.Items[i].Type, h.Items[i].Actor, wantType, actor)
				}
			}
			if diff := cmp.Diff([]string{"host", "password"}, h.Items[1].Changed); diff != "" {
				t.Errorf("history[1].changed (-want +got):\n%s", diff)
			}

			// and no password is in any response, the log or the event log in plaintext
			all := e.logThrough(t, deleted.Position)
			var log strings.Builder
			for _, ev := range all {
				raw, _ := json.Marshal(ev)
				log.Write(raw)
			}
			e.mu.Lock()
			responses := strings.Join(e.bodies, "\n")
			e.mu.Unlock()
			for _, pw := range []string{password, newPassword} {
				for where, text := range map[string]string{"event log": log.String(), "responses": responses, "server log": e.logs.String()} {
					if strings.Contains(text, pw) || strings.Contains(text, strings.ReplaceAll(pw, "&", `\u0026`)) {
						t.Errorf("the %s contains the password %q", where, pw)
					}
				}
			}
			if !strings.Contains(log.String(), `"actor":"`+actor+`"`) {
				t.Errorf("event metadata does not name the actor %s", actor)
			}
		})
	}
}

func TestAccounts_ConcurrentChangeIsConflict(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]
			id := e.createAccount(t, "Support")
			path := "/api/v1/inbound-accounts/" + id

			// given two admins who read the same version
			resp := e.mustJSON(t, http.MethodGet, path, admin, nil, http.StatusOK, nil)
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("GET account has no ETag")
			}
			// when both write against it, the second loses with 409
			e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"host": "a.example.org", "password": "pw-a"}, http.StatusOK, nil, "If-Match", etag)
			p := e.problem(t, http.MethodPut, path, admin, map[string]any{"host": "b.example.org", "password": "pw-b"}, http.StatusConflict, "If-Match", etag)
			if !strings.Contains(p.Detail, "changed") {
				t.Errorf("409 detail %q, want it to say the resource changed", p.Detail)
			}
			e.problem(t, http.MethodDelete, path, admin, nil, http.StatusConflict, "If-Match", etag)
			// and an unchanged write with a stale ETag is a conflict too
			e.problem(t, http.MethodPut, path, admin, map[string]any{"host": "a.example.org", "password": "pw-a"}, http.StatusConflict, "If-Match", etag)
			var got accountOut
			e.mustJSON(t, http.MethodGet, path, admin, nil, http.StatusOK, &got)
			if got.Host != "a.example.org" {
				t.Errorf("host = %q, want the first writer's a.example.org", got.Host)
			}

			// and writers racing without If-Match never both win on the same version
			const n = 6
			codes := make(chan int, n)
			for i := range n {
				go func() {
					r, _ := e.do(t, http.MethodPut, path, admin, map[string]any{"poll_interval_seconds": 100 + i})
					codes <- r.StatusCode
				}()
			}
			ok := 0
			for range n {
				switch c := <-codes; c {
				case http.StatusOK:
					ok++
				case http.StatusConflict:
				default:
					t.Errorf("racing PUT = %d, want 200 or 409", c)
				}
			}
			if ok == 0 {
				t.Errorf("no racing PUT succeeded")
			}
		})
	}
}

func TestAccounts_InvalidInputNamesTheField(t *testing.T) {
	t.Parallel()
	with := func(k string, v any) map[string]any {
		a := account("Valid")
		a[k] = v
		return a
	}
	tests := []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"an unknown field is refused", with("colour", "blue"), http.StatusBadRequest, []string{"colour"}},
		{"a port of the wrong type names port", with("port", "imaps"), http.StatusBadRequest, []string{"port"}},
		{"a port beyond an int names port", with("port", 1e20), http.StatusBadRequest, []string{"port"}},
		{"a port out of range names port", with("port", 70000), http.StatusUnprocessableEntity, []string{"port"}},
		{"every problem is listed", with("protocol", "smtp"), http.StatusUnprocessableEntity, []string{"protocol"}},
		{"move without a folder names move_folder", with("after_import", "move"), http.StatusUnprocessableEntity, []string{"move_folder"}},
		{"several problems at once", map[string]any{"protocol": "imap", "port": -1, "poll_interval_seconds": 0, "after_import": "shred"},
			http.StatusUnprocessableEntity, []string{"after_import", "host", "name", "port", "username"}},
		{"an id is the server's to give", with("id", "mine"), http.StatusBadRequest, []string{"id"}},
		{"invalid JSON", `{"name": "x",`, http.StatusBadRequest, nil},
		{"not an object", `[1, 2]`, http.StatusBadRequest, nil},
		{"an empty body", ``, http.StatusBadRequest, nil},
		{"two JSON values", `{"name":"a"} {"name":"b"}`, http.StatusBadRequest, nil},
		{"a body over the limit", `{"name": "` + strings.Repeat("x", 70<<10) + `"}`, http.StatusRequestEntityTooLarge, nil},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]
			e.createAccount(t, "Taken")
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					p := e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, tc.body, tc.status)
					var fields []string
					for _, f := range p.Errors {
						fields = append(fields, f.Field)
						if f.Detail == "" {
							t.Errorf("field %s has no detail", f.Field)
						}
					}
					slices.Sort(fields)
					if diff := cmp.Diff(tc.fields, fields); diff != "" {
						t.Errorf("problem fields (-want +got):\n%s\nproblem: %+v", diff, p)
					}
					if p.Detail == "" {
						t.Errorf("problem has no detail: %+v", p)
					}
					for _, f := range tc.fields {
						if !strings.Contains(p.Detail, f) {
							t.Errorf("detail %q does not name %s", p.Detail, f)
						}
					}
				})
			}
			t.Run("a taken name is a conflict on name", func(t *testing.T) {
				p := e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, account("taken"), http.StatusConflict)
				if len(p.Errors) != 1 || p.Errors[0].Field != "name" {
					t.Errorf("errors = %+v, want one for name", p.Errors)
				}
			})
			t.Run("a chunked body over the limit is refused while reading", func(t *testing.T) {
				body := io.MultiReader(strings.NewReader(`{"name": "`), strings.NewReader(strings.Repeat("x", 70<<10)), strings.NewReader(`"}`))
				p := e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusRequestEntityTooLarge)
				if !strings.Contains(p.Detail, "64K") {
					t.Errorf("detail %q, want it to name the limit", p.Detail)
				}
			})
			t.Run("a non-JSON body is refused", func(t *testing.T) {
				e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, "name=x", http.StatusUnsupportedMediaType, "Content-Type", "application/x-www-form-urlencoded")
			})
			t.Run("an unknown account is a 404 problem", func(t *testing.T) {
				e.problem(t, http.MethodPut, "/api/v1/inbound-accounts/nope", admin, map[string]any{"host": "x"}, http.StatusNotFound)
				e.problem(t, http.MethodGet, "/api/v1/inbound-accounts/nope/history", admin, nil, http.StatusNotFound)
			})
			t.Run("an unknown route is a 404 problem", func(t *testing.T) {
				e.problem(t, http.MethodGet, "/api/v1/nothing-here", admin, nil, http.StatusNotFound)
			})
		})
	}
}

func TestAccounts_CheckAndPoll(t *testing.T) {
	t.Parallel()
	b := backend{"embedded", openEmbedded}
	const reply = "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"
	var e *testEnv
	e = newEnv(t, b, func(o *Options, _ projections.Reader) {
		o.Check = func(_ context.Context, a domain.InboundAccount) error {
			e.pollMu.Lock()
			e.checked = append(e.checked, a)
			e.pollMu.Unlock()
			if a.Host == "bad.example.org" {
				return &mailsource.ServerError{Op: "login", Reply: reply, Err: errors.New("authentication failed")}
			}
			return nil
		}
		o.PollNow = func(id string) error {
			accs, _, err := LoadInboundAccounts(context.Background(), o.Store)
			if err != nil || !accs.ByID[id].Enabled {
				return errors.New("ingest: unknown account")
			}
			e.pollMu.Lock()
			e.polled = append(e.polled, id)
			e.pollMu.Unlock()
			return nil
		}
	})
	admin := e.tokens[domain.RoleAdmin]
	good := e.createAccount(t, "Good")
	bad := e.createAccount(t, "Bad")
	e.mustJSON(t, http.MethodPut, "/api/v1/inbound-accounts/"+bad, admin, map[string]any{"host": "bad.example.org", "password": "pw", "enabled": false}, http.StatusOK, nil)

	var res checkResult
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts/"+good+"/check", admin, nil, http.StatusOK, &res)
	if diff := cmp.Diff(checkResult{OK: true}, res); diff != "" {
		t.Errorf("check good (-want +got):\n%s", diff)
	}
	res = checkResult{}
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts/"+bad+"/check", admin, nil, http.StatusOK, &res)
	if res.OK || res.ServerReply != reply || !strings.Contains(res.Error, "authentication failed") {
		t.Errorf("check bad = %+v, want ok false with the server's exact reply", res)
	}
	e.pollMu.Lock()
	if len(e.checked) != 2 {
		t.Fatalf("Check called %d times, want 2", len(e.checked))
	}
	if pw := e.checked[0].Password; !strings.HasPrefix(pw, "v1:") {
		t.Errorf("Check got password %q, want it still sealed", pw)
	}
	e.pollMu.Unlock()

	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts/"+good+"/poll", e.tokens[domain.RoleAgent], nil, http.StatusAccepted, nil)
	e.problem(t, http.MethodPost, "/api/v1/inbound-accounts/"+bad+"/poll", admin, nil, http.StatusConflict)
	e.problem(t, http.MethodPost, "/api/v1/inbound-accounts/missing/poll", admin, nil, http.StatusNotFound)
	e.pollMu.Lock()
	if diff := cmp.Diff([]string{good}, e.polled); diff != "" {
		t.Errorf("polled (-want +got):\n%s", diff)
	}
	e.pollMu.Unlock()

	// without the scheduler and checker, both say so
	bare := newEnv(t, b, func(o *Options, _ projections.Reader) { o.PollNow, o.Check = nil, nil })
	id := bare.createAccount(t, "Any")
	bare.problem(t, http.MethodPost, "/api/v1/inbound-accounts/"+id+"/poll", bare.tokens[domain.RoleAdmin], nil, http.StatusServiceUnavailable)
	bare.problem(t, http.MethodPost, "/api/v1/inbound-accounts/"+id+"/check", bare.tokens[domain.RoleAdmin], nil, http.StatusServiceUnavailable)
}

func TestAccounts_SecretsNeedAKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded}, func(o *Options, _ projections.Reader) { o.Secrets = nil })
	p := e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", e.tokens[domain.RoleAdmin], account("Support"), http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "LEDGERDESK_SECRET_KEY") {
		t.Errorf("detail %q, want it to name LEDGERDESK_SECRET_KEY", p.Detail)
	}
}

func TestProblems_InternalDetailsStayInTheLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	// given a store that fails (closed under the running server)
	if err := e.store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	// when a request needs it, the client learns only that it failed
	p := e.problem(t, http.MethodGet, "/api/v1/inbound-accounts", e.tokens[domain.RoleAdmin], nil, http.StatusInternalServerError)
	if strings.Contains(p.Detail, "closed") || strings.Contains(p.Detail, "eventstore") || !strings.Contains(p.Detail, "logged") {
		t.Errorf("detail %q, want a generic message without internals", p.Detail)
	}
	// and the log has the cause
	if !strings.Contains(e.logs.String(), "closed") {
		t.Errorf("the log does not say what failed:\n%s", e.logs.String())
	}
}

// An account may point at any service; check answers the first line of
// what it said, bounded and without control bytes, never its whole answer.
func TestAccounts_CheckAnswersABoundedFirstLine(t *testing.T) {
	t.Parallel()
	banner := "HTTP/1.1 200 OK\x1b[31m " + strings.Repeat("x", 500) + "\r\nServer: internal-admin\r\n\r\n<html>secret dashboard</html>"
	e := newEnv(t, backend{"embedded", openEmbedded}, func(o *Options, _ projections.Reader) {
		o.Check = func(context.Context, domain.InboundAccount) error {
			return &mailsource.ServerError{Op: "greeting", Reply: banner, Err: errors.New("not a mail server: " + banner)}
		}
	})
	id := e.createAccount(t, "Probe")
	var res checkResult
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts/"+id+"/check", e.tokens[domain.RoleAdmin], nil, http.StatusOK, &res)

	if !strings.HasPrefix(res.ServerReply, "HTTP/1.1 200 OK[31m xxx") || utf8.RuneCountInString(res.ServerReply) > mailsource.MaxReplyLen+1 {
		t.Errorf("server_reply = %q (%d characters), want the first line without control bytes, at most %d", res.ServerReply,
			utf8.RuneCountInString(res.ServerReply), mailsource.MaxReplyLen)
	}
	for _, got := range []string{res.ServerReply, res.Error} {
		if strings.Contains(got, "secret dashboard") || strings.Contains(got, "internal-admin") || strings.ContainsAny(got, "\r\n\x1b") {
			t.Errorf("check answered more than a first line: %q", got)
		}
	}
	if n := utf8.RuneCountInString(res.Error); n > checkErrorLen+1 || res.Error == "" {
		t.Errorf("error has %d characters, want 1..%d: %q", n, checkErrorLen, res.Error)
	}
}

// allowed_mail_hosts refuses, at create and when the host changes, a host
// the list can never allow.
func TestAccounts_AllowedMailHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	admin := e.tokens[domain.RoleAdmin]
	id := e.createAccount(t, "Before") // any host while no list is set
	e.mustJSON(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"allowed_mail_hosts": []string{".example.org", "192.0.2.0/24"}},
		http.StatusOK, nil)

	for _, host := range []string{"127.0.0.1", "10.0.0.5"} {
		body := account("Probe " + host)
		body["host"] = host
		p := e.problem(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusUnprocessableEntity)
		if len(p.Errors) != 1 || p.Errors[0].Field != "host" {
			t.Errorf("create with host %s: errors = %+v, want one for host", host, p.Errors)
		}
		p = e.problem(t, http.MethodPut, "/api/v1/inbound-accounts/"+id, admin, map[string]any{"host": host}, http.StatusUnprocessableEntity)
		if len(p.Errors) != 1 || p.Errors[0].Field != "host" {
			t.Errorf("update to host %s: errors = %+v, want one for host", host, p.Errors)
		}
	}
	for _, host := range []string{"imap.example.org", "192.0.2.10", "mail.partner.example"} { // the last: its addresses decide
		body := account("Allowed " + host)
		body["host"] = host
		e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", admin, body, http.StatusCreated, nil)
	}
	p := e.problem(t, http.MethodPut, "/api/v1/settings", admin, map[string]any{"allowed_mail_hosts": []string{"10.0.0.0/40"}},
		http.StatusUnprocessableEntity)
	if len(p.Errors) != 1 || p.Errors[0].Field != "allowed_mail_hosts[0]" {
		t.Errorf("errors = %+v, want one for allowed_mail_hosts[0]", p.Errors)
	}
}
