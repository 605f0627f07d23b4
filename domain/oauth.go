package domain

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// OAuth2 connections (RULES.md section 1, "login"): a provider configured
// once and selected by any number of inbound and outgoing accounts. The
// registry lives in OAuthConnectionsStream; each connection's tokens in a
// stream of their own (OAuthTokenStream), so that a refresh never conflicts
// with an admin editing the registry.

// Providers, flows and token states of OAuth connections.
const (
	OAuthProviderMicrosoft365 = "microsoft365"
	OAuthProviderGoogle       = "google"
	OAuthProviderCustom       = "custom"

	// OAuthFlowDelegated is the authorization-code flow: an admin consents
	// in a browser once and a refresh token is kept (sealed).
	OAuthFlowDelegated = "delegated"
	// OAuthFlowAppOnly is the client-credentials flow (Entra ID only):
	// tenant, client id and secret, no person involved.
	OAuthFlowAppOnly = "app_only"

	// TokenStateNotConnected: a delegated connection nobody has consented
	// to yet.
	TokenStateNotConnected = "not_connected"
	TokenStateOK           = "ok"
	TokenStateRefreshing   = "refreshing"
	// TokenStateNeedsReconnect: the provider refused the refresh token for
	// good (invalid_grant); only a new consent brings the connection back.
	TokenStateNeedsReconnect = "needs_reconnect"
	// TokenStateError: the last token request failed for another reason
	// (provider down, wrong client secret); it is retried with back-off.
	TokenStateError = "error"

	// DefaultMicrosoftLoginBaseURL is Entra ID's global cloud; national
	// clouds have their own (login.microsoftonline.us, ...).
	DefaultMicrosoftLoginBaseURL = "https://login.microsoftonline.com"
	// DefaultGraphBaseURL is Microsoft Graph in the global cloud.
	DefaultGraphBaseURL = "https://graph.microsoft.com"

	googleAuthorizationURL = "https://accounts.google.com/o/oauth2/v2/auth"
	googleTokenURL         = "https://oauth2.googleapis.com/token"

	// ProtocolSMTP names SMTP submission where a protocol picks scopes.
	ProtocolSMTP = "smtp"
)

// Scopes of the presets (LIBRARIES.md section 9).
const (
	scopeOfflineAccess   = "offline_access"
	scopeOutlookIMAP     = "https://outlook.office.com/IMAP.AccessAsUser.All"
	scopeOutlookPOP      = "https://outlook.office.com/POP.AccessAsUser.All"
	scopeOutlookSMTP     = "https://outlook.office.com/SMTP.Send"
	scopeOutlookAppOnly  = "https://outlook.office365.com/.default"
	scopeGraphAppOnly    = "https://graph.microsoft.com/.default"
	scopeGraphMailRW     = "https://graph.microsoft.com/Mail.ReadWrite"
	scopeGraphMailSend   = "https://graph.microsoft.com/Mail.Send"
	scopeGoogleMail      = "https://mail.google.com/"
	oauthConnectionsName = "oauth-connections"
)

// OAuthConnectionsStream holds every OAuth connection's configuration
// events.
const OAuthConnectionsStream = oauthConnectionsName

// OAuthTokenStream is the stream of one connection's consents, refreshed
// (rotated) tokens and refresh failures.
func OAuthTokenStream(connectionID string) string { return "oauth-token-" + connectionID }

// OAuthConnection is one OAuth2 client registration. ClientSecret is sealed
// ciphertext.
type OAuthConnection struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Description  string `json:"description,omitempty"`
	Provider     string `json:"provider"`
	Flow         string `json:"flow"`
	TenantID     string `json:"tenant_id,omitempty"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"` // sealed
	// LoginBaseURL is Entra ID's login host (national clouds) [global].
	LoginBaseURL string `json:"login_base_url,omitempty"`
	// GraphBaseURL is Microsoft Graph's host in the connection's cloud
	// [https://graph.microsoft.com].
	GraphBaseURL string `json:"graph_base_url,omitempty"`
	// AuthorizationURL, TokenURL and Scopes are a custom provider's.
	AuthorizationURL string   `json:"authorization_url,omitempty"`
	TokenURL         string   `json:"token_url,omitempty"`
	Scopes           []string `json:"scopes,omitempty"`
}

