package main

import (
	"context"
	"fmt"
	"time"

	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// legacyResourcesActor is the actor of the events that turn resource
// strings of earlier versions into resources.
const legacyResourcesActor = "system:legacy-resource-migration"

// migrateLegacyResources makes every resource string that inbound and
// outgoing accounts name a resource with that id
// (domain.MigrateLegacyResources), at every start; once all are
// resources it does nothing. The resource stream is appended at the
// version read, so a concurrent API write makes it fail and the next start
// plans again.
func migrateLegacyResources(ctx context.Context, store eventstore.Store, now func() time.Time) (int, error) {
	in, _, err := api.LoadInboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	out, _, err := api.LoadOutboundAccounts(ctx, store)
	if err != nil {
		return 0, err
	}
	res, version, err := api.LoadResources(ctx, store)
	if err != nil {
		return 0, err
	}
	evs := domain.MigrateLegacyResources(res, in, out, legacyResourcesActor)
	if len(evs) == 0 {
		return 0, nil
	}
	ne, err := encodeEventsAs(evs, now, legacyResourcesActor)
	if err != nil {
		return 0, err
	}
	if _, err := store.Append(ctx, eventstore.AppendRequest{Stream: domain.ResourcesStream, ExpectedVersion: version, Events: ne}); err != nil {
		return 0, fmt.Errorf("make legacy resource names into resources: %w", err)
	}
	return len(evs), nil
}
