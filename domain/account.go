package domain

// This file was written first by the lead for ingestion and the API; the
// intake decision reads InboundAccount's ticket options and Settings. Extend
// it (new fields at the end, zero value = old behaviour); don't replace it.

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Protocols, securities and after-import modes of inbound accounts.
const (
	ProtocolIMAP  = "imap"
	ProtocolPOP3  = "pop3"
	ProtocolGraph = "graph"

	SecurityTLS      = "tls"
	SecurityStartTLS = "starttls"
	SecurityNone     = "none"

	AfterImportDelete = "delete"
	AfterImportMove   = "move"
	AfterImportKeep   = "keep"
	// AfterImportTrash moves imported mail to the server's trash: the IMAP
	// folder marked \Trash, else the account's trash_folder; Graph's Deleted
	// Items (as delete without permanent_delete).
	AfterImportTrash = "trash"
)

// DefaultErrorFolder is where IMAP mails that failed are moved.
const DefaultErrorFolder = "HD Error Messages"

// InboundAccount is one mailbox ledgerdesk reads (RULES.md section 1).
// Password, OAuth client secret and refresh token are sealed ciphertext
// (adapters/secretbox), never plaintext, in events and state alike.
type InboundAccount struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Enabled     bool   `json:"enabled"`

	Protocol      string `json:"protocol"`
	Host          string `json:"host"`
	Port          int    `json:"port"`
	Security      string `json:"security"`
	TLSSkipVerify bool   `json:"tls_skip_verify,omitempty"`
	TLSServerName string `json:"tls_server_name,omitempty"`
	CACertPEM     string `json:"ca_cert_pem,omitempty"`

	Username          string `json:"username,omitempty"`
	Password          string `json:"password,omitempty"` // sealed
	PreventPlainLogin bool   `json:"prevent_plain_login,omitempty"`
	// Legacy: OAuth2 inline in the account, as stored before OAuth
	// connections; kept to read old events. MigrateInlineOAuth moves them
	// onto a connection and the API refuses them.
	OAuthTenantID     string `json:"oauth_tenant_id,omitempty"`
	OAuthClientID     string `json:"oauth_client_id,omitempty"`
	OAuthClientSecret string `json:"oauth_client_secret,omitempty"` // sealed
	OAuthRefreshToken string `json:"oauth_refresh_token,omitempty"` // sealed

	Folder              string   `json:"folder,omitempty"`
	Subfolders          []string `json:"subfolders,omitempty"`
	PollIntervalSeconds int      `json:"poll_interval_seconds,omitempty"`
	AfterImport         string   `json:"after_import"`
	MoveFolder          string   `json:"move_folder,omitempty"`
	MaxMailSize         int64    `json:"max_mail_size,omitempty"`
	ImagesAsAttachments bool     `json:"images_as_attachments,omitempty"`

	AccountAddress string `json:"account_address,omitempty"`
	SenderAddress  string `json:"sender_address,omitempty"`
	SenderName     string `json:"sender_name,omitempty"`

	NoNewTickets             bool   `json:"no_new_tickets,omitempty"`
	CreateUnknownUsers       bool   `json:"create_unknown_users,omitempty"`
	CreateLocationFromDomain bool   `json:"create_location_from_domain,omitempty"`
	FallbackUserID           string `json:"fallback_user_id,omitempty"`
	AutoBundle               bool   `json:"auto_bundle,omitempty"`
	AutoReplyTemplate        string `json:"auto_reply_template,omitempty"`
	Resource                 string `json:"resource,omitempty"`
	Category                 string `json:"category,omitempty"`
	Priority                 string `json:"priority,omitempty"`

	// OAuthConnectionID selects the OAuth connection this account logs in
	// with (XOAUTH2 for IMAP and POP3, the token for Graph); the password
	// is then not used.
	OAuthConnectionID string `json:"oauth_connection_id,omitempty"`

	// AllowPlaintextAuth lets the account log in with a password (LOGIN,
	// USER/PASS, PLAIN) or an OAuth token over a connection without TLS
	// (security none). Without it such a login is refused; CRAM-MD5, which
	// sends no password, stays allowed.
	AllowPlaintextAuth bool `json:"allow_plaintext_auth,omitempty"`

	// Mailbox is the Graph mailbox an account reads: a user's address or
	// id, shared mailboxes included (/users/{mailbox}).
	Mailbox string `json:"mailbox,omitempty"`
	// PermanentDelete makes a Graph account's after_import delete purge the
	// mail instead of moving it to Deleted Items.
	PermanentDelete bool `json:"permanent_delete,omitempty"`

	// IncludeSubfolders reads, besides folder and subfolders, every IMAP
	// folder below them (seeds 003, 004); OnlySubscribed restricts that to
	// the subscribed ones. The error, move and trash folders are never read.
	IncludeSubfolders bool `json:"include_subfolders,omitempty"`
	OnlySubscribed    bool `json:"only_subscribed,omitempty"`
	// TrashFolder is where after_import trash moves IMAP mail when the
	// server marks no folder \Trash (seed 004, "special mailbox: deleted").
	TrashFolder string `json:"trash_folder,omitempty"`

	// Push, for an IMAP account, keeps an IDLE connection per folder open
	// so that new mail is fetched within seconds, the poll staying as the
	// safety net (RULES.md section 1). nil means on: the default, and what
	// accounts stored before push existed get. See PushEnabled.
	Push *bool `json:"push,omitempty"`
}

