package domain_test

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// Scopes as LIBRARIES.md section 9 spells them; written out here rather
// than taken from the package, so that a typo there fails a test.
const (
	scopeIMAP       = "https://outlook.office.com/IMAP.AccessAsUser.All"
	scopePOP        = "https://outlook.office.com/POP.AccessAsUser.All"
	scopeSMTP       = "https://outlook.office.com/SMTP.Send"
	scopeOffline    = "offline_access"
	scopeOutlookApp = "https://outlook.office365.com/.default"
	scopeGraphApp   = "https://graph.microsoft.com/.default"
	scopeGraphRW    = "https://graph.microsoft.com/Mail.ReadWrite"
	scopeGraphSend  = "https://graph.microsoft.com/Mail.Send"
	scopeGmail      = "https://mail.google.com/"
)

func msConnection(id string) domain.OAuthConnection {
	return domain.OAuthConnection{
		ID: id, Name: "Contoso " + id, Provider: domain.OAuthProviderMicrosoft365, Flow: domain.OAuthFlowDelegated,
		TenantID: "contoso.onmicrosoft.com", ClientID: "client-1", ClientSecret: "sealed:secret",
		LoginBaseURL: domain.DefaultMicrosoftLoginBaseURL, GraphBaseURL: domain.DefaultGraphBaseURL,
	}
}

func msAppOnlyConnection(id string) domain.OAuthConnection {
	c := msConnection(id)
	c.Flow = domain.OAuthFlowAppOnly
	return c
}

func googleConnection(id string) domain.OAuthConnection {
	return domain.OAuthConnection{
		ID: id, Name: "Gmail " + id, Provider: domain.OAuthProviderGoogle, Flow: domain.OAuthFlowDelegated,
		ClientID: "client-g", ClientSecret: "sealed:g",
	}
}

func customConnection(id string) domain.OAuthConnection {
	return domain.OAuthConnection{
		ID: id, Name: "Keycloak " + id, Provider: domain.OAuthProviderCustom, Flow: domain.OAuthFlowDelegated,
		ClientID: "client-k", AuthorizationURL: "https://sso.ours.example/auth", TokenURL: "https://sso.ours.example/token",
		Scopes: []string{"openid", "mail"},
	}
}

// errorFields returns the API fields a joined validation error names, one
// per problem ("field: message" per line), sorted.
func errorFields(err error) []string {
	if err == nil {
		return nil
	}
	var fields []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		field, _, _ := strings.Cut(line, ": ")
		fields = append(fields, field)
	}
	slices.Sort(fields)
	return fields
}

func TestOAuthConnection_Validate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		given  domain.OAuthConnection
		change func(c *domain.OAuthConnection)
		fields []string // sorted API fields the problems name; none = valid
	}{
		{name: "a delegated Microsoft 365 connection is valid", given: msConnection("c1")},
		{name: "a delegated connection needs no client secret (public client)", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.ClientSecret = "" }},
		{name: "an app-only Microsoft 365 connection naming its tenant is valid", given: msAppOnlyConnection("c1")},
		{name: "a delegated Google connection is valid", given: googleConnection("g1")},
		{name: "a delegated custom connection is valid", given: customConnection("k1")},
		{name: "an app-only custom connection needs no authorization URL", given: customConnection("k1"),
			change: func(c *domain.OAuthConnection) {
				c.Flow, c.AuthorizationURL, c.ClientSecret = domain.OAuthFlowAppOnly, "", "sealed:k"
			}},
		{name: "plain http to a loopback identity provider is valid", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.LoginBaseURL = "http://127.0.0.1:8080" }},
		{name: "a national cloud's login host is valid", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.LoginBaseURL = "https://login.microsoftonline.us" }},

		{name: "an unknown provider is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) {
				c.Provider, c.TenantID, c.LoginBaseURL, c.GraphBaseURL = "okta", "", "", ""
			},
			fields: []string{"provider"}},
		{name: "an unknown flow is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.Flow = "implicit" }, fields: []string{"flow"}},
		{name: "an empty name is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.Name = "  " }, fields: []string{"name"}},
		{name: "a missing tenant is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "" }, fields: []string{"tenant_id"}},
		{name: "a tenant with spaces is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "contoso onmicrosoft.com" }, fields: []string{"tenant_id"}},
		{name: "a missing client id is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.ClientID = " " }, fields: []string{"client_id"}},
		{name: "app-only without a client secret is refused", given: msAppOnlyConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.ClientSecret = "" }, fields: []string{"client_secret"}},
		{name: "app-only on the common endpoint is refused", given: msAppOnlyConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "common" }, fields: []string{"tenant_id"}},
		{name: "app-only on the organizations endpoint is refused, in any case", given: msAppOnlyConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "Organizations" }, fields: []string{"tenant_id"}},
		{name: "delegated on the organizations endpoint is valid", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "organizations" }},
		{name: "Google app-only is refused", given: googleConnection("g1"),
			change: func(c *domain.OAuthConnection) { c.Flow = domain.OAuthFlowAppOnly }, fields: []string{"flow"}},
		{name: "a custom provider without token URL, authorization URL and scopes is refused", given: customConnection("k1"),
			change: func(c *domain.OAuthConnection) { c.TokenURL, c.AuthorizationURL, c.Scopes = "", "", nil },
			fields: []string{"authorization_url", "scopes", "token_url"}},
		{name: "a custom provider's scope with a space is refused", given: customConnection("k1"),
			change: func(c *domain.OAuthConnection) { c.Scopes = []string{"mail read"} }, fields: []string{"scopes"}},
		{name: "a preset provider with scopes is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.Scopes = []string{"mail"} }, fields: []string{"scopes"}},
		{name: "a preset provider with endpoint URLs is refused", given: googleConnection("g1"),
			change: func(c *domain.OAuthConnection) { c.TokenURL = "https://evil.example/token" }, fields: []string{"token_url"}},
		{name: "Google with a tenant is refused", given: googleConnection("g1"),
			change: func(c *domain.OAuthConnection) { c.TenantID = "contoso" }, fields: []string{"tenant_id"}},
		{name: "plain http to a host that is not loopback is refused", given: msConnection("c1"),
			change: func(c *domain.OAuthConnection) { c.LoginBaseURL = "http://login.microsoftonline.com" },
			fields: []string{"login_base_url"}},
		{name: "plain http to a custom token URL that is not loopback is refused", given: customConnection("k1"),
			change: func(c *domain.OAuthConnection) { c.TokenURL = "http://sso.ours.example/token" }, fields: []string{"token_url"}},
		{
			name: "every problem is reported at once", given: msAppOnlyConnection("c1"),
			change: func(c *domain.OAuthConnection) {
				c.Name, c.ClientID, c.ClientSecret, c.TenantID, c.LoginBaseURL = "", "", "", "common", "ftp://x"
			},
			fields: []string{"client_id", "client_secret", "login_base_url", "name", "tenant_id"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.given
			if tc.change != nil {
				tc.change(&c)
			}
			err := c.Validate()
			if diff := cmp.Diff(tc.fields, errorFields(err)); diff != "" {
				t.Errorf("Validate() = %v; fields named (-want +got):\n%s", err, diff)
			}
		})
	}
}

