package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// The outgoing accounts registry, one stream (ticketing.OutboundAccountsStream)
// so that "exactly one default" and unique names are decided on the version
// of the whole registry.

// LoadOutboundAccounts folds the registry (secrets sealed) and its version.
func LoadOutboundAccounts(ctx context.Context, store eventstore.Store) (domain.OutboundAccounts, int64, error) {
	return foldStream(ctx, store, ticketing.OutboundAccountsStream,
		domain.OutboundAccounts{ByID: map[string]domain.OutboundAccount{}}, domain.EvolveOutboundAccounts)
}

// outboundBody is an outgoing account as the API shows and takes it. It
// names the size limit max_mail_size like the inbound accounts do. Secrets
// are write-only: reads carry only the *_set flags, which writes accept and
// ignore so that a client can send back what it read.
type outboundBody struct {
	ID                  string   `json:"id,omitempty"`
	Name                string   `json:"name"`
	Description         string   `json:"description,omitempty"`
	Enabled             bool     `json:"enabled"`
	Default             bool     `json:"default"`
	Protocol            string   `json:"protocol"`
	Host                string   `json:"host,omitempty"`
	Port                int      `json:"port,omitempty"`
	Security            string   `json:"security,omitempty"`
	TLSSkipVerify       bool     `json:"tls_skip_verify"`
	TLSServerName       string   `json:"tls_server_name,omitempty"`
	Auth                string   `json:"auth,omitempty"`
	Username            string   `json:"username,omitempty"`
	Password            string   `json:"password,omitempty"`
	OAuthTenantID       string   `json:"oauth_tenant_id,omitempty"`
	OAuthClientID       string   `json:"oauth_client_id,omitempty"`
	OAuthClientSecret   string   `json:"oauth_client_secret,omitempty"`
	OAuthRefreshToken   string   `json:"oauth_refresh_token,omitempty"`
	SenderAddress       string   `json:"sender_address"`
	SenderName          string   `json:"sender_name,omitempty"`
	BodyEncoding        string   `json:"body_encoding,omitempty"`
	MaxMailSize         int64    `json:"max_mail_size"`
	SentFolderAccountID string   `json:"sent_folder_account_id,omitempty"`
	SentFolder          string   `json:"sent_folder,omitempty"`
	Resources           []string `json:"resources,omitempty"`
	Categories          []string `json:"categories,omitempty"`
	OAuthConnectionID   string   `json:"oauth_connection_id,omitempty"`
	Mailbox             string   `json:"mailbox,omitempty"`
	// Preset (microsoft365, google) fills host, port, security and auth
	// left empty when an account is created; it is not stored.
	Preset string `json:"preset,omitempty"`

	PasswordSet          *bool `json:"password_set,omitempty"`
	OAuthClientSecretSet *bool `json:"oauth_client_secret_set,omitempty"`
	OAuthRefreshTokenSet *bool `json:"oauth_refresh_token_set,omitempty"`
}

func outboundBodyOf(a domain.OutboundAccount) outboundBody {
	return outboundBody{ID: a.ID, Name: a.Name, Description: a.Description, Enabled: a.Enabled, Default: a.Default,
		Protocol: a.Protocol, Host: a.Host, Port: a.Port, Security: a.Security, TLSSkipVerify: a.TLSSkipVerify,
		TLSServerName: a.TLSServerName, Auth: a.Auth, Username: a.Username, Password: a.Password,
		OAuthTenantID: a.OAuthTenantID, OAuthClientID: a.OAuthClientID, OAuthClientSecret: a.OAuthClientSecret,
		OAuthRefreshToken: a.OAuthRefreshToken, SenderAddress: a.SenderAddress, SenderName: a.SenderName,
		BodyEncoding: a.BodyEncoding, MaxMailSize: a.MaxSize, SentFolderAccountID: a.SentFolderAccountID,
		SentFolder: a.SentFolder, Resources: a.Resources, Categories: a.Categories, OAuthConnectionID: a.OAuthConnectionID, Mailbox: a.Mailbox}
}

func (b outboundBody) account() domain.OutboundAccount {
	return domain.OutboundAccount{ID: b.ID, Name: b.Name, Description: b.Description, Enabled: b.Enabled, Default: b.Default,
		Protocol: b.Protocol, Host: b.Host, Port: b.Port, Security: b.Security, TLSSkipVerify: b.TLSSkipVerify,
		TLSServerName: b.TLSServerName, Auth: b.Auth, Username: b.Username, Password: b.Password,
		OAuthTenantID: b.OAuthTenantID, OAuthClientID: b.OAuthClientID, OAuthClientSecret: b.OAuthClientSecret,
		OAuthRefreshToken: b.OAuthRefreshToken, SenderAddress: b.SenderAddress, SenderName: b.SenderName,
		BodyEncoding: b.BodyEncoding, MaxSize: b.MaxMailSize, SentFolderAccountID: b.SentFolderAccountID,
		SentFolder: b.SentFolder, Resources: b.Resources, Categories: b.Categories, OAuthConnectionID: b.OAuthConnectionID, Mailbox: b.Mailbox}
}

// outboundView redacts the secrets.
func outboundView(a domain.OutboundAccount) outboundBody {
	b := outboundBodyOf(a)
	pw, cs, rt := a.Password != "", a.OAuthClientSecret != "", a.OAuthRefreshToken != ""
	b.Password, b.OAuthClientSecret, b.OAuthRefreshToken = "", "", ""
	b.PasswordSet, b.OAuthClientSecretSet, b.OAuthRefreshTokenSet = &pw, &cs, &rt
	return b
}

type outboundWritten struct {
	outboundBody
	Position int64 `json:"position"`
}

