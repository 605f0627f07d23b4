package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/broadcast"
)

// DefaultStreamHeartbeat is how often an idle event stream sends a comment
// line, so that proxies and clients see the connection alive.
const DefaultStreamHeartbeat = 15 * time.Second

// Stream limits: events per read of the live buffer, and how long one
// write to a client may take before the connection counts as dead.
const (
	streamBatch        = 100
	streamWriteTimeout = 30 * time.Second
	// streamRetryMillis is the reconnection delay the stream asks browsers
	// to use (the SSE "retry" field).
	streamRetryMillis = 2000
)

// Live is the live side of the event log, for GET /stream.
type Live struct {
	// Log follows the global log; nil answers 503.
	Log *broadcast.Broadcaster
	// Heartbeat is how often an idle stream sends ": heartbeat"
	// [DefaultStreamHeartbeat].
	Heartbeat time.Duration
	// Closing, once closed, ends every stream (a graceful shutdown would
	// otherwise wait for them for ever); clients reconnect and resume.
	Closing <-chan struct{}
	// Observer is told when streams open and end, for the metrics; nil
	// observes nothing.
	Observer StreamObserver
}

// StreamObserver is told about the event streams (adapters/metrics
// implements it). Calls come from every stream at once.
type StreamObserver interface {
	StreamOpened()
	// StreamClosed reports a stream's end; lagged when the client was too
	// slow for the live buffer and was disconnected.
	StreamClosed(lagged bool)
}

// streamItem is what role may see of an event on the live stream, and
// false when nothing. The stream carries tickets (with their articles) and
// mailbox status, under the rules of the endpoints that serve them
// already: a ticket's events as GET /tickets/{id}/history shows them to
// readers (analysts, who read no bodies or histories, get the envelope
// only, as a cue to reload the ticket), the intake's mail events as
// GET /events shows them to auditors and admins (without the raw HTML),
// and poll outcomes as GET /mailboxes shows them to everyone. Accounts,
// connections, tokens, settings, users and outbound mails are not
// streamed: their events carry sealed secrets or personal data that only
// their own endpoints redact.
func streamItem(role domain.Role, re eventstore.RecordedEvent) (eventItem, bool, error) {
	it := eventItem{Position: re.Position, ID: re.ID, Type: re.Type, SchemaVersion: re.SchemaVersion,
		Stream: re.Stream, StreamVersion: re.StreamVersion, RecordedAt: re.RecordedAt.UTC(), Metadata: re.Metadata,
		Payload: payloadOrNull(re.Payload)}
	switch {
	case strings.HasPrefix(re.Stream, domain.TicketStream("")):
		if role == domain.RoleAnalyst {
			it.Payload, it.Omitted = nil, []string{"payload"}
		}
		return it, true, nil
	case re.Type == domain.MailReceivedName || re.Type == domain.MailFailedName || re.Type == domain.MailSkippedName:
		if role != domain.RoleAdmin && role != domain.RoleAuditor {
			return eventItem{}, false, nil
		}
		payload, omitted, err := withoutRawHTML(re.Type, it.Payload)
		if err != nil {
			return eventItem{}, false, err
		}
		it.Payload, it.Omitted = payload, omitted
		return it, true, nil
	case re.Type == domain.MailboxPolledName:
		return it, true, nil
	}
	return eventItem{}, false, nil
}

// streamStart is where a stream request resumes: the Last-Event-ID header
// a reconnecting EventSource sends, else ?after=, else the end of the log
// (live events only). ok is false for "the end of the log".
func streamStart(c echo.Context) (after int64, ok bool, err error) {
	if raw := strings.TrimSpace(c.Request().Header.Get("Last-Event-ID")); raw != "" {
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 0 {
			return 0, false, invalid("Last-Event-ID", "%q is not a position of the log", raw)
		}
		return n, true, nil
	}
	if c.QueryParam("after") == "" {
		return 0, false, nil
	}
	n, err := queryInt(c, "after", 0, 0, 1<<62)
	return n, err == nil, err
}

