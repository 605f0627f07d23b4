package api

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// OAuth is what the API needs of the OAuth adapter (adapters/oauth, wired
// by cmd): the delegated consent and the token health.
type OAuth struct {
	// Authorize answers the consent URL of a delegated connection.
	Authorize func(ctx context.Context, connectionID, actor string) (OAuthConsent, error)
	// Callback finishes a consent with the provider's redirect query and
	// returns the connection it was for; its error is in words for the
	// person in the browser (whose HTTP status BadCallback says).
	Callback func(ctx context.Context, query url.Values) (connectionID string, err error)
	// Health is the connection's token state.
	Health func(ctx context.Context, connectionID string) (OAuthHealth, error)
	// BadInput says whether an Authorize or Callback error is the
	// client's (4xx) rather than the server's.
	BadInput func(err error) bool
}

// OAuthConsent is the answer of POST /oauth-connections/{id}/authorize.
type OAuthConsent struct {
	AuthorizationURL string    `json:"authorization_url"`
	RedirectURL      string    `json:"redirect_url"`
	ExpiresAt        time.Time `json:"expires_at"`
}

// OAuthHealth is a connection's token state (RULES.md section 2).
type OAuthHealth struct {
	TokenState           string     `json:"token_state"`
	AccessTokenExpiresAt *time.Time `json:"access_token_expires_at"`
	LastRefreshAt        *time.Time `json:"last_refresh_at"`
	LastError            string     `json:"last_error"`
	ConnectedAt          *time.Time `json:"connected_at,omitempty"`
}

// OAuthCallbackPath is where providers send the browser back after a
// consent (LEDGERDESK_PUBLIC_URL + this is the redirect URL to register).
const OAuthCallbackPath = "/oauth/callback"

// LoadOAuthConnections folds the connection registry and its version.
func LoadOAuthConnections(ctx context.Context, store eventstore.Store) (domain.OAuthConnections, int64, error) {
	return foldStream(ctx, store, domain.OAuthConnectionsStream,
		domain.OAuthConnections{ByID: map[string]domain.OAuthConnection{}}, domain.EvolveOAuthConnections)
}

// connectionView is a connection as the API shows it.
type connectionView struct {
	domain.OAuthConnection
	ClientSecretSet bool `json:"client_secret_set"`
	OAuthHealth
	// UsedBy names the accounts that log in with the connection.
	UsedBy []accountRef `json:"used_by"`
}

type accountRef struct {
	Kind string `json:"kind"` // inbound | outbound
	ID   string `json:"id"`
	Name string `json:"name"`
}

// connectionInput is the body of POST and PUT: the connection's fields,
// and the read-only fields of connectionView, accepted and ignored.
type connectionInput struct {
	domain.OAuthConnection
	ClientSecretSet      *bool        `json:"client_secret_set,omitempty"`
	TokenState           *string      `json:"token_state,omitempty"`
	AccessTokenExpiresAt *time.Time   `json:"access_token_expires_at,omitempty"`
	LastRefreshAt        *time.Time   `json:"last_refresh_at,omitempty"`
	LastError            *string      `json:"last_error,omitempty"`
	ConnectedAt          *time.Time   `json:"connected_at,omitempty"`
	UsedBy               []accountRef `json:"used_by,omitempty"`
}

// usersOf lists the accounts of every connection.
func (s *server) usersOf(ctx context.Context) (map[string][]accountRef, error) {
	in, _, err := LoadInboundAccounts(ctx, s.store)
	if err != nil {
		return nil, err
	}
	out, _, err := LoadOutboundAccounts(ctx, s.store)
	if err != nil {
		return nil, err
	}
	refs := map[string][]accountRef{}
	for _, a := range in.ByID {
		if a.OAuthConnectionID != "" {
			refs[a.OAuthConnectionID] = append(refs[a.OAuthConnectionID], accountRef{Kind: "inbound", ID: a.ID, Name: a.Name})
		}
	}
	for _, a := range out.ByID {
		if a.OAuthConnectionID != "" {
			refs[a.OAuthConnectionID] = append(refs[a.OAuthConnectionID], accountRef{Kind: "outbound", ID: a.ID, Name: a.Name})
		}
	}
	for _, r := range refs {
		sort.Slice(r, func(i, j int) bool {
			if r[i].Kind != r[j].Kind {
				return r[i].Kind < r[j].Kind
			}
			return r[i].Name < r[j].Name
		})
	}
	return refs, nil
}

