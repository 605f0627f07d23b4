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
	"maps"
	"net/http"
	"slices"
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
}

// Actor is how events name the principal.
func (p Principal) Actor() string { return "token:" + p.TokenID }

// Authenticator checks bearer tokens: the bootstrap admin token from
// LEDGERDESK_ADMIN_TOKEN, and the tokens issued through the API, which are
// kept only as SHA-256 hashes in the event log and cached here.
type Authenticator struct {
	store     eventstore.Store
	adminHash []byte // SHA-256 of the bootstrap token; nil when none

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
func NewAuthenticator(store eventstore.Store, adminToken string) *Authenticator {
	a := &Authenticator{store: store, byHash: map[string]Principal{}}
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

// Authenticate returns the principal of a token, or ok=false.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Principal, bool, error) {
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
		a.byHash[t.Hash] = Principal{TokenID: t.TokenID, Name: t.Name, Role: t.Role}
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
// no or unknown token is 401, a known token of another role 403.
func (a *Authenticator) requireRoles(roles ...domain.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// The scheme is case-insensitive (RFC 9110 section 11.1).
			scheme, token, found := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			if !found || !strings.EqualFold(scheme, "Bearer") {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="ledgerdesk"`)
				return echo.NewHTTPError(http.StatusUnauthorized, "this route needs an API token: send 'Authorization: Bearer <token>'")
			}
			p, ok, err := a.Authenticate(c.Request().Context(), strings.TrimSpace(token))
			if err != nil {
				return err
			}
			if !ok {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="ledgerdesk", error="invalid_token"`)
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