func TestOAuthConnection_WithDefaults(t *testing.T) {
	t.Parallel()
	c := domain.OAuthConnection{Provider: domain.OAuthProviderMicrosoft365, TenantID: "contoso"}.WithDefaults()
	if c.Flow != domain.OAuthFlowDelegated || c.LoginBaseURL != "https://login.microsoftonline.com" {
		t.Errorf("WithDefaults() = %+v, want delegated on https://login.microsoftonline.com", c)
	}
	if got := (domain.OAuthConnection{Provider: domain.OAuthProviderMicrosoft365, LoginBaseURL: "https://login.microsoftonline.us/"}).WithDefaults().LoginBaseURL; got != "https://login.microsoftonline.us" {
		t.Errorf("WithDefaults().LoginBaseURL = %q, want the trailing slash trimmed", got)
	}
	if got := googleConnection("g1").WithDefaults().LoginBaseURL; got != "" {
		t.Errorf("WithDefaults() gave Google login_base_url %q, want none", got)
	}
}

func TestOAuthConnection_Endpoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		given                domain.OAuthConnection
		wantAuthz, wantToken string
	}{
		{
			name: "Microsoft 365 uses the tenant's v2.0 endpoints on the global cloud", given: msConnection("c1"),
			wantAuthz: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
			wantToken: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
		},
		{
			name:      "Microsoft 365 without a login host falls back to the global cloud",
			given:     domain.OAuthConnection{Provider: domain.OAuthProviderMicrosoft365, TenantID: "contoso"},
			wantAuthz: "https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize",
			wantToken: "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
		},
		{
			name:      "a national cloud's login host is used as given, trailing slash or not",
			given:     domain.OAuthConnection{Provider: domain.OAuthProviderMicrosoft365, TenantID: "contoso", LoginBaseURL: "https://login.microsoftonline.us/"},
			wantAuthz: "https://login.microsoftonline.us/contoso/oauth2/v2.0/authorize",
			wantToken: "https://login.microsoftonline.us/contoso/oauth2/v2.0/token",
		},
		{
			name: "Google uses its fixed endpoints", given: googleConnection("g1"),
			wantAuthz: "https://accounts.google.com/o/oauth2/v2/auth", wantToken: "https://oauth2.googleapis.com/token",
		},
		{
			name: "a custom provider uses its own", given: customConnection("k1"),
			wantAuthz: "https://sso.ours.example/auth", wantToken: "https://sso.ours.example/token",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			authz, token := tc.given.Endpoints()
			if authz != tc.wantAuthz || token != tc.wantToken {
				t.Errorf("Endpoints() = %q, %q, want %q, %q", authz, token, tc.wantAuthz, tc.wantToken)
			}
		})
	}
}

