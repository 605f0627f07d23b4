package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth/oauthtest"
	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

const (
	tenant = "contoso"
	// clientSecret is distinctive, so that finding it in a text means a leak.
	clientSecret = "Cl1ent-S3cret-7f2e9a"
	redirectURL  = "http://127.0.0.1:1/api/oauth/callback"
	minBackoff   = 5 * time.Second
	maxBackoff   = time.Minute
	consentTTL   = 10 * time.Minute

	outlookScopes = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All " +
		"https://outlook.office.com/SMTP.Send offline_access"
	graphScopes  = "https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Mail.Send offline_access"
	appOnlyScope = "https://outlook.office365.com/.default"
	graphAppOnly = "https://graph.microsoft.com/.default"
)

// clock is the managers' clock, moved by the tests. It starts at the wall
// clock's now because x/oauth2 dates a token's Expiry from time.Now and
// expires_in; a clock far from it would make every token live or dead.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one test's fake identity provider, store, key and clock.
type env struct {
	tb       testing.TB
	provider *oauthtest.Provider
	store    *embedded.Store
	box      *secretbox.Box
	clock    *clock
	logs     *syncBuffer
}

func newEnv(tb testing.TB, po oauthtest.Options) *env {
	tb.Helper()
	if po.ClientSecret == "" {
		po.ClientSecret = clientSecret
	}
	box, err := secretbox.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatalf("secretbox.New() error = %v", err)
	}
	return &env{tb: tb, provider: oauthtest.Start(tb, po), store: openStore(tb), box: box,
		clock: &clock{now: time.Now()}, logs: &syncBuffer{}}
}

// openStore returns a store on a fresh, migrated SQLite file in tb's temp dir.
func openStore(tb testing.TB) *embedded.Store {
	tb.Helper()
	db, err := embedded.OpenDB(filepath.Join(tb.TempDir(), "ledgerdesk.db"))
	if err != nil {
		tb.Fatalf("OpenDB() error = %v", err)
	}
	if err := migrations.ApplySQLite(context.Background(), db); err != nil {
		_ = db.Close()
		tb.Fatalf("ApplySQLite() error = %v", err)
	}
	s := embedded.New(db, nil)
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close() error = %v", err)
		}
	})
	return s
}

// manager starts a Manager on the env; change adjusts its options.
func (e *env) manager(change func(o *oauth.Options)) *oauth.Manager {
	e.tb.Helper()
	o := oauth.Options{
		Store: e.store, Secrets: e.box, Now: e.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HTTPClient: &http.Client{Timeout: 10 * time.Second}, RedirectURL: redirectURL,
		MinBackoff: minBackoff, MaxBackoff: maxBackoff, ConsentTTL: consentTTL,
	}
	if change != nil {
		change(&o)
	}
	m, err := oauth.New(o)
	if err != nil {
		e.tb.Fatalf("oauth.New() error = %v", err)
	}
	return m
}

func (e *env) seal(plaintext string) string {
	e.tb.Helper()
	sealed, err := e.box.Seal(plaintext)
	if err != nil {
		e.tb.Fatalf("Seal() error = %v", err)
	}
	return sealed
}

func (e *env) open(sealed string) string {
	e.tb.Helper()
	plain, err := e.box.Open(sealed)
	if err != nil {
		e.tb.Fatalf("Open() error = %v", err)
	}
	return plain
}

func (e *env) append(stream string, ev domain.Event) {
	e.tb.Helper()
	name, version, payload, err := domain.MarshalEvent(ev)
	if err != nil {
		e.tb.Fatalf("MarshalEvent(%s) error = %v", ev.EventName(), err)
	}
	if _, err := e.store.Append(context.Background(), eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: name, SchemaVersion: version, Payload: payload}}}); err != nil {
		e.tb.Fatalf("Append(%s) error = %v", stream, err)
	}
}

// createConnection stores a Microsoft 365 connection to the fake provider,
// with secret sealed (none when empty).
func (e *env) createConnection(id, flow, secret string) domain.OAuthConnection {
	e.tb.Helper()
	c := domain.OAuthConnection{ID: id, Name: "Contoso " + id, Provider: domain.OAuthProviderMicrosoft365, Flow: flow,
		TenantID: tenant, ClientID: oauthtest.DefaultClientID, LoginBaseURL: e.provider.URL}
	if secret != "" {
		c.ClientSecret = e.seal(secret)
	}
	evs, err := domain.DecideCreateOAuthConnection(domain.OAuthConnections{}, c, "admin")
	if err != nil {
		e.tb.Fatalf("DecideCreateOAuthConnection() error = %v", err)
	}
	e.append(domain.OAuthConnectionsStream, evs[0])
	return c
}

// consented stores a consent of connection id with refresh token rt, as
// Callback does.
func (e *env) consented(id, rt string) {
	e.tb.Helper()
	e.append(domain.OAuthTokenStream(id), domain.OAuthConnectionAuthorized{ConnectionID: id, RefreshToken: e.seal(rt),
		At: e.clock.Now().UTC(), Actor: "admin"})
}

