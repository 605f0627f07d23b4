package api

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// tokenView is a token as listed: never its hash.
type tokenView struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Role     domain.Role `json:"role"`
	IssuedBy string      `json:"issued_by"`
	IssuedAt *time.Time  `json:"issued_at,omitempty"`
	// ExpiresAt is when the token stops working; absent: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Expired   bool       `json:"expired,omitempty"`
}

type issueRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// ExpiresAt or TTLSeconds (not both) make the token expire; neither:
	// it works until revoked.
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	TTLSeconds *int64     `json:"ttl_seconds,omitempty"`
}

// maxTTLSeconds bounds ttl_seconds (100 years; more would overflow).
const maxTTLSeconds = 100 * 365 * 24 * 3600

// expiry is when the requested token expires (zero: never).
func (in issueRequest) expiry(now time.Time) (time.Time, error) {
	switch {
	case in.TTLSeconds != nil && in.ExpiresAt != nil:
		return time.Time{}, unprocessable(errors.New("ttl_seconds: give expires_at or ttl_seconds, not both"))
	case in.TTLSeconds != nil:
		if *in.TTLSeconds < 1 || *in.TTLSeconds > maxTTLSeconds {
			return time.Time{}, unprocessable(fmt.Errorf("ttl_seconds: %d is not from 1 to %d", *in.TTLSeconds, maxTTLSeconds))
		}
		return now.Add(time.Duration(*in.TTLSeconds) * time.Second).UTC(), nil
	case in.ExpiresAt != nil:
		return in.ExpiresAt.UTC(), nil
	}
	return time.Time{}, nil
}

func viewOfToken(t domain.APITokenIssued, now time.Time) tokenView {
	v := tokenView{ID: t.TokenID, Name: t.Name, Role: t.Role, IssuedBy: t.IssuedBy}
	if !t.IssuedAt.IsZero() {
		at := t.IssuedAt.UTC()
		v.IssuedAt = &at
	}
	if !t.ExpiresAt.IsZero() {
		at := t.ExpiresAt.UTC()
		v.ExpiresAt, v.Expired = &at, t.Expired(now)
	}
	return v
}

// issueToken makes a token and shows it this once; only its SHA-256 is kept.
func (s *server) issueToken(c echo.Context) error {
	var in issueRequest
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	now := s.opts.Now().UTC()
	expiresAt, err := in.expiry(now)
	if err != nil {
		return err
	}
	state, version, err := s.auth.Tokens(c.Request().Context())
	if err != nil {
		return err
	}
	id, err := newID()
	if err != nil {
		return err
	}
	token, err := NewToken()
	if err != nil {
		return err
	}
	evs, err := domain.DecideIssueToken(state, domain.APITokenIssued{TokenID: id, Name: in.Name,
		Role: domain.Role(in.Role), Hash: HashToken(token), IssuedBy: principal(c).Actor(), IssuedAt: now, ExpiresAt: expiresAt})
	if err != nil {
		return unprocessable(err)
	}
	pos, err := s.appendEvents(c, TokenStream, version, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/tokens/"+id)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	out := map[string]any{"id": id, "name": in.Name, "role": in.Role, "issued_by": principal(c).Actor(), "issued_at": now,
		"token": token, "position": pos}
	if !expiresAt.IsZero() {
		out["expires_at"] = expiresAt
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *server) listTokens(c echo.Context) error {
	state, version, err := s.auth.Tokens(c.Request().Context())
	if err != nil {
		return err
	}
	items := make([]tokenView, 0, len(state.Active))
	now := s.opts.Now()
	for _, t := range state.Active {
		items = append(items, viewOfToken(t, now))
	}
	sort.Slice(items, func(i, j int) bool {
		return items[i].Name < items[j].Name || (items[i].Name == items[j].Name && items[i].ID < items[j].ID)
	})
	setETag(c, version)
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// revokeToken stops a token from working (within revalidateEvery in other
// processes; at once in this one).
func (s *server) revokeToken(c echo.Context) error {
	state, version, err := s.auth.Tokens(c.Request().Context())
	if err != nil {
		return err
	}
	evs, err := domain.DecideRevokeToken(state, c.Param("id"), principal(c).Actor())
	if err != nil {
		return decisionError(err)
	}
	pos, err := s.appendEvents(c, TokenStream, version, evs)
	if err != nil {
		return err
	}
	s.auth.forget()
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"id": c.Param("id"), "revoked": true, "position": pos})
}