// WithDefaults fills in the defaults of fields left empty.
func (c OAuthConnection) WithDefaults() OAuthConnection {
	if c.Flow == "" {
		c.Flow = OAuthFlowDelegated
	}
	if c.Provider == OAuthProviderMicrosoft365 && c.LoginBaseURL == "" {
		c.LoginBaseURL = DefaultMicrosoftLoginBaseURL
	}
	if c.Provider == OAuthProviderMicrosoft365 && c.GraphBaseURL == "" {
		c.GraphBaseURL = DefaultGraphBaseURL
	}
	c.LoginBaseURL = strings.TrimRight(c.LoginBaseURL, "/")
	c.GraphBaseURL = strings.TrimRight(c.GraphBaseURL, "/")
	return c
}

// Validate reports every problem of a (defaulted) connection, each naming
// its API field.
func (c OAuthConnection) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.Name) == "" {
		bad("name", "must not be empty")
	}
	switch c.Flow {
	case OAuthFlowDelegated, OAuthFlowAppOnly:
	default:
		bad("flow", "%q is not one of delegated, app_only", c.Flow)
	}
	if strings.TrimSpace(c.ClientID) == "" {
		bad("client_id", "must not be empty")
	}
	if c.Flow == OAuthFlowAppOnly && c.ClientSecret == "" {
		bad("client_secret", "must be set for the app_only flow")
	}
	switch c.Provider {
	case OAuthProviderMicrosoft365:
		if strings.TrimSpace(c.TenantID) == "" {
			bad("tenant_id", "must name the Entra ID tenant (its id or primary domain)")
		} else if !plainToken(c.TenantID) {
			bad("tenant_id", "%q is not a tenant id or domain", c.TenantID)
		} else if c.Flow == OAuthFlowAppOnly && slices.Contains([]string{"common", "organizations", "consumers"}, strings.ToLower(c.TenantID)) {
			bad("tenant_id", "%q cannot be used with app_only; name the tenant", c.TenantID)
		}
		if msg := urlProblem(c.LoginBaseURL); msg != "" {
			bad("login_base_url", "%s", msg)
		}
		if msg := urlProblem(c.GraphBaseURL); c.GraphBaseURL != "" && msg != "" {
			bad("graph_base_url", "%s", msg)
		}
	case OAuthProviderGoogle:
		if c.Flow == OAuthFlowAppOnly {
			bad("flow", "Google offers no client-credentials flow for mailboxes; use delegated")
		}
	case OAuthProviderCustom:
		if msg := urlProblem(c.TokenURL); msg != "" {
			bad("token_url", "%s", msg)
		}
		if c.Flow == OAuthFlowDelegated {
			if msg := urlProblem(c.AuthorizationURL); msg != "" {
				bad("authorization_url", "%s", msg)
			}
		}
		if len(c.Scopes) == 0 {
			bad("scopes", "a custom provider needs its scopes")
		}
	default:
		bad("provider", "%q is not one of microsoft365, google, custom", c.Provider)
	}
	if c.Provider != OAuthProviderCustom {
		if len(c.Scopes) > 0 {
			bad("scopes", "are set by the %s preset; only custom providers take scopes", c.Provider)
		}
		if c.AuthorizationURL != "" {
			bad("authorization_url", "is set by the %s preset; only custom providers take one", c.Provider)
		}
		if c.TokenURL != "" {
			bad("token_url", "is set by the %s preset; only custom providers take one", c.Provider)
		}
	}
	if c.Provider != OAuthProviderMicrosoft365 {
		if c.TenantID != "" {
			bad("tenant_id", "is Microsoft 365's only")
		}
		if c.LoginBaseURL != "" {
			bad("login_base_url", "is Microsoft 365's only")
		}
		if c.GraphBaseURL != "" {
			bad("graph_base_url", "is Microsoft 365's only")
		}
	}
	for _, s := range c.Scopes {
		if !plainToken(s) {
			bad("scopes", "%q is not a scope", s)
		}
	}
	return errors.Join(errs...)
}

