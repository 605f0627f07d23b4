package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

func TestAppend_ManyNewStreamsInOneStatement(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	if err := migrations.ApplyPostgres(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	s, err := New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	reqs := func(prefix string, n int) []eventstore.AppendRequest {
		out := make([]eventstore.AppendRequest, n)
		for i := range out {
			out[i] = eventstore.AppendRequest{Stream: fmt.Sprintf("%s-%d", prefix, i), ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{{Type: "A", SchemaVersion: 1, Payload: []byte(`{"i":1}`)}, {Type: "B", SchemaVersion: 1}}}
		}
		return out
	}
	ctx := context.Background()
	res, err := s.Append(ctx, reqs("new", 50)...)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.StreamVersions) != 50 || res.StreamVersions["new-7"] != 2 || res.LastPosition == 0 {
		t.Errorf("AppendResult = %d streams, new-7 at %d, last %d", len(res.StreamVersions), res.StreamVersions["new-7"], res.LastPosition)
	}
	evs, _ := s.ReadStream(ctx, "new-7", 1, 0)
	if len(evs) != 2 || evs[0].Type != "A" || evs[1].StreamVersion != 2 {
		t.Errorf("new-7 = %+v", evs)
	}
	// One stream of the next batch exists already: the whole batch is
	// refused, the conflict names that stream, and nothing is appended.
	batch := append(reqs("second", 20), eventstore.AppendRequest{Stream: "new-3", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{{Type: "C", SchemaVersion: 1}}})
	_, err = s.Append(ctx, batch...)
	var vc *eventstore.VersionConflictError
	if !errors.As(err, &vc) || vc.Stream != "new-3" {
		t.Fatalf("Append with an existing stream = %v, want a conflict on new-3", err)
	}
	if v, _ := s.StreamVersion(ctx, "second-0"); v != 0 {
		t.Errorf("second-0 is at %d after the refused batch, want 0", v)
	}
}