// sealOutbound seals the plaintext secrets of a; one equal to cur's keeps
// cur's sealed value.
func (s *server) sealOutbound(a *domain.OutboundAccount, cur domain.OutboundAccount) error {
	return errors.Join(s.sealSecret("password", &a.Password, cur.Password),
		s.sealSecret("oauth_client_secret", &a.OAuthClientSecret, cur.OAuthClientSecret),
		s.sealSecret("oauth_refresh_token", &a.OAuthRefreshToken, cur.OAuthRefreshToken))
}

// outboundError maps a refused decision to its answer.
func outboundError(err error) error {
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return newProblem(http.StatusNotFound, "there is no outgoing account with this id")
	case errors.Is(err, domain.ErrAlreadyExists):
		return newProblem(http.StatusConflict, "an outgoing account with this id exists")
	case errors.Is(err, domain.ErrNameTaken):
		p := newProblem(http.StatusConflict, "another outgoing account has this name")
		p.fields = []FieldError{{Field: "name", Detail: "another outgoing account has this name"}}
		return p
	case errors.Is(err, domain.ErrInUse):
		return newProblem(http.StatusConflict, "%s", strings.TrimPrefix(err.Error(), "delete outgoing account "))
	}
	return unprocessable(err)
}

func (s *server) createOutbound(c echo.Context) error {
	body := outboundBody{Enabled: true}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	in := body.account()
	if in.ID != "" {
		return invalid("id", "is assigned by the server; leave it out")
	}
	if body.Preset != "" {
		var err error
		if in, err = domain.ApplyOutboundPreset(in, body.Preset); err != nil {
			return unprocessable(err)
		}
	}
	if err := s.checkConnectionRef(c.Request().Context(), in.OAuthConnectionID, in.Host, in.HasInlineOAuth()); err != nil {
		return err
	}
	if err := s.sealOutbound(&in, domain.OutboundAccount{}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	state, version, err := LoadOutboundAccounts(ctx, s.store)
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
	evs, err := domain.DecideCreateOutboundAccount(state, in, principal(c).Actor())
	if err != nil {
		return outboundError(err)
	}
	pos, err := s.appendEvents(c, ticketing.OutboundAccountsStream, expected, evs)
	if err != nil {
		return err
	}
	created := evs[len(evs)-1].(domain.OutboundAccountCreated).Account
	setPosition(c, pos)
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/outbound-accounts/"+created.ID)
	return c.JSON(http.StatusCreated, outboundWritten{outboundBody: outboundView(created), Position: pos})
}

func (s *server) listOutbound(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	state, version, err := LoadOutboundAccounts(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	items := make([]outboundBody, 0, len(state.ByID))
	for _, a := range state.ByID {
		items = append(items, outboundView(a))
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

func (s *server) loadOutbound(c echo.Context) (domain.OutboundAccounts, int64, domain.OutboundAccount, error) {
	state, version, err := LoadOutboundAccounts(c.Request().Context(), s.store)
	if err != nil {
		return state, 0, domain.OutboundAccount{}, err
	}
	a, ok := state.ByID[c.Param("id")]
	if !ok {
		return state, 0, a, outboundError(domain.ErrNotFound)
	}
	return state, version, a, nil
}

func (s *server) getOutbound(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	_, version, a, err := s.loadOutbound(c)
	if err != nil {
		return err
	}
	setETag(c, version)
	return c.JSON(http.StatusOK, outboundView(a))
}

// updateOutbound sets the fields the body names; fields left out keep their
// value, and so do secrets sent empty.
func (s *server) updateOutbound(c echo.Context) error {
	state, version, cur, err := s.loadOutbound(c)
	if err != nil {
		return err
	}
	body := outboundBodyOf(cur)
	body.Password, body.OAuthClientSecret, body.OAuthRefreshToken = "", "", ""
	body.Resources = append([]string(nil), cur.Resources...)
	body.Categories = append([]string(nil), cur.Categories...)
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	next := body.account()
	if next.ID != cur.ID {
		return invalid("id", "cannot be changed")
	}
	if body.Preset != "" {
		return invalid("preset", "applies when an account is created; set host, port, security and auth instead")
	}
	inlineNew := next.OAuthTenantID != cur.OAuthTenantID || next.OAuthClientID != cur.OAuthClientID ||
		next.OAuthClientSecret != "" || next.OAuthRefreshToken != ""
	if err := s.checkConnectionRef(c.Request().Context(), next.OAuthConnectionID, next.Host, inlineNew); err != nil {
		return err
	}
	if err := s.sealOutbound(&next, cur); err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideUpdateOutboundAccount(state, next, principal(c).Actor())
	if err != nil {
		return outboundError(err)
	}
	if len(evs) == 0 {
		if expected != version {
			return fmt.Errorf("api: update %s: %w", cur.ID, &eventstore.VersionConflictError{Stream: ticketing.OutboundAccountsStream, Expected: expected, Actual: version})
		}
		setETag(c, version)
		return c.JSON(http.StatusOK, outboundWritten{outboundBody: outboundView(cur)})
	}
	pos, err := s.appendEvents(c, ticketing.OutboundAccountsStream, expected, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, outboundWritten{outboundBody: outboundView(evs[len(evs)-1].(domain.OutboundAccountUpdated).Account), Position: pos})
}

func (s *server) deleteOutbound(c echo.Context) error {
	state, version, cur, err := s.loadOutbound(c)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideDeleteOutboundAccount(state, cur.ID, principal(c).Actor())
	if err != nil {
		return outboundError(err)
	}
	pos, err := s.appendEvents(c, ticketing.OutboundAccountsStream, expected, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"id": cur.ID, "deleted": true, "position": pos})
}