// stream serves GET /stream: Server-Sent Events, one per event of the log
// the caller's role may see (streamItem), "id" the event's global position,
// "event" its type, "data" the JSON of /events' items. See openapi.json.
func (s *server) stream(c echo.Context) error {
	live := s.opts.Live
	if live.Log == nil {
		return unavailable("the live event stream")
	}
	after, resume, err := streamStart(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if !resume {
		if after, err = live.Log.Head(ctx); err != nil {
			return fmt.Errorf("api: stream: %w", err)
		}
	}
	cur, err := live.Log.Cursor(ctx, after)
	if errors.Is(err, eventstore.ErrUnknownPosition) {
		field := "after"
		if c.Request().Header.Get("Last-Event-ID") != "" {
			field = "Last-Event-ID"
		}
		return invalid(field, "%d names no event; use an id this stream or the API gave out", after)
	}
	if err != nil {
		return fmt.Errorf("api: stream: %w", err)
	}
	role := principal(c).Role
	heartbeat := live.Heartbeat
	if heartbeat <= 0 {
		heartbeat = DefaultStreamHeartbeat
	}

	lagged := false
	if live.Observer != nil {
		live.Observer.StreamOpened()
		defer func() { live.Observer.StreamClosed(lagged) }()
	}

	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	res.WriteHeader(http.StatusOK)
	w := &sseWriter{res: res, rc: http.NewResponseController(res), sent: after}
	// The first line also tells the client where the stream starts.
	w.printf("retry: %d\n: stream after %d\n\n", streamRetryMillis, after)
	if err := w.flush(); err != nil {
		return nil
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		changed := cur.Changed()
		evs, err := cur.Read(ctx, streamBatch)
		switch {
		case errors.Is(err, broadcast.ErrLagged):
			// Too slow for the live buffer: end the stream. The client
			// reconnects with the last id it got and reads the rest from
			// the store.
			lagged = true
			w.printf("event: lagged\nid: %d\ndata: {\"position\":%d}\n\n", cur.Position(), cur.Position())
			_ = w.flush()
			s.logger.Info("event stream client fell behind; disconnected", "position", cur.Position())
			return nil
		case err != nil:
			if ctx.Err() == nil {
				s.logger.Warn("event stream: read", "err", err)
			}
			return nil
		}
		for _, re := range evs {
			it, ok, err := streamItem(role, re)
			if err == nil && ok {
				err = w.event(it)
			}
			if err != nil {
				s.logger.Warn("event stream: event left out", "position", re.Position, "err", err)
			}
		}
		if len(evs) > 0 {
			if err := w.flush(); err != nil {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-live.Closing:
			return nil
		case <-changed:
		case <-tick.C:
			w.heartbeat(cur.Position())
			if err := w.flush(); err != nil {
				return nil
			}
		}
	}
}

// sseWriter writes the text/event-stream format (HTML Living Standard,
// "Server-sent events"), each flush under a write deadline of its own.
type sseWriter struct {
	res  *echo.Response
	rc   *http.ResponseController
	buf  []byte
	sent int64 // the last id sent
}

func (w *sseWriter) printf(format string, args ...any) {
	w.buf = fmt.Appendf(w.buf, format, args...)
}

// event writes one event; the JSON has no line breaks, so it is one data line.
func (w *sseWriter) event(it eventItem) error {
	data, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("api: stream: event %d: %w", it.Position, err)
	}
	w.buf = fmt.Appendf(w.buf, "id: %d\nevent: %s\ndata: %s\n\n", it.Position, it.Type, data)
	w.sent = it.Position
	return nil
}

// heartbeat writes a comment line; when events the role may not see moved
// the cursor on, it also moves the client's last event id past them (an
// "id" field without data dispatches nothing but sets the id a reconnect
// sends), so a reconnect does not read them again.
func (w *sseWriter) heartbeat(position int64) {
	w.buf = append(w.buf, ": heartbeat\n"...)
	if position != w.sent {
		w.buf = fmt.Appendf(w.buf, "id: %d\n", position)
		w.sent = position
	}
	w.buf = append(w.buf, '\n')
}

func (w *sseWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_ = w.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	_, err := w.res.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		return err
	}
	return w.rc.Flush()
}
