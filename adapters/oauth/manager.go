// Package oauth gets OAuth2 access tokens for mailbox logins (XOAUTH2 over
// IMAP, POP3 and SMTP; Graph) and runs the delegated consent. Everything
// that talks to an identity provider is here, on golang.org/x/oauth2; the
// fetchers and the outbound saga only ask AccessToken(connection,
// protocol).
//
// One Manager serves a process. Per connection and scope set it keeps one
// access token and reuses it until shortly before it expires; refreshes are
// single-flight, so any number of accounts on a connection cause at most
// one refresh per expiry window. A rotated refresh token is sealed and
// stored as an event before the new access token is handed out. A refresh
// the provider refuses for good (invalid_grant) marks the connection
// needs_reconnect as an event; other failures back off.
package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ledgerdesk/ledgerdesk/adapters/httpreply"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Errors of AccessToken. Each comes wrapped with the connection's name and
// the provider's words.
var (
	ErrUnknownConnection = errors.New("oauth: no such OAuth connection")
	ErrNotConnected      = errors.New("oauth: the connection has not been authorized yet (set up the OAuth connection)")
	ErrNeedsReconnect    = errors.New("oauth: the connection needs a reconnect")
	ErrBackingOff        = errors.New("oauth: the last token request failed; waiting before the next")
	ErrTokenRequest      = errors.New("oauth: token request failed")
	// ErrNoGraph means a connection's provider has no Microsoft Graph.
	ErrNoGraph = errors.New("oauth: the connection is not for Microsoft Graph")
)

// Secrets seals and opens stored secrets (adapters/secretbox.Box).
type Secrets interface {
	Seal(plaintext string) (string, error)
	Open(sealed string) (string, error)
}

// Options wire a Manager.
type Options struct {
	Store   eventstore.Store
	Secrets Secrets
	Now     func() time.Time
	Logger  *slog.Logger
	// HTTPClient talks to the token endpoints [30 s timeout].
	HTTPClient *http.Client
	// RedirectURL is where the provider sends the browser back after a
	// consent (LEDGERDESK_PUBLIC_URL + the API's callback path); empty: no
	// consent can start.
	RedirectURL string
	// MinBackoff and MaxBackoff bound the pause after failed token
	// requests, doubling [5 s, 5 min].
	MinBackoff, MaxBackoff time.Duration
	// ConsentTTL is how long an authorize URL may be used [10 min].
	ConsentTTL time.Duration
}

// Manager is the process's token cache, refresher and consent flow.
type Manager struct {
	o Options

	regMu    sync.Mutex
	registry domain.OAuthConnections
	regVer   int64

	mu    sync.Mutex
	conns map[string]*connection

	consentMu sync.Mutex
	consents  map[string]pendingConsent
}

// connection is one connection's live state.
type connection struct {
	id string

	// mu serialises the use of the refresh token: with rotation, two
	// refreshes with the same token would kill each other.
	mu       sync.Mutex
	config   domain.OAuthConnection
	state    domain.OAuthTokenState
	version  int64 // of the token stream, as folded into state
	failures int
	nextTry  time.Time

	liveMu      sync.Mutex
	shown       domain.OAuthTokenState // a copy of state, readable while mu is held by a refresh
	refreshing  int
	liveExpires time.Time
	liveRefresh time.Time

	sourcesMu sync.Mutex
	sources   map[string]*scopedToken
}

// scopedToken is the access token of one scope set; mu makes its refresh
// single-flight.
type scopedToken struct {
	mu     sync.Mutex
	token  *oauth2.Token
	issued time.Time
}

