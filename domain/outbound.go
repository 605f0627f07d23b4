package domain

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Protocols, authentications and body encodings of outgoing accounts.
const (
	OutboundSMTP  = "smtp"
	OutboundGraph = "graph" // Microsoft Graph sendMail

	AuthNone    = "none"
	AuthPlain   = "plain"
	AuthLogin   = "login"
	AuthCRAMMD5 = "cram-md5"
	AuthXOAuth2 = "xoauth2"

	EncodingQuotedPrintable = "quoted-printable"
	EncodingBase64          = "base64"
	Encoding8Bit            = "8bit"
)

// OutboundAccount is one way of sending mail (RULES.md section 4). Which
// account sends a ticket's mail: the one listing the ticket's resource in
// Resources, else its category in Categories, else the default. Exactly one
// account is the default while any exist; the registry's deciders keep it so.
// Secrets are sealed ciphertext, never plaintext.
type OutboundAccount struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Description   string `json:"description,omitempty"`
	Enabled       bool   `json:"enabled"`
	Default       bool   `json:"default"`
	Protocol      string `json:"protocol"`
	Host          string `json:"host,omitempty"`
	Port          int    `json:"port,omitempty"`
	Security      string `json:"security,omitempty"`
	TLSSkipVerify bool   `json:"tls_skip_verify,omitempty"`
	TLSServerName string `json:"tls_server_name,omitempty"`

	Auth     string `json:"auth,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"` // sealed
	// Legacy: OAuth2 inline in the account, as stored before OAuth
	// connections; kept to read old events (see MigrateInlineOAuth).
	OAuthTenantID     string `json:"oauth_tenant_id,omitempty"`
	OAuthClientID     string `json:"oauth_client_id,omitempty"`
	OAuthClientSecret string `json:"oauth_client_secret,omitempty"` // sealed
	OAuthRefreshToken string `json:"oauth_refresh_token,omitempty"` // sealed

	SenderAddress string `json:"sender_address"`
	SenderName    string `json:"sender_name,omitempty"`
	BodyEncoding  string `json:"body_encoding,omitempty"`
	MaxSize       int64  `json:"max_size,omitempty"`
	// SentFolderAccountID names an IMAP inbound account whose Sent folder
	// (SentFolder) gets a copy of each sent mail; empty for none.
	SentFolderAccountID string   `json:"sent_folder_account_id,omitempty"`
	SentFolder          string   `json:"sent_folder,omitempty"`
	Resources           []string `json:"resources,omitempty"`
	Categories          []string `json:"categories,omitempty"`

	// OAuthConnectionID selects the OAuth connection of auth xoauth2 (and
	// of Graph).
	OAuthConnectionID string `json:"oauth_connection_id,omitempty"`
	// Mailbox is the Graph mailbox a graph account sends as (an address or
	// a user id); the copy goes to its Sent Items.
	Mailbox string `json:"mailbox,omitempty"`
}

// HasInlineOAuth says whether the account still carries the OAuth fields
// of before connections (MigrateInlineOAuth moves them onto one).
func (a OutboundAccount) HasInlineOAuth() bool {
	return a.OAuthTenantID != "" || a.OAuthClientID != "" || a.OAuthClientSecret != "" || a.OAuthRefreshToken != ""
}

// WithDefaults fills in RULES.md's defaults: SMTP on 587 with STARTTLS (465
// with implicit TLS), PLAIN when a user name is given, quoted-printable.
func (a OutboundAccount) WithDefaults() OutboundAccount {
	if a.Protocol == "" {
		a.Protocol = OutboundSMTP
	}
	if a.Protocol == OutboundSMTP {
		if a.Security == "" {
			a.Security = SecurityStartTLS
		}
		if a.Port == 0 {
			a.Port = 587
			if a.Security == SecurityTLS {
				a.Port = 465
			}
		}
	}
	if a.Auth == "" {
		a.Auth = AuthNone
		if a.Username != "" {
			a.Auth = AuthPlain
		}
	}
	if a.BodyEncoding == "" {
		a.BodyEncoding = EncodingQuotedPrintable
	}
	return a
}

