package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// inlineOAuthActor is the actor of the events that move accounts' inline
// OAuth fields onto connections.
const inlineOAuthActor = "system:oauth-inline-migration"

// migrateInlineOAuth moves the OAuth fields that accounts stored before
// OAuth connections existed onto connections (domain.MigrateInlineOAuth).
// It runs at every start and does nothing once no account has them. Each
// registry is appended at the version read, so an API write in between
// makes it fail; the next start plans again and finds the same ids.
func migrateInlineOAuth(ctx context.Context, store eventstore.Store, now func() time.Time) (int, error) {
	in, inVersion, err := api.LoadInboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	out, outVersion, err := api.LoadOutboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	conns, connVersion, err := api.LoadOAuthConnections(ctx, store)
	if err != nil {
		return 0, err
	}
	m := domain.MigrateInlineOAuth(in, out, conns, now().UTC(), inlineOAuthActor)
	if m.Empty() {
		return 0, nil
	}
	var reqs []eventstore.AppendRequest
	add := func(stream string, version int64, evs []domain.Event) error {
		if len(evs) == 0 {
			return nil
		}
		ne, err := encodeEventsAs(evs, now, inlineOAuthActor)
		if err != nil {
			return err
		}
		reqs = append(reqs, eventstore.AppendRequest{Stream: stream, ExpectedVersion: version, Events: ne})
		return nil
	}
	var errs []error
	errs = append(errs, add(domain.OAuthConnectionsStream, connVersion, eventsOf(m.Connections)))
	for _, a := range m.Authorizations {
		errs = append(errs, add(domain.OAuthTokenStream(a.ConnectionID), eventstore.NoStream, []domain.Event{a}))
	}
	errs = append(errs, add(api.AccountsStream, inVersion, eventsOf(m.Inbound)))
	errs = append(errs, add(ticketing.OutboundAccountsStream, outVersion, eventsOf(m.Outbound)))
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	// One append: the connections and the accounts that name them commit
	// together or not at all.
	if _, err := store.Append(ctx, reqs...); err != nil {
		return 0, fmt.Errorf("move inline OAuth fields onto connections: %w", err)
	}
	return len(m.Inbound) + len(m.Outbound), nil
}

func eventsOf[E domain.Event](evs []E) []domain.Event {
	out := make([]domain.Event, len(evs))
	for i, e := range evs {
		out[i] = e
	}
	return out
}

// oauthPort adapts the manager to what the API needs of it.
func oauthPort(m *oauth.Manager) api.OAuth {
	return api.OAuth{
		Authorize: func(ctx context.Context, connectionID, actor string) (api.OAuthConsent, error) {
			c, err := m.Authorize(ctx, connectionID, actor)
			return api.OAuthConsent{AuthorizationURL: c.URL, RedirectURL: c.RedirectURL, ExpiresAt: c.ExpiresAt}, err
		},
		Callback: func(ctx context.Context, query url.Values) (string, error) {
			res, err := m.Callback(ctx, query)
			return res.Connection.ID, err
		},
		Health: func(ctx context.Context, connectionID string) (api.OAuthHealth, error) {
			h, err := m.Health(ctx, connectionID)
			return api.OAuthHealth{TokenState: h.State, AccessTokenExpiresAt: h.AccessTokenExpiresAt, LastRefreshAt: h.LastRefreshAt,
				LastError: h.LastError, ConnectedAt: h.ConnectedAt}, err
		},
		BadInput: func(err error) bool {
			return errors.Is(err, oauth.ErrNotDelegated) || errors.Is(err, oauth.ErrNoPublicURL) ||
				errors.Is(err, oauth.ErrConsentState) || errors.Is(err, oauth.ErrConsentRefused)
		},
	}
}
