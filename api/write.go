package api

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// HeaderPosition carries the global position of a write's last event, the
// value to pass as ?min_position= to read one's own write.
const HeaderPosition = "Ledgerdesk-Position"

// HeaderCaughtUp says whether a read with min_position saw a projection that
// had processed that position ("true") or gave up waiting ("false").
const HeaderCaughtUp = "Ledgerdesk-Caught-Up"

// newID returns 16 random bytes in hex.
func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("api: new id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// appendEvents appends the domain's events to stream at expected and
// returns the global position of the last one. The request's principal is
// the actor in the metadata.
func (s *server) appendEvents(c echo.Context, stream string, expected int64, evs []domain.Event) (int64, error) {
	meta := eventstore.Metadata{
		Actor:         principal(c).Actor(),
		OccurredAt:    s.opts.Now().UTC(),
		CorrelationID: c.Request().Header.Get(echo.HeaderXRequestID),
	}
	req := eventstore.AppendRequest{Stream: stream, ExpectedVersion: expected}
	for _, e := range evs {
		name, version, payload, err := domain.MarshalEvent(e)
		if err != nil {
			return 0, fmt.Errorf("api: encode %s: %w", e.EventName(), err)
		}
		req.Events = append(req.Events, eventstore.NewEvent{Type: name, SchemaVersion: version, Payload: payload, Metadata: meta})
	}
	res, err := s.store.Append(c.Request().Context(), req)
	if err != nil {
		return 0, fmt.Errorf("api: append to %s: %w", stream, err)
	}
	return res.LastPosition, nil
}

// expectedVersion is the version a write expects its stream at: the
// client's If-Match (an ETag from a read, guarding against lost updates) or
// else the version the handler read.
func expectedVersion(c echo.Context, read int64) (int64, error) {
	raw := strings.TrimSpace(c.Request().Header.Get("If-Match"))
	if raw == "" || raw == "*" {
		return read, nil
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(raw, "W/"), `"`), 10, 64)
	if err != nil || v < 0 {
		return 0, invalid("If-Match", "%q is not an ETag this API gave out", raw)
	}
	return v, nil
}

// setETag names the version of the stream a read came from.
func setETag(c echo.Context, version int64) {
	c.Response().Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
}

// setPosition names the global position of a write's last event.
func setPosition(c echo.Context, position int64) {
	c.Response().Header().Set(HeaderPosition, strconv.FormatInt(position, 10))
}

// minPosition validates ?min_position= (reads that are not of projections
// are consistent anyway and only validate it).
func minPosition(c echo.Context) (int64, error) {
	return queryInt(c, "min_position", 0, 0, 1<<62)
}

// unavailable is the answer of a feature the server was started without.
func unavailable(what string) error {
	return newProblem(http.StatusServiceUnavailable, "%s is not available on this server", what)
}
