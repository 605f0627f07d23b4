package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

func outboundAccount(name string) map[string]any {
	return map[string]any{
		"name": name, "host": "smtp.example.org", "port": 587, "security": "starttls", "auth": "login",
		"username": "desk", "password": "s3cret-" + name, "sender_address": "desk@example.org", "sender_name": "Desk",
		"max_mail_size": 10 << 20,
	}
}

// createOutbound creates an outgoing account as admin that is not the
// default (so that it can be deleted) and returns its id.
func (e *testEnv) createOutbound(tb testing.TB) string {
	tb.Helper()
	for {
		var out struct {
			ID      string `json:"id"`
			Default bool   `json:"default"`
		}
		e.mustJSON(tb, http.MethodPost, "/api/v1/outbound-accounts", e.tokens[domain.RoleAdmin], outboundAccount(uniq("out")), http.StatusCreated, &out)
		if !out.Default {
			return out.ID
		}
	}
}

func init() {
	withOutbound := func(tb testing.TB, e *testEnv) (string, any) {
		return "/api/v1/outbound-accounts/" + e.createOutbound(tb), nil
	}
	recipes["POST /api/v1/outbound-accounts"] = func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/outbound-accounts", outboundAccount(uniq("out"))
	}
	recipes["GET /api/v1/outbound-accounts"] = func(testing.TB, *testEnv) (string, any) { return "/api/v1/outbound-accounts", nil }
	recipes["GET /api/v1/outbound-accounts/:id"] = withOutbound
	recipes["DELETE /api/v1/outbound-accounts/:id"] = withOutbound
	recipes["POST /api/v1/outbound-accounts/:id/check"] = func(tb testing.TB, e *testEnv) (string, any) {
		p, _ := withOutbound(tb, e)
		return p + "/check", nil
	}
	recipes["PUT /api/v1/outbound-accounts/:id"] = func(tb testing.TB, e *testEnv) (string, any) {
		p, _ := withOutbound(tb, e)
		return p, map[string]any{"port": 465, "security": "tls", "password": "s3cret"}
	}
	recipes["GET /api/v1/templates"] = func(testing.TB, *testEnv) (string, any) { return "/api/v1/templates", nil }
	recipes["GET /api/v1/templates/:name"] = func(testing.TB, *testEnv) (string, any) { return "/api/v1/templates/default", nil }
	recipes["PUT /api/v1/templates/:name"] = func(testing.TB, *testEnv) (string, any) {
		return "/api/v1/templates/" + uniq("auto"), map[string]any{"subject": "{{.Subject}}", "body": "Ticket {{.TicketNumber}}"}
	}
}