// connect creates a delegated connection with a consent and returns the
// refresh token of the consent.
func (e *env) connect(id string) string {
	e.tb.Helper()
	e.createConnection(id, domain.OAuthFlowDelegated, clientSecret)
	rt := e.provider.IssueRefreshToken("")
	e.consented(id, rt)
	return rt
}

func (e *env) tokenEvents(id string) []domain.Event {
	e.tb.Helper()
	recs, err := e.store.ReadStream(context.Background(), domain.OAuthTokenStream(id), 1, 0)
	if err != nil {
		e.tb.Fatalf("ReadStream() error = %v", err)
	}
	evs := make([]domain.Event, 0, len(recs))
	for _, r := range recs {
		ev, err := domain.UnmarshalEvent(r.Type, r.SchemaVersion, r.Payload)
		if err != nil {
			e.tb.Fatalf("UnmarshalEvent(%s) error = %v", r.Type, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// eventsOf returns the events of type E.
func eventsOf[E domain.Event](evs []domain.Event) []E {
	var out []E
	for _, ev := range evs {
		if e, ok := ev.(E); ok {
			out = append(out, e)
		}
	}
	return out
}

// introspection is the provider's RFC 7662 answer.
type introspection struct {
	Active   bool   `json:"active"`
	Username string `json:"username"`
	Scope    string `json:"scope"`
	ClientID string `json:"client_id"`
}

// introspect asks the provider about an access token; it does not touch
// tb, so goroutines may call it.
func (e *env) introspect(ctx context.Context, token string) (introspection, error) {
	var got introspection
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.provider.URL+"/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return got, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return got, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return got, fmt.Errorf("introspect: status %s", resp.Status)
	}
	return got, json.NewDecoder(resp.Body).Decode(&got)
}

func (e *env) mustIntrospect(token string) introspection {
	e.tb.Helper()
	got, err := e.introspect(context.Background(), token)
	if err != nil {
		e.tb.Fatalf("introspect: %v", err)
	}
	return got
}

// refreshAtProvider redeems rt at the provider directly, as another client
// holding it would.
func (e *env) refreshAtProvider(rt string) (*oauth2.Token, error) {
	cfg := oauth2.Config{ClientID: oauthtest.DefaultClientID, ClientSecret: clientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: e.provider.URL + "/" + tenant + "/oauth2/v2.0/token", AuthStyle: oauth2.AuthStyleInParams}}
	return cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: rt}).Token()
}

func mustToken(tb testing.TB, m *oauth.Manager, id, protocol string) string {
	tb.Helper()
	tok, err := m.AccessToken(context.Background(), id, protocol)
	if err != nil {
		tb.Fatalf("AccessToken(%s, %s) error = %v", id, protocol, err)
	}
	if tok == "" {
		tb.Fatalf("AccessToken(%s, %s) = \"\", want a token", id, protocol)
	}
	return tok
}

func mustHealth(tb testing.TB, m *oauth.Manager, id string) oauth.Health {
	tb.Helper()
	h, err := m.Health(context.Background(), id)
	if err != nil {
		tb.Fatalf("Health(%s) error = %v", id, err)
	}
	return h
}

// wantErr checks err against a sentinel and the words it must carry.
func wantErr(tb testing.TB, what string, err, target error, words ...string) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("%s error = %v, want errors.Is %v", what, err, target)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			tb.Errorf("%s error = %q, want it to contain %q", what, err, w)
		}
	}
}

func TestNew_needsAStoreAndSecrets(t *testing.T) {
	t.Parallel()
	if _, err := oauth.New(oauth.Options{}); err == nil {
		t.Error("New(Options{}) error = nil, want one")
	}
}

func TestManager_AccessToken_unknownConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	_, err := e.manager(nil).AccessToken(t.Context(), "nope", domain.ProtocolIMAP)
	wantErr(t, "AccessToken()", err, oauth.ErrUnknownConnection, "nope")
}

func TestManager_AccessToken_reusesTheTokenWhileItLives(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{AccessTokenTTL: time.Hour})
	e.connect("c1")
	m := e.manager(nil)

	first := mustToken(t, m, "c1", domain.ProtocolIMAP)
	for range 50 {
		if got := mustToken(t, m, "c1", domain.ProtocolIMAP); got != first {
			t.Fatalf("AccessToken() = a new token within the first's life")
		}
	}
	// A tenth of the lifetime, but at most a minute, is kept in reserve.
	e.clock.Advance(58 * time.Minute)
	if got := mustToken(t, m, "c1", domain.ProtocolIMAP); got != first {
		t.Errorf("AccessToken() 58 min into a 60 min token = a new token, want the cached one")
	}
	if got := e.provider.Refreshes(); got != 1 {
		t.Errorf("provider Refreshes() = %d, want 1", got)
	}
	e.clock.Advance(90 * time.Second)
	if got := mustToken(t, m, "c1", domain.ProtocolIMAP); got == first {
		t.Errorf("AccessToken() in the token's last minute = the old token, want a new one")
	}
	if got := e.provider.Refreshes(); got != 2 {
		t.Errorf("provider Refreshes() = %d, want 2", got)
	}
}

