package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// oauthPortForTest adapts the real manager the way cmd does.
func oauthPortForTest(m *oauth.Manager) OAuth {
	return OAuth{
		Authorize: func(ctx context.Context, id, actor string) (OAuthConsent, error) {
			c, err := m.Authorize(ctx, id, actor)
			return OAuthConsent{AuthorizationURL: c.URL, RedirectURL: c.RedirectURL, ExpiresAt: c.ExpiresAt}, err
		},
		Callback: func(ctx context.Context, q url.Values) (string, error) {
			r, err := m.Callback(ctx, q)
			return r.Connection.ID, err
		},
		Health: func(ctx context.Context, id string) (OAuthHealth, error) {
			h, err := m.Health(ctx, id)
			return OAuthHealth{TokenState: h.State, AccessTokenExpiresAt: h.AccessTokenExpiresAt, LastRefreshAt: h.LastRefreshAt,
				LastError: h.LastError, ConnectedAt: h.ConnectedAt}, err
		},
		BadInput: func(err error) bool {
			return errors.Is(err, oauth.ErrNotDelegated) || errors.Is(err, oauth.ErrNoPublicURL) ||
				errors.Is(err, oauth.ErrConsentState) || errors.Is(err, oauth.ErrConsentRefused)
		},
	}
}

func connection(name string) map[string]any {
	return map[string]any{"name": name, "provider": "microsoft365", "flow": "delegated", "tenant_id": "contoso.onmicrosoft.com",
		"client_id": "11111111-2222-3333-4444-555555555555", "client_secret": "client-secret-" + name}
}

func (e *testEnv) createConnection(tb testing.TB, body map[string]any) string {
	tb.Helper()
	var out struct {
		Connection struct {
			ID string `json:"id"`
		} `json:"connection"`
	}
	e.mustJSON(tb, http.MethodPost, "/api/v1/oauth-connections", bootstrapToken, body, http.StatusCreated, &out)
	return out.Connection.ID
}

func TestOAuthConnections_CreateReadUpdateDelete(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			id := e.createConnection(t, connection("M365"))
			var got map[string]any
			e.mustJSON(t, http.MethodGet, "/api/v1/oauth-connections/"+id, e.tokens[domain.RoleAgent], nil, http.StatusOK, &got)
			if got["client_secret_set"] != true || got["client_secret"] != nil {
				t.Errorf("secret shown as %v / set %v, want only client_secret_set true", got["client_secret"], got["client_secret_set"])
			}
			if got["token_state"] != domain.TokenStateNotConnected || got["login_base_url"] != domain.DefaultMicrosoftLoginBaseURL {
				t.Errorf("token_state %v, login_base_url %v", got["token_state"], got["login_base_url"])
			}
			e.mustJSON(t, http.MethodPut, "/api/v1/oauth-connections/"+id, bootstrapToken, map[string]any{"tenant_id": "fabrikam.example", "client_secret": "fabrikam-secret"}, http.StatusOK, nil)

			// an account names it; deleting it is then refused with the list
			acc := account("Support")
			acc["oauth_connection_id"] = id
			acc["host"] = "outlook.office365.com"
			delete(acc, "password")
			accID := ""
			{
				var out struct {
					ID string `json:"id"`
				}
				e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc, http.StatusCreated, &out)
				accID = out.ID
			}
			resp, raw := e.do(t, http.MethodDelete, "/api/v1/oauth-connections/"+id, bootstrapToken, nil)
			if resp.StatusCode != http.StatusConflict || !strings.Contains(string(raw), `inbound account \"Support\"`) {
				t.Errorf("delete while used: %d %s, want 409 naming the account", resp.StatusCode, raw)
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/oauth-connections/"+id, bootstrapToken, nil, http.StatusOK, &got)
			if used, _ := got["used_by"].([]any); len(used) != 1 {
				t.Errorf("used_by = %v, want the one account", got["used_by"])
			}
			e.mustJSON(t, http.MethodPut, "/api/v1/inbound-accounts/"+accID, bootstrapToken, map[string]any{"oauth_connection_id": "", "password": "pw"}, http.StatusOK, nil)
			e.mustJSON(t, http.MethodDelete, "/api/v1/oauth-connections/"+id, bootstrapToken, nil, http.StatusOK, nil)

			var hist struct {
				Items []connectionHistoryItem `json:"items"`
			}
			e.mustJSON(t, http.MethodGet, "/api/v1/oauth-connections/"+id+"/history", e.tokens[domain.RoleAuditor], nil, http.StatusOK, &hist)
			var types []string
			for _, it := range hist.Items {
				types = append(types, it.Type)
			}
			if strings.Join(types, ",") != "OAuthConnectionCreated,OAuthConnectionUpdated,OAuthConnectionDeleted" ||
				hist.Items[1].Changed[0] != "tenant_id" {
				t.Errorf("history = %v (changed %v)", types, hist.Items[1].Changed)
			}
			e.assertNoSecretInResponses(t, "client-secret-M365")
		})
	}
}

