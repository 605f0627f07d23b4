// Package oauthtest runs a fake OAuth 2.0 identity provider over real HTTP
// on 127.0.0.1, behaving like Microsoft Entra ID and Google as documented:
// the authorization code grant with PKCE (RFC 6749 section 4.1, RFC 7636)
// behind a small consent page, rotating refresh tokens, the client
// credentials grant, and token introspection (RFC 7662) for mail servers
// such as Dovecot that check XOAUTH2 and OAUTHBEARER logins themselves.
//
// Endpoints, each under the base URL and, for the first two, also under the
// Microsoft form /{tenant}/oauth2/v2.0/...:
//
//	GET, POST /authorize   consent page; POST answers the redirect
//	POST      /token       authorization_code, refresh_token, client_credentials
//	POST, GET /introspect  RFC 7662; token as form field "token" or Bearer header
//
// Errors carry Entra's AADSTS texts, so clients see what they would see in
// production. Access tokens are opaque random strings.
package oauthtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Defaults for the zero Options.
const (
	DefaultClientID       = "ledgerdesk-test"
	DefaultClientSecret   = "test-secret"
	DefaultUsername       = "support"
	DefaultAccessTokenTTL = time.Hour
)

// codeTTL is how long an authorization code can be redeemed; Entra allows
// about ten minutes, a test needs far less and a short one catches clients
// that sit on a code.
const codeTTL = 60 * time.Second

// refreshDelay holds every refresh_token grant in flight for a while, so
// that clients refreshing concurrently overlap and MaxConcurrentRefreshes
// shows it.
const refreshDelay = 20 * time.Millisecond

// Options configure a Provider. The zero value is valid.
type Options struct {
	// ClientID and ClientSecret are the only client the provider knows
	// [DefaultClientID, DefaultClientSecret].
	ClientID, ClientSecret string
	// AccessTokenTTL is how long an access token lives from issue; the
	// token response's expires_in is its whole seconds. At least one
	// second, because expires_in cannot say less [DefaultAccessTokenTTL].
	AccessTokenTTL time.Duration
	// Username is prefilled on the consent page and becomes the username
	// of tokens from the code grant; introspection answers it [DefaultUsername].
	Username string
	// KeepRefreshTokens, when true, answers refresh_token grants without a
	// new refresh token and keeps the old one live, as Google does. By
	// default every refresh rotates, as Entra ID does: the answer carries a
	// new refresh token and the old one is dead from then on (invalid_grant).
	KeepRefreshTokens bool
}

func (o *Options) setDefaults() {
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.ClientSecret == "" {
		o.ClientSecret = DefaultClientSecret
	}
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = DefaultAccessTokenTTL
	}
	if o.Username == "" {
		o.Username = DefaultUsername
	}
}

// Validate reports every problem of o after defaults are applied.
func (o Options) Validate() error {
	o.setDefaults()
	var errs []error
	if o.AccessTokenTTL < time.Second {
		errs = append(errs, fmt.Errorf("oauthtest: AccessTokenTTL %v is below one second, the smallest expires_in", o.AccessTokenTTL))
	}
	return errors.Join(errs...)
}

// IntrospectionRequest is how one introspection call arrived, so that tests
// can pin down what a mail server really sends.
type IntrospectionRequest struct {
	Method        string
	ContentType   string
	Authorization string     // the Authorization header as sent
	Form          url.Values // query and body parameters together
}

// Provider is a running fake identity provider. Its methods may be called
// from several goroutines.
type Provider struct {
	// URL is the base URL, without a trailing slash: the authorize endpoint
	// is URL+"/authorize", the tenant form URL+"/contoso/oauth2/v2.0/authorize".
	URL string

	opts Options
	srv  *httptest.Server

	mu            sync.Mutex
	codes         map[string]*codeGrant
	refreshTokens map[string]*refreshGrant
	accessTokens  map[string]*accessGrant
	fail          func(grantType string) (status int, contentType, body string, fail bool)

	refreshes       int
	refreshScopes   []string
	tokenRequests   int
	inflight        int
	maxInflight     int
	introspections  int
	introspectReqs  []IntrospectionRequest
	tenants         []string
	accessRevokedAt int // access tokens with a serial up to this one are revoked
	accessSerial    int
}

type codeGrant struct {
	clientID, redirectURI, challenge string
	username, scope                  string
	expires                          time.Time
	used                             bool
}

type refreshGrant struct {
	username, scope string
	rotated         bool // replaced by a newer token on refresh
	revoked         bool // killed by RevokeRefreshTokens
}

type accessGrant struct {
	username, scope, clientID string
	expires                   time.Time
	serial                    int
}