// Validate reports every problem of a (defaulted) account, each naming its
// API field. Port 25 is refused: it is for MTA relay, submission is 587/465.
func (a OutboundAccount) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(a.Name) == "" {
		bad("name", "must not be empty")
	}
	switch a.Protocol {
	case OutboundSMTP:
		if strings.TrimSpace(a.Host) == "" {
			bad("host", "must not be empty")
		} else if strings.ContainsAny(a.Host, " /\\\r\n") {
			bad("host", "%q is not a host name or address", a.Host)
		}
		switch {
		case a.Port == 25:
			bad("port", "25 is refused (relay port); use 587 with starttls or 465 with tls")
		case a.Port < 1 || a.Port > 65535:
			bad("port", "%d is not from 1 to 65535", a.Port)
		}
		switch a.Security {
		case SecurityTLS, SecurityStartTLS, SecurityNone:
		default:
			bad("security", "%q is not one of tls, starttls, none", a.Security)
		}
		switch a.Auth {
		case AuthNone:
		case AuthXOAuth2:
			if a.OAuthConnectionID == "" && !a.HasInlineOAuth() {
				bad("oauth_connection_id", "auth xoauth2 logs in through an OAuth connection; name one")
			}
			if a.Username == "" {
				bad("username", "must name the mailbox user with auth xoauth2")
			}
		case AuthPlain, AuthLogin, AuthCRAMMD5:
			if a.Username == "" {
				bad("username", "must not be empty with auth %s", a.Auth)
			}
			if a.Security == SecurityNone && a.Auth != AuthCRAMMD5 {
				bad("auth", "%s would send the password in clear text with security none", a.Auth)
			}
		default:
			bad("auth", "%q is not one of none, plain, login, cram-md5, xoauth2", a.Auth)
		}
	case OutboundGraph:
		if a.OAuthConnectionID == "" && !a.HasInlineOAuth() {
			bad("oauth_connection_id", "graph accounts send through an OAuth connection; name one")
		}
		if strings.TrimSpace(a.Mailbox) == "" {
			bad("mailbox", "must name the mailbox to send as (an address or a user id)")
		} else if strings.ContainsAny(a.Mailbox, " /\\?#\r\n") {
			bad("mailbox", "%q is not an address or a user id", a.Mailbox)
		}
	default:
		bad("protocol", "%q is not one of smtp, graph", a.Protocol)
	}
	if !validEmail(a.SenderAddress) {
		bad("sender_address", "%q is not a mail address", a.SenderAddress)
	}
	switch a.BodyEncoding {
	case EncodingQuotedPrintable, EncodingBase64, Encoding8Bit:
	default:
		bad("body_encoding", "%q is not one of quoted-printable, base64, 8bit", a.BodyEncoding)
	}
	if a.MaxSize < 0 {
		bad("max_size", "must not be negative")
	}
	if a.SentFolderAccountID != "" && strings.TrimSpace(a.SentFolder) == "" {
		bad("sent_folder", "must name a folder when sent_folder_account_id is set")
	}
	return errors.Join(errs...)
}

// Stored names and schema versions of the outgoing account events.
const (
	OutboundAccountCreatedName = "OutboundAccountCreated"
	OutboundAccountUpdatedName = "OutboundAccountUpdated"
	OutboundAccountDeletedName = "OutboundAccountDeleted"

	OutboundAccountCreatedSchemaVersion = 1
	OutboundAccountUpdatedSchemaVersion = 1
	OutboundAccountDeletedSchemaVersion = 1
)

// OutboundAccountCreated records a new outgoing account (secrets sealed).
type OutboundAccountCreated struct {
	Account OutboundAccount `json:"account"`
	Actor   string          `json:"actor"`
}

// EventName implements Event.
func (OutboundAccountCreated) EventName() string { return OutboundAccountCreatedName }

// OutboundAccountUpdated records an account's whole new configuration and
// the API fields that changed.
type OutboundAccountUpdated struct {
	Account OutboundAccount `json:"account"`
	Changed []string        `json:"changed"`
	Actor   string          `json:"actor"`
}

// EventName implements Event.
func (OutboundAccountUpdated) EventName() string { return OutboundAccountUpdatedName }

// OutboundAccountDeleted records that an account no longer sends.
type OutboundAccountDeleted struct {
	AccountID string `json:"account_id"`
	Actor     string `json:"actor"`
}

// EventName implements Event.
func (OutboundAccountDeleted) EventName() string { return OutboundAccountDeletedName }