// New returns a Manager.
func New(o Options) (*Manager, error) {
	if o.Store == nil || o.Secrets == nil {
		return nil, errors.New("oauth: new manager: a store and a secret key are needed")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.ConsentTTL <= 0 {
		o.ConsentTTL = 10 * time.Minute
	}
	return &Manager{o: o, registry: domain.OAuthConnections{ByID: map[string]domain.OAuthConnection{}},
		conns: map[string]*connection{}, consents: map[string]pendingConsent{}}, nil
}

// RedirectURL is the consent's redirect URL, to register at the provider.
func (m *Manager) RedirectURL() string { return m.o.RedirectURL }

// AccessToken returns a live access token of the connection for protocol
// (imap, pop3, smtp, graph). It is the port the fetchers and the saga use.
func (m *Manager) AccessToken(ctx context.Context, connectionID, protocol string) (string, error) {
	c, err := m.connection(ctx, connectionID)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	scopes := c.config.ScopesFor(protocol)
	name := c.config.Name
	c.mu.Unlock()
	st := c.source(scopes)

	if tok := st.live(m.o.Now()); tok != "" {
		return tok, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if tok := st.liveLocked(m.o.Now()); tok != "" {
		return tok, nil // another caller refreshed while this one waited
	}
	tok, err := m.refresh(ctx, c, scopes)
	if err != nil {
		return "", fmt.Errorf("OAuth connection %q: %w", name, err)
	}
	st.token, st.issued = tok, m.o.Now()
	return tok.AccessToken, nil
}

// ForgetAccessToken drops the cached access token of the connection for
// protocol if it is token, so that the next AccessToken gets a fresh one
// from the provider. A fetcher calls it when the server answered 401 to
// token (revoked early, or the server's clock ahead of ours). A token
// already replaced, by a refresh or another caller's Forget, is left
// alone: concurrent 401s cause one refresh.
func (m *Manager) ForgetAccessToken(connectionID, protocol, token string) {
	m.mu.Lock()
	c, ok := m.conns[connectionID]
	m.mu.Unlock()
	if !ok || token == "" {
		return
	}
	c.mu.Lock()
	scopes := c.config.ScopesFor(protocol)
	c.mu.Unlock()
	st := c.source(scopes)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.token != nil && st.token.AccessToken == token {
		st.token = nil
		m.o.Logger.Info("access token refused by the server; the next use gets a fresh one",
			"connection", connectionID, "protocol", protocol)
	}
}

// RenewAccessToken returns another access token after a server refused
// rejected (an HTTP 401 from Graph): ForgetAccessToken, then AccessToken.
// Callers refused the same token at once cause one refresh.
func (m *Manager) RenewAccessToken(ctx context.Context, connectionID, protocol, rejected string) (string, error) {
	m.ForgetAccessToken(connectionID, protocol, rejected)
	return m.AccessToken(ctx, connectionID, protocol)
}

// GraphBaseURL returns the Microsoft Graph root of a connection's cloud
// (its graph_base_url, https://graph.microsoft.com by default), read from
// the stored configuration on every call so that a change applies to the
// next poll.
func (m *Manager) GraphBaseURL(ctx context.Context, connectionID string) (string, error) {
	c, err := m.config(ctx, connectionID)
	if err != nil {
		return "", err
	}
	if u := c.WithDefaults().GraphBaseURL; u != "" {
		return u, nil
	}
	return "", fmt.Errorf("%w: OAuth connection %q (provider %s) has no graph_base_url", ErrNoGraph, c.Name, c.Provider)
}

func (st *scopedToken) live(now time.Time) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.liveLocked(now)
}

// liveLocked returns the token while it has more than a tenth of its
// lifetime (at most a minute) left, so a login never starts with a token
// about to expire; x/oauth2's fixed 10 s would never reuse a short token.
func (st *scopedToken) liveLocked(now time.Time) string {
	if st.token == nil || st.token.AccessToken == "" {
		return ""
	}
	if st.token.Expiry.IsZero() {
		return st.token.AccessToken
	}
	margin := min(st.token.Expiry.Sub(st.issued)/10, time.Minute)
	if now.Add(margin).Before(st.token.Expiry) {
		return st.token.AccessToken
	}
	return ""
}

func (c *connection) source(scopes []string) *scopedToken {
	key := strings.Join(scopes, " ")
	c.sourcesMu.Lock()
	defer c.sourcesMu.Unlock()
	st, ok := c.sources[key]
	if !ok {
		st = &scopedToken{}
		c.sources[key] = st
	}
	return st
}

// forgetTokens drops every cached access token (a new consent, a changed
// configuration).
func (c *connection) forgetTokens() {
	c.sourcesMu.Lock()
	defer c.sourcesMu.Unlock()
	c.sources = map[string]*scopedToken{}
}

// connection returns the live state of a connection, with its configuration
// and token stream brought up to date.
func (m *Manager) connection(ctx context.Context, id string) (*connection, error) {
	cfg, err := m.config(ctx, id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	c, ok := m.conns[id]
	if !ok {
		c = &connection{id: id, config: cfg, state: domain.InitialTokenState(cfg), sources: map[string]*scopedToken{}}
		m.conns[id] = c
	}
	m.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !connectionEqual(c.config, cfg) {
		// A new secret, tenant or provider: tokens of the old one go, and
		// so does the back-off of its failures.
		c.config, c.failures, c.nextTry = cfg, 0, time.Time{}
		c.forgetTokens()
	}
	if err := m.syncTokenLocked(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

func connectionEqual(a, b domain.OAuthConnection) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// config reads the registry's new events and returns one connection.
func (m *Manager) config(ctx context.Context, id string) (domain.OAuthConnection, error) {
	m.regMu.Lock()
	defer m.regMu.Unlock()
	evs, err := m.o.Store.ReadStream(ctx, domain.OAuthConnectionsStream, m.regVer+1, 0)
	if err != nil {
		return domain.OAuthConnection{}, fmt.Errorf("oauth: read connections: %w", err)
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return domain.OAuthConnection{}, fmt.Errorf("oauth: read connections: event %d: %w", re.StreamVersion, err)
		}
		m.registry = domain.EvolveOAuthConnections(m.registry, ev)
		m.regVer = re.StreamVersion
	}
	c, ok := m.registry.ByID[id]
	if !ok {
		return c, fmt.Errorf("%w: %s", ErrUnknownConnection, id)
	}
	return c, nil
}

// syncTokenLocked folds the token stream's new events into c (c.mu held).
// A new consent clears cached tokens and back-off.
func (m *Manager) syncTokenLocked(ctx context.Context, c *connection) error {
	evs, err := m.o.Store.ReadStream(ctx, domain.OAuthTokenStream(c.id), c.version+1, 0)
	if err != nil {
		return fmt.Errorf("oauth: read tokens of %s: %w", c.id, err)
	}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("oauth: read tokens of %s: event %d: %w", c.id, re.StreamVersion, err)
		}
		if _, ok := ev.(domain.OAuthConnectionAuthorized); ok {
			c.failures, c.nextTry = 0, time.Time{}
			c.forgetTokens()
		}
		c.state = domain.EvolveOAuthToken(c.state, ev)
		c.version = re.StreamVersion
	}
	c.liveMu.Lock()
	c.shown = c.state
	c.liveMu.Unlock()
	return nil
}

// refresh gets a new access token for scopes (st.mu held).
func (m *Manager) refresh(ctx context.Context, c *connection, scopes []string) (*oauth2.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := m.syncTokenLocked(ctx, c); err != nil {
		return nil, err
	}
	cfg := c.config
	switch {
	case c.state.State == domain.TokenStateNeedsReconnect:
		return nil, fmt.Errorf("%w: %s", ErrNeedsReconnect, c.state.LastError)
	case cfg.Flow == domain.OAuthFlowDelegated && c.state.RefreshToken == "":
		return nil, ErrNotConnected
	case cfg.Flow == domain.OAuthFlowDelegated && c.state.ConsentMoved(cfg):
		return nil, fmt.Errorf("%w: the token endpoint or client id changed since the consent; the refresh token is not sent there", ErrNeedsReconnect)
	case !c.nextTry.IsZero() && m.o.Now().Before(c.nextTry):
		return nil, fmt.Errorf("%w (until %s): %s", ErrBackingOff, c.nextTry.UTC().Format(time.RFC3339), c.state.LastError)
	}
	secret, err := m.open(cfg.ClientSecret)
	if err != nil {
		return nil, fmt.Errorf("oauth: open the client secret: %w", err)
	}
	refreshToken := ""
	if cfg.Flow == domain.OAuthFlowDelegated {
		if refreshToken, err = m.open(c.state.RefreshToken); err != nil {
			return nil, fmt.Errorf("oauth: open the refresh token: %w", err)
		}
	}
	_, tokenURL := cfg.Endpoints()
	// clientcredentials sends the scopes with every request; with the
	// grant type overridden it is a refresh that names its scopes, which
	// oauth2.Config's refresh does not (Microsoft then falls back to the
	// scopes first granted).
	cc := clientcredentials.Config{ClientID: cfg.ClientID, ClientSecret: secret, TokenURL: tokenURL, Scopes: scopes,
		AuthStyle: oauth2.AuthStyleInParams}
	if refreshToken != "" {
		cc.EndpointParams = map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	}
	c.setRefreshing(1)
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, m.o.HTTPClient))
	c.setRefreshing(-1)
	now := m.o.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("oauth: token request: %w", ctx.Err())
		}
		return nil, m.failed(ctx, c, describeTokenError(err, secret, refreshToken), now)
	}
	if !tok.Expiry.IsZero() {
		// x/oauth2 dates Expiry by the wall clock; the cache and the events
		// go by o.Now.
		tok.Expiry = now.Add(time.Until(tok.Expiry))
	}
	rotated := cfg.Flow == domain.OAuthFlowDelegated && tok.RefreshToken != "" && tok.RefreshToken != refreshToken
	if rotated || c.state.State != domain.TokenStateOK {
		ev := domain.OAuthTokenRefreshed{ConnectionID: c.id, Scopes: scopes, AccessTokenExpiresAt: tok.Expiry.UTC(), At: now.UTC()}
		if rotated {
			if ev.RefreshToken, err = m.o.Secrets.Seal(tok.RefreshToken); err != nil {
				return nil, fmt.Errorf("oauth: seal the rotated refresh token: %w", err)
			}
		}
		// Stored before use: a token handed out and then lost would leave
		// the connection with a dead refresh token after a restart.
		if err := m.appendToken(ctx, c, ev); err != nil {
			return nil, err
		}
	}
	c.failures, c.nextTry = 0, time.Time{}
	c.liveMu.Lock()
	c.liveExpires, c.liveRefresh = tok.Expiry, now
	c.liveMu.Unlock()
	return tok, nil
}