func TestManager_AccessToken_refreshIsSingleFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(nil)
	first := mustToken(t, m, "c1", domain.ProtocolIMAP)
	e.clock.Advance(2 * time.Hour)
	before := e.provider.Refreshes()

	const callers = 20
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		tokens [callers]string
		errs   [callers]error
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: AccessToken() error = %v", i, err)
		}
	}
	if tokens[0] == first {
		t.Errorf("AccessToken() after expiry = the expired token")
	}
	for i, tok := range tokens {
		if tok != tokens[0] {
			t.Errorf("caller %d got another token than caller 0; want one refresh shared by all", i)
		}
	}
	if got := e.provider.Refreshes() - before; got != 1 {
		t.Errorf("provider refreshes for %d concurrent callers = %d, want 1", callers, got)
	}
	if got := e.provider.MaxConcurrentRefreshes(); got != 1 {
		t.Errorf("provider MaxConcurrentRefreshes() = %d, want 1", got)
	}
}

// TestManager_AccessToken_shortLivedTokens runs on the wall clock: the
// provider's introspection judges liveness by it.
func TestManager_AccessToken_shortLivedTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{AccessTokenTTL: time.Second})
	e.connect("c1")
	m := e.manager(func(o *oauth.Options) { o.Now = time.Now })

	const callers, run = 8, 3 * time.Second
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seen  = map[string]bool{}
		calls int
	)
	deadline := time.Now().Add(run)
	for i := range callers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				tok, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
				if err != nil {
					t.Errorf("caller %d: AccessToken() error = %v", i, err)
					return
				}
				got, err := e.introspect(t.Context(), tok)
				if err != nil {
					t.Errorf("caller %d: %v", i, err)
					return
				}
				if !got.Active {
					t.Errorf("caller %d: AccessToken() returned a token the provider calls inactive", i)
					return
				}
				mu.Lock()
				seen[tok] = true
				calls++
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()

	refreshes := e.provider.Refreshes()
	t.Logf("%d calls over %v, %d refreshes, %d distinct tokens", calls, run, refreshes, len(seen))
	// A 1 s token is used for 9/10 s: one refresh per window, 4 at most in 3 s.
	if refreshes < 2 || refreshes > 4 {
		t.Errorf("provider Refreshes() = %d over %v of 1 s tokens, want 2 to 4", refreshes, run)
	}
	if len(seen) != refreshes {
		t.Errorf("distinct tokens returned = %d, want one per refresh (%d)", len(seen), refreshes)
	}
	if got := e.provider.MaxConcurrentRefreshes(); got != 1 {
		t.Errorf("provider MaxConcurrentRefreshes() = %d, want 1", got)
	}
}

func TestManager_AccessToken_storesTheRotatedRefreshToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	rt0 := e.connect("c1")
	mustToken(t, e.manager(nil), "c1", domain.ProtocolIMAP)

	refreshed := eventsOf[domain.OAuthTokenRefreshed](e.tokenEvents("c1"))
	if len(refreshed) != 1 || refreshed[0].RefreshToken == "" {
		t.Fatalf("token stream's OAuthTokenRefreshed = %+v, want one with the rotated token", refreshed)
	}
	rt1 := e.open(refreshed[0].RefreshToken)
	if rt1 == rt0 || rt1 == refreshed[0].RefreshToken {
		t.Fatalf("stored refresh token opens to the old one or is not sealed")
	}
	if _, err := e.refreshAtProvider(rt0); err == nil {
		t.Fatal("the consent's refresh token still works after the rotation; the test cannot tell tokens apart")
	}

	// A restart: a new Manager knows only what is stored.
	mustToken(t, e.manager(nil), "c1", domain.ProtocolIMAP)
	refreshed = eventsOf[domain.OAuthTokenRefreshed](e.tokenEvents("c1"))
	if len(refreshed) != 2 {
		t.Fatalf("token stream has %d OAuthTokenRefreshed, want 2", len(refreshed))
	}
	rt2 := e.open(refreshed[1].RefreshToken)
	if _, err := e.refreshAtProvider(rt2); err != nil {
		t.Errorf("the stored refresh token is not the provider's live one: %v", err)
	}
}

// failingStore refuses appends to token streams.
type failingStore struct{ eventstore.Store }

func (s failingStore) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	for _, r := range reqs {
		if strings.HasPrefix(r.Stream, domain.OAuthTokenStream("")) {
			return eventstore.AppendResult{}, errors.New("disk full")
		}
	}
	return s.Store.Append(ctx, reqs...)
}

