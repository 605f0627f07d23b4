package embedded_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// waitFor polls cond until it holds or 30 s pass; the deadline only stops a
// broken test, it asserts nothing about speed.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustCheckpoint(tb testing.TB, s eventstore.Store, name string) int64 {
	tb.Helper()
	cp, err := s.Checkpoint(context.Background(), name)
	if err != nil {
		tb.Fatalf("Checkpoint(%q) error = %v", name, err)
	}
	return cp
}

func newEvent(n int) eventstore.NewEvent {
	return eventstore.NewEvent{Type: "Happened", SchemaVersion: 1, Payload: []byte(fmt.Sprintf(`{"n":%d}`, n))}
}

func TestOpenDB(t *testing.T) {
	t.Parallel()
	db, err := embedded.OpenDB(filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatalf("OpenDB() error = %v", err)
	}
	defer db.Close()
	var mode string
	var timeout, fk int
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`PRAGMA busy_timeout`).Scan(&timeout); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || timeout <= 0 || fk != 1 {
		t.Errorf("journal_mode, busy_timeout, foreign_keys = %q, %d, %d; want wal, > 0, 1", mode, timeout, fk)
	}

	for _, bad := range []string{"", "a?mode=memory", "b#c"} {
		if db, err := embedded.OpenDB(bad); err == nil {
			_ = db.Close()
			t.Errorf("OpenDB(%q) error = nil, want an error", bad)
		}
	}
}

func TestStore_Subscribe(t *testing.T) {
	t.Parallel()
	t.Run("a local commit wakes a subscriber that would poll only hourly", func(t *testing.T) {
		t.Parallel()
		s := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- s.Subscribe(ctx, "sleepy", func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error { return nil },
				eventstore.SubscribeOptions{PollInterval: time.Hour})
		}()
		defer func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe() after cancel = %v, want context.Canceled", err)
			}
		}()
		var last int64
		for i := range 3 {
			res, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: "s", ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{newEvent(i)}})
			if err != nil {
				t.Fatal(err)
			}
			last = res.LastPosition
			waitFor(t, "the wake-up after a commit", func() bool { return mustCheckpoint(t, s, "sleepy") == last })
		}
	})

	t.Run("closing the store ends subscriptions with ErrClosed", func(t *testing.T) {
		t.Parallel()
		s := openStore(t)
		done := make(chan error, 1)
		go func() {
			done <- s.Subscribe(context.Background(), "any", func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error { return nil },
				eventstore.SubscribeOptions{})
		}()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Subscribe() after Close = %v, want ErrClosed", err)
		}
	})

	t.Run("invalid arguments are refused", func(t *testing.T) {
		t.Parallel()
		s := openStore(t)
		h := func(context.Context, eventstore.Tx, eventstore.RecordedEvent) error { return nil }
		if err := s.Subscribe(context.Background(), "", h, eventstore.SubscribeOptions{}); err == nil {
			t.Errorf("Subscribe(empty name) error = nil, want an error")
		}
		if err := s.Subscribe(context.Background(), "x", nil, eventstore.SubscribeOptions{}); err == nil {
			t.Errorf("Subscribe(nil handler) error = nil, want an error")
		}
	})
}

// TestStore_TwoProcesses opens one file through two *sql.DB, as two
// ledgerdesk processes would: their appends to one stream interleave without
// SQLITE_BUSY or lost versions (writes take the lock at BEGIN), and a
// subscriber in one sees the other's events by polling.
func TestStore_TwoProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.db")
	open := func() *embedded.Store {
		db, err := embedded.OpenDB(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := migrations.ApplySQLite(context.Background(), db); err != nil {
			t.Fatal(err)
		}
		s := embedded.New(db, nil)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	a, b := open(), open()

	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var seen []int64
	done := make(chan error, 1)
	go func() {
		done <- a.Subscribe(ctx, "watcher", func(_ context.Context, _ eventstore.Tx, e eventstore.RecordedEvent) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, e.StreamVersion)
			return nil
		}, eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond, BatchSize: 10})
	}()

	const perWriter = 50
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w, s := range []*embedded.Store{a, a, b, b} {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: "shared",
					ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{newEvent(i)}}); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	const total = 4 * perWriter
	waitFor(t, "the subscriber to see both processes' events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= total
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe() = %v, want context.Canceled", err)
	}
	want := make([]int64, total)
	for i := range want {
		want[i] = int64(i + 1)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("stream versions seen (-want +got):\n%s", diff)
	}
}

func TestTx_QueryRow(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	err := s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		var n int
		return tx.QueryRow(ctx, `SELECT 1 FROM events WHERE stream = $1`, "none").Scan(&n)
	})
	if !errors.Is(err, eventstore.ErrNoRows) || !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("Scan() of no rows error = %v, want eventstore.ErrNoRows wrapping sql.ErrNoRows", err)
	}
}