// PushEnabled says whether new mail of the account is to be pushed: an
// IMAP account whose push is not turned off. POP3 and Graph accounts are
// always polled.
func (a InboundAccount) PushEnabled() bool {
	return a.Protocol == ProtocolIMAP && (a.Push == nil || *a.Push)
}

// HasInlineOAuth says whether the account still carries the OAuth fields
// of before connections (MigrateInlineOAuth moves them onto one).
func (a InboundAccount) HasInlineOAuth() bool {
	return a.OAuthTenantID != "" || a.OAuthClientID != "" || a.OAuthClientSecret != "" || a.OAuthRefreshToken != ""
}

// WithDefaults fills in RULES.md's defaults for fields left empty.
func (a InboundAccount) WithDefaults() InboundAccount {
	if a.Port == 0 {
		switch {
		case a.Protocol == ProtocolIMAP && a.Security == SecurityTLS:
			a.Port = 993
		case a.Protocol == ProtocolIMAP:
			a.Port = 143
		case a.Protocol == ProtocolPOP3 && a.Security == SecurityTLS:
			a.Port = 995
		case a.Protocol == ProtocolPOP3:
			a.Port = 110
		case a.Protocol == ProtocolGraph:
			a.Port = 443
		}
	}
	if a.Security == "" {
		a.Security = SecurityTLS
	}
	if a.Folder == "" && a.Protocol == ProtocolIMAP {
		a.Folder = "INBOX"
	}
	if a.Folder == "" && a.Protocol == ProtocolGraph {
		a.Folder = "Inbox" // Graph's well-known name
	}
	if a.PollIntervalSeconds == 0 {
		a.PollIntervalSeconds = 300
	}
	if a.AfterImport == "" {
		a.AfterImport = AfterImportDelete
	}
	return a
}

// PollInterval is the account's poll interval as a duration.
func (a InboundAccount) PollInterval() time.Duration {
	return time.Duration(a.PollIntervalSeconds) * time.Second
}