func TestManager_AccessToken_noTokenUnlessTheRotationIsStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(func(o *oauth.Options) { o.Store = failingStore{e.store} })
	tok, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
	if err == nil || tok != "" {
		t.Fatalf("AccessToken() = %q, %v; want no token when the rotated refresh token cannot be stored", tok, err)
	}
	if !strings.Contains(err.Error(), "disk full") {
		t.Errorf("AccessToken() error = %q, want the store's words", err)
	}
}

func TestManager_AccessToken_sendsScopesOnEveryRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(nil)

	imap := mustToken(t, m, "c1", domain.ProtocolIMAP)
	// IMAP, POP and SMTP are one resource at Microsoft: one token serves all.
	if smtp := mustToken(t, m, "c1", domain.ProtocolSMTP); smtp != imap {
		t.Error("SMTP got another token than IMAP; want the one token of outlook.office.com")
	}
	graph := mustToken(t, m, "c1", domain.ProtocolGraph)
	if graph == imap {
		t.Error("Graph shares IMAP's token; want one per resource")
	}
	e.clock.Advance(2 * time.Hour)
	mustToken(t, m, "c1", domain.ProtocolSMTP)

	if diff := cmp.Diff([]string{outlookScopes, graphScopes, outlookScopes}, e.provider.RefreshScopes()); diff != "" {
		t.Errorf("provider RefreshScopes() (-want +got):\n%s", diff)
	}
	if got := e.mustIntrospect(imap).Scope; got != outlookScopes {
		t.Errorf("IMAP token's scope = %q, want %q", got, outlookScopes)
	}
	if got := e.provider.Tenants(); len(got) == 0 || slices.IndexFunc(got, func(s string) bool { return s != tenant }) >= 0 {
		t.Errorf("provider Tenants() = %v, want only %q", got, tenant)
	}
}

// TestManager_AccessToken_oneRefreshTokenUseAtATime: with rotation, two
// refreshes with the same refresh token kill each other, so the scope sets
// of one connection refresh one after the other.
func TestManager_AccessToken_oneRefreshTokenUseAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(nil)

	protocols := []string{domain.ProtocolIMAP, domain.ProtocolGraph, domain.ProtocolSMTP, domain.ProtocolGraph}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, 4*len(protocols))
	)
	for i := range errs {
		wg.Go(func() {
			<-start
			_, errs[i] = m.AccessToken(t.Context(), "c1", protocols[i%len(protocols)])
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d (%s): AccessToken() error = %v", i, protocols[i%len(protocols)], err)
		}
	}
	if got := e.provider.Refreshes(); got != 2 {
		t.Errorf("provider Refreshes() = %d, want 2 (Outlook and Graph)", got)
	}
	if got := e.provider.MaxConcurrentRefreshes(); got != 1 {
		t.Errorf("provider MaxConcurrentRefreshes() = %d, want 1", got)
	}
}

func TestManager_AccessToken_revokedRefreshTokenNeedsReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(nil)
	mustToken(t, m, "c1", domain.ProtocolIMAP)

	e.provider.RevokeRefreshTokens()
	e.clock.Advance(2 * time.Hour)
	_, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
	wantErr(t, "AccessToken() after a revocation", err, oauth.ErrNeedsReconnect, "AADSTS50173", "invalid_grant", "Contoso c1")

	h := mustHealth(t, m, "c1")
	if h.State != domain.TokenStateNeedsReconnect || !strings.Contains(h.LastError, "AADSTS50173") {
		t.Errorf("Health() = %s %q, want needs_reconnect with the provider's words", h.State, h.LastError)
	}
	failed := eventsOf[domain.OAuthTokenRefreshFailed](e.tokenEvents("c1"))
	if len(failed) != 1 || !failed[0].NeedsReconnect || failed[0].ErrorCode != "invalid_grant" {
		t.Fatalf("token stream's OAuthTokenRefreshFailed = %+v, want one with needs_reconnect and invalid_grant", failed)
	}

	requests := e.provider.TokenRequests()
	for range 3 {
		e.clock.Advance(maxBackoff)
		_, err := m.AccessToken(t.Context(), "c1", domain.ProtocolSMTP)
		wantErr(t, "AccessToken() while needs_reconnect", err, oauth.ErrNeedsReconnect, "AADSTS50173")
	}
	if got := e.provider.TokenRequests(); got != requests {
		t.Errorf("provider TokenRequests() = %d after calls while needs_reconnect, want %d (no request)", got, requests)
	}
	if n := len(eventsOf[domain.OAuthTokenRefreshFailed](e.tokenEvents("c1"))); n != 1 {
		t.Errorf("token stream has %d OAuthTokenRefreshFailed, want still 1", n)
	}

	// A new consent, as Callback stores it.
	e.consented("c1", e.provider.IssueRefreshToken(""))
	tok := mustToken(t, m, "c1", domain.ProtocolIMAP)
	if !e.mustIntrospect(tok).Active {
		t.Error("AccessToken() after the new consent = a token the provider calls inactive")
	}
	if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateOK || h.LastError != "" {
		t.Errorf("Health() after the new consent = %s %q, want ok without error", h.State, h.LastError)
	}
}