func (c *connection) setRefreshing(d int) {
	c.liveMu.Lock()
	c.refreshing += d
	c.liveMu.Unlock()
}

// tokenFailure is a refused or failed token request in words an admin can
// act on.
type tokenFailure struct {
	code      string
	words     string
	permanent bool // invalid_grant: only a new consent helps
}

// describeTokenError turns x/oauth2's error into the provider's words,
// with any secret of the request scrubbed in case the provider echoed it.
func describeTokenError(err error, secrets ...string) tokenFailure {
	var f tokenFailure
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode != "":
		f.code = re.ErrorCode
		f.words = fmt.Sprintf("token endpoint answered %s: %s", status(re), re.ErrorCode)
		if re.ErrorDescription != "" {
			f.words += ": " + firstLine(re.ErrorDescription)
		}
		f.permanent = re.ErrorCode == "invalid_grant"
	case errors.As(err, &re):
		ct := ""
		if re.Response != nil {
			ct = re.Response.Header.Get("Content-Type")
		}
		f.words = fmt.Sprintf("token endpoint answered %s (%s), not an OAuth JSON answer: %s", status(re), orUnknown(ct),
			httpreply.Excerpt(re.Body, 200))
	default:
		f.words = err.Error()
	}
	for _, s := range secrets {
		if s != "" {
			f.words = strings.ReplaceAll(f.words, s, "[redacted]")
		}
	}
	return f
}

