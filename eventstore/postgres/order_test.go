package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
)

func newEvent(id string) eventstore.NewEvent {
	return eventstore.NewEvent{ID: id, Type: "Happened", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}
}

func readAllIDs(tb testing.TB, s eventstore.Store) []string {
	tb.Helper()
	evs, err := s.ReadAll(context.Background(), 0, 1000)
	if err != nil {
		tb.Fatalf("ReadAll() error = %v", err)
	}
	out := []string{}
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

// A transaction that takes its position after a later one committed must
// still come first in global order, and nothing after it may be read while
// it runs: otherwise a reader resuming from its last position skips it.
func TestReadAll_lateCommitIsNotSkipped(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "early", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("before")}}); err != nil {
		t.Fatal(err)
	}

	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			// Take a transaction id now; append only after "late" committed.
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE hold (x int)`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO hold VALUES (1)`); err != nil {
				return err
			}
			close(started)
			<-release
			_, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "slow", ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{newEvent("slow")}})
			return err
		})
	}()
	<-started
	res, err := s.Append(ctx, eventstore.AppendRequest{Stream: "fast", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("fast")}})
	if err != nil {
		t.Fatal(err)
	}

	if diff := cmp.Diff([]string{"before"}, readAllIDs(t, s)); diff != "" {
		t.Errorf("ReadAll() while an older transaction runs (-want +got):\n%s", diff)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Update() error = %v", err)
	}
	if diff := cmp.Diff([]string{"before", "slow", "fast"}, readAllIDs(t, s)); diff != "" {
		t.Errorf("ReadAll() after the older transaction committed (-want +got):\n%s", diff)
	}
	slow, err := s.ReadStream(ctx, "slow", 0, 0)
	if err != nil || len(slow) != 1 {
		t.Fatalf("ReadStream(slow) = %v, %v", slow, err)
	}
	if slow[0].Position <= res.LastPosition {
		t.Errorf("slow position %d <= fast position %d: the test did not make positions commit out of order",
			slow[0].Position, res.LastPosition)
	}
	// Resuming after "slow" (the higher position) still yields "fast".
	after, err := s.ReadAll(ctx, slow[0].Position, 10)
	if err != nil || len(after) != 1 || after[0].ID != "fast" {
		t.Errorf("ReadAll(after slow) = %v, %v; want [fast]", after, err)
	}
}

// A transaction in another database of the cluster cannot write to this
// events table, so it must not hold readers back, though it holds back
// pg_snapshot_xmin.
func TestReadAll_otherDatabasesDoNotStallReaders(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	other, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close(ctx) }()
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // takes an xid
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("a-1")}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a-1"}, readAllIDs(t, s)); diff != "" {
		t.Errorf("ReadAll() while another database has an open transaction (-want +got):\n%s", diff)
	}
	// A subscriber must see it too.
	got := make(chan string, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = s.Subscribe(sctx, "watcher", func(_ context.Context, _ eventstore.Tx, e eventstore.RecordedEvent) error {
			select {
			case got <- e.ID:
			default:
			}
			return nil
		}, eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond})
	}()
	select {
	case id := <-got:
		if id != "a-1" {
			t.Errorf("subscriber got %q, want a-1", id)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("subscriber saw nothing while another database had an open transaction")
	}
}

func TestAppend_concurrentWritersOfOneStream(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const writers = 8
	tests := []struct {
		name     string
		expected int64
		wantOK   int
	}{
		{"at the same expected version exactly one wins", eventstore.NoStream, 1},
		{"at AnyVersion all of them append", eventstore.AnyVersion, writers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream := fmt.Sprintf("contended-%d", tc.expected)
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for i := range writers {
				wg.Go(func() {
					_, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: tc.expected,
						Events: []eventstore.NewEvent{newEvent(fmt.Sprintf("%s-%d", stream, i))}})
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			ok := 0
			for err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, eventstore.ErrVersionConflict):
					t.Errorf("Append() error = %v, want nil or a version conflict", err)
				}
			}
			if ok != tc.wantOK {
				t.Errorf("%d appends succeeded, want %d", ok, tc.wantOK)
			}
			if v, err := s.StreamVersion(ctx, stream); err != nil || v != int64(tc.wantOK) {
				t.Errorf("StreamVersion() = %d, %v; want %d", v, err, tc.wantOK)
			}
		})
	}
}

