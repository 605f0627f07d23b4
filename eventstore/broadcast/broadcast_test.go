package broadcast_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/broadcast"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
)

// waitDeadline is a ceiling for a loaded machine, not a latency expectation.
const waitDeadline = 30 * time.Second

func appendN(tb testing.TB, s eventstore.Store, from, n int) {
	tb.Helper()
	for i := from; i < from+n; i++ {
		_, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: fmt.Sprintf("s-%d", i%3),
			ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{{ID: fmt.Sprintf("e%03d", i), Type: "E",
				SchemaVersion: 1, Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}}})
		if err != nil {
			tb.Fatalf("Append() error = %v", err)
		}
	}
}

func ids(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("e%03d", from+i)
	}
	return out
}

func start(t *testing.T, s eventstore.Store, opts broadcast.Options) *broadcast.Broadcaster {
	t.Helper()
	b := broadcast.New(s.(broadcast.Store), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// readUntil reads c until it has n events or the deadline passes.
func readUntil(t *testing.T, c *broadcast.Cursor, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitDeadline)
	defer cancel()
	var got []string
	for len(got) < n {
		changed := c.Changed()
		evs, err := c.Read(ctx, 7)
		if err != nil {
			t.Fatalf("Read() after %d events: %v", len(got), err)
		}
		for _, e := range evs {
			got = append(got, e.ID)
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			t.Fatalf("got %d events %v before the deadline, want %d", len(got), got, n)
		case <-changed:
		case <-time.After(50 * time.Millisecond): // a cursor ahead of the ring reads the store again
		}
	}
	return got
}

func TestCursor_LiveEventsInOrderAndResumeFromAnyPosition(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s eventstore.Store) {
		appendN(t, s, 0, 10) // before the broadcaster starts: only reachable through the store
		b := start(t, s, broadcast.Options{BufferEvents: 5, PollInterval: 20 * time.Millisecond})
		ctx := context.Background()
		head, err := b.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		live, err := b.Cursor(ctx, head)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := 10; i < 30; i += 4 { // the ring holds 5: read as they come
			appendN(t, s, i, 4)
			got = append(got, readUntil(t, live, 4)...)
		}
		if diff := cmp.Diff(ids(10, 20), got); diff != "" {
			t.Errorf("live cursor (-want +got):\n%s", diff)
		}
		// The ring holds 5 events: a cursor from the start reads 25 from the
		// store and the rest from the ring, each once.
		all, err := b.Cursor(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(0, 30), readUntil(t, all, 30)); diff != "" {
			t.Errorf("cursor from the start (-want +got):\n%s", diff)
		}
		evs, err := s.ReadAll(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		mid, err := b.Cursor(ctx, evs[12].Position)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(13, 17), readUntil(t, mid, 17)); diff != "" {
			t.Errorf("cursor after the 13th event (-want +got):\n%s", diff)
		}
		if _, err := b.Cursor(ctx, evs[29].Position+1000); !errors.Is(err, eventstore.ErrUnknownPosition) {
			t.Errorf("Cursor(unknown position) error = %v, want ErrUnknownPosition", err)
		}
	})
}

func TestCursor_ASlowReaderLagsAloneAndResumesWhereItStopped(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, s eventstore.Store) {
		b := start(t, s, broadcast.Options{BufferEvents: 8, PollInterval: 20 * time.Millisecond})
		ctx := context.Background()
		head, err := b.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := b.Cursor(ctx, head)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := b.Cursor(ctx, head)
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, s, 0, 3)
		if diff := cmp.Diff(ids(0, 3), readUntil(t, slow, 3)); diff != "" {
			t.Fatalf("slow cursor before lagging (-want +got):\n%s", diff)
		}
		got := readUntil(t, fast, 3)
		for i := 3; i < 43; i += 4 { // the slow one reads nothing meanwhile
			appendN(t, s, i, 4)
			got = append(got, readUntil(t, fast, 4)...)
		}
		if diff := cmp.Diff(ids(0, 43), got); diff != "" {
			t.Errorf("fast cursor (-want +got):\n%s", diff)
		}
		if _, err := slow.Read(ctx, 10); !errors.Is(err, broadcast.ErrLagged) {
			t.Fatalf("slow Read() error = %v, want ErrLagged", err)
		}
		resumed, err := b.Cursor(ctx, slow.Position())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(3, 40), readUntil(t, resumed, 40)); diff != "" {
			t.Errorf("resumed cursor (-want +got):\n%s", diff)
		}
	})
}
