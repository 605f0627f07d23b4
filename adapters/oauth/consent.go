package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// Errors of the consent flow.
var (
	// ErrNotDelegated: only delegated connections have a consent.
	ErrNotDelegated = errors.New("oauth: only delegated connections are authorized in a browser; app_only needs no consent")
	// ErrNoPublicURL: the redirect URL cannot be built.
	ErrNoPublicURL = errors.New("oauth: LEDGERDESK_PUBLIC_URL is not set, so the provider cannot send the browser back")
	// ErrConsentState: the callback's state is unknown, used or expired.
	ErrConsentState = errors.New("oauth: this sign-in link is unknown, was used already or has expired; start again from \"set up OAuth connection\"")
	// ErrConsentRefused: the provider or the person refused the consent.
	ErrConsentRefused = errors.New("oauth: the provider did not grant access")
)

// pendingConsent is one authorize URL handed out: its PKCE verifier and
// the connection it is bound to. Kept in memory: a consent is finished
// within minutes by the process that started it.
type pendingConsent struct {
	connectionID string
	verifier     string
	actor        string
	expires      time.Time
}

// Consent is an authorize URL to open in a browser.
type Consent struct {
	URL         string    `json:"authorization_url"`
	RedirectURL string    `json:"redirect_url"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Authorize starts the delegated consent of a connection: the provider's
// authorize URL with PKCE (S256) and a single-use state bound to the
// connection, valid for ConsentTTL. A reconnect is the same call.
func (m *Manager) Authorize(ctx context.Context, connectionID, actor string) (Consent, error) {
	cfg, err := m.config(ctx, connectionID)
	if err != nil {
		return Consent{}, err
	}
	if cfg.Flow != domain.OAuthFlowDelegated {
		return Consent{}, ErrNotDelegated
	}
	if m.o.RedirectURL == "" {
		return Consent{}, ErrNoPublicURL
	}
	state, err := randomString()
	if err != nil {
		return Consent{}, err
	}
	verifier := oauth2.GenerateVerifier()
	now := m.o.Now()
	expires := now.Add(m.o.ConsentTTL)
	m.consentMu.Lock()
	for s, p := range m.consents {
		if now.After(p.expires) {
			delete(m.consents, s)
		}
	}
	m.consents[state] = pendingConsent{connectionID: connectionID, verifier: verifier, actor: actor, expires: expires}
	m.consentMu.Unlock()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if cfg.Provider == domain.OAuthProviderGoogle {
		// Google gives a refresh token only for offline access, and again
		// on a reconnect only when consent is asked for again.
		opts = append(opts, oauth2.AccessTypeOffline, oauth2.ApprovalForce)
	}
	return Consent{URL: m.oauth2Config(cfg, "").AuthCodeURL(state, opts...), RedirectURL: m.RedirectURL(), ExpiresAt: expires.UTC()}, nil
}

func (m *Manager) oauth2Config(cfg domain.OAuthConnection, secret string) *oauth2.Config {
	authURL, tokenURL := cfg.Endpoints()
	return &oauth2.Config{ClientID: cfg.ClientID, ClientSecret: secret, RedirectURL: m.RedirectURL(), Scopes: cfg.ConsentScopes(),
		Endpoint: oauth2.Endpoint{AuthURL: authURL, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}}
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("oauth: random state: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CallbackResult says which connection a finished consent connected.
type CallbackResult struct {
	Connection domain.OAuthConnection
}

// Callback finishes a consent with the provider's redirect query: it
// checks the state (single use, unexpired), exchanges the code with the
// PKCE verifier, and stores the sealed refresh token as an event. The
// error says in words why not: the provider's error_description, a bad
// state, a failed exchange.
func (m *Manager) Callback(ctx context.Context, query url.Values) (CallbackResult, error) {
	state := query.Get("state")
	m.consentMu.Lock()
	p, ok := m.consents[state]
	delete(m.consents, state)
	m.consentMu.Unlock()
	if state == "" || !ok || m.o.Now().After(p.expires) {
		return CallbackResult{}, ErrConsentState
	}
	cfg, err := m.config(ctx, p.connectionID)
	if err != nil {
		return CallbackResult{}, err
	}
	res := CallbackResult{Connection: cfg}
	if code := query.Get("error"); code != "" {
		words := code
		if d := query.Get("error_description"); d != "" {
			words += ": " + firstLine(d)
		}
		return res, fmt.Errorf("%w: %s", ErrConsentRefused, words)
	}
	code := query.Get("code")
	if code == "" {
		return res, fmt.Errorf("%w: the provider sent neither a code nor an error", ErrConsentRefused)
	}
	secret, err := m.open(cfg.ClientSecret)
	if err != nil {
		return res, fmt.Errorf("oauth: open the client secret: %w", err)
	}
	tok, err := m.oauth2Config(cfg, secret).Exchange(context.WithValue(ctx, oauth2.HTTPClient, m.o.HTTPClient), code,
		oauth2.VerifierOption(p.verifier))
	if err != nil {
		f := describeTokenError(err, secret, code)
		return res, fmt.Errorf("%w: %s", ErrConsentRefused, f.words)
	}
	if tok.RefreshToken == "" {
		return res, fmt.Errorf("%w: the provider answered no refresh token (offline access was not granted)", ErrConsentRefused)
	}
	sealed, err := m.o.Secrets.Seal(tok.RefreshToken)
	if err != nil {
		return res, fmt.Errorf("oauth: seal the refresh token: %w", err)
	}
	if !tok.Expiry.IsZero() {
		tok.Expiry = m.o.Now().Add(time.Until(tok.Expiry)) // x/oauth2 dates it by the wall clock
	}
	c, err := m.connection(ctx, cfg.ID)
	if err != nil {
		return res, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := m.o.Now().UTC()
	_, tokenURL := cfg.Endpoints()
	ev := domain.OAuthConnectionAuthorized{ConnectionID: cfg.ID, RefreshToken: sealed, TokenURL: tokenURL, ClientID: cfg.ClientID,
		Scopes:               cfg.ConsentScopes(),
		AccessTokenExpiresAt: tok.Expiry.UTC(), At: now, Actor: p.actor}
	if err := m.appendToken(ctx, c, ev); err != nil {
		return res, err
	}
	return res, nil
}
