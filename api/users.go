package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
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

// historyEntry is what every history item says: where the event is, what
// it is, when and by whom.
type historyEntry struct {
	Position      int64     `json:"position"`
	StreamVersion int64     `json:"stream_version"`
	Type          string    `json:"type"`
	RecordedAt    time.Time `json:"recorded_at"`
	Actor         string    `json:"actor"`
}

func entryOf(re eventstore.RecordedEvent) historyEntry {
	return historyEntry{Position: re.Position, StreamVersion: re.StreamVersion, Type: re.Type, RecordedAt: re.RecordedAt.UTC(),
		Actor: re.Metadata.Actor}
}

// directoryError maps a refused directory command.
func directoryError(err error, what string) error {
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return &problemError{status: http.StatusNotFound, detail: "there is no " + what + " with this id", cause: err}
	case errors.Is(err, domain.ErrEmailTaken):
		_, owner, _ := strings.Cut(err.Error(), domain.ErrEmailTaken.Error()+": ")
		detail := "another user (" + owner + ") has this e-mail address; addresses are unique across all users, removed and auto-created ones included"
		return &problemError{status: http.StatusConflict, detail: detail, cause: err, fields: []FieldError{{Field: "email", Detail: detail}}}
	case errors.Is(err, domain.ErrUserInUse):
		_, ids, _ := strings.Cut(err.Error(), domain.ErrUserInUse.Error()+": ")
		return &problemError{status: http.StatusConflict, cause: err,
			detail: "the user is the fallback user (fallback_user_id) of inbound accounts " + ids + "; give those accounts another fallback user first"}
	case errors.Is(err, domain.ErrAlreadyExists), errors.Is(err, eventstore.ErrVersionConflict):
		return err
	case errors.Is(err, domain.ErrInvalid):
		p := unprocessable(invalidFields(err))
		p.cause = err
		return p
	}
	return err
}

// userInput is the body of POST and PUT /users.
type userInput struct {
	UserName   *string `json:"user_name"`
	Email      *string `json:"email"`
	Name       *string `json:"name"`
	LocationID *string `json:"location_id"`
}

// fields applies the body over cur: fields left out keep their value.
func (in userInput) fields(cur ticketing.UserFields) ticketing.UserFields {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = strings.TrimSpace(*v)
		}
	}
	set(&cur.UserName, in.UserName)
	set(&cur.Email, in.Email)
	set(&cur.Name, in.Name)
	set(&cur.LocationID, in.LocationID)
	return cur
}

// directoryWritten answers a write of a user or location.
type directoryWritten struct {
	ID       string   `json:"id"`
	Events   []string `json:"events"`
	Position int64    `json:"position"`
	Version  int64    `json:"version"`
}

func (s *server) directoryWritten(c echo.Context, status int, res ticketing.DirectoryResult, path string) error {
	out := directoryWritten{ID: res.ID, Events: []string{}, Position: res.Position, Version: res.Version}
	for _, e := range res.Events {
		out.Events = append(out.Events, e.EventName())
	}
	if res.Position > 0 {
		setPosition(c, res.Position)
	}
	setETag(c, res.Version)
	if status == http.StatusCreated {
		c.Response().Header().Set(echo.HeaderLocation, Prefix+path+res.ID)
	}
	return c.JSON(status, out)
}

// createUser serves POST /users: an admin adds a user to the directory,
// which auto-created users share (one user per address).
func (s *server) createUser(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	var in userInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	id, err := newID()
	if err != nil {
		return err
	}
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.CreateUser(c.Request().Context(), in.fields(ticketing.UserFields{}), id, actor, now)
	if err != nil {
		return directoryError(err, "user")
	}
	return s.directoryWritten(c, http.StatusCreated, res, "/users/")
}