func TestManager_AccessToken_providerOutageBacksOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.connect("c1")
	m := e.manager(nil)
	e.provider.FailTokenEndpoint(func(string) (int, string, string, bool) {
		return http.StatusServiceUnavailable, "text/html; charset=utf-8",
			"<html><head><title>Service Unavailable</title></head><body><h1>Service Unavailable</h1></body></html>", true
	})

	_, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
	wantErr(t, "AccessToken() during an outage", err, oauth.ErrTokenRequest, "503", "not an OAuth JSON answer", "Service Unavailable")
	if errors.Is(err, oauth.ErrNeedsReconnect) {
		t.Errorf("AccessToken() error = %v, an outage is not a reason to reconnect", err)
	}
	if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateError || !strings.Contains(h.LastError, "503") {
		t.Errorf("Health() = %s %q, want error with the status", h.State, h.LastError)
	}

	requests := e.provider.TokenRequests()
	backingOff := func(when string) {
		t.Helper()
		_, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
		wantErr(t, "AccessToken() "+when, err, oauth.ErrBackingOff, "503")
		if got := e.provider.TokenRequests(); got != requests {
			t.Fatalf("provider TokenRequests() = %d %s, want %d (no request)", got, when, requests)
		}
	}
	backingOff("at once")
	e.clock.Advance(minBackoff - time.Second)
	backingOff("before MinBackoff passed")

	e.clock.Advance(time.Second)
	_, err = m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
	wantErr(t, "AccessToken() after MinBackoff", err, oauth.ErrTokenRequest, "503")
	if got := e.provider.TokenRequests(); got != requests+1 {
		t.Errorf("provider TokenRequests() = %d after MinBackoff, want %d", got, requests+1)
	}
	requests++
	if n := len(eventsOf[domain.OAuthTokenRefreshFailed](e.tokenEvents("c1"))); n != 1 {
		t.Errorf("token stream has %d OAuthTokenRefreshFailed after the same failure twice, want 1", n)
	}
	e.clock.Advance(minBackoff)
	backingOff("before the doubled pause passed")

	e.provider.FailTokenEndpoint(nil)
	e.clock.Advance(minBackoff)
	tok := mustToken(t, m, "c1", domain.ProtocolIMAP)
	if !e.mustIntrospect(tok).Active {
		t.Error("AccessToken() after the outage = a token the provider calls inactive")
	}
	if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateOK || h.LastError != "" || h.LastRefreshAt == nil {
		t.Errorf("Health() after the outage = %+v, want ok without error", h)
	}
}

func TestManager_AccessToken_appOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.createConnection("app", domain.OAuthFlowAppOnly, clientSecret)
	e.createConnection("wrong", domain.OAuthFlowAppOnly, "not-the-secret")
	m := e.manager(nil)

	t.Run("client credentials with the Exchange .default scope", func(t *testing.T) {
		tok := mustToken(t, m, "app", domain.ProtocolIMAP)
		got := e.mustIntrospect(tok)
		if diff := cmp.Diff(introspection{Active: true, Scope: appOnlyScope, ClientID: oauthtest.DefaultClientID}, got); diff != "" {
			t.Errorf("introspection of the app-only token (-want +got):\n%s", diff)
		}
		if got := e.mustIntrospect(mustToken(t, m, "app", domain.ProtocolGraph)).Scope; got != graphAppOnly {
			t.Errorf("Graph token's scope = %q, want %q", got, graphAppOnly)
		}
		if n := e.provider.Refreshes(); n != 0 {
			t.Errorf("provider Refreshes() = %d, want 0: app-only has no refresh token", n)
		}
		if h := mustHealth(t, m, "app"); h.State != domain.TokenStateOK {
			t.Errorf("Health() = %s, want ok", h.State)
		}
	})
	t.Run("a wrong secret is an error, not a reconnect", func(t *testing.T) {
		_, err := m.AccessToken(t.Context(), "wrong", domain.ProtocolIMAP)
		wantErr(t, "AccessToken() with a wrong secret", err, oauth.ErrTokenRequest, "invalid_client", "AADSTS7000215")
		if errors.Is(err, oauth.ErrNeedsReconnect) {
			t.Errorf("AccessToken() error = %v, want no reconnect for app-only", err)
		}
		if h := mustHealth(t, m, "wrong"); h.State != domain.TokenStateError || !strings.Contains(h.LastError, "invalid_client") {
			t.Errorf("Health() = %s %q, want error with invalid_client", h.State, h.LastError)
		}
	})
}

