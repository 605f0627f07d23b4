package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// AccountsStream holds every inbound account event; one stream, so that a
// write expects the version of the registry it decided on (unique names).
const AccountsStream = "inbound-accounts"

// checkTimeout bounds a connection check.
const checkTimeout = 60 * time.Second

// mailboxesChangedWait bounds how long a write of an account or of the
// settings waits for the scheduler to take it on.
const mailboxesChangedWait = 10 * time.Second

// checkErrorLen bounds the error text a connection check answers; it
// quotes the server's reply, which mailsource.MaxReplyLen bounds.
const checkErrorLen = 400

// LoadInboundAccounts folds the account stream: the registry (secrets
// sealed) and the stream's version.
func LoadInboundAccounts(ctx context.Context, store eventstore.Store) (domain.InboundAccounts, int64, error) {
	return foldStream(ctx, store, AccountsStream, domain.InboundAccounts{ByID: map[string]domain.InboundAccount{}},
		domain.EvolveInboundAccounts)
}

// accountView is an account as the API shows it: secrets only as whether
// they are set.
type accountView struct {
	domain.InboundAccount
	PasswordSet          bool `json:"password_set"`
	OAuthClientSecretSet bool `json:"oauth_client_secret_set"`
	OAuthRefreshTokenSet bool `json:"oauth_refresh_token_set"`
}

func viewOf(a domain.InboundAccount) accountView {
	push := a.PushEnabled() // what the scheduler does, also for accounts stored before push existed
	a.Push = &push
	r, pw, cs, rt := a.Redacted()
	return accountView{InboundAccount: r, PasswordSet: pw, OAuthClientSecretSet: cs, OAuthRefreshTokenSet: rt}
}

// accountInput is the body of POST and PUT: the account's fields, and the
// read-only *_set flags of accountView, accepted and ignored so that a
// client can send back what it read.
type accountInput struct {
	domain.InboundAccount
	// Preset (microsoft365, google) fills host, port and security left
	// empty; it is not stored.
	Preset               string `json:"preset,omitempty"`
	PasswordSet          *bool  `json:"password_set,omitempty"`
	OAuthClientSecretSet *bool  `json:"oauth_client_secret_set,omitempty"`
	OAuthRefreshTokenSet *bool  `json:"oauth_refresh_token_set,omitempty"`
}

// accountWritten answers a write of an account.
type accountWritten struct {
	accountView
	Position int64 `json:"position"`
}

// sealSecrets replaces the plaintext secrets of a with sealed ones. A secret
// equal to the one cur holds keeps cur's sealed value, so re-sending the
// same password is no change.
func (s *server) sealSecrets(a *domain.InboundAccount, cur domain.InboundAccount) error {
	return errors.Join(s.sealSecret("password", &a.Password, cur.Password),
		s.sealSecret("oauth_client_secret", &a.OAuthClientSecret, cur.OAuthClientSecret),
		s.sealSecret("oauth_refresh_token", &a.OAuthRefreshToken, cur.OAuthRefreshToken))
}

// sealSecret replaces the plaintext secret *val (API field name) with its
// sealed form; one equal to the stored cur keeps cur's sealed value.
func (s *server) sealSecret(name string, val *string, cur string) error {
	if *val == "" {
		return nil
	}
	if s.opts.Secrets == nil {
		return newProblem(http.StatusServiceUnavailable,
			"%s cannot be stored: this server has no secret key (LEDGERDESK_SECRET_KEY)", name)
	}
	if cur != "" {
		if plain, err := s.opts.Secrets.Open(cur); err == nil && plain == *val {
			*val = cur
			return nil
		}
	}
	sealed, err := s.opts.Secrets.Seal(*val)
	if err != nil {
		return fmt.Errorf("api: seal %s: %w", name, err)
	}
	*val = sealed
	return nil
}

// checkMailHost refuses a host that allowed_mail_hosts can never allow;
// the fetcher checks the addresses it dials as well.
func (s *server) checkMailHost(ctx context.Context, host string) error {
	if host == "" {
		return nil // Validate names the missing host
	}
	settings, err := LoadSettings(ctx, s.store)
	if err != nil {
		return err
	}
	if err := settings.CheckMailHost(host); err != nil {
		return unprocessable(err)
	}
	return nil
}

// decisionError maps a refused account decision: not found and name taken
// keep their sentinels (problem.go maps them), the rest is validation.
func decisionError(err error) error {
	if errors.Is(err, domain.ErrAccountNotFound) || errors.Is(err, domain.ErrAccountNameTaken) ||
		errors.Is(err, domain.ErrTokenUnknown) {
		return err
	}
	return unprocessable(err)
}