// plainToken is a non-empty string without spaces, controls or quotes.
func plainToken(s string) bool {
	if s == "" || len(s) > 512 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// urlProblem says what is wrong with an endpoint URL, or "". Plain HTTP is
// accepted for loopback only (test and local identity providers).
func urlProblem(u string) string {
	switch {
	case u == "":
		return "must not be empty"
	case !plainToken(u):
		return fmt.Sprintf("%q is not a URL", u)
	case strings.HasPrefix(u, "https://") && len(u) > len("https://"):
		return ""
	case strings.HasPrefix(u, "http://127.0.0.1"), strings.HasPrefix(u, "http://localhost"), strings.HasPrefix(u, "http://[::1]"):
		return ""
	}
	return fmt.Sprintf("%q must be an https:// URL (http only on loopback)", u)
}

// Endpoints are the authorization and token URLs of the connection.
func (c OAuthConnection) Endpoints() (authorizationURL, tokenURL string) {
	switch c.Provider {
	case OAuthProviderMicrosoft365:
		base := strings.TrimRight(c.LoginBaseURL, "/")
		if base == "" {
			base = DefaultMicrosoftLoginBaseURL
		}
		base += "/" + c.TenantID + "/oauth2/v2.0"
		return base + "/authorize", base + "/token"
	case OAuthProviderGoogle:
		return googleAuthorizationURL, googleTokenURL
	}
	return c.AuthorizationURL, c.TokenURL
}

// ScopesFor are the scopes of an access token for protocol (imap, pop3,
// smtp, graph). Refreshes send them every time: Microsoft otherwise falls
// back to the first scopes granted.
func (c OAuthConnection) ScopesFor(protocol string) []string {
	switch c.Provider {
	case OAuthProviderGoogle:
		return []string{scopeGoogleMail}
	case OAuthProviderMicrosoft365:
		// Graph's scopes name the resource of the connection's cloud
		// (graph_base_url): a token for graph.microsoft.com is refused by
		// graph.microsoft.us as the wrong audience.
		graph := strings.TrimRight(c.GraphBaseURL, "/")
		if c.Flow == OAuthFlowAppOnly {
			if protocol == ProtocolGraph {
				if graph != "" && graph != DefaultGraphBaseURL {
					return []string{graph + "/.default"}
				}
				return []string{scopeGraphAppOnly}
			}
			return []string{scopeOutlookAppOnly}
		}
		if protocol == ProtocolGraph {
			if graph != "" && graph != DefaultGraphBaseURL {
				return []string{graph + "/Mail.ReadWrite", graph + "/Mail.Send", scopeOfflineAccess}
			}
			return []string{scopeGraphMailRW, scopeGraphMailSend, scopeOfflineAccess}
		}
		// IMAP, POP and SMTP are one resource (outlook.office.com): one
		// token carries all three, so a connection refreshes once per
		// token lifetime whatever its accounts read or send with.
		return []string{scopeOutlookIMAP, scopeOutlookPOP, scopeOutlookSMTP, scopeOfflineAccess}
	}
	return slices.Clone(c.Scopes)
}

// ConsentScopes are asked for in the delegated consent: those of IMAP, POP3
// and SMTP, so that one consent serves reading and sending. (Graph is
// another resource; a token holds one resource's scopes.)
func (c OAuthConnection) ConsentScopes() []string {
	return c.ScopesFor(ProtocolIMAP)
}

// Redacted returns the connection without its secret, and whether one is
// set.
func (c OAuthConnection) Redacted() (OAuthConnection, bool) {
	set := c.ClientSecret != ""
	c.ClientSecret = ""
	return c, set
}

// Stored names and schema versions of the OAuth events.
const (
	OAuthConnectionCreatedName    = "OAuthConnectionCreated"
	OAuthConnectionUpdatedName    = "OAuthConnectionUpdated"
	OAuthConnectionDeletedName    = "OAuthConnectionDeleted"
	OAuthConnectionAuthorizedName = "OAuthConnectionAuthorized"
	OAuthTokenRefreshedName       = "OAuthTokenRefreshed"
	OAuthTokenRefreshFailedName   = "OAuthTokenRefreshFailed"
	OAuthRefreshTokenResealedName = "OAuthRefreshTokenResealed"

	OAuthConnectionCreatedSchemaVersion    = 1
	OAuthConnectionUpdatedSchemaVersion    = 1
	OAuthConnectionDeletedSchemaVersion    = 1
	OAuthConnectionAuthorizedSchemaVersion = 1
	OAuthTokenRefreshedSchemaVersion       = 1
	OAuthTokenRefreshFailedSchemaVersion   = 1
	OAuthRefreshTokenResealedSchemaVersion = 1
)

// OAuthConnectionCreated records a new connection (client secret sealed).
type OAuthConnectionCreated struct {
	Connection OAuthConnection `json:"connection"`
	Actor      string          `json:"actor"`
}

// EventName implements Event.
func (OAuthConnectionCreated) EventName() string { return OAuthConnectionCreatedName }

// OAuthConnectionUpdated records a connection's whole new configuration and
// the fields that changed.
type OAuthConnectionUpdated struct {
	Connection OAuthConnection `json:"connection"`
	Changed    []string        `json:"changed"`
	Actor      string          `json:"actor"`
}

// EventName implements Event.
func (OAuthConnectionUpdated) EventName() string { return OAuthConnectionUpdatedName }

// OAuthConnectionDeleted records that a connection is gone.
type OAuthConnectionDeleted struct {
	ConnectionID string `json:"connection_id"`
	Actor        string `json:"actor"`
}

// EventName implements Event.
func (OAuthConnectionDeleted) EventName() string { return OAuthConnectionDeletedName }

// OAuthConnectionAuthorized records a completed consent (or a reconnect):
// the new refresh token, sealed, replaces any earlier one.
type OAuthConnectionAuthorized struct {
	ConnectionID string `json:"connection_id"`
	RefreshToken string `json:"refresh_token"` // sealed
	// TokenURL and ClientID are those the consent was given to: the
	// refresh token is never sent to another endpoint or client.
	TokenURL             string    `json:"token_url,omitempty"`
	ClientID             string    `json:"client_id,omitempty"`
	Scopes               []string  `json:"scopes,omitempty"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`
	At                   time.Time `json:"at"`
	Actor                string    `json:"actor"`
}

// EventName implements Event.
func (OAuthConnectionAuthorized) EventName() string { return OAuthConnectionAuthorizedName }

// OAuthTokenRefreshed records a refresh that rotated the refresh token
// (RefreshToken, sealed, is then the only live one) or that ended a
// failure state. It is stored before the new token is used.
type OAuthTokenRefreshed struct {
	ConnectionID         string    `json:"connection_id"`
	RefreshToken         string    `json:"refresh_token,omitempty"` // sealed; empty: not rotated
	Scopes               []string  `json:"scopes,omitempty"`
	AccessTokenExpiresAt time.Time `json:"access_token_expires_at,omitzero"`
	At                   time.Time `json:"at"`
}

// EventName implements Event.
func (OAuthTokenRefreshed) EventName() string { return OAuthTokenRefreshedName }

// OAuthTokenRefreshFailed records a token request the provider refused, in
// its words (an AADSTS code, invalid_grant, ...). NeedsReconnect: the
// refresh token is dead and only a new consent helps.
type OAuthTokenRefreshFailed struct {
	ConnectionID   string    `json:"connection_id"`
	ErrorCode      string    `json:"error_code,omitempty"`
	Error          string    `json:"error"`
	NeedsReconnect bool      `json:"needs_reconnect"`
	At             time.Time `json:"at"`
}

// EventName implements Event.
func (OAuthTokenRefreshFailed) EventName() string { return OAuthTokenRefreshFailedName }

// OAuthRefreshTokenResealed records the same refresh token sealed under a
// new secret key (ledgerdesk secrets rotate); the token's state is as it
// was.
type OAuthRefreshTokenResealed struct {
	ConnectionID string    `json:"connection_id"`
	RefreshToken string    `json:"refresh_token"` // sealed
	At           time.Time `json:"at"`
	Actor        string    `json:"actor"`
}

// EventName implements Event.
func (OAuthRefreshTokenResealed) EventName() string { return OAuthRefreshTokenResealedName }

// Errors of the connection registry.
var (
	ErrOAuthConnectionNotFound  = errors.New("domain: OAuth connection not found")
	ErrOAuthConnectionNameTaken = errors.New("domain: an OAuth connection with that name exists")
	// ErrOAuthConnectionInUse refuses deleting a connection that accounts
	// still log in with; the error names them.
	ErrOAuthConnectionInUse = errors.New("domain: OAuth connection is used by accounts")
)

// OAuthConnections is the registry of connections.
type OAuthConnections struct {
	ByID map[string]OAuthConnection
}

// EvolveOAuthConnections folds one registry event.
func EvolveOAuthConnections(s OAuthConnections, e Event) OAuthConnections {
	if s.ByID == nil {
		s.ByID = map[string]OAuthConnection{}
	}
	switch e := e.(type) {
	case OAuthConnectionCreated:
		s.ByID[e.Connection.ID] = e.Connection
	case OAuthConnectionUpdated:
		s.ByID[e.Connection.ID] = e.Connection
	case OAuthConnectionDeleted:
		delete(s.ByID, e.ConnectionID)
	}
	return s
}

func (s OAuthConnections) nameTaken(name, exceptID string) bool {
	return nameTaken(s.ByID, name, exceptID, func(c OAuthConnection) string { return c.Name })
}

// DecideCreateOAuthConnection validates a new connection (defaults applied).
func DecideCreateOAuthConnection(s OAuthConnections, c OAuthConnection, actor string) ([]Event, error) {
	c = c.WithDefaults()
	if c.ID == "" {
		return nil, errors.New("id: must not be empty")
	}
	if _, exists := s.ByID[c.ID]; exists {
		return nil, fmt.Errorf("id: %s exists", c.ID)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if s.nameTaken(c.Name, "") {
		return nil, fmt.Errorf("name: %w: %q", ErrOAuthConnectionNameTaken, c.Name)
	}
	return []Event{OAuthConnectionCreated{Connection: c, Actor: actor}}, nil
}

// DecideUpdateOAuthConnection replaces a connection's configuration; a
// client secret left empty keeps the stored one (it is write-only) while
// the token endpoint and the client stay as they are (secretbinding.go;
// otherwise a SecretRequiredError names client_secret).
func DecideUpdateOAuthConnection(s OAuthConnections, next OAuthConnection, actor string) ([]Event, error) {
	cur, ok := s.ByID[next.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrOAuthConnectionNotFound, next.ID)
	}
	kept := keptSecret{"client_secret", next.ClientSecret == "" && cur.ClientSecret != "", clientSecretBinding}
	if next.ClientSecret == "" {
		next.ClientSecret = cur.ClientSecret
	}
	next = next.WithDefaults()
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if s.nameTaken(next.Name, next.ID) {
		return nil, fmt.Errorf("name: %w: %q", ErrOAuthConnectionNameTaken, next.Name)
	}
	changed := changedConnectionFields(cur, next)
	if len(changed) == 0 {
		return nil, nil
	}
	if err := secretsRequired(changed, kept); err != nil {
		return nil, err
	}
	return []Event{OAuthConnectionUpdated{Connection: next, Changed: changed, Actor: actor}}, nil
}

// DecideDeleteOAuthConnection removes a connection that no account uses;
// usedBy names the accounts that do ("inbound:<name>", "outbound:<name>").
func DecideDeleteOAuthConnection(s OAuthConnections, id string, usedBy []string, actor string) ([]Event, error) {
	if _, ok := s.ByID[id]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrOAuthConnectionNotFound, id)
	}
	if len(usedBy) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrOAuthConnectionInUse, strings.Join(usedBy, ", "))
	}
	return []Event{OAuthConnectionDeleted{ConnectionID: id, Actor: actor}}, nil
}

