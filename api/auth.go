package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// TokenStream holds every API token event.
const TokenStream = "api-tokens"

// Principal is who a request acts as.
type Principal struct {
	TokenID string
	Name    string
	Role    domain.Role
	// ExpiresAt is when the token stops authenticating; zero: never.
	ExpiresAt time.Time
}

// Actor is how events name the principal.
func (p Principal) Actor() string { return "token:" + p.TokenID }

// Authenticator checks bearer tokens: the bootstrap admin token from
// LEDGERDESK_ADMIN_TOKEN, and the tokens issued through the API, which are
// kept only as SHA-256 hashes in the event log and cached here.
type Authenticator struct {
	store     eventstore.Store
	adminHash []byte // SHA-256 of the bootstrap token; nil when none
	now       func() time.Time
	failures  *failureLimiter
	logger    *slog.Logger

	mu        sync.RWMutex
	state     domain.Tokens
	byHash    map[string]Principal
	version   int64
	checkedAt time.Time
}

// revalidateEvery bounds how long a revoked token keeps working in a
// process that has not seen the revocation yet.
const revalidateEvery = time.Second

// NewAuthenticator returns an authenticator over the token stream of store.
// Expiry goes by the wall clock, and failed attempts are limited to
// DefaultAuthFailureLimit per minute and client address; New sets both
// from its Options.
func NewAuthenticator(store eventstore.Store, adminToken string) *Authenticator {
	a := &Authenticator{store: store, byHash: map[string]Principal{}, now: time.Now, logger: slog.New(slog.DiscardHandler)}
	a.failures = newFailureLimiter(DefaultAuthFailureLimit, time.Minute, func() time.Time { return a.now() })
	if adminToken != "" {
		h := sha256.Sum256([]byte(adminToken))
		a.adminHash = h[:]
	}
	return a
}

// HashToken is how tokens are stored.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken makes a token: 32 random bytes, with a prefix that secret
// scanners and people recognise.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("api: new token: %w", err)
	}
	return "ldt_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Authenticate returns the principal of a token, or ok=false for a token
// that is unknown, revoked or expired.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Principal, bool, error) {
	p, ok, err := a.lookup(ctx, token)
	if !ok || err != nil || p.expired(a.now()) {
		return Principal{}, false, err
	}
	return p, true, nil
}

func (p Principal) expired(now time.Time) bool {
	return domain.APITokenIssued{ExpiresAt: p.ExpiresAt}.Expired(now)
}

// lookup returns the principal of an issued token, expired or not.
func (a *Authenticator) lookup(ctx context.Context, token string) (Principal, bool, error) {
	if token == "" {
		return Principal{}, false, nil
	}
	sum := sha256.Sum256([]byte(token))
	if a.adminHash != nil && subtle.ConstantTimeCompare(sum[:], a.adminHash) == 1 {
		return Principal{TokenID: "bootstrap-admin", Name: "bootstrap admin (LEDGERDESK_ADMIN_TOKEN)", Role: domain.RoleAdmin}, true, nil
	}
	hash := hex.EncodeToString(sum[:])
	a.mu.RLock()
	p, ok := a.byHash[hash]
	fresh := time.Since(a.checkedAt) < revalidateEvery
	a.mu.RUnlock()
	if ok && fresh {
		return p, true, nil
	}
	if err := a.refresh(ctx); err != nil {
		return Principal{}, false, err
	}
	a.mu.RLock()
	p, ok = a.byHash[hash]
	a.mu.RUnlock()
	return p, ok, nil
}