// Validate reports every problem of a (defaulted) account, each naming its
// API field.
func (a InboundAccount) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(a.Name) == "" {
		bad("name", "must not be empty")
	}
	switch a.Protocol {
	case ProtocolIMAP, ProtocolPOP3, ProtocolGraph:
	default:
		bad("protocol", "%q is not one of imap, pop3, graph", a.Protocol)
	}
	if a.Protocol != ProtocolGraph {
		if strings.TrimSpace(a.Host) == "" {
			bad("host", "must not be empty")
		} else if strings.ContainsAny(a.Host, " /\\\r\n") {
			bad("host", "%q is not a host name or address", a.Host)
		}
		if a.Port < 1 || a.Port > 65535 {
			bad("port", "%d is not from 1 to 65535", a.Port)
		}
		if a.Username == "" {
			bad("username", "must not be empty (an OAuth2 login names the mailbox user too)")
		}
	}
	switch a.Security {
	case SecurityTLS, SecurityStartTLS, SecurityNone:
	default:
		bad("security", "%q is not one of tls, starttls, none", a.Security)
	}
	switch a.AfterImport {
	case AfterImportDelete, AfterImportKeep:
	case AfterImportTrash:
		if a.Protocol == ProtocolPOP3 {
			bad("after_import", "trash is not possible with POP3 (it has no folders); use delete or keep")
		}
		if a.PermanentDelete {
			bad("permanent_delete", "purges the mail; after_import trash keeps it in Deleted Items")
		}
	case AfterImportMove:
		if a.Protocol == ProtocolPOP3 {
			bad("after_import", "move is not possible with POP3 (it has no folders); use delete or keep")
		} else if strings.TrimSpace(a.MoveFolder) == "" {
			bad("move_folder", "must name a folder when after_import is move")
		}
	default:
		bad("after_import", "%q is not one of delete, move, trash, keep", a.AfterImport)
	}
	if a.PollIntervalSeconds < 1 || a.PollIntervalSeconds > 86400 {
		bad("poll_interval_seconds", "%d is not from 1 to 86400", a.PollIntervalSeconds)
	}
	if a.MaxMailSize < 0 {
		bad("max_mail_size", "must not be negative")
	}
	if a.Protocol == ProtocolPOP3 && len(a.Subfolders) > 0 {
		bad("subfolders", "POP3 has no folders")
	}
	if a.IncludeSubfolders && a.Protocol == ProtocolPOP3 {
		bad("include_subfolders", "POP3 has no folders")
	}
	if a.OnlySubscribed && a.Protocol == ProtocolGraph {
		bad("only_subscribed", "is for IMAP accounts: Graph has no folder subscriptions, include_subfolders walks every child folder")
	} else if a.OnlySubscribed && !a.IncludeSubfolders {
		bad("only_subscribed", "restricts the walk of include_subfolders; set both")
	}
	if a.TrashFolder != "" && a.Protocol != ProtocolIMAP {
		bad("trash_folder", "is for IMAP accounts")
	}
	if a.TrashFolder != "" && strings.TrimSpace(a.TrashFolder) == "" {
		bad("trash_folder", "must name a folder or be left out")
	}
	for field, addr := range map[string]string{"account_address": a.AccountAddress, "sender_address": a.SenderAddress} {
		if addr != "" {
			// validEmail, not net/mail: domain imports no net package (purity_test.go).
			if !validEmail(addr) {
				bad(field, "%q is not a mail address", addr)
			}
		}
	}
	if a.Protocol == ProtocolGraph {
		if a.OAuthConnectionID == "" && !a.HasInlineOAuth() {
			bad("oauth_connection_id", "graph accounts log in through an OAuth connection; name one")
		}
		if strings.TrimSpace(a.Mailbox) == "" {
			bad("mailbox", "must name the mailbox to read (an address or a user id)")
		} else if strings.ContainsAny(a.Mailbox, " /\\?#\r\n") {
			bad("mailbox", "%q is not an address or a user id", a.Mailbox)
		}
	} else if a.Mailbox != "" || a.PermanentDelete {
		bad("mailbox", "mailbox and permanent_delete are for graph accounts")
	}
	if a.Push != nil && *a.Push && a.Protocol != ProtocolIMAP {
		bad("push", "only IMAP accounts can be pushed (IMAP IDLE); %s accounts are polled", a.Protocol)
	}
	return errors.Join(errs...)
}

// Redacted returns the account with its secrets replaced by whether they
// are set, for the API and the logs.
func (a InboundAccount) Redacted() (acc InboundAccount, passwordSet, clientSecretSet, refreshTokenSet bool) {
	passwordSet, clientSecretSet, refreshTokenSet = a.Password != "", a.OAuthClientSecret != "", a.OAuthRefreshToken != ""
	a.Password, a.OAuthClientSecret, a.OAuthRefreshToken = "", "", ""
	return a, passwordSet, clientSecretSet, refreshTokenSet
}