func changedConnectionFields(a, b OAuthConnection) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("name", a.Name != b.Name)
	add("description", a.Description != b.Description)
	add("provider", a.Provider != b.Provider)
	add("flow", a.Flow != b.Flow)
	add("tenant_id", a.TenantID != b.TenantID)
	add("client_id", a.ClientID != b.ClientID)
	add("client_secret", a.ClientSecret != b.ClientSecret)
	add("login_base_url", a.LoginBaseURL != b.LoginBaseURL)
	add("graph_base_url", a.GraphBaseURL != b.GraphBaseURL)
	add("authorization_url", a.AuthorizationURL != b.AuthorizationURL)
	add("token_url", a.TokenURL != b.TokenURL)
	add("scopes", !slices.Equal(a.Scopes, b.Scopes))
	return out
}

// OAuthTokenState is what a connection's token stream says: the live
// (sealed) refresh token and the token's health as shown to admins.
type OAuthTokenState struct {
	// RefreshToken is sealed; empty before the first consent.
	RefreshToken         string
	State                string
	AccessTokenExpiresAt time.Time
	LastRefreshAt        time.Time
	LastError            string
	ConnectedAt          time.Time
	ConnectedBy          string
	// ConsentTokenURL and ConsentClientID are where the refresh token was
	// issued (empty for consents recorded before they were).
	ConsentTokenURL string
	ConsentClientID string
}