// Start starts a provider on 127.0.0.1 and closes it when the test ends.
// Invalid options fail the test.
func Start(tb testing.TB, opts Options) *Provider {
	tb.Helper()
	if err := opts.Validate(); err != nil {
		tb.Fatal(err)
	}
	opts.setDefaults()
	p := &Provider{
		opts:          opts,
		codes:         map[string]*codeGrant{},
		refreshTokens: map[string]*refreshGrant{},
		accessTokens:  map[string]*accessGrant{},
	}
	p.srv = httptest.NewServer(p.routes()) // on 127.0.0.1
	p.URL = p.srv.URL
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", p.authorizePage)
	mux.HandleFunc("POST /authorize", p.authorizeDecision)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", p.authorizePage)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/authorize", p.authorizeDecision)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", p.token)
	mux.HandleFunc("POST /introspect", p.introspect)
	mux.HandleFunc("GET /introspect", p.introspect)
	return mux
}

// noteTenant records the tenant of a Microsoft-form request.
func (p *Provider) noteTenant(r *http.Request) {
	if t := r.PathValue("tenant"); t != "" {
		p.mu.Lock()
		p.tenants = append(p.tenants, t)
		p.mu.Unlock()
	}
}

// RevokeRefreshTokens kills every refresh token issued so far, as an
// admin's "revoke sessions" or a password change does: they then fail with
// invalid_grant and AADSTS50173. Tokens from later consents work.
func (p *Provider) RevokeRefreshTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.refreshTokens {
		g.revoked = true
	}
}

// RevokeAccessTokens makes every access token issued so far inactive at
// introspection, as Google's revocation endpoint does at once (Entra
// lets them run out unless continuous access evaluation applies).
func (p *Provider) RevokeAccessTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.accessRevokedAt = p.accessSerial
}

// FailTokenEndpoint scripts token endpoint failures: fn is asked for each
// request, by grant type, and when it returns fail the request is answered
// with status, contentType and body instead, before client authentication.
// A scripted 429 or 503 carries "Retry-After: 1". Nil restores normal
// behaviour.
func (p *Provider) FailTokenEndpoint(fn func(grantType string) (status int, contentType, body string, fail bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = fn
}

// Refreshes is the number of refresh_token grants answered successfully.
func (p *Provider) Refreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshes
}

// RefreshScopes returns the scope parameter of every refresh_token grant
// received, oldest first, "" where none was sent: Entra falls back to the
// first scopes granted when a refresh has none.
func (p *Provider) RefreshScopes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refreshScopes...)
}

// TokenRequests is the number of requests to the token endpoint, failed
// ones included.
func (p *Provider) TokenRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenRequests
}

// MaxConcurrentRefreshes is the peak number of refresh_token grants in
// flight at once. Each is held for a moment, so a client that refreshes
// the same token from two goroutines shows 2 here (and, with rotation,
// loses one of them to invalid_grant).
func (p *Provider) MaxConcurrentRefreshes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxInflight
}

// Introspections is the number of introspection requests answered.
func (p *Provider) Introspections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.introspections
}

// IntrospectionRequests returns how each introspection request arrived,
// oldest first.
func (p *Provider) IntrospectionRequests() []IntrospectionRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]IntrospectionRequest(nil), p.introspectReqs...)
}

// Tenants returns the tenant of each request to a Microsoft-form endpoint,
// oldest first, so tests can check that a client uses its tenant's
// endpoint rather than /common.
func (p *Provider) Tenants() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tenants...)
}

// IssueRefreshToken returns a live refresh token for username (Options.Username
// when empty), as if the user had consented, for tests without a browser.
func (p *Provider) IssueRefreshToken(username string) string {
	if username == "" {
		username = p.opts.Username
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newRefreshTokenLocked(username, "")
}

// AccessTokenFor returns a live access token for username (Options.Username
// when empty), valid for AccessTokenTTL.
func (p *Provider) AccessTokenFor(username string) string {
	if username == "" {
		username = p.opts.Username
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	tok, _ := p.newAccessTokenLocked(username, "", p.opts.ClientID, time.Now())
	return tok
}

func (p *Provider) newRefreshTokenLocked(username, scope string) string {
	tok := randomToken()
	p.refreshTokens[tok] = &refreshGrant{username: username, scope: scope}
	return tok
}

// newAccessTokenLocked issues an access token and returns it with its
// expires_in in seconds.
func (p *Provider) newAccessTokenLocked(username, scope, clientID string, now time.Time) (string, int) {
	tok := randomToken()
	p.accessSerial++
	p.accessTokens[tok] = &accessGrant{
		username: username, scope: scope, clientID: clientID,
		expires: now.Add(p.opts.AccessTokenTTL), serial: p.accessSerial,
	}
	return tok, int(p.opts.AccessTokenTTL / time.Second)
}

// liveAccessLocked returns the grant of a live access token, or nil.
func (p *Provider) liveAccessLocked(tok string, now time.Time) *accessGrant {
	g := p.accessTokens[tok]
	if g == nil || !now.Before(g.expires) || g.serial <= p.accessRevokedAt {
		return nil
	}
	return g
}

// randomToken returns 32 random bytes, base64url: opaque to clients, as
// Google's tokens are (Entra's are JWTs, which clients must not parse).
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux; see crypto/rand.Read
	return base64.RawURLEncoding.EncodeToString(b)
}

// s256Challenge returns the PKCE code challenge for verifier: base64url of
// its SHA-256, without padding. See RFC 7636 section 4.2.
func s256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