// Stored names and schema versions of the account events.
const (
	InboundAccountCreatedName = "InboundAccountCreated"
	InboundAccountUpdatedName = "InboundAccountUpdated"
	InboundAccountDeletedName = "InboundAccountDeleted"
	SettingsChangedName       = "SettingsChanged"

	InboundAccountCreatedSchemaVersion = 1
	InboundAccountUpdatedSchemaVersion = 1
	InboundAccountDeletedSchemaVersion = 1
	SettingsChangedSchemaVersion       = 1
)

// InboundAccountCreated records a new inbound account with its whole
// configuration (secrets sealed).
type InboundAccountCreated struct {
	Account InboundAccount `json:"account"`
	Actor   string         `json:"actor"`
}

// EventName implements Event.
func (InboundAccountCreated) EventName() string { return InboundAccountCreatedName }

// InboundAccountUpdated records the whole new configuration of an account
// and which fields changed, so the history says who changed what.
type InboundAccountUpdated struct {
	Account InboundAccount `json:"account"`
	Changed []string       `json:"changed"`
	Actor   string         `json:"actor"`
}

// EventName implements Event.
func (InboundAccountUpdated) EventName() string { return InboundAccountUpdatedName }

// InboundAccountDeleted records that an account is no longer read.
type InboundAccountDeleted struct {
	AccountID string `json:"account_id"`
	Actor     string `json:"actor"`
}

// EventName implements Event.
func (InboundAccountDeleted) EventName() string { return InboundAccountDeletedName }

// Errors of the account registry.
var (
	ErrAccountNotFound  = errors.New("domain: inbound account not found")
	ErrAccountNameTaken = errors.New("domain: an inbound account with that name exists")
)

// InboundAccounts is the registry of inbound accounts.
type InboundAccounts struct {
	ByID map[string]InboundAccount
}

// EvolveInboundAccounts folds one account event into the registry.
func EvolveInboundAccounts(s InboundAccounts, e Event) InboundAccounts {
	if s.ByID == nil {
		s.ByID = map[string]InboundAccount{}
	}
	switch e := e.(type) {
	case InboundAccountCreated:
		s.ByID[e.Account.ID] = e.Account
	case InboundAccountUpdated:
		s.ByID[e.Account.ID] = e.Account
	case InboundAccountDeleted:
		delete(s.ByID, e.AccountID)
	}
	return s
}

// nameTaken says whether a registry entry other than exceptID has name, in
// any letter case: the one rule of unique names for every registry.
func nameTaken[T any](byID map[string]T, name, exceptID string, nameOf func(T) string) bool {
	for id, v := range byID {
		if id != exceptID && strings.EqualFold(nameOf(v), name) {
			return true
		}
	}
	return false
}

func (s InboundAccounts) nameTaken(name, exceptID string) bool {
	return nameTaken(s.ByID, name, exceptID, func(a InboundAccount) string { return a.Name })
}

// DecideCreateInboundAccount validates a new account (defaults applied) and
// records it. The id comes in (the API derives or generates it).
func DecideCreateInboundAccount(s InboundAccounts, a InboundAccount, actor string) ([]Event, error) {
	a = a.WithDefaults()
	if a.ID == "" {
		return nil, errors.New("id: must not be empty")
	}
	if _, exists := s.ByID[a.ID]; exists {
		return nil, fmt.Errorf("id: %s exists", a.ID)
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if s.nameTaken(a.Name, "") {
		return nil, fmt.Errorf("name: %w: %q", ErrAccountNameTaken, a.Name)
	}
	return []Event{InboundAccountCreated{Account: a, Actor: actor}}, nil
}

// DecideUpdateInboundAccount replaces an account's configuration. Secrets
// left empty in next keep their stored value (they are write-only), but
// only while the fields that say where and how they are sent stay as they
// are (secretbinding.go): otherwise the update is refused with a
// SecretRequiredError naming the secret.
func DecideUpdateInboundAccount(s InboundAccounts, next InboundAccount, actor string) ([]Event, error) {
	cur, ok := s.ByID[next.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrAccountNotFound, next.ID)
	}
	kept := []keptSecret{
		{"password", next.Password == "" && cur.Password != "", inboundPasswordBinding},
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
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if s.nameTaken(next.Name, next.ID) {
		return nil, fmt.Errorf("name: %w: %q", ErrAccountNameTaken, next.Name)
	}
	changed := changedFields(cur, next)
	if len(changed) == 0 {
		return nil, nil
	}
	if err := secretsRequired(changed, kept...); err != nil {
		return nil, err
	}
	return []Event{InboundAccountUpdated{Account: next, Changed: changed, Actor: actor}}, nil
}

// DecideDeleteInboundAccount removes an account.
func DecideDeleteInboundAccount(s InboundAccounts, id, actor string) ([]Event, error) {
	if _, ok := s.ByID[id]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrAccountNotFound, id)
	}
	return []Event{InboundAccountDeleted{AccountID: id, Actor: actor}}, nil
}

