package domain_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// secretCase is one update of an account or connection that stores a
// secret: err names the secret's field and the fields that moved it, or
// is empty when the update is accepted.
type secretCase struct {
	name        string
	change      func(*domain.InboundAccount)
	wantField   string
	wantChanged []string
}

func TestDecideUpdateInboundAccount_StoredPasswordOnlyGoesWhereItWasGiven(t *testing.T) {
	t.Parallel()
	stored := supportAccount()
	stored.Password = "sealed:old"
	keep := func(a *domain.InboundAccount) { a.Password = "" }
	tests := []secretCase{
		{name: "another host needs the password again", change: func(a *domain.InboundAccount) { keep(a); a.Host = "imap.attacker.example" },
			wantField: "password", wantChanged: []string{"host"}},
		{name: "another port needs it", change: func(a *domain.InboundAccount) { keep(a); a.Port = 1993 },
			wantField: "password", wantChanged: []string{"port"}},
		{name: "a weaker security needs it", change: func(a *domain.InboundAccount) { keep(a); a.Security = domain.SecurityNone; a.Port = 143 },
			wantField: "password", wantChanged: []string{"port", "security"}},
		{name: "skipping TLS verification needs it", change: func(a *domain.InboundAccount) { keep(a); a.TLSSkipVerify = true },
			wantField: "password", wantChanged: []string{"tls_skip_verify"}},
		{name: "another TLS server name needs it", change: func(a *domain.InboundAccount) { keep(a); a.TLSServerName = "attacker.example" },
			wantField: "password", wantChanged: []string{"tls_server_name"}},
		{name: "another trusted CA needs it", change: func(a *domain.InboundAccount) { keep(a); a.CACertPEM = "-----BEGIN CERTIFICATE-----" },
			wantField: "password", wantChanged: []string{"ca_cert_pem"}},
		{name: "another user name needs it", change: func(a *domain.InboundAccount) { keep(a); a.Username = "ceo" },
			wantField: "password", wantChanged: []string{"username"}},
		{name: "another protocol needs it", change: func(a *domain.InboundAccount) { keep(a); a.Protocol = domain.ProtocolPOP3; a.Port = 995 },
			wantField: "password", wantChanged: []string{"protocol", "port"}},
		{name: "allowing a plain login needs it", change: func(a *domain.InboundAccount) { keep(a); a.PreventPlainLogin = true },
			wantField: "password", wantChanged: []string{"prevent_plain_login"}},
		{name: "another host with the password sent again is accepted", change: func(a *domain.InboundAccount) {
			a.Host, a.Password = "imap2.ours.example", "sealed:new"
		}},
		{name: "another host with the same password sent again is accepted", change: func(a *domain.InboundAccount) {
			a.Host = "imap2.ours.example" // the API turns a re-sent equal password into the stored sealed value
		}},
		{name: "other fields keep the stored password", change: func(a *domain.InboundAccount) { keep(a); a.Folder = "Support"; a.Enabled = false }},
		{name: "re-sealing under a new key changes no field and is accepted", change: func(a *domain.InboundAccount) { a.Password = "sealed:rotated" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := domain.EvolveInboundAccounts(domain.InboundAccounts{}, domain.InboundAccountCreated{Account: stored})
			next := stored
			tc.change(&next)
			got, err := domain.DecideUpdateInboundAccount(s, next, "admin")
			checkSecretRequired(t, err, tc.wantField, tc.wantChanged)
			if err == nil && next.Password == "" {
				if up := got[0].(domain.InboundAccountUpdated); up.Account.Password != stored.Password {
					t.Errorf("DecideUpdateInboundAccount() password = %q, want the stored %q kept", up.Account.Password, stored.Password)
				}
			}
		})
	}
	t.Run("an account without a stored password may move", func(t *testing.T) {
		t.Parallel()
		a := supportAccount()
		s := domain.EvolveInboundAccounts(domain.InboundAccounts{}, domain.InboundAccountCreated{Account: a})
		a.Host = "imap2.ours.example"
		if _, err := domain.DecideUpdateInboundAccount(s, a, "admin"); err != nil {
			t.Errorf("DecideUpdateInboundAccount() error = %v, want nil", err)
		}
	})
	t.Run("inline OAuth of old accounts keeps its secrets only with its tenant and client", func(t *testing.T) {
		t.Parallel()
		a := inlineInbound("a1", "Old", "contoso.example", "client-1", "sealed:cs", "sealed:rt")
		s := domain.EvolveInboundAccounts(domain.InboundAccounts{}, domain.InboundAccountCreated{Account: a})
		a.OAuthClientSecret, a.OAuthRefreshToken, a.OAuthTenantID = "", "", "attacker.example"
		_, err := domain.DecideUpdateInboundAccount(s, a, "admin")
		checkSecretRequired(t, err, "oauth_client_secret", []string{"oauth_tenant_id"})
		checkSecretRequired(t, err, "oauth_refresh_token", []string{"oauth_tenant_id"})
	})
}