func status(re *oauth2.RetrieveError) string {
	if re.Response == nil {
		return "an error"
	}
	return re.Response.Status
}

func orUnknown(s string) string {
	if s == "" {
		return "no content type"
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}

// failed records a failed token request (only when what an admin sees
// changes, so back-off does not fill the log) and backs off.
func (m *Manager) failed(ctx context.Context, c *connection, f tokenFailure, now time.Time) error {
	c.failures++
	pause := m.o.MinBackoff << min(c.failures-1, 16)
	c.nextTry = now.Add(min(pause, m.o.MaxBackoff))
	needsReconnect := f.permanent && c.config.Flow == domain.OAuthFlowDelegated
	newState := domain.TokenStateError
	if needsReconnect {
		newState = domain.TokenStateNeedsReconnect
	}
	if c.state.State != newState || c.state.LastError != f.words {
		ev := domain.OAuthTokenRefreshFailed{ConnectionID: c.id, ErrorCode: f.code, Error: f.words, NeedsReconnect: needsReconnect, At: now.UTC()}
		if err := m.appendToken(ctx, c, ev); err != nil {
			m.o.Logger.Error("oauth: record a failed token request", "connection", c.id, "err", err)
		}
	}
	m.o.Logger.Warn("oauth: token request failed", "connection", c.id, "name", c.config.Name, "reason", f.words,
		"needs_reconnect", needsReconnect)
	if needsReconnect {
		return fmt.Errorf("%w: %s", ErrNeedsReconnect, f.words)
	}
	return fmt.Errorf("%w: %s", ErrTokenRequest, f.words)
}

// appendToken stores one token-stream event and folds it (c.mu held). The
// stream may have grown meanwhile (another process): the event is true
// whatever came before, so it is appended at any version.
func (m *Manager) appendToken(ctx context.Context, c *connection, ev domain.Event) error {
	name, version, payload, err := domain.MarshalEvent(ev)
	if err != nil {
		return err
	}
	if _, err := m.o.Store.Append(ctx, eventstore.AppendRequest{Stream: domain.OAuthTokenStream(c.id), ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: version, Payload: payload}}}); err != nil {
		return fmt.Errorf("oauth: store %s of %s: %w", name, c.id, err)
	}
	return m.syncTokenLocked(ctx, c)
}