// updateUser serves PUT /users/{id}: the fields the body names change.
func (s *server) updateUser(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	ctx := c.Request().Context()
	cur, err := s.opts.Directory.User(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if !cur.Exists() {
		return directoryError(domain.ErrNotFound, "user")
	}
	var in userInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	f := in.fields(ticketing.UserFields{UserName: cur.UserName, Email: cur.Email, Name: cur.Name, LocationID: cur.LocationID})
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.UpdateUser(ctx, cur.ID, f, actor, now)
	if err != nil {
		return directoryError(err, "user")
	}
	return s.directoryWritten(c, http.StatusOK, res, "/users/")
}

// deleteUser serves DELETE /users/{id}: the user is removed (their tickets
// keep them, shown as removed), unless an inbound account names them as its
// fallback user.
func (s *server) deleteUser(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	ctx := c.Request().Context()
	id := c.Param("id")
	accounts, _, err := LoadInboundAccounts(ctx, s.store)
	if err != nil {
		return err
	}
	var fallbackFor []string
	for _, a := range accounts.ByID {
		if a.FallbackUserID == id {
			fallbackFor = append(fallbackFor, a.ID)
		}
	}
	slices.Sort(fallbackFor)
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.RemoveUser(ctx, id, fallbackFor, actor, now)
	if err != nil {
		return directoryError(err, "user")
	}
	return s.directoryWritten(c, http.StatusOK, res, "/users/")
}

// directoryHistoryItem is one event of a user's or location's stream.
type directoryHistoryItem struct {
	historyEntry
	Event domain.Event `json:"event"`
}

// streamHistory lists the events of stream, oldest first, with their actor
// (the intake for auto-created users and locations).
func (s *server) streamHistory(c echo.Context, stream, what string) error {
	evs, err := s.store.ReadStream(c.Request().Context(), stream, 1, 0)
	if err != nil {
		return fmt.Errorf("api: %s history: %w", what, err)
	}
	if len(evs) == 0 {
		return directoryError(domain.ErrNotFound, what)
	}
	items := make([]directoryHistoryItem, 0, len(evs))
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: %s history: event %d: %w", what, re.StreamVersion, err)
		}
		items = append(items, directoryHistoryItem{historyEntry: entryOf(re), Event: ev})
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

func (s *server) userHistory(c echo.Context) error {
	return s.streamHistory(c, domain.UserStream(c.Param("id")), "user")
}

func (s *server) locationHistory(c echo.Context) error {
	return s.streamHistory(c, domain.LocationStream(c.Param("id")), "location")
}

// locationInput is the body of POST and PUT /locations.
type locationInput struct {
	Name   *string `json:"name"`
	Domain *string `json:"domain"`
}

func (s *server) createLocation(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	var in locationInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	id, err := newID()
	if err != nil {
		return err
	}
	var name, dom string
	if in.Name != nil {
		name = strings.TrimSpace(*in.Name)
	}
	if in.Domain != nil {
		dom = *in.Domain
	}
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.CreateLocation(c.Request().Context(), id, name, dom, actor, now)
	if err != nil {
		return directoryError(err, "location")
	}
	return s.directoryWritten(c, http.StatusCreated, res, "/locations/")
}

func (s *server) updateLocation(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	ctx := c.Request().Context()
	cur, err := s.opts.Directory.Location(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if !cur.Exists() {
		return directoryError(domain.ErrNotFound, "location")
	}
	var in locationInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	name, dom := cur.Name, cur.Domain
	if in.Name != nil {
		name = strings.TrimSpace(*in.Name)
	}
	if in.Domain != nil {
		dom = *in.Domain
	}
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.UpdateLocation(ctx, cur.ID, name, dom, actor, now)
	if err != nil {
		return directoryError(err, "location")
	}
	return s.directoryWritten(c, http.StatusOK, res, "/locations/")
}

func (s *server) deleteLocation(c echo.Context) error {
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	actor, now := s.commandMeta(c)
	res, err := s.opts.Directory.RemoveLocation(c.Request().Context(), c.Param("id"), actor, now)
	if err != nil {
		return directoryError(err, "location")
	}
	return s.directoryWritten(c, http.StatusOK, res, "/locations/")
}

// getLocation serves GET /locations/{id}.
func (s *server) getLocation(c echo.Context) error {
	p := s.opts.Projections.Locations
	if p == nil {
		return unavailable("the location view")
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	l, err := p.Location(c.Request().Context(), c.Param("id"))
	if errors.Is(err, projections.ErrLocationNotFound) {
		return newProblem(http.StatusNotFound, "there is no location with this id")
	}
	if err != nil {
		return err
	}
	setETag(c, l.Version)
	return c.JSON(http.StatusOK, l)
}

// checkFallbackUser refuses a fallback_user_id that names no current user:
// a ticket would otherwise be given to nobody.
func (s *server) checkFallbackUser(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	if s.opts.Directory == nil {
		return unavailable("the user directory")
	}
	u, err := s.opts.Directory.User(ctx, id)
	if err != nil {
		return err
	}
	var detail string
	switch {
	case !u.Exists():
		detail = fmt.Sprintf("there is no user %q (see %s/users)", id, Prefix)
	case u.Removed:
		detail = fmt.Sprintf("user %q was removed", id)
	default:
		return nil
	}
	p := newProblem(http.StatusUnprocessableEntity, "fallback_user_id: %s", detail)
	p.fields = []FieldError{{Field: "fallback_user_id", Detail: detail}}
	return p
}