func TestManager_noSecretLeaks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	rt0 := e.connect("c1")
	m := e.manager(nil)
	liveRefreshToken := func() string {
		t.Helper()
		var sealed string
		for _, ev := range e.tokenEvents("c1") {
			switch ev := ev.(type) {
			case domain.OAuthConnectionAuthorized:
				sealed = ev.RefreshToken
			case domain.OAuthTokenRefreshed:
				if ev.RefreshToken != "" {
					sealed = ev.RefreshToken
				}
			}
		}
		return e.open(sealed)
	}
	// echo answers with the request's secrets in the body, as a careless
	// proxy or provider might.
	echo := func(status int, contentType, format string) {
		body := fmt.Sprintf(format, clientSecret, liveRefreshToken())
		e.provider.FailTokenEndpoint(func(string) (int, string, string, bool) { return status, contentType, body, true })
	}

	secrets := []string{clientSecret, rt0}
	var errs []error
	step := func(wantOK bool) {
		t.Helper()
		e.clock.Advance(2 * time.Hour)
		tok, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
		if wantOK && err != nil {
			t.Fatalf("AccessToken() error = %v", err)
		}
		if !wantOK && err == nil {
			t.Fatal("AccessToken() error = nil, want a failure")
		}
		if tok != "" {
			secrets = append(secrets, tok)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	step(true)
	echo(http.StatusInternalServerError, "text/html", "<html><body>bad request client_secret=%s&refresh_token=%s</body></html>")
	step(false)
	echo(http.StatusBadRequest, "application/json", `{"error":"invalid_request","error_description":"got client_secret=%s refresh_token=%s"}`)
	step(false)
	e.provider.FailTokenEndpoint(nil)
	step(true)
	e.provider.RevokeRefreshTokens()
	step(false)

	for _, ev := range eventsOf[domain.OAuthTokenRefreshed](e.tokenEvents("c1")) {
		if ev.RefreshToken != "" {
			secrets = append(secrets, e.open(ev.RefreshToken))
		}
	}
	if len(secrets) < 6 {
		t.Fatalf("collected %d secrets, want the client secret, 3 refresh and 2 access tokens", len(secrets))
	}
	texts := map[string]string{"log": e.logs.String()}
	if !strings.Contains(texts["log"], "token request failed") {
		t.Fatalf("the log has no failed token request; the check would prove nothing:\n%s", texts["log"])
	}
	for i, err := range errs {
		texts[fmt.Sprintf("error %d", i)] = err.Error()
	}
	for i := range 2 {
		if !strings.Contains(errs[i].Error(), "[redacted]") {
			t.Errorf("error %d = %q, want the echoed secrets redacted", i, errs[i])
		}
	}
	recs, err := e.store.ReadAll(t.Context(), 0, 1000)
	if err != nil {
		t.Fatalf("ReadAll() error = %v", err)
	}
	for _, r := range recs {
		texts[fmt.Sprintf("%s event %d (%s)", r.Stream, r.StreamVersion, r.Type)] = string(r.Payload) + fmt.Sprint(r.Metadata)
	}
	for where, text := range texts {
		for i, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %d appears in plain text in the %s: %s", i, where, text)
			}
		}
	}
}

var (
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
	formAction  = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	// noRedirects shows a redirect instead of following it.
	noRedirects = &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
)

// reply is a response already read and closed.
type reply struct {
	Status   string
	Code     int
	Location string
	Body     string
}

func (e *env) do(req *http.Request) reply {
	e.tb.Helper()
	resp, err := noRedirects.Do(req)
	if err != nil {
		e.tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.tb.Fatalf("read %s: %v", req.URL, err)
	}
	return reply{resp.Status, resp.StatusCode, resp.Header.Get("Location"), string(body)}
}

