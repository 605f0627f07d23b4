package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAppended_closedByCommitsThatAppend(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	ev := eventstore.NewEvent{Type: "Happened", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}

	ch := s.Appended()
	if err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if closed(ch) {
		t.Fatalf("Appended() closed by a commit that appended nothing")
	}
	if err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{ev}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Fatalf("Appended() not closed by Update that appended")
	}

	ch = s.Appended()
	if closed(ch) {
		t.Fatalf("Appended() returned a closed channel after the wake-up")
	}
	if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{ev}}); err != nil {
		t.Fatal(err)
	}
	if !closed(ch) {
		t.Fatalf("Appended() not closed by Append")
	}

	ch = s.Appended()
	errRollback := errors.New("roll back")
	_ = s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		if _, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "c", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{ev}}); err != nil {
			return err
		}
		return errRollback
	})
	if closed(ch) {
		t.Fatalf("Appended() closed by an Update that rolled back")
	}
}

// A subscriber polling once an hour still gets, at once, what this store
// commits: an Append, and the events another subscriber's handler appends.
func TestSubscribe_wokenByThisStoresCommits(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hour := eventstore.SubscribeOptions{PollInterval: time.Hour}
	answer := func(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if e.Type != "Asked" {
				continue
			}
			if _, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "answer-" + e.Stream, ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{{Type: "Answered", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}}}); err != nil {
				return err
			}
		}
		return nil
	}
	answered := make(chan string, 10)
	listen := func(_ context.Context, _ eventstore.Tx, evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if e.Type == "Answered" {
				answered <- e.Stream
			}
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() { errs <- s.SubscribeBatch(ctx, "answerer", answer, hour) }()
	go func() { errs <- s.SubscribeBatch(ctx, "listener", listen, hour) }()
	// Let both subscribers find the log empty and wait.
	for _, name := range []string{"answerer", "listener"} {
		waitGroupRow(ctx, t, s, name)
	}
	time.Sleep(100 * time.Millisecond)
	for _, stream := range []string{"q1", "q2"} {
		if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{{Type: "Asked", SchemaVersion: 1, Payload: json.RawMessage(`{}`)}}}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-answered:
			if got != "answer-"+stream {
				t.Fatalf("listener got %s, want answer-%s", got, stream)
			}
		case err := <-errs:
			t.Fatalf("subscriber ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("the answer to %s was not delivered within 20 s though subscribers are woken by commits (poll interval 1h)", stream)
		}
	}
}

// waitGroupRow waits until the subscriber has registered its group, so
// that it has polled the log at least once.
func waitGroupRow(ctx context.Context, t *testing.T, s interface {
	Update(context.Context, func(context.Context, eventstore.Tx) error) error
}, name string) {
	t.Helper()
	for ctx.Err() == nil {
		var n int
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM subscription_offsets WHERE consumer_group = $1`, name).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("subscriber %s did not register", name)
}
