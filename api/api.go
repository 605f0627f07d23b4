// Package api is ledgerdesk's HTTP surface on Echo: health and readiness
// probes, and the REST API under /api/v1 (JSON, described by the OpenAPI 3
// document served at /api/v1/openapi.json). Every route under /api/v1 needs
// a bearer token whose role the route table (routes.go) allows. Errors leave
// it as RFC 9457 problem documents; internal details go to the log only.
//
// Writes answer with the global position of their last event (field
// "position" and header Ledgerdesk-Position); reads of projections accept
// ?min_position= and wait briefly until the projection has processed it.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// Options wires the server's dependencies; cmd fills them in.
type Options struct {
	Logger *slog.Logger
	// Ready reports whether the service can do its work: the store answers
	// and its schema is current. /readyz answers 503 "not ready" otherwise;
	// the reason (a database's words, a host) goes to the log only, since
	// /readyz needs no token.
	Ready func(ctx context.Context) error
	// BodyLimit caps request bodies, e.g. "1M" (the default).
	BodyLimit string

	// Store is the event store; without it only /healthz and /readyz are
	// served.
	Store eventstore.Store
	// Secrets seals passwords, client secrets and refresh tokens before they
	// enter an event. Without it, writes that carry a secret answer 503.
	Secrets *secretbox.Box
	// AdminToken (LEDGERDESK_ADMIN_TOKEN) authenticates as admin, to issue
	// the first tokens. Empty: no bootstrap token.
	AdminToken string
	// Now is the clock for event metadata [time.Now].
	Now func() time.Time
	// PollNow asks the scheduler to poll an account now; it fails for an
	// account that is not being polled. Nil: poll answers 503.
	PollNow func(accountID string) error
	// Check connects and logs in to an account (secrets still sealed)
	// without importing. Nil: check answers 503.
	Check func(ctx context.Context, a domain.InboundAccount) error
	// CheckOutbound checks an outgoing account and sends its test mail.
	// Nil: the outgoing check answers 503.
	CheckOutbound CheckOutbound
	// MailboxesChanged tells the fetch scheduler that inbound accounts or
	// the settings it reads were written, and returns once it has taken
	// them on (ingest.Scheduler.Reload): a created or enabled account can
	// be polled at once, a disabled or deleted one has stopped. Nil: the
	// scheduler finds out on its own refresh.
	MailboxesChanged func(ctx context.Context) error
	// MailboxLiveness says what the scheduler knows of an account's latest
	// poll, which is recorded as an event only when it tells something new
	// (GET /mailboxes: last_checked_at, consecutive_failures). Nil, or
	// false for an account, leaves the view's values.
	MailboxLiveness func(accountID string) (MailboxLiveness, bool)
	// Projections is what the read side needs.
	Projections Projections
	// Commands runs the agents' ticket commands (POST /tickets/{id}/...);
	// nil answers 503.
	Commands *ticketing.Commands
	// Directory runs an admin's writes to users and locations and reads
	// users for the checks of resources and fallback users; nil answers
	// 503.
	Directory *ticketing.Directory
	// Bodies serves article bodies, attachments, inline images and .eml
	// downloads (bodies.go).
	Bodies MailBodies
	// OAuth runs the delegated consent and reports token health (oauth.go);
	// nil functions answer 503 (Health: the state the events imply).
	OAuth OAuth
	// Metrics serves GET /metrics (the Prometheus text format) to admins
	// and metrics tokens; nil answers 503.
	Metrics http.Handler
	// Live serves GET /stream, the log's new events as Server-Sent Events.
	Live Live
	// AuthFailureLimit is how many requests with an unknown, revoked or
	// expired token one client address may make per minute; after that
	// every request from it answers 429 until the minute is over. 0 takes
	// DefaultAuthFailureLimit; negative: no limit.
	AuthFailureLimit int
}

// Projections are the read models the API serves.
type Projections struct {
	// MailboxStatus serves GET /mailboxes; nil answers 503. Its subscriber
	// must be running (MailboxStatus.Run) for min_position to be reached.
	MailboxStatus *projections.MailboxStatus
	// Tickets, Users and Locations serve GET /tickets, /users and
	// /locations; nil answers 503. Their Run must be running for
	// min_position to be reached.
	Tickets   *projections.Tickets
	Users     *projections.Users
	Locations *projections.Locations
	// Wait bounds how long a read with min_position waits for a projection
	// [projections.DefaultWait]. A read that gives up is served anyway, with
	// the header Ledgerdesk-Caught-Up: false.
	Wait time.Duration
}

// New returns the configured Echo instance.
func New(opts Options) *echo.Echo {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BodyLimit == "" {
		opts.BodyLimit = "1M"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Projections.Wait <= 0 {
		opts.Projections.Wait = projections.DefaultWait
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = problemHandler(opts.Logger, opts.BodyLimit)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		opts.Logger.Error("panic in handler", "path", c.Path(), "err", err, "stack", string(stack))
		return err
	}}))
	e.Use(middleware.BodyLimit(opts.BodyLimit))
	e.Use(requestLog(opts.Logger))

	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 5*time.Second)
		defer cancel()
		if opts.Ready != nil {
			if err := opts.Ready(ctx); err != nil {
				opts.Logger.Warn("not ready", "err", err)
				return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			}
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	if opts.Store != nil {
		auth := NewAuthenticator(opts.Store, opts.AdminToken)
		auth.now, auth.logger = opts.Now, opts.Logger
		limit := opts.AuthFailureLimit
		if limit == 0 {
			limit = DefaultAuthFailureLimit
		}
		auth.failures = newFailureLimiter(limit, time.Minute, opts.Now)
		s := &server{opts: opts, store: opts.Store, auth: auth, logger: opts.Logger}
		for _, r := range s.routes() {
			e.Add(r.Method, r.Path, r.Handler, s.auth.requireRoles(r.Roles...))
		}
		// The provider sends the person's browser here after consent; no
		// API token comes with it, the single-use state authenticates it.
		e.GET(OAuthCallbackPath, s.oauthCallback)
	}
	return e
}

// server holds what the /api/v1 handlers share.
type server struct {
	opts   Options
	store  eventstore.Store
	auth   *Authenticator
	logger *slog.Logger
}

func requestLog(logger *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			logger.Debug("request", "method", c.Request().Method, "path", c.Request().URL.Path,
				"status", c.Response().Status, "duration", time.Since(start))
			return nil
		}
	}
}