// consent opens the provider's consent page at authURL, submits it as a
// browser would with decision (accept or deny) and returns the query the
// provider sends the browser back with.
func (e *env) consent(authURL, decision string) url.Values {
	e.tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, authURL, nil)
	if err != nil {
		e.tb.Fatal(err)
	}
	r := e.do(req)
	page := r.Body
	if r.Code != http.StatusOK {
		e.tb.Fatalf("GET consent page: %s\n%s", r.Status, page)
	}
	form := url.Values{"username": {oauthtest.DefaultUsername}, "decision": {decision}}
	for _, h := range hiddenInput.FindAllStringSubmatch(page, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	action := formAction.FindStringSubmatch(page)
	if action == nil {
		e.tb.Fatalf("consent page has no form:\n%s", page)
	}
	base, err := url.Parse(authURL)
	if err != nil {
		e.tb.Fatal(err)
	}
	target, err := base.Parse(html.UnescapeString(action[1]))
	if err != nil {
		e.tb.Fatal(err)
	}
	req, err = http.NewRequestWithContext(context.Background(), http.MethodPost, target.String(), strings.NewReader(form.Encode()))
	if err != nil {
		e.tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r = e.do(req); r.Code != http.StatusFound {
		e.tb.Fatalf("POST consent: %s, want 302\n%s", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Location)
	if err != nil {
		e.tb.Fatalf("Location %q: %v", r.Location, err)
	}
	if back := loc.Scheme + "://" + loc.Host + loc.Path; back != redirectURL {
		e.tb.Fatalf("provider redirected to %s, want %s", back, redirectURL)
	}
	return loc.Query()
}

func TestManager_Consent(t *testing.T) {
	t.Parallel()
	t.Run("an accepted consent connects and tokens follow", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
		m := e.manager(nil)
		_, err := m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
		wantErr(t, "AccessToken() before the consent", err, oauth.ErrNotConnected)
		if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateNotConnected {
			t.Errorf("Health() before the consent = %s, want not_connected", h.State)
		}

		c, err := m.Authorize(t.Context(), "c1", "alice")
		if err != nil {
			t.Fatalf("Authorize() error = %v", err)
		}
		u, err := url.Parse(c.URL)
		if err != nil {
			t.Fatalf("Authorize() URL %q: %v", c.URL, err)
		}
		q := u.Query()
		if u.Path != "/"+tenant+"/oauth2/v2.0/authorize" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" ||
			q.Get("state") == "" || q.Get("redirect_uri") != redirectURL || q.Get("client_id") != oauthtest.DefaultClientID ||
			!strings.Contains(q.Get("scope"), "offline_access") {
			t.Errorf("Authorize() URL = %s, want the tenant's endpoint with PKCE S256, state, redirect and offline_access", c.URL)
		}
		if want := e.clock.Now().Add(consentTTL).UTC(); !c.ExpiresAt.Equal(want) || c.RedirectURL != redirectURL {
			t.Errorf("Authorize() = expires %v, redirect %q; want %v, %q", c.ExpiresAt, c.RedirectURL, want, redirectURL)
		}

		back := e.consent(c.URL, "accept")
		if back.Get("state") != q.Get("state") || back.Get("code") == "" {
			t.Fatalf("provider sent back %v, want the state and a code", back)
		}
		res, err := m.Callback(t.Context(), back)
		if err != nil {
			t.Fatalf("Callback() error = %v", err)
		}
		if res.Connection.ID != "c1" {
			t.Errorf("Callback() connection = %q, want c1", res.Connection.ID)
		}
		authorized := eventsOf[domain.OAuthConnectionAuthorized](e.tokenEvents("c1"))
		if len(authorized) != 1 || authorized[0].Actor != "alice" || e.open(authorized[0].RefreshToken) == "" {
			t.Fatalf("token stream's OAuthConnectionAuthorized = %+v, want one by alice with a sealed refresh token", authorized)
		}
		if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateOK || h.ConnectedAt == nil {
			t.Errorf("Health() after the consent = %+v, want ok and connected", h)
		}
		got := e.mustIntrospect(mustToken(t, m, "c1", domain.ProtocolIMAP))
		if !got.Active || got.Username != oauthtest.DefaultUsername || got.Scope != outlookScopes {
			t.Errorf("introspection of the token after the consent = %+v, want active for %s with %q", got, oauthtest.DefaultUsername, outlookScopes)
		}

		_, err = m.Callback(t.Context(), back)
		wantErr(t, "Callback() with the same state again", err, oauth.ErrConsentState)
		if n := len(eventsOf[domain.OAuthConnectionAuthorized](e.tokenEvents("c1"))); n != 1 {
			t.Errorf("token stream has %d OAuthConnectionAuthorized after a replay, want 1", n)
		}
	})
	t.Run("a forged state is refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
		_, err := e.manager(nil).Callback(t.Context(), url.Values{"state": {"forged"}, "code": {"x"}})
		wantErr(t, "Callback() with a forged state", err, oauth.ErrConsentState)
	})
	t.Run("an expired state is refused", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
		m := e.manager(nil)
		c, err := m.Authorize(t.Context(), "c1", "alice")
		if err != nil {
			t.Fatalf("Authorize() error = %v", err)
		}
		back := e.consent(c.URL, "accept")
		e.clock.Advance(consentTTL + time.Second)
		_, err = m.Callback(t.Context(), back)
		wantErr(t, "Callback() after ConsentTTL", err, oauth.ErrConsentState)
		if evs := e.tokenEvents("c1"); len(evs) != 0 {
			t.Errorf("token stream = %v after an expired consent, want empty", evs)
		}
	})
	t.Run("a denied consent says what the provider said", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
		m := e.manager(nil)
		c, err := m.Authorize(t.Context(), "c1", "alice")
		if err != nil {
			t.Fatalf("Authorize() error = %v", err)
		}
		_, err = m.Callback(t.Context(), e.consent(c.URL, "deny"))
		wantErr(t, "Callback() after a denial", err, oauth.ErrConsentRefused, "access_denied",
			"AADSTS65004: User declined to consent to access the app.")
		if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateNotConnected {
			t.Errorf("Health() after a denial = %s, want not_connected", h.State)
		}
	})
	t.Run("app-only connections have no consent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("app", domain.OAuthFlowAppOnly, clientSecret)
		_, err := e.manager(nil).Authorize(t.Context(), "app", "alice")
		wantErr(t, "Authorize() of app_only", err, oauth.ErrNotDelegated)
	})
	t.Run("without a public URL no consent starts", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, oauthtest.Options{})
		e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
		_, err := e.manager(func(o *oauth.Options) { o.RedirectURL = "" }).Authorize(t.Context(), "c1", "alice")
		wantErr(t, "Authorize() without RedirectURL", err, oauth.ErrNoPublicURL)
	})
}

