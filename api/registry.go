package api

import (
	"context"
	"fmt"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// foldStream reads a registry stream (accounts, settings) from its first
// event and folds it into s, returning the state and the stream's version,
// which a write then expects.
func foldStream[S any](ctx context.Context, store eventstore.Store, stream string, s S, evolve func(S, domain.Event) S) (S, int64, error) {
	evs, err := store.ReadStream(ctx, stream, 1, 0)
	if err != nil {
		return s, 0, fmt.Errorf("api: load %s: %w", stream, err)
	}
	var version int64
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return s, 0, fmt.Errorf("api: load %s: event %d: %w", stream, re.StreamVersion, err)
		}
		s = evolve(s, ev)
		version = re.StreamVersion
	}
	return s, version, nil
}
