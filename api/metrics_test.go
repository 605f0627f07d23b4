package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ledgerdesk/ledgerdesk/adapters/metrics"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// withMetrics wires the Prometheus metrics over the env's store.
func withMetrics(tb testing.TB) envOption {
	return func(o *Options, _ projections.Reader) {
		m, err := metrics.New(metrics.Options{Now: time.Now, Log: o.Store.(metrics.Log),
			Subscribers: []string{projections.TicketsName}})
		if err != nil {
			tb.Fatal(err)
		}
		o.Metrics = m.Handler()
	}
}

func TestMetrics_OnlyForMetricsTokensAndAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, backends()[0], withMetrics(t))
	for _, role := range []domain.Role{domain.RoleMetrics, domain.RoleAdmin} {
		resp, raw := e.do(t, http.MethodGet, "/metrics", e.tokens[role], nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics as %s = %d %s", role, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		lag := families["ledgerdesk_subscriber_lag_events"]
		if lag == nil || len(lag.GetMetric()) != 1 || lag.GetMetric()[0].GetLabel()[0].GetValue() != projections.TicketsName {
			t.Errorf("ledgerdesk_subscriber_lag_events = %v, want one series for %s", lag, projections.TicketsName)
		}
	}
	for _, role := range rolesAll[1:] {
		e.problem(t, http.MethodGet, "/metrics", e.tokens[role], nil, http.StatusForbidden)
	}
	e.problem(t, http.MethodGet, "/api/v1/tickets", e.tokens[domain.RoleMetrics], nil, http.StatusForbidden)
}