// TestManager_AccessToken_refreshTokenStaysWithItsEndpoint: an admin who
// points a connection at another token endpoint (or client) does not get
// the stored refresh token sent there; the connection needs a new consent.
func TestManager_AccessToken_refreshTokenStaysWithItsEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	c := e.createConnection("c1", domain.OAuthFlowDelegated, clientSecret)
	_, tokenURL := c.Endpoints()
	e.append(domain.OAuthTokenStream("c1"), domain.OAuthConnectionAuthorized{ConnectionID: "c1",
		RefreshToken: e.seal(e.provider.IssueRefreshToken("")), TokenURL: tokenURL, ClientID: c.ClientID,
		At: e.clock.Now().UTC(), Actor: "admin"})
	m := e.manager(nil)
	mustToken(t, m, "c1", domain.ProtocolIMAP)

	moved := c
	moved.LoginBaseURL = "http://127.0.0.1:1"
	evs, err := domain.DecideUpdateOAuthConnection(domain.OAuthConnections{ByID: map[string]domain.OAuthConnection{"c1": c}}, moved, "admin")
	if err != nil {
		t.Fatal(err)
	}
	e.append(domain.OAuthConnectionsStream, evs[0])
	requests := e.provider.TokenRequests()
	_, err = m.AccessToken(t.Context(), "c1", domain.ProtocolIMAP)
	wantErr(t, "AccessToken() after the endpoint moved", err, oauth.ErrNeedsReconnect, "changed since the consent")
	if h := mustHealth(t, m, "c1"); h.State != domain.TokenStateNeedsReconnect {
		t.Errorf("Health() = %+v, want needs_reconnect", h)
	}
	if n := e.provider.TokenRequests() - requests; n != 0 {
		t.Errorf("%d token requests after the move, want none", n)
	}
}

func TestManager_RenewAccessToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{AccessTokenTTL: time.Hour})
	e.createConnection("app", domain.OAuthFlowAppOnly, clientSecret)
	m := e.manager(nil)
	refused := mustToken(t, m, "app", domain.ProtocolGraph)
	before := e.provider.TokenRequests()

	// when Graph refuses the cached token, a new one is fetched
	fresh, err := m.RenewAccessToken(t.Context(), "app", domain.ProtocolGraph, refused)
	if err != nil {
		t.Fatalf("RenewAccessToken() error = %v", err)
	}
	if fresh == refused || !e.mustIntrospect(fresh).Active {
		t.Errorf("RenewAccessToken() = %q, want a live token other than the refused %q", fresh, refused)
	}
	// a second caller refused the same old token gets the new one, with no
	// further token request
	again, err := m.RenewAccessToken(t.Context(), "app", domain.ProtocolGraph, refused)
	if err != nil || again != fresh {
		t.Errorf("RenewAccessToken() again = %q, %v; want %q", again, err, fresh)
	}
	if n := e.provider.TokenRequests() - before; n != 1 {
		t.Errorf("token requests for two renewals of one refused token = %d, want 1", n)
	}
	if got := mustToken(t, m, "app", domain.ProtocolGraph); got != fresh {
		t.Errorf("AccessToken() after the renewal = %q, want the new token %q", got, fresh)
	}
}

func TestManager_GraphBaseURL_nationalCloud(t *testing.T) {
	t.Parallel()
	e := newEnv(t, oauthtest.Options{})
	e.createConnection("app", domain.OAuthFlowAppOnly, clientSecret)
	gov := domain.OAuthConnection{ID: "gov", Name: "Contoso GCC High", Provider: domain.OAuthProviderMicrosoft365,
		Flow: domain.OAuthFlowAppOnly, TenantID: tenant, ClientID: oauthtest.DefaultClientID, ClientSecret: e.seal(clientSecret),
		LoginBaseURL: "https://login.microsoftonline.us", GraphBaseURL: "https://graph.microsoft.us/"}.WithDefaults()
	evs, err := domain.DecideCreateOAuthConnection(domain.OAuthConnections{}, gov, "admin")
	if err != nil {
		t.Fatalf("DecideCreateOAuthConnection() error = %v", err)
	}
	e.append(domain.OAuthConnectionsStream, evs[0])
	m := e.manager(nil)
	for id, want := range map[string]string{"app": domain.DefaultGraphBaseURL, "gov": "https://graph.microsoft.us"} {
		if got, err := m.GraphBaseURL(t.Context(), id); err != nil || got != want {
			t.Errorf("GraphBaseURL(%s) = %q, %v; want %q", id, got, err, want)
		}
	}
	_, err = m.GraphBaseURL(t.Context(), "nope")
	wantErr(t, "GraphBaseURL()", err, oauth.ErrUnknownConnection, "nope")
}