func (s *server) connectionViewOf(ctx context.Context, c domain.OAuthConnection, users []accountRef) (connectionView, error) {
	r, set := c.Redacted()
	v := connectionView{OAuthConnection: r, ClientSecretSet: set, UsedBy: users}
	if v.UsedBy == nil {
		v.UsedBy = []accountRef{}
	}
	if s.opts.OAuth.Health != nil {
		h, err := s.opts.OAuth.Health(ctx, c.ID)
		if err != nil {
			return v, err
		}
		v.OAuthHealth = h
	} else {
		v.TokenState = domain.InitialTokenState(c).State
	}
	return v, nil
}

// sealClientSecret seals a plaintext client secret; one equal to cur's
// keeps cur's sealed value.
func (s *server) sealClientSecret(c *domain.OAuthConnection, cur domain.OAuthConnection) error {
	return s.sealSecret("client_secret", &c.ClientSecret, cur.ClientSecret)
}

// connectionError maps a refused connection decision.
func connectionError(err error) error {
	switch {
	case errors.Is(err, domain.ErrOAuthConnectionNotFound):
		return newProblem(http.StatusNotFound, "there is no OAuth connection with this id")
	case errors.Is(err, domain.ErrOAuthConnectionNameTaken):
		p := newProblem(http.StatusConflict, "another OAuth connection has this name")
		p.fields = []FieldError{{Field: "name", Detail: "another OAuth connection has this name"}}
		return p
	case errors.Is(err, domain.ErrOAuthConnectionInUse):
		_, users, _ := strings.Cut(err.Error(), domain.ErrOAuthConnectionInUse.Error()+": ")
		return newProblem(http.StatusConflict, "the OAuth connection is used by these accounts; give them another login first: %s", users)
	}
	return unprocessable(err)
}

func (s *server) createConnection(c echo.Context) error {
	body := connectionInput{}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	in := body.OAuthConnection
	if in.ID != "" {
		return invalid("id", "is assigned by the server; leave it out")
	}
	if err := s.sealClientSecret(&in, domain.OAuthConnection{}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	state, version, err := LoadOAuthConnections(ctx, s.store)
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
	evs, err := domain.DecideCreateOAuthConnection(state, in, principal(c).Actor())
	if err != nil {
		return connectionError(err)
	}
	pos, err := s.appendEvents(c, domain.OAuthConnectionsStream, expected, evs)
	if err != nil {
		return err
	}
	created := evs[0].(domain.OAuthConnectionCreated).Connection
	v, err := s.connectionViewOf(ctx, created, nil)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/oauth-connections/"+created.ID)
	return c.JSON(http.StatusCreated, map[string]any{"connection": v, "position": pos})
}

func (s *server) listConnections(c echo.Context) error {
	ctx := c.Request().Context()
	state, version, err := LoadOAuthConnections(ctx, s.store)
	if err != nil {
		return err
	}
	users, err := s.usersOf(ctx)
	if err != nil {
		return err
	}
	items := make([]connectionView, 0, len(state.ByID))
	for _, conn := range state.ByID {
		v, err := s.connectionViewOf(ctx, conn, users[conn.ID])
		if err != nil {
			return err
		}
		items = append(items, v)
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

func (s *server) loadConnection(c echo.Context) (domain.OAuthConnections, int64, domain.OAuthConnection, error) {
	state, version, err := LoadOAuthConnections(c.Request().Context(), s.store)
	if err != nil {
		return state, 0, domain.OAuthConnection{}, err
	}
	conn, ok := state.ByID[c.Param("id")]
	if !ok {
		return state, 0, conn, connectionError(domain.ErrOAuthConnectionNotFound)
	}
	return state, version, conn, nil
}

func (s *server) getConnection(c echo.Context) error {
	_, version, conn, err := s.loadConnection(c)
	if err != nil {
		return err
	}
	users, err := s.usersOf(c.Request().Context())
	if err != nil {
		return err
	}
	v, err := s.connectionViewOf(c.Request().Context(), conn, users[conn.ID])
	if err != nil {
		return err
	}
	setETag(c, version)
	return c.JSON(http.StatusOK, v)
}

func (s *server) updateConnection(c echo.Context) error {
	state, version, cur, err := s.loadConnection(c)
	if err != nil {
		return err
	}
	body := connectionInput{OAuthConnection: cur}
	body.ClientSecret = ""
	body.Scopes = append([]string(nil), cur.Scopes...)
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	next := body.OAuthConnection
	if next.ID != cur.ID {
		return invalid("id", "cannot be changed")
	}
	if err := s.sealClientSecret(&next, cur); err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideUpdateOAuthConnection(state, next, principal(c).Actor())
	if err != nil {
		return connectionError(err)
	}
	ctx := c.Request().Context()
	users, err := s.usersOf(ctx)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		if expected != version {
			return fmt.Errorf("api: update %s: %w", cur.ID, &eventstore.VersionConflictError{Stream: domain.OAuthConnectionsStream, Expected: expected, Actual: version})
		}
		v, err := s.connectionViewOf(ctx, cur, users[cur.ID])
		if err != nil {
			return err
		}
		setETag(c, version)
		return c.JSON(http.StatusOK, map[string]any{"connection": v})
	}
	pos, err := s.appendEvents(c, domain.OAuthConnectionsStream, expected, evs)
	if err != nil {
		return err
	}
	v, err := s.connectionViewOf(ctx, evs[0].(domain.OAuthConnectionUpdated).Connection, users[cur.ID])
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"connection": v, "position": pos})
}

