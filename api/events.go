package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Paging of GET /events.
const (
	eventsDefaultLimit = 50
	eventsMaxLimit     = 500
	// eventsMaxScan bounds how many events one request reads while looking
	// for the types asked for; the cursor then points past what was read.
	eventsMaxScan = 20 * eventsMaxLimit
)

// eventItem is one event of the global log.
type eventItem struct {
	Position      int64               `json:"position"`
	ID            string              `json:"id"`
	Type          string              `json:"type"`
	SchemaVersion int                 `json:"schema_version"`
	Stream        string              `json:"stream"`
	StreamVersion int64               `json:"stream_version"`
	RecordedAt    time.Time           `json:"recorded_at"`
	Metadata      eventstore.Metadata `json:"metadata"`
	Payload       json.RawMessage     `json:"payload"`
	// Omitted names the payload's fields left out of this answer (see
	// withoutRawHTML); the stored event has them.
	Omitted []string `json:"omitted,omitempty"`
}

// withoutRawHTML leaves the HTML of a received mail out of its event's
// payload: it may carry script, and GET .../articles/{seq}/body serves it
// sanitised (the .eml download has the mail as received). It returns the
// payload and the fields it left out.
func withoutRawHTML(typ string, payload json.RawMessage) (json.RawMessage, []string, error) {
	if typ != domain.MailReceivedName {
		return payload, nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return nil, nil, fmt.Errorf("api: payload of %s: %w", typ, err)
	}
	if _, ok := fields["html_body"]; !ok {
		return payload, nil, nil
	}
	delete(fields, "html_body")
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, nil, fmt.Errorf("api: payload of %s: %w", typ, err)
	}
	return out, []string{"html_body"}, nil
}

// listEvents pages through the global log in its order: ?after=<cursor>
// (a position from next_cursor, or 0 for the start), ?limit=, ?type=Name[,Name].
// next_cursor is empty once the log is read to its end.
func (s *server) listEvents(c echo.Context) error {
	after, err := queryInt(c, "after", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	limit, err := queryInt(c, "limit", eventsDefaultLimit, 1, eventsMaxLimit)
	if err != nil {
		return err
	}
	var types []string
	if raw := c.QueryParam("type"); raw != "" {
		known := domain.EventNames()
		for t := range strings.SplitSeq(raw, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(known, t) {
				return invalid("type", "%q is not an event type", t)
			}
			types = append(types, t)
		}
	}
	ctx := c.Request().Context()
	items := []eventItem{}
	cursor, scanned, more := after, 0, true
	for len(items) < int(limit) && more && scanned < eventsMaxScan {
		page := int(limit) - len(items)
		if len(types) > 0 {
			page = eventsMaxLimit
		}
		evs, err := s.store.ReadAll(ctx, cursor, page)
		if errors.Is(err, eventstore.ErrUnknownPosition) {
			return invalid("after", "%d names no event; use a next_cursor this API gave out", after)
		}
		if err != nil {
			return fmt.Errorf("api: read events after %d: %w", cursor, err)
		}
		more = len(evs) == page
		for i, re := range evs {
			scanned++
			cursor = re.Position
			if len(types) > 0 && !slices.Contains(types, re.Type) {
				continue
			}
			payload, omitted, err := withoutRawHTML(re.Type, payloadOrNull(re.Payload))
			if err != nil {
				return err
			}
			items = append(items, eventItem{Position: re.Position, ID: re.ID, Type: re.Type, SchemaVersion: re.SchemaVersion,
				Stream: re.Stream, StreamVersion: re.StreamVersion, RecordedAt: re.RecordedAt.UTC(), Metadata: re.Metadata,
				Payload: payload, Omitted: omitted})
			if len(items) == int(limit) {
				more = more || i < len(evs)-1
				break
			}
		}
	}
	next := ""
	if more {
		next = strconv.FormatInt(cursor, 10)
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items, "next_cursor": next})
}

func payloadOrNull(p json.RawMessage) json.RawMessage {
	if len(p) == 0 {
		return json.RawMessage("null")
	}
	return p
}