// assertNoSecretInResponses fails when any answer so far carried secret.
func (e *testEnv) assertNoSecretInResponses(tb testing.TB, secret string) {
	tb.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.bodies {
		if strings.Contains(b, secret) {
			tb.Fatalf("a response carried the secret %q: %s", secret, b)
		}
	}
}

func TestOAuthConnections_BadInputIsRefusedInWords(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	for _, tc := range []struct {
		name  string
		edit  func(map[string]any)
		field string
	}{
		{"unknown provider", func(c map[string]any) { c["provider"] = "yahoo" }, "provider"},
		{"microsoft without tenant", func(c map[string]any) { delete(c, "tenant_id") }, "tenant_id"},
		{"app only without secret", func(c map[string]any) { c["flow"] = "app_only"; delete(c, "client_secret") }, "client_secret"},
		{"app only on common", func(c map[string]any) { c["flow"] = "app_only"; c["tenant_id"] = "common" }, "tenant_id"},
		{"google app only", func(c map[string]any) {
			c["provider"], c["flow"] = "google", "app_only"
			delete(c, "tenant_id")
		}, "flow"},
		{"custom without urls", func(c map[string]any) { c["provider"] = "custom"; delete(c, "tenant_id") }, "token_url"},
		{"plain http login host", func(c map[string]any) { c["login_base_url"] = "http://login.example.com" }, "login_base_url"},
	} {
		c := connection(uniq("bad"))
		tc.edit(c)
		resp, raw := e.do(t, http.MethodPost, "/api/v1/oauth-connections", bootstrapToken, c)
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(raw), `"field":"`+tc.field+`"`) {
			t.Errorf("%s: %d %s, want 422 naming %s", tc.name, resp.StatusCode, raw, tc.field)
		}
	}
	// accounts: an unknown connection, and the inline fields connections replaced
	acc := account("Ghost")
	acc["oauth_connection_id"] = "no-such-connection"
	if resp, raw := e.do(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("unknown connection: %d %s, want 422", resp.StatusCode, raw)
	}
	acc = account("Inline")
	acc["oauth_refresh_token"] = "a-refresh-token"
	if resp, raw := e.do(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc); resp.StatusCode != http.StatusBadRequest ||
		!strings.Contains(string(raw), "oauth_connection_id") {
		t.Errorf("inline oauth: %d %s, want 400 pointing at oauth_connection_id", resp.StatusCode, raw)
	}
	// a Microsoft 365 connection's tokens go to Microsoft's servers only,
	// also when an account's host changes later
	m365 := e.createConnection(t, connection("Tokens stay home"))
	acc = account("Elsewhere")
	acc["oauth_connection_id"], acc["host"] = m365, "imap.attacker.example"
	delete(acc, "password")
	if resp, raw := e.do(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc); resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(string(raw), `"field":"host"`) {
		t.Errorf("an OAuth account on a foreign host: %d %s, want 422 naming host", resp.StatusCode, raw)
	}
	acc["host"] = "outlook.office365.com"
	var home struct {
		ID string `json:"id"`
	}
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc, http.StatusCreated, &home)
	if resp, raw := e.do(t, http.MethodPut, "/api/v1/inbound-accounts/"+home.ID, bootstrapToken, map[string]any{"host": "imap.attacker.example"}); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("moving an OAuth account to a foreign host: %d %s, want 422", resp.StatusCode, raw)
	}
	// app-only connections have no consent
	c := connection("App")
	c["flow"] = "app_only"
	id := e.createConnection(t, c)
	if resp, raw := e.do(t, http.MethodPost, "/api/v1/oauth-connections/"+id+"/authorize", bootstrapToken, nil); resp.StatusCode != http.StatusConflict {
		t.Errorf("authorize app_only: %d %s, want 409", resp.StatusCode, raw)
	}
}

