package api

import (
	"net/http"
	"sort"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// tokenView is a token as listed: never its hash.
type tokenView struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Role     domain.Role `json:"role"`
	IssuedBy string      `json:"issued_by"`
}

type issueRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// issueToken makes a token and shows it this once; only its SHA-256 is kept.
func (s *server) issueToken(c echo.Context) error {
	var in issueRequest
	if err := decodeJSON(c, &in); err != nil {
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
		Role: domain.Role(in.Role), Hash: HashToken(token), IssuedBy: principal(c).Actor()})
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
	return c.JSON(http.StatusCreated, map[string]any{"id": id, "name": in.Name, "role": in.Role,
		"issued_by": principal(c).Actor(), "token": token, "position": pos})
}

func (s *server) listTokens(c echo.Context) error {
	state, version, err := s.auth.Tokens(c.Request().Context())
	if err != nil {
		return err
	}
	items := make([]tokenView, 0, len(state.Active))
	for _, t := range state.Active {
		items = append(items, tokenView{ID: t.TokenID, Name: t.Name, Role: t.Role, IssuedBy: t.IssuedBy})
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
