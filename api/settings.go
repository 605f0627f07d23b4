package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// SettingsStream holds the global settings' history.
const SettingsStream = "settings"

// LoadSettings returns the current global settings, DefaultSettings while
// none were ever changed.
func LoadSettings(ctx context.Context, store eventstore.Store) (domain.Settings, error) {
	s, _, err := loadSettings(ctx, store)
	return s, err
}

func loadSettings(ctx context.Context, store eventstore.Store) (domain.Settings, int64, error) {
	return foldStream(ctx, store, SettingsStream, domain.DefaultSettings(), domain.EvolveSettings)
}

// settingsWritten answers a settings change.
type settingsWritten struct {
	domain.Settings
	Position int64 `json:"position"`
}

func (s *server) getSettings(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	cur, version, err := loadSettings(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	setETag(c, version)
	return c.JSON(http.StatusOK, cur)
}

// putSettings sets the settings the body names; those left out keep their
// value.
func (s *server) putSettings(c echo.Context) error {
	cur, version, err := loadSettings(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	next := cur
	if err := decodeJSON(c, &next); err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideChangeSettings(cur, next, principal(c).Actor())
	if err != nil {
		return unprocessable(err)
	}
	if len(evs) == 0 {
		if expected != version {
			return fmt.Errorf("api: change settings: %w", &eventstore.VersionConflictError{Stream: SettingsStream, Expected: expected, Actual: version})
		}
		setETag(c, version)
		return c.JSON(http.StatusOK, settingsWritten{Settings: cur})
	}
	pos, err := s.appendEvents(c, SettingsStream, expected, evs)
	if err != nil {
		return err
	}
	s.mailboxesChanged(c)
	setPosition(c, pos)
	return c.JSON(http.StatusOK, settingsWritten{Settings: next, Position: pos})
}
