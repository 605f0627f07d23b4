package api

import (
	"github.com/labstack/echo/v4"
)

// MetricsPath is where Prometheus scrapes, with a token of role metrics
// (or admin): outside /api/v1, where scrapers look by default.
const MetricsPath = "/metrics"

func (s *server) metrics(c echo.Context) error {
	if s.opts.Metrics == nil {
		return unavailable("metrics")
	}
	s.opts.Metrics.ServeHTTP(c.Response(), c.Request())
	return nil
}
