package projections_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/embedded"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/eventstore/storetest"
	"github.com/ledgerdesk/ledgerdesk/projections"
)

// Both stores give a rebuild their one-query read path.
var (
	_ projections.LogScanner = (*postgres.Store)(nil)
	_ projections.LogScanner = (*embedded.Store)(nil)
)

// TestLogScanner_ReadsWhatReadAllReads wants from ScanLog the events of
// ReadAll, in the same order, with the fields a rebuild reads, and the
// payloads of the streams it names only when it names some.
func TestLogScanner_ReadsWhatReadAllReads(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, store eventstore.Store) {
		ctx := context.Background()
		for i := range 7 {
			req := eventstore.AppendRequest{Stream: fmt.Sprintf("s-%d", i%3), ExpectedVersion: eventstore.AnyVersion}
			for j := range i%3 + 1 {
				req.Events = append(req.Events, eventstore.NewEvent{Type: fmt.Sprintf("T%d", j), SchemaVersion: 1 + j,
					Payload:  []byte(fmt.Sprintf(`{"i":%d,"s":"Grüße \u003cp\u003e"}`, i)),
					Metadata: eventstore.Metadata{Actor: "a", CorrelationID: "c", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}})
			}
			if _, err := store.Append(ctx, req); err != nil {
				t.Fatalf("Append() error = %v", err)
			}
		}
		var want []eventstore.RecordedEvent
		for _, e := range readAll(t, store) {
			e.ID, e.Metadata = "", eventstore.Metadata{}
			want = append(want, e)
		}
		// ScanLog holds back what ReadAll would (see readAll): scan until
		// it has every event, or for 10 s
		scan := func(payloadStreams []string) ([]eventstore.RecordedEvent, int) {
			var got []eventstore.RecordedEvent
			batches := 0
			for deadline := time.Now().Add(10 * time.Second); ; {
				got, batches = nil, 0
				err := store.(projections.LogScanner).ScanLog(ctx, 5, payloadStreams, func(evs []eventstore.RecordedEvent) error {
					batches++
					got = append(got, evs...)
					return nil
				})
				if err != nil {
					t.Fatalf("ScanLog() error = %v", err)
				}
				if len(got) >= len(want) || time.Now().After(deadline) {
					return got, batches
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		got, batches := scan(nil)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ScanLog() events (-ReadAll +ScanLog):\n%s", diff)
		}
		if len(got) != 13 || batches != 3 {
			t.Errorf("ScanLog() gave %d events in %d batches, want 13 in 3", len(got), batches)
		}

		// every event, the payloads of the named streams only
		prefixes := []string{"s-1", "x-", "s-2x"}
		var wantSome []eventstore.RecordedEvent
		for _, e := range want {
			if e.Stream != "s-1" {
				e.Payload = nil
			}
			wantSome = append(wantSome, e)
		}
		got, _ = scan(prefixes)
		if diff := cmp.Diff(wantSome, got); diff != "" {
			t.Errorf("ScanLog(%q) events (-want +got):\n%s", prefixes, diff)
		}

		stop := errors.New("stop")
		calls := 0
		err := store.(projections.LogScanner).ScanLog(ctx, 5, nil, func([]eventstore.RecordedEvent) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("ScanLog() with fn failing = %v after %d calls, want fn's error after 1", err, calls)
		}
	})
}