// OutboundAccounts is the registry of outgoing accounts, one aggregate so
// that "exactly one default" is decided in one place.
type OutboundAccounts struct {
	ByID map[string]OutboundAccount
}

// DefaultID returns the default account's id, "" when there is none.
func (s OutboundAccounts) DefaultID() string {
	for id, a := range s.ByID {
		if a.Default {
			return id
		}
	}
	return ""
}

// EvolveOutboundAccounts folds one event into the registry.
func EvolveOutboundAccounts(s OutboundAccounts, e Event) OutboundAccounts {
	next := OutboundAccounts{ByID: make(map[string]OutboundAccount, len(s.ByID)+1)}
	for k, v := range s.ByID {
		next.ByID[k] = v
	}
	switch e := e.(type) {
	case OutboundAccountCreated:
		next.ByID[e.Account.ID] = e.Account
	case OutboundAccountUpdated:
		next.ByID[e.Account.ID] = e.Account
	case OutboundAccountDeleted:
		delete(next.ByID, e.AccountID)
	}
	return next
}

func (s OutboundAccounts) nameTaken(name, exceptID string) bool {
	return nameTaken(s.ByID, name, exceptID, func(a OutboundAccount) string { return a.Name })
}

// demoteDefault returns the event that makes the current default (other
// than exceptID) no longer the default, or nil.
func (s OutboundAccounts) demoteDefault(exceptID, actor string) []Event {
	id := s.DefaultID()
	if id == "" || id == exceptID {
		return nil
	}
	old := s.ByID[id]
	old.Default = false
	return []Event{OutboundAccountUpdated{Account: old, Changed: []string{"default"}, Actor: actor}}
}

// DecideCreateOutboundAccount validates and records a new account. The first
// account becomes the default; a new default demotes the old one in the
// same decision.
func DecideCreateOutboundAccount(s OutboundAccounts, a OutboundAccount, actor string) ([]Event, error) {
	a = a.WithDefaults()
	var errs []error
	if a.ID == "" {
		errs = append(errs, errors.New("id: must not be empty"))
	} else if _, exists := s.ByID[a.ID]; exists {
		return nil, fmt.Errorf("create outgoing account %s: %w", a.ID, ErrAlreadyExists)
	}
	if err := a.Validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(actor) == "" {
		errs = append(errs, errors.New("actor: is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create outgoing account: %w: %w", ErrInvalid, err)
	}
	if s.nameTaken(a.Name, "") {
		return nil, fmt.Errorf("create outgoing account: name %q: %w", a.Name, ErrNameTaken)
	}
	if s.DefaultID() == "" {
		a.Default = true
	}
	var ev []Event
	if a.Default {
		ev = s.demoteDefault(a.ID, actor)
	}
	return append(ev, OutboundAccountCreated{Account: a, Actor: actor}), nil
}

// DecideUpdateOutboundAccount replaces an account's configuration; secrets
// left empty keep their stored value while the fields that say where and
// how they are sent stay as they are (secretbinding.go; otherwise a
// SecretRequiredError names the secret). Making an account the default
// demotes the old one; the default cannot be un-defaulted directly (make
// another account the default instead).
func DecideUpdateOutboundAccount(s OutboundAccounts, next OutboundAccount, actor string) ([]Event, error) {
	cur, ok := s.ByID[next.ID]
	if !ok {
		return nil, fmt.Errorf("update outgoing account %s: %w", next.ID, ErrNotFound)
	}
	kept := []keptSecret{
		{"password", next.Password == "" && cur.Password != "", outboundPasswordBinding},
		{"oauth_client_secret", next.OAuthClientSecret == "" && cur.OAuthClientSecret != "", legacyInlineOAuthBinding},
		{"oauth_refresh_token", next.OAuthRefreshToken == "" && cur.OAuthRefreshToken != "", legacyInlineOAuthBinding},
	}
	if next.Password == "" {
		next.Password = cur.Password
	}
	if next.OAuthClientSecret == "" {
		next.OAuthClientSecret = cur.OAuthClientSecret
	}
	if next.OAuthRefreshToken == "" {
		next.OAuthRefreshToken = cur.OAuthRefreshToken
	}
	next = next.WithDefaults()
	var errs []error
	if err := next.Validate(); err != nil {
		errs = append(errs, err)
	}
	if cur.Default && !next.Default {
		errs = append(errs, errors.New("default: make another account the default instead"))
	}
	if strings.TrimSpace(actor) == "" {
		errs = append(errs, errors.New("actor: is empty"))
	}
	changed := outboundChanged(cur, next)
	if err := secretsRequired(changed, kept...); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("update outgoing account %s: %w: %w", next.ID, ErrInvalid, err)
	}
	if s.nameTaken(next.Name, next.ID) {
		return nil, fmt.Errorf("update outgoing account: name %q: %w", next.Name, ErrNameTaken)
	}
	if len(changed) == 0 {
		return nil, nil
	}
	var ev []Event
	if next.Default {
		ev = s.demoteDefault(next.ID, actor)
	}
	return append(ev, OutboundAccountUpdated{Account: next, Changed: changed, Actor: actor}), nil
}