func TestDecideUpdateOutboundAccount_StoredPasswordOnlyGoesWhereItWasGiven(t *testing.T) {
	t.Parallel()
	stored := smtpAccount("o1")
	stored.Default = true
	tests := []struct {
		name        string
		change      func(*domain.OutboundAccount)
		wantChanged []string
	}{
		{name: "another host needs the password again", change: func(a *domain.OutboundAccount) { a.Host = "smtp.attacker.example" }, wantChanged: []string{"host"}},
		{name: "another port and security need it", change: func(a *domain.OutboundAccount) { a.Port, a.Security = 465, domain.SecurityTLS }, wantChanged: []string{"port", "security"}},
		{name: "skipping TLS verification needs it", change: func(a *domain.OutboundAccount) { a.TLSSkipVerify = true }, wantChanged: []string{"tls_skip_verify"}},
		{name: "another TLS server name needs it", change: func(a *domain.OutboundAccount) { a.TLSServerName = "x.example" }, wantChanged: []string{"tls_server_name"}},
		{name: "another auth needs it", change: func(a *domain.OutboundAccount) { a.Auth = domain.AuthLogin }, wantChanged: []string{"auth"}},
		{name: "another user name needs it", change: func(a *domain.OutboundAccount) { a.Username = "ceo" }, wantChanged: []string{"username"}},
		{name: "other fields keep the stored password", change: func(a *domain.OutboundAccount) { a.SenderName = "Help" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := registry(t, domain.OutboundAccountCreated{Account: stored})
			next := stored
			next.Password = ""
			tc.change(&next)
			_, err := domain.DecideUpdateOutboundAccount(s, next, "admin")
			field := ""
			if len(tc.wantChanged) > 0 {
				field = "password"
				if !errors.Is(err, domain.ErrInvalid) {
					t.Errorf("DecideUpdateOutboundAccount() error = %v, want it to wrap ErrInvalid as every refused update does", err)
				}
			}
			checkSecretRequired(t, err, field, tc.wantChanged)

			next.Password = "sealed:new"
			if _, err := domain.DecideUpdateOutboundAccount(s, next, "admin"); err != nil {
				t.Errorf("DecideUpdateOutboundAccount(password sent again) error = %v, want nil", err)
			}
		})
	}
}

func TestDecideUpdateOAuthConnection_StoredClientSecretOnlyGoesWhereItWasGiven(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		stored      domain.OAuthConnection
		change      func(*domain.OAuthConnection)
		wantChanged []string
	}{
		{name: "another tenant needs the client secret again", stored: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "attacker.example" }, wantChanged: []string{"tenant_id"}},
		{name: "another login base URL needs it", stored: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.LoginBaseURL = "https://login.attacker.example" }, wantChanged: []string{"login_base_url"}},
		{name: "another client id needs it", stored: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.ClientID = "client-2" }, wantChanged: []string{"client_id"}},
		{name: "another token URL needs it", stored: withSecret(customConnection("c1")),
			change: func(c *domain.OAuthConnection) { c.TokenURL = "https://attacker.example/token" }, wantChanged: []string{"token_url"}},
		{name: "another authorization URL needs it", stored: withSecret(customConnection("c1")),
			change: func(c *domain.OAuthConnection) { c.AuthorizationURL = "https://attacker.example/auth" }, wantChanged: []string{"authorization_url"}},
		{name: "another provider needs it", stored: msConnection("c1"),
			change: func(c *domain.OAuthConnection) {
				c.Provider, c.TenantID, c.LoginBaseURL, c.GraphBaseURL = domain.OAuthProviderCustom, "", "", ""
				c.TokenURL, c.AuthorizationURL, c.Scopes = "https://attacker.example/token", "https://attacker.example/auth", []string{"mail"}
			},
			wantChanged: []string{"provider", "tenant_id", "login_base_url", "graph_base_url", "authorization_url", "token_url"}},
		{name: "a new name keeps the stored client secret", stored: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.Name = "Renamed" }},
		{name: "a connection without a stored client secret may move", stored: customConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TokenURL = "https://sso2.ours.example/token" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := connections(t, domain.OAuthConnectionCreated{Connection: tc.stored})
			next := tc.stored
			next.ClientSecret = ""
			tc.change(&next)
			_, err := domain.DecideUpdateOAuthConnection(s, next, "admin")
			field := ""
			if len(tc.wantChanged) > 0 {
				field = "client_secret"
			}
			checkSecretRequired(t, err, field, tc.wantChanged)

			next.ClientSecret = "sealed:new"
			if _, err := domain.DecideUpdateOAuthConnection(s, next, "admin"); err != nil {
				t.Errorf("DecideUpdateOAuthConnection(client secret sent again) error = %v, want nil", err)
			}
		})
	}
}

func withSecret(c domain.OAuthConnection) domain.OAuthConnection {
	c.ClientSecret = "sealed:custom"
	return c
}

// checkSecretRequired wants err to hold a SecretRequiredError for field
// naming exactly changed, or no error at all when field is "".
func checkSecretRequired(tb testing.TB, err error, field string, changed []string) {
	tb.Helper()
	if field == "" {
		if err != nil {
			tb.Errorf("decide error = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, domain.ErrSecretRequired) {
		tb.Fatalf("decide error = %v, want ErrSecretRequired naming %s", err, field)
	}
	for _, e := range unjoin(err) {
		var sr *domain.SecretRequiredError
		if errors.As(e, &sr) && sr.Field == field {
			if !slices.Equal(sr.Changed, changed) {
				tb.Errorf("SecretRequiredError{%s}.Changed = %v, want %v", field, sr.Changed, changed)
			}
			return
		}
	}
	tb.Errorf("decide error = %v, want a SecretRequiredError for %s", err, field)
}

// unjoin flattens joined and multiply wrapped errors.
func unjoin(err error) []error {
	out := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, inner := range j.Unwrap() {
			out = append(out, unjoin(inner)...)
		}
	} else if inner := errors.Unwrap(err); inner != nil {
		out = append(out, unjoin(inner)...)
	}
	return out
}