func TestOAuthConnection_ScopesFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		given    domain.OAuthConnection
		protocol string
		want     []string
	}{
		// IMAP, POP and SMTP are one resource: one token serves all three.
		{"delegated Microsoft IMAP", msConnection("c1"), domain.ProtocolIMAP, []string{scopeIMAP, scopePOP, scopeSMTP, scopeOffline}},
		{"delegated Microsoft POP3", msConnection("c1"), domain.ProtocolPOP3, []string{scopeIMAP, scopePOP, scopeSMTP, scopeOffline}},
		{"delegated Microsoft SMTP", msConnection("c1"), domain.ProtocolSMTP, []string{scopeIMAP, scopePOP, scopeSMTP, scopeOffline}},
		{"delegated Microsoft Graph", msConnection("c1"), domain.ProtocolGraph, []string{scopeGraphRW, scopeGraphSend, scopeOffline}},
		{"app-only Microsoft IMAP", msAppOnlyConnection("c1"), domain.ProtocolIMAP, []string{scopeOutlookApp}},
		{"app-only Microsoft POP3", msAppOnlyConnection("c1"), domain.ProtocolPOP3, []string{scopeOutlookApp}},
		{"app-only Microsoft SMTP", msAppOnlyConnection("c1"), domain.ProtocolSMTP, []string{scopeOutlookApp}},
		{"app-only Microsoft Graph", msAppOnlyConnection("c1"), domain.ProtocolGraph, []string{scopeGraphApp}},
		{"app-only Graph in a national cloud asks for that cloud's Graph", func() domain.OAuthConnection {
			c := msAppOnlyConnection("c1")
			c.LoginBaseURL, c.GraphBaseURL = "https://login.microsoftonline.us", "https://graph.microsoft.us"
			return c
		}(), domain.ProtocolGraph, []string{"https://graph.microsoft.us/.default"}},
		{"delegated Graph in a national cloud asks for that cloud's Graph", func() domain.OAuthConnection {
			c := msConnection("c1")
			c.GraphBaseURL = "https://microsoftgraph.chinacloudapi.cn/"
			return c
		}(), domain.ProtocolGraph, []string{"https://microsoftgraph.chinacloudapi.cn/Mail.ReadWrite",
			"https://microsoftgraph.chinacloudapi.cn/Mail.Send", scopeOffline}},
		{"a connection stored before graph_base_url existed asks for the global Graph", func() domain.OAuthConnection {
			c := msAppOnlyConnection("c1")
			c.GraphBaseURL = ""
			return c
		}(), domain.ProtocolGraph, []string{scopeGraphApp}},
		{"Google IMAP", googleConnection("g1"), domain.ProtocolIMAP, []string{scopeGmail}},
		{"Google SMTP", googleConnection("g1"), domain.ProtocolSMTP, []string{scopeGmail}},
		{"a custom provider's own scopes", customConnection("k1"), domain.ProtocolSMTP, []string{"openid", "mail"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, tc.given.ScopesFor(tc.protocol)); diff != "" {
				t.Errorf("ScopesFor(%q) (-want +got):\n%s", tc.protocol, diff)
			}
		})
	}
	t.Run("a custom provider's scopes are a copy", func(t *testing.T) {
		t.Parallel()
		c := customConnection("k1")
		c.ScopesFor(domain.ProtocolIMAP)[0] = "changed"
		if c.Scopes[0] != "openid" {
			t.Errorf("ScopesFor() shares its slice with the connection: Scopes = %v", c.Scopes)
		}
	})
}

func TestOAuthConnection_ConsentScopes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given domain.OAuthConnection
		want  []string
	}{
		{"Microsoft 365 asks for every mail protocol at once", msConnection("c1"), []string{scopeIMAP, scopePOP, scopeSMTP, scopeOffline}},
		{"Google asks for mail", googleConnection("g1"), []string{scopeGmail}},
		{"a custom provider asks for its scopes", customConnection("k1"), []string{"openid", "mail"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, tc.given.ConsentScopes()); diff != "" {
				t.Errorf("ConsentScopes() (-want +got):\n%s", diff)
			}
		})
	}
}

func connections(tb testing.TB, events ...domain.Event) domain.OAuthConnections {
	tb.Helper()
	var s domain.OAuthConnections
	for _, e := range events {
		s = domain.EvolveOAuthConnections(s, e)
	}
	return s
}

