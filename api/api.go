// Package api is ledgerdesk's HTTP surface on Echo: health and readiness
// probes now, the REST API under /api/v1 as it grows. Errors leave it as RFC
// 9457 problem documents; internal details go to the log only.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// Options wires the server's dependencies; cmd fills them in.
type Options struct {
	Logger *slog.Logger
	// Ready reports whether the service can do its work: the store answers
	// and its schema is current. /readyz answers 503 with the reason otherwise.
	Ready func(ctx context.Context) error
	// BodyLimit caps request bodies, e.g. "1M".
	BodyLimit string
}

// New returns the configured Echo instance.
func New(opts Options) *echo.Echo {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BodyLimit == "" {
		opts.BodyLimit = "1M"
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = problemHandler(opts.Logger)
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
				return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
			}
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	return e
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// problemHandler turns every error into application/problem+json. Errors
// that are not *echo.HTTPError are internal: their text goes to the log,
// never into the response.
func problemHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p := Problem{Type: "about:blank", Status: http.StatusInternalServerError,
			Title: http.StatusText(http.StatusInternalServerError), Detail: "an internal error occurred; it has been logged"}
		var he *echo.HTTPError
		if errors.As(err, &he) {
			p.Status = he.Code
			p.Title = http.StatusText(he.Code)
			p.Detail = ""
			if msg, ok := he.Message.(string); ok && msg != p.Title {
				p.Detail = msg
			}
		} else {
			logger.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
		}
		var werr error
		if c.Request().Method == http.MethodHead {
			werr = c.NoContent(p.Status)
		} else {
			body, _ := json.Marshal(p) // a Problem always marshals
			werr = c.Blob(p.Status, "application/problem+json", body)
		}
		if werr != nil {
			logger.Warn("write problem response", "err", werr)
		}
	}
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
