package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// waitForProjection serves read-your-writes: with ?min_position= it waits
// (at most Projections.Wait) until the subscriber has processed that
// position and says in HeaderCaughtUp whether it got there.
func (s *server) waitForProjection(c echo.Context, subscriber string) error {
	pos, err := minPosition(c)
	if err != nil || pos == 0 {
		return err
	}
	ok, err := projections.WaitReached(c.Request().Context(), s.store, subscriber, pos, s.opts.Projections.Wait)
	if errors.Is(err, eventstore.ErrUnknownPosition) {
		return invalid("min_position", "%d names no event", pos)
	}
	if err != nil {
		return err
	}
	c.Response().Header().Set(HeaderCaughtUp, strconv.FormatBool(ok))
	return nil
}

func (s *server) listMailboxes(c echo.Context) error {
	p := s.opts.Projections.MailboxStatus
	if p == nil {
		return unavailable("the mailbox status view")
	}
	if err := s.waitForProjection(c, p.Name()); err != nil {
		return err
	}
	rows, err := p.List(c.Request().Context())
	if err != nil {
		return err
	}
	// checkpoint says how far the view has read the log (its lag).
	cp, err := s.store.Checkpoint(c.Request().Context(), p.Name())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": rows, "checkpoint": cp})
}