func (m *Manager) open(sealed string) (string, error) {
	if sealed == "" {
		return "", nil
	}
	return m.o.Secrets.Open(sealed)
}

// Health is a connection's token state as admins see it.
type Health struct {
	State                string     `json:"token_state"`
	AccessTokenExpiresAt *time.Time `json:"access_token_expires_at"`
	LastRefreshAt        *time.Time `json:"last_refresh_at"`
	LastError            string     `json:"last_error"`
	ConnectedAt          *time.Time `json:"connected_at,omitempty"`
}

// Health returns the token state of a connection: the stored events, with
// this process's live refreshes on top.
func (m *Manager) Health(ctx context.Context, connectionID string) (Health, error) {
	cfg, err := m.config(ctx, connectionID)
	if err != nil {
		return Health{}, err
	}
	m.mu.Lock()
	c, ok := m.conns[connectionID]
	m.mu.Unlock()
	if !ok {
		if c, err = m.connection(ctx, connectionID); err != nil {
			return Health{}, err
		}
	}
	// A refresh in flight holds c.mu: answer from what is folded already
	// rather than wait for the provider.
	if c.mu.TryLock() {
		if connectionEqual(c.config, cfg) {
			err = m.syncTokenLocked(ctx, c)
		}
		c.mu.Unlock()
		if err != nil {
			return Health{}, err
		}
	}
	c.liveMu.Lock()
	s := c.shown
	refreshing, expires, refreshed := c.refreshing, c.liveExpires, c.liveRefresh
	c.liveMu.Unlock()
	if refreshed.After(s.LastRefreshAt) {
		s.LastRefreshAt, s.AccessTokenExpiresAt = refreshed, expires
	}
	if cfg.Flow == domain.OAuthFlowDelegated && s.ConsentMoved(cfg) {
		s.State, s.LastError = domain.TokenStateNeedsReconnect, "the token endpoint or client id changed since the consent"
	}
	h := Health{State: s.State, LastError: s.LastError, AccessTokenExpiresAt: timePtr(s.AccessTokenExpiresAt),
		LastRefreshAt: timePtr(s.LastRefreshAt), ConnectedAt: timePtr(s.ConnectedAt)}
	if refreshing > 0 && h.State != domain.TokenStateNeedsReconnect {
		h.State = domain.TokenStateRefreshing
	}
	return h, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