// DecideDeleteOutboundAccount removes an account. The default can only be
// deleted when it is the last account.
func DecideDeleteOutboundAccount(s OutboundAccounts, id, actor string) ([]Event, error) {
	a, ok := s.ByID[id]
	if !ok {
		return nil, fmt.Errorf("delete outgoing account %s: %w", id, ErrNotFound)
	}
	if a.Default && len(s.ByID) > 1 {
		return nil, fmt.Errorf("delete outgoing account %s: %w: it is the default; make another account the default first", id, ErrInUse)
	}
	return []Event{OutboundAccountDeleted{AccountID: id, Actor: actor}}, nil
}

// outboundChanged names the API fields that differ; secrets by name only.
func outboundChanged(a, b OutboundAccount) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("name", a.Name != b.Name)
	add("description", a.Description != b.Description)
	add("enabled", a.Enabled != b.Enabled)
	add("default", a.Default != b.Default)
	add("protocol", a.Protocol != b.Protocol)
	add("host", a.Host != b.Host)
	add("port", a.Port != b.Port)
	add("security", a.Security != b.Security)
	add("tls_skip_verify", a.TLSSkipVerify != b.TLSSkipVerify)
	add("tls_server_name", a.TLSServerName != b.TLSServerName)
	add("auth", a.Auth != b.Auth)
	add("username", a.Username != b.Username)
	add("password", a.Password != b.Password)
	add("oauth_tenant_id", a.OAuthTenantID != b.OAuthTenantID)
	add("oauth_client_id", a.OAuthClientID != b.OAuthClientID)
	add("oauth_client_secret", a.OAuthClientSecret != b.OAuthClientSecret)
	add("oauth_refresh_token", a.OAuthRefreshToken != b.OAuthRefreshToken)
	add("oauth_connection_id", a.OAuthConnectionID != b.OAuthConnectionID)
	add("mailbox", a.Mailbox != b.Mailbox)
	add("sender_address", a.SenderAddress != b.SenderAddress)
	add("sender_name", a.SenderName != b.SenderName)
	add("body_encoding", a.BodyEncoding != b.BodyEncoding)
	add("max_size", a.MaxSize != b.MaxSize)
	add("sent_folder_account_id", a.SentFolderAccountID != b.SentFolderAccountID)
	add("sent_folder", a.SentFolder != b.SentFolder)
	add("resources", !slices.Equal(a.Resources, b.Resources))
	add("categories", !slices.Equal(a.Categories, b.Categories))
	return out
}

// SendingAccount picks the account that sends a ticket's mail: the enabled
// account listing the ticket's resource, else its category, else the
// default; ok is false when none applies. Ties go to the smallest id, so
// the answer does not depend on map order.
func SendingAccount(s OutboundAccounts, resourceID, category string) (OutboundAccount, bool) {
	ids := make([]string, 0, len(s.ByID))
	for id := range s.ByID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pick := func(match func(OutboundAccount) bool) (OutboundAccount, bool) {
		for _, id := range ids {
			if a := s.ByID[id]; a.Enabled && match(a) {
				return a, true
			}
		}
		return OutboundAccount{}, false
	}
	if resourceID != "" {
		if a, ok := pick(func(a OutboundAccount) bool { return slices.Contains(a.Resources, resourceID) }); ok {
			return a, true
		}
	}
	if category != "" {
		if a, ok := pick(func(a OutboundAccount) bool { return slices.Contains(a.Categories, category) }); ok {
			return a, true
		}
	}
	return pick(func(a OutboundAccount) bool { return a.Default })
}
