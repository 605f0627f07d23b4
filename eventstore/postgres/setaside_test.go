package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// TestSubscribe_lostConnectionIsNotAnAttempt has the handler lose its
// connection (the server terminates the backend) more often than
// MaxAttempts: such failures are the store's, not the event's, so the
// event is handled once the connection is back instead of being set aside.
func TestSubscribe_lostConnectionIsNotAnAttempt(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	res, err := s.Append(ctx, eventstore.AppendRequest{Stream: "lost", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{newEvent("lost-1")}})
	if err != nil {
		t.Fatal(err)
	}
	const losses = 4
	var calls atomic.Int32
	h := func(ctx context.Context, tx eventstore.Tx, e eventstore.RecordedEvent) error {
		if calls.Add(1) > losses {
			return nil
		}
		if _, err := tx.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`); err != nil {
			return fmt.Errorf("handle %s: %w", e.ID, err)
		}
		return errors.New("the connection survived pg_terminate_backend")
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(sctx, "survivor", h, eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond,
			MaxAttempts: 2, SetAside: storetest.SetAsideCodec{}})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := s.Reached(ctx, "survivor", res.LastPosition)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for the subscriber to handle the event; handler calls: %d", calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe() after cancel = %v, want context.Canceled", err)
	}
	if n := calls.Load(); n != losses+1 {
		t.Errorf("handler calls = %d, want %d lost connections and then the one that worked", n, losses+1)
	}
	aside, err := s.ReadStream(ctx, storetest.SetAsideStream("survivor"), 0, 0)
	if err != nil || len(aside) != 0 {
		t.Errorf("set-aside records = %d, %v; want none: a lost connection is not the event's fault", len(aside), err)
	}
}