func TestDecideOAuthConnections(t *testing.T) {
	t.Parallel()
	c1, c2 := msConnection("c1"), msConnection("c2")
	tests := []struct {
		name    string
		given   []domain.Event
		when    func(s domain.OAuthConnections) ([]domain.Event, error)
		want    []domain.Event
		wantErr error  // matched with errors.Is
		errText string // the error must contain it
	}{
		{
			name: "a new connection is created with its defaults",
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideCreateOAuthConnection(s, domain.OAuthConnection{
					ID: "c1", Name: c1.Name, Provider: domain.OAuthProviderMicrosoft365, TenantID: c1.TenantID,
					ClientID: c1.ClientID, ClientSecret: c1.ClientSecret,
				}, "admin")
			},
			want: []domain.Event{domain.OAuthConnectionCreated{Connection: c1, Actor: "admin"}},
		},
		{
			name: "a connection without an id is refused",
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideCreateOAuthConnection(s, msConnection(""), "admin")
			},
			errText: "id:",
		},
		{
			name:  "an id in use is refused",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := msConnection("c1")
				c.Name = "Other"
				return domain.DecideCreateOAuthConnection(s, c, "admin")
			},
			errText: "id: c1 exists",
		},
		{
			name: "an invalid connection is refused with Validate's words",
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := msConnection("c1")
				c.TenantID = ""
				return domain.DecideCreateOAuthConnection(s, c, "admin")
			},
			errText: "tenant_id:",
		},
		{
			name:  "a name taken in another case is refused on create",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := msConnection("c2")
				c.Name = strings.ToUpper(c1.Name)
				return domain.DecideCreateOAuthConnection(s, c, "admin")
			},
			wantErr: domain.ErrOAuthConnectionNameTaken, errText: "name:",
		},
		{
			name:  "a name taken in another case is refused on update",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}, domain.OAuthConnectionCreated{Connection: c2}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c2
				c.Name = strings.ToLower(c1.Name)
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
			wantErr: domain.ErrOAuthConnectionNameTaken, errText: "name:",
		},
		{
			name:  "a connection may change the case of its own name",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c1
				c.Name = strings.ToUpper(c1.Name)
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
			want: []domain.Event{domain.OAuthConnectionUpdated{
				Connection: func() domain.OAuthConnection { c := c1; c.Name = strings.ToUpper(c1.Name); return c }(),
				Changed:    []string{"name"}, Actor: "admin",
			}},
		},
		{
			name:  "an update without a secret keeps the stored one",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c1
				c.ClientSecret, c.Description = "", "the support mailbox"
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
			want: []domain.Event{domain.OAuthConnectionUpdated{
				Connection: func() domain.OAuthConnection { c := c1; c.Description = "the support mailbox"; return c }(),
				Changed:    []string{"description"}, Actor: "admin",
			}},
		},
		{
			name:  "an update with a new secret replaces it",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c1
				c.ClientSecret = "sealed:new"
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
			want: []domain.Event{domain.OAuthConnectionUpdated{
				Connection: func() domain.OAuthConnection { c := c1; c.ClientSecret = "sealed:new"; return c }(),
				Changed:    []string{"client_secret"}, Actor: "admin",
			}},
		},
		{
			name:  "an update that changes nothing decides nothing",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c1
				c.ClientSecret, c.LoginBaseURL, c.GraphBaseURL, c.Flow = "", "", "", "" // write-only and defaulted fields left out
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
		},
		{
			name:  "an invalid update is refused",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				c := c1
				c.Flow, c.TenantID = domain.OAuthFlowAppOnly, "common"
				return domain.DecideUpdateOAuthConnection(s, c, "admin")
			},
			errText: "tenant_id:",
		},
		{
			name: "an update of an unknown connection is refused",
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideUpdateOAuthConnection(s, c1, "admin")
			},
			wantErr: domain.ErrOAuthConnectionNotFound,
		},
		{
			name:  "a connection accounts use cannot be deleted, and the error names them",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideDeleteOAuthConnection(s, "c1", []string{"inbound:Support", "outbound:Office 365"}, "admin")
			},
			wantErr: domain.ErrOAuthConnectionInUse, errText: "inbound:Support, outbound:Office 365",
		},
		{
			name:  "a connection no account uses is deleted",
			given: []domain.Event{domain.OAuthConnectionCreated{Connection: c1}},
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideDeleteOAuthConnection(s, "c1", nil, "admin")
			},
			want: []domain.Event{domain.OAuthConnectionDeleted{ConnectionID: "c1", Actor: "admin"}},
		},
		{
			name: "deleting an unknown connection is refused",
			when: func(s domain.OAuthConnections) ([]domain.Event, error) {
				return domain.DecideDeleteOAuthConnection(s, "c1", nil, "admin")
			},
			wantErr: domain.ErrOAuthConnectionNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.when(connections(t, tc.given...))
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil {
					t.Fatalf("decide error = %v, want nil", err)
				}
				diffEvents(t, "decide", tc.want, got)
				return
			}
			if err == nil {
				t.Fatalf("decide = %v, nil; want an error", got)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("decide error = %v, want errors.Is %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("decide error = %q, want it to contain %q", err, tc.errText)
			}
			if got != nil {
				t.Errorf("decide events = %v, want none with an error", got)
			}
		})
	}
}

func TestEvolveOAuthConnections(t *testing.T) {
	t.Parallel()
	c1, c2 := msConnection("c1"), googleConnection("g1")
	c1b := c1
	c1b.Description = "renamed"
	got := connections(t,
		domain.OAuthConnectionCreated{Connection: c1}, domain.OAuthConnectionCreated{Connection: c2},
		domain.OAuthConnectionUpdated{Connection: c1b, Changed: []string{"description"}},
		domain.OAuthConnectionDeleted{ConnectionID: "g1"},
		domain.TicketClosed{}, // not a registry event: ignored
	)
	if diff := cmp.Diff(map[string]domain.OAuthConnection{"c1": c1b}, got.ByID); diff != "" {
		t.Errorf("EvolveOAuthConnections() (-want +got):\n%s", diff)
	}
}

func TestOAuthConnection_Redacted(t *testing.T) {
	t.Parallel()
	c, set := msConnection("c1").Redacted()
	if c.ClientSecret != "" || !set {
		t.Errorf("Redacted() = secret %q, set %v; want none, true", c.ClientSecret, set)
	}
	if _, set := msConnection("c1").WithDefaults().Redacted(); !set {
		t.Error("Redacted() set = false for a connection with a secret")
	}
}