// ConsentMoved says whether the connection's token endpoint or client is
// no longer the one the refresh token was issued to: it must not be sent
// there, and only a new consent helps.
func (s OAuthTokenState) ConsentMoved(c OAuthConnection) bool {
	_, tokenURL := c.Endpoints()
	return s.RefreshToken != "" && s.ConsentTokenURL != "" && (s.ConsentTokenURL != tokenURL || s.ConsentClientID != c.ClientID)
}

// EvolveOAuthToken folds one token-stream event.
func EvolveOAuthToken(s OAuthTokenState, e Event) OAuthTokenState {
	switch e := e.(type) {
	case OAuthConnectionAuthorized:
		s.RefreshToken, s.State, s.LastError = e.RefreshToken, TokenStateOK, ""
		s.AccessTokenExpiresAt, s.LastRefreshAt = e.AccessTokenExpiresAt, e.At
		s.ConnectedAt, s.ConnectedBy = e.At, e.Actor
		s.ConsentTokenURL, s.ConsentClientID = e.TokenURL, e.ClientID
	case OAuthTokenRefreshed:
		if e.RefreshToken != "" {
			s.RefreshToken = e.RefreshToken
		}
		s.State, s.LastError = TokenStateOK, ""
		s.AccessTokenExpiresAt, s.LastRefreshAt = e.AccessTokenExpiresAt, e.At
	case OAuthRefreshTokenResealed:
		s.RefreshToken = e.RefreshToken
	case OAuthTokenRefreshFailed:
		s.LastError = e.Error
		if e.NeedsReconnect {
			s.State = TokenStateNeedsReconnect
		} else if s.State != TokenStateNeedsReconnect {
			s.State = TokenStateError
		}
	}
	return s
}