// Tokens returns the active tokens (never their hashes' preimages, which
// are not kept).
func (a *Authenticator) Tokens(ctx context.Context) (domain.Tokens, int64, error) {
	if err := a.refresh(ctx); err != nil {
		return domain.Tokens{}, 0, err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	active := make(map[string]domain.APITokenIssued, len(a.state.Active))
	maps.Copy(active, a.state.Active)
	return domain.Tokens{Active: active}, a.version, nil
}

// forget makes the next Authenticate re-read the token stream, so a token
// revoked through this process stops working at once.
func (a *Authenticator) forget() {
	a.mu.Lock()
	a.checkedAt = time.Time{}
	a.mu.Unlock()
}

// refresh reads the token events appended since the last refresh.
func (a *Authenticator) refresh(ctx context.Context) error {
	a.mu.RLock()
	from := a.version + 1
	a.mu.RUnlock()
	evs, err := a.store.ReadStream(ctx, TokenStream, from, 0)
	if err != nil {
		return fmt.Errorf("api: load tokens: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, re := range evs {
		if re.StreamVersion != a.version+1 {
			continue // another refresh got here first
		}
		ev, err := decodeTokenEvent(re)
		if err != nil {
			return err
		}
		a.state = domain.EvolveTokens(a.state, ev)
		a.version = re.StreamVersion
	}
	a.byHash = make(map[string]Principal, len(a.state.Active))
	for _, t := range a.state.Active {
		a.byHash[t.Hash] = Principal{TokenID: t.TokenID, Name: t.Name, Role: t.Role, ExpiresAt: t.ExpiresAt}
	}
	a.checkedAt = time.Now()
	return nil
}

func decodeTokenEvent(re eventstore.RecordedEvent) (domain.Event, error) {
	switch re.Type {
	case domain.APITokenIssuedName:
		var e domain.APITokenIssued
		err := json.Unmarshal(re.Payload, &e)
		return e, err
	case domain.APITokenRevokedName:
		var e domain.APITokenRevoked
		err := json.Unmarshal(re.Payload, &e)
		return e, err
	}
	return nil, fmt.Errorf("api: unexpected event %s in %s", re.Type, TokenStream)
}

const principalKey = "ledgerdesk.principal"

// requireRoles authenticates the bearer token and allows the given roles:
// no, unknown, revoked or expired token is 401, a known token of another
// role 403. A client address that sent too many wrong tokens within a
// minute gets 429 for every request until the minute is over, so tokens
// cannot be guessed at speed (a right token would give itself away).
func (a *Authenticator) requireRoles(roles ...domain.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			addr := clientAddress(c.Request())
			if wait := a.failures.retryAfter(addr); wait > 0 {
				secs := int64((wait + time.Second - 1) / time.Second)
				c.Response().Header().Set("Retry-After", strconv.FormatInt(secs, 10))
				return echo.NewHTTPError(http.StatusTooManyRequests,
					fmt.Sprintf("too many requests with a wrong API token from this address; retry in %d s", secs))
			}
			// The scheme is case-insensitive (RFC 9110 section 11.1).
			scheme, token, found := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			if !found || !strings.EqualFold(scheme, "Bearer") {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="ledgerdesk"`)
				return echo.NewHTTPError(http.StatusUnauthorized, "this route needs an API token: send 'Authorization: Bearer <token>'")
			}
			p, ok, err := a.lookup(c.Request().Context(), strings.TrimSpace(token))
			if err != nil {
				return err
			}
			if !ok || p.expired(a.now()) {
				if a.failures.fail(addr) {
					a.logger.Warn("too many wrong API tokens; refusing the address for a minute", "addr", addr)
				}
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="ledgerdesk", error="invalid_token"`)
				if ok {
					return echo.NewHTTPError(http.StatusUnauthorized, "the API token expired at "+p.ExpiresAt.UTC().Format(time.RFC3339))
				}
				return echo.NewHTTPError(http.StatusUnauthorized, "the API token is unknown or revoked")
			}
			if !slices.Contains(roles, p.Role) {
				return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("role %s may not use this route", p.Role))
			}
			c.Set(principalKey, p)
			return next(c)
		}
	}
}

// principal returns the authenticated principal of a request.
func principal(c echo.Context) Principal {
	p, _ := c.Get(principalKey).(Principal)
	return p
}

// DefaultAuthFailureLimit is how many wrong tokens a client address may
// send per minute (Options.AuthFailureLimit).
const DefaultAuthFailureLimit = 10

// maxFailureEntries bounds the addresses the limiter tracks; past it new
// addresses go untracked (tokens are 256 random bits: the limit is a
// second line, and memory must not grow with an attacker's addresses).
const maxFailureEntries = 100_000

// failureLimiter counts failed authentications per client address in
// fixed windows: once an address reaches max failures, it is refused
// until its window (begun by its first failure) is over.
type failureLimiter struct {
	max    int // < 0: no limit
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	byAddr  map[string]*failureWindow
	sweptAt time.Time
}

type failureWindow struct {
	start time.Time
	n     int
}

func newFailureLimiter(limit int, window time.Duration, now func() time.Time) *failureLimiter {
	return &failureLimiter{max: limit, window: window, now: now, byAddr: map[string]*failureWindow{}}
}

// retryAfter is how long addr is still refused; 0 when it is not.
func (l *failureLimiter) retryAfter(addr string) time.Duration {
	if l.max < 0 {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.byAddr[addr]
	if !ok || w.n < l.max {
		return 0
	}
	return max(w.start.Add(l.window).Sub(now), 0)
}

// fail counts a failed authentication of addr and reports whether addr is
// refused from now on.
func (l *failureLimiter) fail(addr string) bool {
	if l.max < 0 {
		return false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweptAt) >= l.window || len(l.byAddr) >= maxFailureEntries {
		for a, w := range l.byAddr {
			if !now.Before(w.start.Add(l.window)) {
				delete(l.byAddr, a)
			}
		}
		l.sweptAt = now
	}
	w, ok := l.byAddr[addr]
	switch {
	case ok && now.Before(w.start.Add(l.window)):
		w.n++
	case len(l.byAddr) < maxFailureEntries || ok:
		w = &failureWindow{start: now, n: 1}
		l.byAddr[addr] = w
	default:
		return false
	}
	return w.n == l.max
}

// clientAddress is the address failures are counted by: the peer's IP as
// the connection shows it (forwarding headers are the client's to forge),
// IPv6 by its /64, which one host usually holds whole.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}