func TestEvolveOAuthToken(t *testing.T) {
	t.Parallel()
	t1, t2, t3, t4 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute), t0.Add(4*time.Minute)
	authorized := func(rt string, at time.Time) domain.OAuthConnectionAuthorized {
		return domain.OAuthConnectionAuthorized{ConnectionID: "c1", RefreshToken: rt, Scopes: []string{scopeIMAP},
			AccessTokenExpiresAt: at.Add(time.Hour), At: at, Actor: "admin"}
	}
	refreshed := func(rt string, at time.Time) domain.OAuthTokenRefreshed {
		return domain.OAuthTokenRefreshed{ConnectionID: "c1", RefreshToken: rt, AccessTokenExpiresAt: at.Add(time.Hour), At: at}
	}
	failed := func(words string, reconnect bool, at time.Time) domain.OAuthTokenRefreshFailed {
		return domain.OAuthTokenRefreshFailed{ConnectionID: "c1", ErrorCode: "x", Error: words, NeedsReconnect: reconnect, At: at}
	}
	ok := func(rt string, refreshedAt time.Time) domain.OAuthTokenState {
		return domain.OAuthTokenState{RefreshToken: rt, State: domain.TokenStateOK, AccessTokenExpiresAt: refreshedAt.Add(time.Hour),
			LastRefreshAt: refreshedAt, ConnectedAt: t0, ConnectedBy: "admin"}
	}
	tests := []struct {
		name  string
		start domain.OAuthTokenState
		given []domain.Event
		want  domain.OAuthTokenState
	}{
		{
			name:  "a delegated connection nobody consented to is not connected",
			start: domain.InitialTokenState(msConnection("c1")),
			want:  domain.OAuthTokenState{State: domain.TokenStateNotConnected},
		},
		{
			name:  "an app-only connection needs no consent",
			start: domain.InitialTokenState(msAppOnlyConnection("c1")),
			want:  domain.OAuthTokenState{State: domain.TokenStateOK},
		},
		{
			name:  "a consent connects",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0)},
			want:  ok("sealed:rt0", t0),
		},
		{
			name:  "a rotating refresh replaces the refresh token",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), refreshed("sealed:rt1", t1)},
			want:  ok("sealed:rt1", t1),
		},
		{
			name:  "a refresh that did not rotate keeps the refresh token",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), refreshed("", t1)},
			want:  ok("sealed:rt0", t1),
		},
		{
			name:  "a failure shows error, and the next refresh clears it",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), failed("503", false, t1)},
			want: func() domain.OAuthTokenState {
				s := ok("sealed:rt0", t0)
				s.State, s.LastError = domain.TokenStateError, "503"
				return s
			}(),
		},
		{
			name:  "a refresh after a failure is ok again",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), failed("503", false, t1), refreshed("sealed:rt1", t2)},
			want:  ok("sealed:rt1", t2),
		},
		{
			name:  "needs_reconnect sticks through a later failure of another kind",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), failed("invalid_grant", true, t1), failed("503", false, t2)},
			want: func() domain.OAuthTokenState {
				s := ok("sealed:rt0", t0)
				s.State, s.LastError = domain.TokenStateNeedsReconnect, "503"
				return s
			}(),
		},
		{
			name:  "a new consent ends needs_reconnect",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{
				authorized("sealed:rt0", t0), failed("invalid_grant", true, t1), failed("503", false, t2),
				domain.OAuthConnectionAuthorized{ConnectionID: "c1", RefreshToken: "sealed:rt9", At: t3, Actor: "other-admin"},
			},
			want: domain.OAuthTokenState{RefreshToken: "sealed:rt9", State: domain.TokenStateOK, LastRefreshAt: t3,
				ConnectedAt: t3, ConnectedBy: "other-admin"},
		},
		{
			name:  "a reseal replaces the sealed token and keeps the state",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{
				authorized("sealed:rt0", t0), failed("invalid_grant", true, t1),
				domain.OAuthRefreshTokenResealed{ConnectionID: "c1", RefreshToken: "sealed2:rt0", At: t4, Actor: "system"},
			},
			want: func() domain.OAuthTokenState {
				s := ok("sealed2:rt0", t0)
				s.State, s.LastError = domain.TokenStateNeedsReconnect, "invalid_grant"
				return s
			}(),
		},
		{
			name:  "other events are ignored",
			start: domain.InitialTokenState(msConnection("c1")),
			given: []domain.Event{authorized("sealed:rt0", t0), domain.OAuthConnectionCreated{Connection: msConnection("c1")}},
			want:  ok("sealed:rt0", t0),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.start
			for _, e := range tc.given {
				s = domain.EvolveOAuthToken(s, e)
			}
			if diff := cmp.Diff(tc.want, s); diff != "" {
				t.Errorf("EvolveOAuthToken() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPresets(t *testing.T) {
	t.Parallel()
	type server struct {
		Host     string
		Port     int
		Security string
		Auth     string
		Scopes   map[string][]string
	}
	got := map[string]map[string]server{}
	for _, p := range domain.Presets() {
		got[p.Name] = map[string]server{}
		for proto, s := range p.Protocols {
			got[p.Name][proto] = server{s.Host, s.Port, s.Security, s.Auth, s.Scopes}
		}
	}
	ms := map[string][]string{
		domain.OAuthFlowDelegated: {scopeIMAP, scopePOP, scopeSMTP, scopeOffline}, domain.OAuthFlowAppOnly: {scopeOutlookApp},
	}
	gmail := map[string][]string{domain.OAuthFlowDelegated: {scopeGmail}}
	want := map[string]map[string]server{
		domain.OAuthProviderMicrosoft365: {
			domain.ProtocolIMAP: {"outlook.office365.com", 993, domain.SecurityTLS, "", ms},
			domain.ProtocolPOP3: {"outlook.office365.com", 995, domain.SecurityTLS, "", ms},
			domain.ProtocolSMTP: {"smtp.office365.com", 587, domain.SecurityStartTLS, domain.AuthXOAuth2, ms},
		},
		domain.OAuthProviderGoogle: {
			domain.ProtocolIMAP: {"imap.gmail.com", 993, domain.SecurityTLS, "", gmail},
			domain.ProtocolPOP3: {"pop.gmail.com", 995, domain.SecurityTLS, "", gmail},
			domain.ProtocolSMTP: {"smtp.gmail.com", 465, domain.SecurityTLS, domain.AuthXOAuth2, gmail},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Presets() (-want +got):\n%s", diff)
	}
}

func TestApplyInboundPreset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   domain.InboundAccount
		preset  string
		want    domain.InboundAccount
		errText string
	}{
		{
			name: "an empty server is filled in, IMAP by default", given: domain.InboundAccount{Name: "Support"},
			preset: domain.OAuthProviderMicrosoft365,
			want: domain.InboundAccount{Name: "Support", Protocol: domain.ProtocolIMAP, Host: "outlook.office365.com", Port: 993,
				Security: domain.SecurityTLS},
		},
		{
			name: "POP3 takes the preset's POP3 server", given: domain.InboundAccount{Protocol: domain.ProtocolPOP3},
			preset: domain.OAuthProviderGoogle,
			want:   domain.InboundAccount{Protocol: domain.ProtocolPOP3, Host: "pop.gmail.com", Port: 995, Security: domain.SecurityTLS},
		},
		{
			name:   "fields the account sets are kept",
			given:  domain.InboundAccount{Protocol: domain.ProtocolIMAP, Host: "imap.proxy.ours.example", Port: 1993},
			preset: domain.OAuthProviderMicrosoft365,
			want: domain.InboundAccount{Protocol: domain.ProtocolIMAP, Host: "imap.proxy.ours.example", Port: 1993,
				Security: domain.SecurityTLS},
		},
		{
			name: "security the account sets is kept", given: domain.InboundAccount{Security: domain.SecurityStartTLS},
			preset: domain.OAuthProviderGoogle,
			want: domain.InboundAccount{Protocol: domain.ProtocolIMAP, Host: "imap.gmail.com", Port: 993,
				Security: domain.SecurityStartTLS},
		},
		{name: "an unknown preset is refused", given: domain.InboundAccount{}, preset: "yahoo", errText: `preset: "yahoo"`},
		{
			name: "a protocol the preset has no server for is refused", given: domain.InboundAccount{Protocol: domain.ProtocolGraph},
			preset: domain.OAuthProviderMicrosoft365, errText: `preset: microsoft365 has no "graph" server`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := domain.ApplyInboundPreset(tc.given, tc.preset)
			if tc.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("ApplyInboundPreset() error = %v, want one containing %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyInboundPreset() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ApplyInboundPreset() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyOutboundPreset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   domain.OutboundAccount
		preset  string
		want    domain.OutboundAccount
		errText string
	}{
		{
			name: "an empty SMTP server is filled in with XOAUTH2", given: domain.OutboundAccount{Name: "Office"},
			preset: domain.OAuthProviderMicrosoft365,
			want: domain.OutboundAccount{Name: "Office", Protocol: domain.OutboundSMTP, Host: "smtp.office365.com", Port: 587,
				Security: domain.SecurityStartTLS, Auth: domain.AuthXOAuth2},
		},
		{
			name: "Google submits on 465 with implicit TLS", given: domain.OutboundAccount{}, preset: domain.OAuthProviderGoogle,
			want: domain.OutboundAccount{Protocol: domain.OutboundSMTP, Host: "smtp.gmail.com", Port: 465,
				Security: domain.SecurityTLS, Auth: domain.AuthXOAuth2},
		},
		{
			name: "fields the account sets are kept", given: domain.OutboundAccount{Port: 2587, Auth: domain.AuthPlain},
			preset: domain.OAuthProviderMicrosoft365,
			want: domain.OutboundAccount{Protocol: domain.OutboundSMTP, Host: "smtp.office365.com", Port: 2587,
				Security: domain.SecurityStartTLS, Auth: domain.AuthPlain},
		},
		{name: "an unknown preset is refused", given: domain.OutboundAccount{}, preset: "", errText: "preset:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := domain.ApplyOutboundPreset(tc.given, tc.preset)
			if tc.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("ApplyOutboundPreset() error = %v, want one containing %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyOutboundPreset() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ApplyOutboundPreset() (-want +got):\n%s", diff)
			}
		})
	}
}

// inlineInbound is an inbound account as stored before OAuth connections.
func inlineInbound(id, name, tenant, client, secret, refresh string) domain.InboundAccount {
	a := supportAccount()
	a.ID, a.Name = id, name
	a.OAuthTenantID, a.OAuthClientID, a.OAuthClientSecret, a.OAuthRefreshToken = tenant, client, secret, refresh
	return a
}

func inlineOutbound(id, name, tenant, client, secret, refresh string) domain.OutboundAccount {
	a := smtpAccount(id)
	a.Name, a.Auth = name, domain.AuthXOAuth2
	a.OAuthTenantID, a.OAuthClientID, a.OAuthClientSecret, a.OAuthRefreshToken = tenant, client, secret, refresh
	return a
}

// withoutInline is a migrated account: inline fields gone, connection set.
func withoutInline[A domain.InboundAccount | domain.OutboundAccount](a A, connectionID string) A {
	switch a := any(&a).(type) {
	case *domain.InboundAccount:
		a.OAuthTenantID, a.OAuthClientID, a.OAuthClientSecret, a.OAuthRefreshToken = "", "", "", ""
		a.OAuthConnectionID = connectionID
	case *domain.OutboundAccount:
		a.OAuthTenantID, a.OAuthClientID, a.OAuthClientSecret, a.OAuthRefreshToken = "", "", "", ""
		a.OAuthConnectionID = connectionID
	}
	return a
}

// cloneConnections copies a registry: EvolveOAuthConnections fills the map
// it is given, and parallel subtests share theirs.
func cloneConnections(s domain.OAuthConnections) domain.OAuthConnections {
	return domain.OAuthConnections{ByID: maps.Clone(s.ByID)}
}

func TestMigrateInlineOAuth(t *testing.T) {
	t.Parallel()
	const actor = "system:migration"
	inA := inlineInbound("in-a", "Support", "contoso", "client-1", "sealed:s1", "sealed:r1")
	inB := inlineInbound("in-b", "Sales", "contoso", "client-1", "sealed:s1", "sealed:r1") // same as in-a
	inC := inlineInbound("in-c", "Billing", "contoso", "client-2", "sealed:s2", "")        // no refresh token
	inD := inlineInbound("in-d", "Old", "", "client-3", "sealed:s3", "")                   // no tenant
	inE := supportAccount()                                                                // nothing inline
	inE.ID, inE.Name, inE.OAuthConnectionID = "in-e", "Modern", "existing"
	outA := inlineOutbound("out-a", "Office", "contoso", "client-1", "sealed:s1", "sealed:r1") // same as in-a
	outB := inlineOutbound("out-b", "Support", "fabrikam", "client-4", "", "sealed:r4")        // same name as in-a
	existing := msConnection("existing")
	existing.Name = "BILLING (Migrated OAuth)" // the registry compares names in any case

	in := domain.InboundAccounts{ByID: map[string]domain.InboundAccount{"in-a": inA, "in-b": inB, "in-c": inC, "in-d": inD, "in-e": inE}}
	out := registry(t, domain.OutboundAccountCreated{Account: outA}, domain.OutboundAccountCreated{Account: outB})
	conns := connections(t, domain.OAuthConnectionCreated{Connection: existing})

	got := domain.MigrateInlineOAuth(in, out, conns, t0, actor)

	connOf := func(id string) string {
		for _, u := range got.Inbound {
			if u.Account.ID == id {
				return u.Account.OAuthConnectionID
			}
		}
		for _, u := range got.Outbound {
			if u.Account.ID == id {
				return u.Account.OAuthConnectionID
			}
		}
		t.Fatalf("MigrateInlineOAuth() did not update account %s", id)
		return ""
	}
	idA, idC, idB := connOf("in-a"), connOf("in-c"), connOf("out-b")
	if idA == "" || idC == "" || idB == "" || idA == idC || idA == idB || idB == idC {
		t.Fatalf("connection ids %q, %q, %q: want three different ones", idA, idC, idB)
	}
	ms := func(id, name, flow, tenant, client, secret string) domain.OAuthConnectionCreated {
		return domain.OAuthConnectionCreated{Actor: actor, Connection: domain.OAuthConnection{
			ID: id, Name: name, Provider: domain.OAuthProviderMicrosoft365, Flow: flow, TenantID: tenant, ClientID: client,
			ClientSecret: secret, LoginBaseURL: domain.DefaultMicrosoftLoginBaseURL, GraphBaseURL: domain.DefaultGraphBaseURL,
		}}
	}
	inlineChanged := []string{"oauth_tenant_id", "oauth_client_id", "oauth_client_secret", "oauth_refresh_token", "oauth_connection_id"}
	want := domain.InlineOAuthMigration{
		Connections: []domain.OAuthConnectionCreated{
			ms(idA, "Support (migrated OAuth)", domain.OAuthFlowDelegated, "contoso", "client-1", "sealed:s1"),
			ms(idC, "Billing (migrated OAuth 2)", domain.OAuthFlowAppOnly, "contoso", "client-2", "sealed:s2"),
			ms(idB, "Support (migrated OAuth 2)", domain.OAuthFlowDelegated, "fabrikam", "client-4", ""),
		},
		Authorizations: []domain.OAuthConnectionAuthorized{
			{ConnectionID: idA, RefreshToken: "sealed:r1", At: t0, Actor: actor},
			{ConnectionID: idB, RefreshToken: "sealed:r4", At: t0, Actor: actor},
		},
		Inbound: []domain.InboundAccountUpdated{
			{Account: withoutInline(inA, idA), Changed: inlineChanged, Actor: actor},
			{Account: withoutInline(inB, idA), Changed: inlineChanged, Actor: actor},
			{Account: withoutInline(inC, idC), Changed: []string{"oauth_tenant_id", "oauth_client_id", "oauth_client_secret", "oauth_connection_id"}, Actor: actor},
			{Account: withoutInline(inD, ""), Changed: []string{"oauth_client_id", "oauth_client_secret"}, Actor: actor},
		},
		Outbound: []domain.OutboundAccountUpdated{
			{Account: withoutInline(outA, idA), Changed: inlineChanged, Actor: actor},
			{Account: withoutInline(outB, idB), Changed: []string{"oauth_tenant_id", "oauth_client_id", "oauth_refresh_token", "oauth_connection_id"}, Actor: actor},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("MigrateInlineOAuth() (-want +got):\n%s", diff)
	}

	t.Run("every planned connection is valid and its name free in the registry", func(t *testing.T) {
		t.Parallel()
		s := cloneConnections(conns)
		for _, c := range got.Connections {
			if _, err := domain.DecideCreateOAuthConnection(s, c.Connection, actor); err != nil {
				t.Errorf("DecideCreateOAuthConnection(%q) error = %v", c.Connection.Name, err)
			}
			s = domain.EvolveOAuthConnections(s, c)
		}
	})
	t.Run("the same input plans the same ids", func(t *testing.T) {
		t.Parallel()
		again := domain.MigrateInlineOAuth(in, out, conns, t0.Add(time.Hour), actor)
		if diff := cmp.Diff(got.Connections, again.Connections); diff != "" {
			t.Errorf("MigrateInlineOAuth() again (-first +again):\n%s", diff)
		}
	})
	t.Run("connections that exist already are reused, not planned again", func(t *testing.T) {
		t.Parallel()
		s := cloneConnections(conns)
		for _, c := range got.Connections {
			s = domain.EvolveOAuthConnections(s, c)
		}
		again := domain.MigrateInlineOAuth(in, out, s, t0, actor)
		if len(again.Connections) != 0 || len(again.Authorizations) != 0 {
			t.Errorf("MigrateInlineOAuth() with the connections stored planned %v and %v, want none", again.Connections, again.Authorizations)
		}
		if diff := cmp.Diff(got.Inbound, again.Inbound); diff != "" {
			t.Errorf("MigrateInlineOAuth() Inbound (-first +again):\n%s", diff)
		}
		if diff := cmp.Diff(got.Outbound, again.Outbound); diff != "" {
			t.Errorf("MigrateInlineOAuth() Outbound (-first +again):\n%s", diff)
		}
	})
	t.Run("running it on its result plans nothing", func(t *testing.T) {
		t.Parallel()
		// The registries' Evolve functions fill the map they are given.
		in2 := domain.InboundAccounts{ByID: maps.Clone(in.ByID)}
		out2, conns2 := out, cloneConnections(conns)
		for _, e := range got.Inbound {
			in2 = domain.EvolveInboundAccounts(in2, e)
		}
		for _, e := range got.Outbound {
			out2 = domain.EvolveOutboundAccounts(out2, e)
		}
		for _, e := range got.Connections {
			conns2 = domain.EvolveOAuthConnections(conns2, e)
		}
		again := domain.MigrateInlineOAuth(in2, out2, conns2, t0, actor)
		if !again.Empty() {
			t.Errorf("MigrateInlineOAuth() on its result = %+v, want nothing", again)
		}
	})
}

func TestOAuthConnection_TokensMayGoTo(t *testing.T) {
	t.Parallel()
	ms, google := msConnection("c1"), googleConnection("g1")
	national := msConnection("c2")
	national.LoginBaseURL = "https://login.microsoftonline.us"
	custom := domain.OAuthConnection{Provider: domain.OAuthProviderCustom}
	for _, tc := range []struct {
		conn domain.OAuthConnection
		host string
		want bool
	}{
		{ms, "outlook.office365.com", true},
		{ms, "smtp.office365.com", true},
		{ms, "SMTP.Office365.COM.", true},
		{ms, "imap.gmail.com", false},
		{ms, "office365.com.attacker.example", false},
		{ms, "evil-office365.com", false},
		{google, "imap.gmail.com", true},
		{google, "outlook.office365.com", false},
		{national, "outlook.office365.us", true},
		{custom, "mail.example.org", true},
	} {
		if got := tc.conn.TokensMayGoTo(tc.host); got != tc.want {
			t.Errorf("%s connection, host %q: TokensMayGoTo = %v, want %v", tc.conn.Provider, tc.host, got, tc.want)
		}
	}
}