// InitialTokenState is a connection's state before any token event:
// app-only connections need no consent.
func InitialTokenState(c OAuthConnection) OAuthTokenState {
	if c.Flow == OAuthFlowAppOnly {
		return OAuthTokenState{State: TokenStateOK}
	}
	return OAuthTokenState{State: TokenStateNotConnected}
}

// providerMailHosts are the host suffixes where a provider's access tokens
// may be sent over IMAP, POP3 and SMTP (its presets' servers and their
// siblings). An account on a Microsoft 365 or Google connection of the
// global cloud may name no other host: a changed host would otherwise
// receive a live token with the next login.
var providerMailHosts = map[string][]string{
	OAuthProviderMicrosoft365: {".office365.com", ".outlook.com", ".office.com"},
	OAuthProviderGoogle:       {".gmail.com", ".googlemail.com", ".google.com"},
}

// TokensMayGoTo says whether an account of this connection may log in to
// host with its access tokens. Custom providers, and Microsoft connections
// to another login host (a national cloud, a test identity provider),
// leave the choice to the admin.
func (c OAuthConnection) TokensMayGoTo(host string) bool {
	suffixes, ok := providerMailHosts[c.Provider]
	if !ok || (c.Provider == OAuthProviderMicrosoft365 && c.WithDefaults().LoginBaseURL != DefaultMicrosoftLoginBaseURL) {
		return true
	}
	h := "." + strings.TrimSuffix(strings.ToLower(host), ".")
	for _, s := range suffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}