// changedFields names the API fields that differ; secrets are named, never
// shown.
func changedFields(a, b InboundAccount) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("name", a.Name != b.Name)
	add("description", a.Description != b.Description)
	add("enabled", a.Enabled != b.Enabled)
	add("protocol", a.Protocol != b.Protocol)
	add("host", a.Host != b.Host)
	add("port", a.Port != b.Port)
	add("security", a.Security != b.Security)
	add("tls_skip_verify", a.TLSSkipVerify != b.TLSSkipVerify)
	add("tls_server_name", a.TLSServerName != b.TLSServerName)
	add("ca_cert_pem", a.CACertPEM != b.CACertPEM)
	add("username", a.Username != b.Username)
	add("password", a.Password != b.Password)
	add("prevent_plain_login", a.PreventPlainLogin != b.PreventPlainLogin)
	add("oauth_tenant_id", a.OAuthTenantID != b.OAuthTenantID)
	add("oauth_client_id", a.OAuthClientID != b.OAuthClientID)
	add("oauth_client_secret", a.OAuthClientSecret != b.OAuthClientSecret)
	add("oauth_refresh_token", a.OAuthRefreshToken != b.OAuthRefreshToken)
	add("folder", a.Folder != b.Folder)
	add("subfolders", strings.Join(a.Subfolders, "\x00") != strings.Join(b.Subfolders, "\x00"))
	add("poll_interval_seconds", a.PollIntervalSeconds != b.PollIntervalSeconds)
	add("after_import", a.AfterImport != b.AfterImport)
	add("move_folder", a.MoveFolder != b.MoveFolder)
	add("max_mail_size", a.MaxMailSize != b.MaxMailSize)
	add("images_as_attachments", a.ImagesAsAttachments != b.ImagesAsAttachments)
	add("account_address", a.AccountAddress != b.AccountAddress)
	add("sender_address", a.SenderAddress != b.SenderAddress)
	add("sender_name", a.SenderName != b.SenderName)
	add("no_new_tickets", a.NoNewTickets != b.NoNewTickets)
	add("create_unknown_users", a.CreateUnknownUsers != b.CreateUnknownUsers)
	add("create_location_from_domain", a.CreateLocationFromDomain != b.CreateLocationFromDomain)
	add("fallback_user_id", a.FallbackUserID != b.FallbackUserID)
	add("auto_bundle", a.AutoBundle != b.AutoBundle)
	add("auto_reply_template", a.AutoReplyTemplate != b.AutoReplyTemplate)
	add("resource", a.Resource != b.Resource)
	add("category", a.Category != b.Category)
	add("priority", a.Priority != b.Priority)
	add("oauth_connection_id", a.OAuthConnectionID != b.OAuthConnectionID)
	add("allow_plaintext_auth", a.AllowPlaintextAuth != b.AllowPlaintextAuth)
	add("mailbox", a.Mailbox != b.Mailbox)
	add("permanent_delete", a.PermanentDelete != b.PermanentDelete)
	add("include_subfolders", a.IncludeSubfolders != b.IncludeSubfolders)
	add("only_subscribed", a.OnlySubscribed != b.OnlySubscribed)
	add("trash_folder", a.TrashFolder != b.TrashFolder)
	add("push", a.PushEnabled() != b.PushEnabled())
	return out
}

