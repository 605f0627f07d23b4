package api

import (
	"net/http"
	"slices"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// An admin cannot read a stored secret by pointing its account at a server
// of their own: the change needs the secret again (domain/secretbinding.go).
func TestSecrets_MovingAStoredSecretNeedsItAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	admin := e.tokens[domain.RoleAdmin]
	fields := func(p Problem) []string {
		var out []string
		for _, f := range p.Errors {
			out = append(out, f.Field)
		}
		return out
	}

	t.Run("inbound account", func(t *testing.T) {
		t.Parallel()
		id := e.createAccount(t, "Mover")
		path := "/api/v1/inbound-accounts/" + id
		for _, change := range []map[string]any{
			{"host": "imap.attacker.example"}, {"port": 1993}, {"security": "starttls"}, {"tls_skip_verify": true},
			{"tls_server_name": "attacker.example"}, {"ca_cert_pem": "-----BEGIN CERTIFICATE-----\n"},
			{"username": "ceo@example.org"}, {"prevent_plain_login": true},
		} {
			p := e.problem(t, http.MethodPut, path, admin, change, http.StatusUnprocessableEntity)
			if !slices.Contains(fields(p), "password") {
				t.Errorf("PUT %v: problem fields %v, want password named", change, fields(p))
			}
		}
		// the next check still goes to the server the password was given for
		e.mustJSON(t, http.MethodPost, path+"/check", admin, nil, http.StatusOK, nil)
		if got := e.lastChecked(t); got.Host != "imap.example.org" {
			t.Errorf("check went to %q, want the unchanged imap.example.org", got.Host)
		}
		// with the password sent again the account moves, with that password
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"host": "imap2.example.org", "password": "new-pw"}, http.StatusOK, nil)
		e.mustJSON(t, http.MethodPost, path+"/check", admin, nil, http.StatusOK, nil)
		got := e.lastChecked(t)
		if pw, err := e.box.Open(got.Password); got.Host != "imap2.example.org" || err != nil || pw != "new-pw" {
			t.Errorf("check went to %q with password %q (%v), want imap2.example.org with new-pw", got.Host, pw, err)
		}
		// other fields keep the stored password
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"folder": "Support"}, http.StatusOK, nil)
	})

	t.Run("outgoing account", func(t *testing.T) {
		t.Parallel()
		id := e.createOutbound(t)
		path := "/api/v1/outbound-accounts/" + id
		for _, change := range []map[string]any{
			{"host": "smtp.attacker.example"}, {"port": 465, "security": "tls"}, {"tls_skip_verify": true},
			{"tls_server_name": "attacker.example"}, {"auth": "plain"}, {"username": "ceo"},
		} {
			p := e.problem(t, http.MethodPut, path, admin, change, http.StatusUnprocessableEntity)
			if !slices.Contains(fields(p), "password") {
				t.Errorf("PUT %v: problem fields %v, want password named", change, fields(p))
			}
		}
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"host": "smtp2.example.org", "password": "new-pw"}, http.StatusOK, nil)
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"sender_name": "Help"}, http.StatusOK, nil)
	})

	t.Run("OAuth connection", func(t *testing.T) {
		t.Parallel()
		id := e.createConnection(t, connection(uniq("conn")))
		path := "/api/v1/oauth-connections/" + id
		for _, change := range []map[string]any{
			{"tenant_id": "attacker.example"}, {"client_id": "other-client"}, {"login_base_url": "https://login.attacker.example"},
		} {
			p := e.problem(t, http.MethodPut, path, admin, change, http.StatusUnprocessableEntity)
			if !slices.Contains(fields(p), "client_secret") {
				t.Errorf("PUT %v: problem fields %v, want client_secret named", change, fields(p))
			}
		}
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"tenant_id": "fabrikam.example", "client_secret": "other"}, http.StatusOK, nil)
		e.mustJSON(t, http.MethodPut, path, admin, map[string]any{"description": "renamed"}, http.StatusOK, nil)
	})
}

// lastChecked is the account the last connection check was given.
func (e *testEnv) lastChecked(tb testing.TB) domain.InboundAccount {
	tb.Helper()
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	if len(e.checked) == 0 {
		tb.Fatal("no connection check ran")
	}
	return e.checked[len(e.checked)-1]
}