func (s *server) createAccount(c echo.Context) error {
	body := accountInput{InboundAccount: domain.InboundAccount{Enabled: true}}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	in := body.InboundAccount
	if in.ID != "" {
		return invalid("id", "is assigned by the server; leave it out")
	}
	ctx := c.Request().Context()
	if body.Preset != "" {
		var err error
		if in, err = domain.ApplyInboundPreset(in, body.Preset); err != nil {
			return unprocessable(err)
		}
	}
	if err := s.checkConnectionRef(ctx, in.OAuthConnectionID, in.Host, in.HasInlineOAuth()); err != nil {
		return err
	}
	if err := s.checkMailHost(ctx, in.Host); err != nil {
		return err
	}
	if err := s.checkFallbackUser(ctx, in.FallbackUserID); err != nil {
		return err
	}
	if err := s.checkResourceRef(ctx, "resource", in.Resource); err != nil {
		return err
	}
	if err := s.sealSecrets(&in, domain.InboundAccount{}); err != nil {
		return err
	}
	state, version, err := LoadInboundAccounts(ctx, s.store)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	if in.ID, err = newID(); err != nil {
		return err
	}
	evs, err := domain.DecideCreateInboundAccount(state, in, principal(c).Actor())
	if err != nil {
		return decisionError(err)
	}
	pos, err := s.appendEvents(c, AccountsStream, expected, evs)
	if err != nil {
		return err
	}
	created := evs[0].(domain.InboundAccountCreated).Account
	s.mailboxesChanged(c)
	setPosition(c, pos)
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/inbound-accounts/"+created.ID)
	return c.JSON(http.StatusCreated, accountWritten{accountView: viewOf(created), Position: pos})
}

func (s *server) listAccounts(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	state, version, err := LoadInboundAccounts(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	items := make([]accountView, 0, len(state.ByID))
	for _, a := range state.ByID {
		items = append(items, viewOf(a))
	}
	sort.Slice(items, func(i, j int) bool {
		if !strings.EqualFold(items[i].Name, items[j].Name) {
			return strings.ToLower(items[i].Name) < strings.ToLower(items[j].Name)
		}
		return items[i].ID < items[j].ID
	})
	setETag(c, version)
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// loadAccount reads the registry and the account the path names.
func (s *server) loadAccount(c echo.Context) (domain.InboundAccounts, int64, domain.InboundAccount, error) {
	state, version, err := LoadInboundAccounts(c.Request().Context(), s.store)
	if err != nil {
		return state, 0, domain.InboundAccount{}, err
	}
	a, ok := state.ByID[c.Param("id")]
	if !ok {
		return state, 0, a, domain.ErrAccountNotFound
	}
	return state, version, a, nil
}

func (s *server) getAccount(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	_, version, a, err := s.loadAccount(c)
	if err != nil {
		return err
	}
	setETag(c, version)
	return c.JSON(http.StatusOK, viewOf(a))
}

// updateAccount sets the fields the body names; fields left out keep their
// value, and so do secrets sent empty (they are write-only).
func (s *server) updateAccount(c echo.Context) error {
	state, version, cur, err := s.loadAccount(c)
	if err != nil {
		return err
	}
	body := accountInput{InboundAccount: cur}
	body.Password, body.OAuthClientSecret, body.OAuthRefreshToken = "", "", ""
	body.Subfolders = append([]string(nil), cur.Subfolders...)
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	next := body.InboundAccount
	if next.ID != cur.ID {
		return invalid("id", "cannot be changed")
	}
	if body.Preset != "" {
		return invalid("preset", "applies when an account is created; set host, port and security instead")
	}
	inlineNew := next.OAuthTenantID != cur.OAuthTenantID || next.OAuthClientID != cur.OAuthClientID ||
		next.OAuthClientSecret != "" || next.OAuthRefreshToken != ""
	if err := s.checkConnectionRef(c.Request().Context(), next.OAuthConnectionID, next.Host, inlineNew); err != nil {
		return err
	}
	if next.Host != cur.Host {
		if err := s.checkMailHost(c.Request().Context(), next.Host); err != nil {
			return err
		}
	}
	// Checked when they change: an account that names a user removed
	// since can still be edited otherwise.
	if next.FallbackUserID != cur.FallbackUserID {
		if err := s.checkFallbackUser(c.Request().Context(), next.FallbackUserID); err != nil {
			return err
		}
	}
	if next.Resource != cur.Resource {
		if err := s.checkResourceRef(c.Request().Context(), "resource", next.Resource); err != nil {
			return err
		}
	}
	if err := s.sealSecrets(&next, cur); err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideUpdateInboundAccount(state, next, principal(c).Actor())
	if err != nil {
		return decisionError(err)
	}
	if len(evs) == 0 {
		if expected != version {
			return fmt.Errorf("api: update %s: %w", cur.ID, &eventstore.VersionConflictError{Stream: AccountsStream, Expected: expected, Actual: version})
		}
		setETag(c, version)
		return c.JSON(http.StatusOK, accountWritten{accountView: viewOf(cur)})
	}
	pos, err := s.appendEvents(c, AccountsStream, expected, evs)
	if err != nil {
		return err
	}
	s.mailboxesChanged(c)
	setPosition(c, pos)
	return c.JSON(http.StatusOK, accountWritten{accountView: viewOf(evs[0].(domain.InboundAccountUpdated).Account), Position: pos})
}

func (s *server) deleteAccount(c echo.Context) error {
	state, version, cur, err := s.loadAccount(c)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideDeleteInboundAccount(state, cur.ID, principal(c).Actor())
	if err != nil {
		return decisionError(err)
	}
	pos, err := s.appendEvents(c, AccountsStream, expected, evs)
	if err != nil {
		return err
	}
	s.mailboxesChanged(c)
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"id": cur.ID, "deleted": true, "position": pos})
}