// Settings are the global settings (RULES.md section 1, end).
type Settings struct {
	MailboxesDisabled                bool   `json:"mailboxes_disabled"`
	NoStatusChangeForResourceMembers bool   `json:"no_status_change_for_resource_members"`
	ReactivationWindowSeconds        int64  `json:"reactivation_window_seconds"`
	ErrorFolder                      string `json:"error_folder"`
	ReferenceFormat                  string `json:"reference_format"`
	AutoReplies                      bool   `json:"auto_replies"`
	ErrorMails                       bool   `json:"error_mails"`
	// MessageIDDomain is the right-hand side of our Message-IDs
	// (OutgoingMessageID); empty means "ledgerdesk.invalid".
	MessageIDDomain string `json:"message_id_domain,omitempty"`
	// CustomerAnsweredMails queues a "customer answered" notification to the
	// ticket's resource when a requester answers (RULES.md 3.1).
	CustomerAnsweredMails bool `json:"customer_answered_mails,omitempty"`
	// AllowedMailHosts, when not empty, limits the servers inbound accounts
	// may connect to (and "check connection" may probe): host names,
	// ".suffix" entries, IP addresses and CIDR prefixes. Empty allows any
	// host. See MailHostPolicy.
	AllowedMailHosts []string `json:"allowed_mail_hosts,omitempty"`
}

// DefaultSettings are RULES.md's defaults.
func DefaultSettings() Settings {
	return Settings{
		ReactivationWindowSeconds: 14 * 24 * 3600,
		ErrorFolder:               DefaultErrorFolder,
		ReferenceFormat:           DefaultReferenceFormat,
		AutoReplies:               true,
		ErrorMails:                true,
		CustomerAnsweredMails:     true,
	}
}

// ReactivationWindow is the window as a duration.
func (s Settings) ReactivationWindow() time.Duration {
	return time.Duration(s.ReactivationWindowSeconds) * time.Second
}

// Validate reports every problem, each naming its API field.
func (s Settings) Validate() error {
	var errs []error
	if s.ReactivationWindowSeconds < 0 {
		errs = append(errs, errors.New("reactivation_window_seconds: must not be negative"))
	}
	if strings.TrimSpace(s.ErrorFolder) == "" {
		errs = append(errs, errors.New("error_folder: must not be empty"))
	}
	if err := ValidateReferenceFormat(s.ReferenceFormat); err != nil {
		errs = append(errs, fmt.Errorf("reference_format: %w", err))
	}
	if d := s.MessageIDDomain; d != "" && (strings.ContainsAny(d, "@<> \t\r\n") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".")) {
		errs = append(errs, fmt.Errorf("message_id_domain: %q is not a domain name", d))
	}
	errs = append(errs, validateAllowedMailHosts(s.AllowedMailHosts)...)
	return errors.Join(errs...)
}

// SettingsChanged records the whole new settings and who changed them.
type SettingsChanged struct {
	Settings Settings `json:"settings"`
	Actor    string   `json:"actor"`
}

// EventName implements Event.
func (SettingsChanged) EventName() string { return SettingsChangedName }

// DecideChangeSettings validates and records new settings; unchanged
// settings record nothing.
func DecideChangeSettings(cur, next Settings, actor string) ([]Event, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if cur.equal(next) {
		return nil, nil
	}
	return []Event{SettingsChanged{Settings: next, Actor: actor}}, nil
}

// equal compares every setting; an empty list equals a missing one.
func (s Settings) equal(o Settings) bool {
	if !slices.Equal(s.AllowedMailHosts, o.AllowedMailHosts) {
		return false
	}
	s.AllowedMailHosts, o.AllowedMailHosts = nil, nil
	return reflect.DeepEqual(s, o)
}

// EvolveSettings folds a settings event into the settings.
func EvolveSettings(s Settings, e Event) Settings {
	if c, ok := e.(SettingsChanged); ok {
		return c.Settings
	}
	return s
}