func TestOutboundAccounts_DefaultSecretsAndValidation(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			admin := e.tokens[domain.RoleAdmin]
			type acct struct {
				ID          string `json:"id"`
				Name        string `json:"name"`
				Default     bool   `json:"default"`
				Port        int    `json:"port"`
				Auth        string `json:"auth"`
				Password    string `json:"password"`
				PasswordSet bool   `json:"password_set"`
				MaxMailSize int64  `json:"max_mail_size"`
				Encoding    string `json:"body_encoding"`
			}
			// given no account, when one is created, then it is the default and its password is sealed and hidden
			var first acct
			e.mustJSON(t, http.MethodPost, "/api/v1/outbound-accounts", admin, outboundAccount("first"), http.StatusCreated, &first)
			want := acct{ID: first.ID, Name: "first", Default: true, Port: 587, Auth: "login", PasswordSet: true, MaxMailSize: 10 << 20, Encoding: "quoted-printable"}
			if d := cmp.Diff(want, first); d != "" {
				t.Errorf("created (-want +got):\n%s", d)
			}
			st, _, err := LoadOutboundAccounts(t.Context(), e.store)
			if err != nil {
				t.Fatal(err)
			}
			if pw := st.ByID[first.ID].Password; pw == "" || strings.Contains(pw, "s3cret") {
				t.Errorf("stored password %q is not sealed", pw)
			}
			// when a second is created as the default, then the first is no longer
			body := outboundAccount("second")
			body["default"] = true
			var second acct
			e.mustJSON(t, http.MethodPost, "/api/v1/outbound-accounts", admin, body, http.StatusCreated, &second)
			var list struct {
				Items []acct `json:"items"`
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/outbound-accounts", e.tokens[domain.RoleAgent], nil, http.StatusOK, &list)
			defaults := 0
			for _, a := range list.Items {
				if a.Default {
					defaults++
					if a.ID != second.ID {
						t.Errorf("default is %s, want the second account", a.Name)
					}
				}
			}
			if len(list.Items) != 2 || defaults != 1 {
				t.Errorf("%d accounts with %d defaults, want 2 with exactly 1", len(list.Items), defaults)
			}
			// the default cannot be deleted while another exists
			e.problem(t, http.MethodDelete, "/api/v1/outbound-accounts/"+second.ID, admin, nil, http.StatusConflict)
			// port 25 and a bad auth are refused, naming the fields
			bad := outboundAccount("bad")
			bad["port"], bad["auth"] = 25, "ntlm"
			p := e.problem(t, http.MethodPost, "/api/v1/outbound-accounts", admin, bad, http.StatusUnprocessableEntity)
			var fields []string
			for _, f := range p.Errors {
				fields = append(fields, f.Field)
			}
			if !strings.Contains(strings.Join(fields, ","), "port") || !strings.Contains(strings.Join(fields, ","), "auth") {
				t.Errorf("errors name %v, want port and auth", fields)
			}
			// a PUT of a field keeps the rest, including the password
			var upd acct
			e.mustJSON(t, http.MethodPut, "/api/v1/outbound-accounts/"+first.ID, admin, map[string]any{"max_mail_size": 1000}, http.StatusOK, &upd)
			if upd.MaxMailSize != 1000 || !upd.PasswordSet || upd.Port != 587 {
				t.Errorf("after PUT: %+v", upd)
			}
			e.problem(t, http.MethodGet, "/api/v1/outbound-accounts/nope", admin, nil, http.StatusNotFound)
		})
	}
}

func TestTemplates_API(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0])
	admin := e.tokens[domain.RoleAdmin]
	type tpl struct {
		Name    string `json:"name"`
		Subject string `json:"subject"`
		Body    string `json:"body"`
		Shipped bool   `json:"shipped"`
	}
	// the shipped default works out of the box
	var def tpl
	e.mustJSON(t, http.MethodGet, "/api/v1/templates/default", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &def)
	if !def.Shipped || !strings.Contains(def.Body, "{{.TicketNumber}}") {
		t.Errorf("default template = %+v", def)
	}
	// an admin replaces it; the list shows the stored one
	e.mustJSON(t, http.MethodPut, "/api/v1/templates/default", admin, map[string]any{"subject": "Eingang {{.Subject}}", "body": "Nr. {{.TicketNumber}}"}, http.StatusOK, nil)
	var list struct {
		Items []tpl `json:"items"`
	}
	e.mustJSON(t, http.MethodGet, "/api/v1/templates", e.tokens[domain.RoleAgent], nil, http.StatusOK, &list)
	names := map[string]tpl{}
	for _, it := range list.Items {
		names[it.Name] = it
	}
	if got := names["default"]; got.Shipped || got.Body != "Nr. {{.TicketNumber}}" {
		t.Errorf("listed default = %+v, want the stored one", got)
	}
	for _, n := range []string{"default.de", "default.en", "error", "ticket_closed", "reply"} {
		if _, ok := names[n]; !ok {
			t.Errorf("template %s is not listed", n)
		}
	}
	// a template naming a field that does not exist, or a bad name, is refused
	e.problem(t, http.MethodPut, "/api/v1/templates/x", admin, map[string]any{"subject": "{{.Nope}}", "body": "b"}, http.StatusUnprocessableEntity)
	e.problem(t, http.MethodPut, "/api/v1/templates/Bad!", admin, map[string]any{"subject": "s", "body": "b"}, http.StatusUnprocessableEntity)
	e.problem(t, http.MethodGet, "/api/v1/templates/missing", admin, nil, http.StatusNotFound)
}