// mailboxesChanged has the scheduler take on a write of accounts or
// settings before the write is answered (see Options.MailboxesChanged). A
// failure is logged, not answered: the write is done, and the scheduler's
// own refresh takes it on a little later.
func (s *server) mailboxesChanged(c echo.Context) {
	if s.opts.MailboxesChanged == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), mailboxesChangedWait)
	defer cancel()
	if err := s.opts.MailboxesChanged(ctx); err != nil {
		s.logger.Warn("the fetch scheduler did not take on the change yet; its own refresh will", "err", err)
	}
}

// historyItem is one change of an account, as the history shows it.
type historyItem struct {
	Position      int64        `json:"position"`
	StreamVersion int64        `json:"stream_version"`
	Type          string       `json:"type"`
	RecordedAt    time.Time    `json:"recorded_at"`
	Actor         string       `json:"actor"`
	Changed       []string     `json:"changed,omitempty"`
	Account       *accountView `json:"account,omitempty"`
}

// accountHistory lists who changed what and when, oldest first; it also
// answers for deleted accounts.
func (s *server) accountHistory(c echo.Context) error {
	id := c.Param("id")
	evs, err := s.store.ReadStream(c.Request().Context(), AccountsStream, 1, 0)
	if err != nil {
		return fmt.Errorf("api: account history: %w", err)
	}
	items := []historyItem{}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: account history: event %d: %w", re.StreamVersion, err)
		}
		it := historyItem{Position: re.Position, StreamVersion: re.StreamVersion, Type: re.Type, RecordedAt: re.RecordedAt.UTC()}
		switch e := ev.(type) {
		case domain.InboundAccountCreated:
			if e.Account.ID != id {
				continue
			}
			v := viewOf(e.Account)
			it.Actor, it.Account = e.Actor, &v
		case domain.InboundAccountUpdated:
			if e.Account.ID != id {
				continue
			}
			v := viewOf(e.Account)
			it.Actor, it.Changed, it.Account = e.Actor, e.Changed, &v
		case domain.InboundAccountDeleted:
			if e.AccountID != id {
				continue
			}
			it.Actor = e.Actor
		default:
			continue
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return domain.ErrAccountNotFound
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// checkResult is the answer of a connection check.
type checkResult struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error,omitempty"`
	ServerReply string `json:"server_reply,omitempty"`
}

func (s *server) checkAccount(c echo.Context) error {
	_, _, a, err := s.loadAccount(c)
	if err != nil {
		return err
	}
	if s.opts.Check == nil {
		return unavailable("checking connections")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), checkTimeout)
	defer cancel()
	if err := s.opts.Check(ctx, a); err != nil {
		s.logger.Info("connection check failed", "account", a.ID, "err", err)
		// The account may point at a service that is no mail server: answer
		// its first line only, bounded, never a whole banner or page.
		return c.JSON(http.StatusOK, checkResult{Error: mailsource.Excerpt(err.Error(), checkErrorLen),
			ServerReply: mailsource.Excerpt(mailsource.ServerReply(err), mailsource.MaxReplyLen)})
	}
	return c.JSON(http.StatusOK, checkResult{OK: true})
}

func (s *server) pollAccount(c echo.Context) error {
	_, _, a, err := s.loadAccount(c)
	if err != nil {
		return err
	}
	if s.opts.PollNow == nil {
		return unavailable("polling on demand")
	}
	if err := s.opts.PollNow(a.ID); err != nil {
		s.logger.Info("poll now refused", "account", a.ID, "err", err)
		return newProblem(http.StatusConflict,
			"the account is not being polled (it is disabled, or mailboxes_disabled is set in the settings)")
	}
	return c.JSON(http.StatusAccepted, map[string]any{"id": a.ID, "status": "poll requested"})
}