func (s *server) deleteConnection(c echo.Context) error {
	state, version, cur, err := s.loadConnection(c)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	users, err := s.usersOf(c.Request().Context())
	if err != nil {
		return err
	}
	var names []string
	for _, u := range users[cur.ID] {
		names = append(names, fmt.Sprintf("%s account %q (%s)", u.Kind, u.Name, u.ID))
	}
	evs, err := domain.DecideDeleteOAuthConnection(state, cur.ID, names, principal(c).Actor())
	if err != nil {
		return connectionError(err)
	}
	pos, err := s.appendEvents(c, domain.OAuthConnectionsStream, expected, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"id": cur.ID, "deleted": true, "position": pos})
}

// connectionHistoryItem is one change of a connection's configuration or
// of its tokens (secrets never shown).
type connectionHistoryItem struct {
	Position      int64           `json:"position"`
	Stream        string          `json:"stream"`
	StreamVersion int64           `json:"stream_version"`
	Type          string          `json:"type"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Actor         string          `json:"actor,omitempty"`
	Changed       []string        `json:"changed,omitempty"`
	Connection    *connectionView `json:"connection,omitempty"`
	Error         string          `json:"error,omitempty"`
	ExpiresAt     *time.Time      `json:"access_token_expires_at,omitempty"`
	Rotated       bool            `json:"refresh_token_rotated,omitempty"`
}

// connectionHistory lists who changed what, and every consent, rotation
// and refusal of the tokens, oldest first.
func (s *server) connectionHistory(c echo.Context) error {
	id := c.Param("id")
	ctx := c.Request().Context()
	reg, err := s.store.ReadStream(ctx, domain.OAuthConnectionsStream, 1, 0)
	if err != nil {
		return fmt.Errorf("api: connection history: %w", err)
	}
	tokens, err := s.store.ReadStream(ctx, domain.OAuthTokenStream(id), 1, 0)
	if err != nil {
		return fmt.Errorf("api: connection history: %w", err)
	}
	items := []connectionHistoryItem{}
	known := false
	for _, re := range append(reg, tokens...) {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: connection history: %s event %d: %w", re.Stream, re.StreamVersion, err)
		}
		it := connectionHistoryItem{Position: re.Position, Stream: re.Stream, StreamVersion: re.StreamVersion, Type: re.Type,
			RecordedAt: re.RecordedAt.UTC()}
		view := func(conn domain.OAuthConnection) *connectionView {
			r, set := conn.Redacted()
			return &connectionView{OAuthConnection: r, ClientSecretSet: set}
		}
		switch e := ev.(type) {
		case domain.OAuthConnectionCreated:
			if e.Connection.ID != id {
				continue
			}
			known = true
			it.Actor, it.Connection = e.Actor, view(e.Connection)
		case domain.OAuthConnectionUpdated:
			if e.Connection.ID != id {
				continue
			}
			it.Actor, it.Changed, it.Connection = e.Actor, e.Changed, view(e.Connection)
		case domain.OAuthConnectionDeleted:
			if e.ConnectionID != id {
				continue
			}
			it.Actor = e.Actor
		case domain.OAuthConnectionAuthorized:
			it.Actor, it.ExpiresAt = e.Actor, timeOrNil(e.AccessTokenExpiresAt)
		case domain.OAuthTokenRefreshed:
			it.ExpiresAt, it.Rotated = timeOrNil(e.AccessTokenExpiresAt), e.RefreshToken != ""
		case domain.OAuthTokenRefreshFailed:
			it.Error = e.Error
		default:
			continue
		}
		items = append(items, it)
	}
	if !known {
		return connectionError(domain.ErrOAuthConnectionNotFound)
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].RecordedAt.Before(items[j].RecordedAt) })
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// authorizeConnection answers the consent URL of a delegated connection;
// a reconnect is the same call.
func (s *server) authorizeConnection(c echo.Context) error {
	_, _, conn, err := s.loadConnection(c)
	if err != nil {
		return err
	}
	if s.opts.OAuth.Authorize == nil {
		return unavailable("the OAuth consent")
	}
	consent, err := s.opts.OAuth.Authorize(c.Request().Context(), conn.ID, principal(c).Actor())
	if err != nil {
		if s.opts.OAuth.BadInput != nil && s.opts.OAuth.BadInput(err) {
			return newProblem(http.StatusConflict, "%s", err.Error())
		}
		return err
	}
	return c.JSON(http.StatusOK, consent)
}

// callbackPage is what the browser shows after the provider sends it back.
var callbackPage = template.Must(template.New("callback").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ledgerdesk: {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}
.ok{color:#176f2c}.fail{color:#a31515}</style></head>
<body><h1 id="result" class="{{if .OK}}ok{{else}}fail{{end}}">{{.Title}}</h1>
<p id="detail">{{.Detail}}</p>
{{if .Accounts}}<p>Mailbox accounts that log in with it:</p><ul id="accounts">{{range .Accounts}}<li>{{.Name}} ({{.Kind}})</li>{{end}}</ul>{{end}}
<p>You can close this window.</p></body></html>
`))