func TestAppend_duplicateEventIDIsRefused(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{newEvent("mail-1")}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{newEvent("mail-1")}})
	if err == nil || errors.Is(err, eventstore.ErrVersionConflict) {
		t.Errorf("Append() of a stored id error = %v, want a non-conflict error", err)
	}
}

func TestTx_AppendConflictOfSeveralStreamsKeepsTheTransaction(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("b-1")}}); err != nil {
		t.Fatal(err)
	}
	err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Append(ctx,
			eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{newEvent("a-1")}},
			eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{newEvent("b-x")}})
		if !errors.Is(err, eventstore.ErrVersionConflict) {
			return fmt.Errorf("Tx.Append() error = %w, want a version conflict", err)
		}
		// The caller handles the conflict and goes on in the same transaction.
		_, err = tx.Append(ctx, eventstore.AppendRequest{Stream: "c", ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{newEvent("c-1")}})
		return err
	})
	if err != nil {
		t.Fatalf("Update() error = %v", err)
	}
	if diff := cmp.Diff([]string{"b-1", "c-1"}, readAllIDs(t, s)); diff != "" {
		t.Errorf("ReadAll() (-want +got):\n%s", diff)
	}
}

func TestReached_unknownPosition(t *testing.T) {
	s := newStore(t)
	if _, err := s.Reached(context.Background(), "x", 12345); !errors.Is(err, eventstore.ErrUnknownPosition) {
		t.Errorf("Reached(unknown position) error = %v, want ErrUnknownPosition", err)
	}
}

func TestSubscribe_closeStopsSubscriptions(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("a-1")}}); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(ctx, "closer", func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error {
			select {
			case seen <- struct{}{}:
			default:
			}
			return nil
		}, eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond})
	}()
	<-seen
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if err := <-done; !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Subscribe() after Close = %v, want ErrClosed", err)
	}
	err := s.Subscribe(ctx, "late", func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error { return nil },
		eventstore.SubscribeOptions{})
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Subscribe() on a closed store = %v, want ErrClosed", err)
	}
}

// Stopping a subscription right after its handler saw the last event must
// commit that event's offset: a batch whose acks are all in commits on a
// graceful stop rather than being rolled back and delivered again.
func TestSubscribe_stopCommitsWhatWasHandled(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	var last int64
	for round := range 5 {
		res, err := s.Append(ctx, eventstore.AppendRequest{Stream: fmt.Sprintf("s-%d", round), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{newEvent(fmt.Sprintf("%d-1", round)), newEvent(fmt.Sprintf("%d-2", round))}})
		if err != nil {
			t.Fatal(err)
		}
		last = res.LastPosition
		seen := make(chan struct{})
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.Subscribe(sctx, "stopper", func(_ context.Context, tx eventstore.Tx, e eventstore.RecordedEvent) error {
				if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
					return err
				}
				if e.Position == last {
					close(seen)
				}
				return nil
			}, eventstore.SubscribeOptions{BatchSize: 100, PollInterval: 10 * time.Millisecond})
		}()
		<-seen
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe() after cancel = %v, want context.Canceled", err)
		}
		if cp, err := s.Checkpoint(ctx, "stopper"); err != nil || cp != last {
			t.Fatalf("round %d: Checkpoint() after stopping = %d, %v; want the last handled position %d", round, cp, err, last)
		}
	}
}

func TestAppend_emptyPayloadIsStoredAsNoPayload(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{{Type: "Empty", SchemaVersion: 1}, {Type: "Null", SchemaVersion: 1, Payload: json.RawMessage(`null`)}}}); err != nil {
		t.Fatalf("Append() error = %v", err)
	}
	got, err := s.ReadStream(ctx, "a", 0, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("ReadStream() = %v, %v", got, err)
	}
	if got[0].Payload != nil {
		t.Errorf("payload of an event appended without one = %q, want nil", got[0].Payload)
	}
	if string(got[1].Payload) != "null" {
		t.Errorf("payload JSON null = %q, want null", got[1].Payload)
	}
}
