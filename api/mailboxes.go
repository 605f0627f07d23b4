package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
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
	items, err := s.withTokenState(c.Request().Context(), rows)
	if err != nil {
		return err
	}
	// checkpoint says how far the view has read the log (its lag).
	cp, err := s.store.Checkpoint(c.Request().Context(), p.Name())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items, "checkpoint": cp})
}

// MailboxLiveness is an account's latest poll as the scheduler knows it
// (ingest.Liveness): idle polls and repeated failures are not recorded, so
// the view alone would show the last change, not the last poll.
type MailboxLiveness struct {
	// CheckedAt is when the latest poll finished.
	CheckedAt time.Time
	// Failures counts the polls in a row that failed, the latest included.
	Failures int
}

// mailboxItem is a mailbox-status row with when the account was last
// polled and, for an account that logs in through an OAuth connection,
// the connection's token state: a connection that needs a reconnect shows
// on every account that uses it.
type mailboxItem struct {
	projections.MailboxStatusRow
	// LastCheckedAt is when the latest poll finished (MailboxLiveness).
	LastCheckedAt        *time.Time `json:"last_checked_at,omitempty"`
	OAuthConnectionID    string     `json:"oauth_connection_id,omitempty"`
	TokenState           string     `json:"token_state,omitempty"`
	AccessTokenExpiresAt *time.Time `json:"access_token_expires_at,omitempty"`
	LastRefreshAt        *time.Time `json:"last_refresh_at,omitempty"`
	// TokenError is the provider's words of the last refusal (last_error
	// is the poll's).
	TokenError string `json:"token_error,omitempty"`
}

func (s *server) withTokenState(ctx context.Context, rows []projections.MailboxStatusRow) ([]mailboxItem, error) {
	accounts, _, err := LoadInboundAccounts(ctx, s.store)
	if err != nil {
		return nil, err
	}
	health := map[string]*OAuthHealth{}
	items := make([]mailboxItem, len(rows))
	for i, r := range rows {
		items[i].MailboxStatusRow = r
		if s.opts.MailboxLiveness != nil {
			if l, ok := s.opts.MailboxLiveness(r.AccountID); ok {
				at := l.CheckedAt.UTC()
				items[i].LastCheckedAt = &at
				items[i].ConsecutiveFailures = int64(l.Failures)
			}
		}
		id := accounts.ByID[r.AccountID].OAuthConnectionID
		if id == "" || s.opts.OAuth.Health == nil {
			continue
		}
		h, ok := health[id]
		if !ok {
			v, err := s.opts.OAuth.Health(ctx, id)
			if err != nil {
				// A deleted or unreadable connection: say so on the row
				// rather than fail the whole list.
				v = OAuthHealth{TokenState: domain.TokenStateError, LastError: err.Error()}
			}
			h = &v
			health[id] = h
		}
		items[i].OAuthConnectionID, items[i].TokenState, items[i].TokenError = id, h.TokenState, h.LastError
		items[i].AccessTokenExpiresAt, items[i].LastRefreshAt = h.AccessTokenExpiresAt, h.LastRefreshAt
	}
	return items, nil
}