type callbackData struct {
	OK       bool
	Title    string
	Detail   string
	Accounts []accountRef
}

// oauthCallback finishes a consent. It is reached by the person's browser
// without an API token: the single-use state bound to the connection is
// what authenticates it.
func (s *server) oauthCallback(c echo.Context) error {
	if s.opts.OAuth.Callback == nil {
		return unavailable("the OAuth consent")
	}
	ctx := c.Request().Context()
	id, err := s.opts.OAuth.Callback(ctx, c.QueryParams())
	data := callbackData{OK: err == nil}
	status := http.StatusOK
	conns, _, lerr := LoadOAuthConnections(ctx, s.store)
	if lerr != nil {
		return lerr
	}
	name := conns.ByID[id].Name
	switch {
	case err == nil:
		data.Title = fmt.Sprintf("Connected: %s", name)
		data.Detail = fmt.Sprintf("The OAuth connection %q is authorized; its mailboxes are read and sent with it from now on.", name)
		users, uerr := s.usersOf(ctx)
		if uerr != nil {
			return uerr
		}
		data.Accounts = users[id]
	case s.opts.OAuth.BadInput != nil && s.opts.OAuth.BadInput(err):
		status = http.StatusBadRequest
		data.Title = "Not connected"
		if name != "" {
			data.Title = fmt.Sprintf("Not connected: %s", name)
		}
		data.Detail = err.Error()
	default:
		s.logger.Error("oauth callback failed", "connection", id, "err", err)
		status = http.StatusInternalServerError
		data.Title = "Not connected"
		data.Detail = "ledgerdesk could not store the connection; the error has been logged. Try again from \"set up OAuth connection\"."
	}
	var b strings.Builder
	if err := callbackPage.Execute(&b, data); err != nil {
		return fmt.Errorf("api: callback page: %w", err)
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	c.Response().Header().Set("Referrer-Policy", "no-referrer")
	return c.HTML(status, b.String())
}

// listPresets lists the providers an account may name instead of a server.
func (s *server) listPresets(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"items": domain.Presets()})
}

// checkConnectionRef refuses an account that names a connection that does
// not exist, a host its provider's tokens must not go to, or the inline
// OAuth fields that connections replaced.
func (s *server) checkConnectionRef(ctx context.Context, connectionID, host string, inlineNew bool) error {
	if inlineNew {
		return invalid("oauth_client_id", "inline OAuth fields are replaced by OAuth connections: create one at %s/oauth-connections and set oauth_connection_id", Prefix)
	}
	if connectionID == "" {
		return nil
	}
	conns, _, err := LoadOAuthConnections(ctx, s.store)
	if err != nil {
		return err
	}
	conn, ok := conns.ByID[connectionID]
	if !ok {
		p := newProblem(http.StatusUnprocessableEntity, "oauth_connection_id: there is no OAuth connection %q", connectionID)
		p.fields = []FieldError{{Field: "oauth_connection_id", Detail: "names no OAuth connection"}}
		return p
	}
	if host != "" && !conn.TokensMayGoTo(host) {
		detail := fmt.Sprintf("%q is not a %s mail server; the connection's access tokens are not sent there", host, conn.Provider)
		p := newProblem(http.StatusUnprocessableEntity, "host: %s", detail)
		p.fields = []FieldError{{Field: "host", Detail: detail}}
		return p
	}
	return nil
}
