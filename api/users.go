package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/projections"
)

// listUsers serves GET /users: users by user name, limit and cursor as in
// GET /tickets.
func (s *server) listUsers(c echo.Context) error {
	p := s.opts.Projections.Users
	if p == nil {
		return unavailable("the user view")
	}
	limit, err := queryInt(c, "limit", viewDefaultLimit, 1, viewMaxLimit)
	if err != nil {
		return err
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	page, err := p.ListUsers(c.Request().Context(), int(limit), c.QueryParam("cursor"))
	if errors.Is(err, projections.ErrBadCursor) {
		return invalid("cursor", "is not a cursor this API gave out")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *server) getUser(c echo.Context) error {
	p := s.opts.Projections.Users
	if p == nil {
		return unavailable("the user view")
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	u, err := p.User(c.Request().Context(), c.Param("id"))
	if errors.Is(err, projections.ErrUserNotFound) {
		return newProblem(http.StatusNotFound, "there is no user with this id")
	}
	if err != nil {
		return err
	}
	setETag(c, u.Version)
	return c.JSON(http.StatusOK, u)
}

// listLocations serves GET /locations: locations by name.
func (s *server) listLocations(c echo.Context) error {
	p := s.opts.Projections.Locations
	if p == nil {
		return unavailable("the location view")
	}
	limit, err := queryInt(c, "limit", viewDefaultLimit, 1, viewMaxLimit)
	if err != nil {
		return err
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	page, err := p.ListLocations(c.Request().Context(), int(limit), c.QueryParam("cursor"))
	if errors.Is(err, projections.ErrBadCursor) {
		return invalid("cursor", "is not a cursor this API gave out")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}