func TestPresets_FillTheServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	var presets struct {
		Items []domain.Preset `json:"items"`
	}
	e.mustJSON(t, http.MethodGet, "/api/v1/presets", e.tokens[domain.RoleAgent], nil, http.StatusOK, &presets)
	if len(presets.Items) != 2 || presets.Items[0].Protocols["imap"].Host != "outlook.office365.com" ||
		!slices.Contains(presets.Items[0].Protocols["smtp"].Scopes["delegated"], "https://outlook.office.com/SMTP.Send") ||
		presets.Items[1].Protocols["pop3"].Scopes["delegated"][0] != "https://mail.google.com/" {
		t.Fatalf("presets = %+v", presets.Items)
	}
	gmail := connection("Gmail")
	gmail["provider"] = "google"
	delete(gmail, "tenant_id")
	google := e.createConnection(t, gmail)
	id := e.createConnection(t, connection("M365"))
	acc := map[string]any{"name": "Gmail", "protocol": "pop3", "preset": "google", "username": "help@example.com",
		"oauth_connection_id": google}
	var out accountView
	e.mustJSON(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, acc, http.StatusCreated, &out)
	if out.Host != "pop.gmail.com" || out.Port != 995 || out.Security != "tls" {
		t.Errorf("preset gave %s:%d %s, want pop.gmail.com:995 tls", out.Host, out.Port, out.Security)
	}
	out2 := map[string]any{}
	e.mustJSON(t, http.MethodPost, "/api/v1/outbound-accounts", bootstrapToken, map[string]any{"name": "M365 SMTP", "preset": "microsoft365",
		"username": "help@example.com", "sender_address": "help@example.com", "oauth_connection_id": id, "default": true}, http.StatusCreated, &out2)
	if out2["host"] != "smtp.office365.com" || out2["auth"] != "xoauth2" || out2["security"] != "starttls" {
		t.Errorf("outbound preset gave %v", out2)
	}
	if resp, raw := e.do(t, http.MethodPost, "/api/v1/inbound-accounts", bootstrapToken, map[string]any{"name": "X", "preset": "yahoo", "username": "u"}); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("unknown preset: %d %s, want 422", resp.StatusCode, raw)
	}
}

func TestOAuthCallback_RefusesForgedState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backend{"embedded", openEmbedded})
	c := connection("M365")
	c["login_base_url"] = "http://127.0.0.1:1" // refuses at once
	id := e.createConnection(t, c)
	var consent OAuthConsent
	e.mustJSON(t, http.MethodPost, "/api/v1/oauth-connections/"+id+"/authorize", bootstrapToken, nil, http.StatusOK, &consent)
	u, err := url.Parse(consent.AuthorizationURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if !strings.HasPrefix(consent.AuthorizationURL, "http://127.0.0.1:1/contoso.onmicrosoft.com/oauth2/v2.0/authorize?") ||
		q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" ||
		q.Get("redirect_uri") != "http://127.0.0.1:1/oauth/callback" || !strings.Contains(q.Get("scope"), "offline_access") {
		t.Fatalf("authorization URL %s", consent.AuthorizationURL)
	}
	for _, query := range []string{"state=forged&code=x", "code=x", "state=" + q.Get("state") + "&code=x"} {
		resp, raw := e.do(t, http.MethodGet, "/oauth/callback?"+query, "", nil)
		if query == "state="+q.Get("state")+"&code=x" {
			// The real state: the exchange goes to a provider that is not
			// there, and the page says so; the state is used up.
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), "Not connected: M365") {
				t.Errorf("real state, unreachable provider: %d %s", resp.StatusCode, raw)
			}
			continue
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), "unknown, was used already or has expired") {
			t.Errorf("callback %q: %d %s, want 400 in words", query, resp.StatusCode, raw)
		}
	}
	// reused
	resp, raw := e.do(t, http.MethodGet, "/oauth/callback?state="+q.Get("state")+"&code=x", "", nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), "was used already") {
		t.Errorf("reused state: %d %s", resp.StatusCode, raw)
	}
}
