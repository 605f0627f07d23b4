package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/metrics"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

var _ api.StreamObserver = (*metrics.Metrics)(nil)

// subscribers are the durable subscribers serve runs, whose lag /metrics
// reports.
var subscribers = []string{ticketing.IntakeSubscriber, ticketing.OutboundSubscriber, projections.MailboxStatusName,
	projections.TicketsName, projections.UsersName, projections.LocationsName}

// newMetrics wires the Prometheus metrics over the store, the outbound
// queue and the OAuth connections' token health.
func newMetrics(st *store, tokens *oauth.Manager, logger *slog.Logger) (*metrics.Metrics, error) {
	lagLog, ok := st.Store.(metrics.Log)
	if !ok {
		return nil, fmt.Errorf("the %s store cannot tell its subscribers' lag", st.Kind)
	}
	return metrics.New(metrics.Options{
		Logger: logger, Now: time.Now, Log: lagLog, Subscribers: subscribers,
		OutboundMails: func(ctx context.Context) (map[string]int, error) { return ticketing.OutboundStatus(ctx, st) },
		TokenStates:   tokenStates(st, tokens),
		TokenStateNames: []string{domain.TokenStateNotConnected, domain.TokenStateOK, domain.TokenStateRefreshing,
			domain.TokenStateNeedsReconnect, domain.TokenStateError},
	})
}

// tokenStates lists every OAuth connection's token health, as
// GET /oauth-connections/{id} shows it.
func tokenStates(st *store, tokens *oauth.Manager) func(ctx context.Context) ([]metrics.TokenState, error) {
	return func(ctx context.Context) ([]metrics.TokenState, error) {
		conns, _, err := api.LoadOAuthConnections(ctx, st)
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(conns.ByID))
		for id := range conns.ByID {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		out := make([]metrics.TokenState, 0, len(ids))
		for _, id := range ids {
			h, err := tokens.Health(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("token health of connection %s: %w", id, err)
			}
			ts := metrics.TokenState{ConnectionID: id, State: h.State}
			if h.AccessTokenExpiresAt != nil {
				ts.ExpiresAt = *h.AccessTokenExpiresAt
			}
			out = append(out, ts)
		}
		return out, nil
	}
}
