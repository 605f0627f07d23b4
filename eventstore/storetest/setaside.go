package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// The suite's own event types for set-aside records and retry requests
// (the application's are the domain's; the store knows neither).
const (
	setAsideType = "StoretestEventSetAside"
	retryType    = "StoretestEventRetried"
)

// setAsideRecord is the payload of a setAsideType event.
type setAsideRecord struct {
	Subscriber string `json:"subscriber"`
	Position   int64  `json:"position"`
	EventID    string `json:"event_id"`
	EventType  string `json:"event_type"`
	Stream     string `json:"stream"`
	Attempts   int    `json:"attempts"`
	Error      string `json:"error"`
}

// SetAsideCodec is the suite's eventstore.SetAsideCodec, for backends'
// own tests too: records go to the stream SetAsideStream(subscriber), and
// retry requests are eventstore.Retry as JSON.
type SetAsideCodec struct{}

var _ eventstore.SetAsideCodec = SetAsideCodec{}

// SetAsideStream is the stream of subscriber's set-aside records.
func SetAsideStream(subscriber string) string { return "set-aside-" + subscriber }

func (SetAsideCodec) SetAsideEvent(s eventstore.SetAside) (eventstore.AppendRequest, error) {
	b, err := json.Marshal(setAsideRecord{Subscriber: s.Subscriber, Position: s.Event.Position, EventID: s.Event.ID,
		EventType: s.Event.Type, Stream: s.Event.Stream, Attempts: s.Attempts, Error: s.Err.Error()})
	if err != nil {
		return eventstore.AppendRequest{}, err
	}
	return eventstore.AppendRequest{Stream: SetAsideStream(s.Subscriber), ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: setAsideType, SchemaVersion: 1, Payload: b,
			Metadata: eventstore.Metadata{CausationID: s.Event.ID, OccurredAt: s.At}}}}, nil
}

func (SetAsideCodec) RetryType() string { return retryType }

func (SetAsideCodec) DecodeRetry(e eventstore.RecordedEvent) (eventstore.Retry, error) {
	var r eventstore.Retry
	if err := json.Unmarshal(e.Payload, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", retryType, err)
	}
	return r, nil
}

// retryRequest is the event asking subscriber to handle position again.
func retryRequest(tb testing.TB, subscriber string, position int64, id string) eventstore.NewEvent {
	tb.Helper()
	b, err := json.Marshal(eventstore.Retry{Subscriber: subscriber, Position: position})
	if err != nil {
		tb.Fatal(err)
	}
	return eventstore.NewEvent{ID: id, Type: retryType, SchemaVersion: 1, Payload: b}
}

// waitSetAside waits until subscriber has set n events aside and its
// checkpoint is past the last record, and returns the records.
func waitSetAside(tb testing.TB, s eventstore.Store, sub *subscription, subscriber string, n int) ([]setAsideRecord, []eventstore.RecordedEvent) {
	tb.Helper()
	var evs []eventstore.RecordedEvent
	waitFor(tb, fmt.Sprintf("subscriber %q to set %d events aside", subscriber, n), func() bool {
		if err := sub.failed(); err != nil {
			tb.Fatalf("Subscribe(%q) stopped: %v", subscriber, err)
		}
		evs = mustReadStream(tb, s, SetAsideStream(subscriber), 0, 0)
		return len(evs) >= n && mustReached(tb, s, subscriber, evs[len(evs)-1].Position)
	})
	out := make([]setAsideRecord, len(evs))
	for i, e := range evs {
		if e.Type != setAsideType {
			tb.Fatalf("set-aside stream holds a %s event", e.Type)
		}
		if err := json.Unmarshal(e.Payload, &out[i]); err != nil {
			tb.Fatalf("set-aside record %s: %v", e.Payload, err)
		}
	}
	return out, evs
}

// attempts counts a handler's calls per event id, safely across goroutines.
type attempts struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *attempts) add(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[id]++
}

func (a *attempts) of(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[id]
}

func testSetAside(t *testing.T, s eventstore.Store) {
	createCounts(t, s, "storetest_aside_counts")
	var positions []int64
	for i := range 6 {
		positions = append(positions, mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("aside-%d", i%2),
			ExpectedVersion: eventstore.AnyVersion,
			Events:          []eventstore.NewEvent{withID(event("Aside", i), fmt.Sprintf("aside-%d", i))}}).LastPosition)
	}
	var calls attempts
	h := func(ctx context.Context, tx eventstore.Tx, e eventstore.RecordedEvent) error {
		if _, err := tx.Exec(ctx, `INSERT INTO storetest_aside_counts (event_id, n) VALUES ($1, 1)
			ON CONFLICT (event_id) DO UPDATE SET n = storetest_aside_counts.n + 1`, e.ID); err != nil {
			return fmt.Errorf("count %s: %w", e.ID, err)
		}
		calls.add(e.ID)
		if e.ID == "aside-2" {
			return errors.New("aside-2 is poison")
		}
		return nil
	}
	sub := subscribe(t, s, "asider", h, eventstore.SubscribeOptions{BatchSize: 4, PollInterval: 10 * time.Millisecond,
		MaxAttempts: 3, SetAside: SetAsideCodec{}})
	records, recs := waitSetAside(t, s, sub, "asider", 1)
	sub.mustStop(t)

	want := []setAsideRecord{{Subscriber: "asider", Position: positions[2], EventID: "aside-2", EventType: "Aside",
		Stream: "aside-0", Attempts: 3, Error: "aside-2 is poison"}}
	if diff := cmp.Diff(want, records); diff != "" {
		t.Errorf("set-aside records (-want +got):\n%s", diff)
	}
	if got := recs[0].Metadata.CausationID; got != "aside-2" {
		t.Errorf("set-aside record's causation id = %q, want aside-2", got)
	}
	if n := calls.of("aside-2"); n != 3 {
		t.Errorf("handler calls on the poisoned event = %d, want MaxAttempts = 3 (then set aside without a call)", n)
	}
	counts := readCounts(t, s, "storetest_aside_counts")
	wantCounts := map[string]int{"aside-0": 1, "aside-1": 1, "aside-3": 1, "aside-4": 1, "aside-5": 1, recs[0].ID: 1}
	if diff := cmp.Diff(wantCounts, counts); diff != "" {
		t.Errorf("rows written by the handler (-want +got): every other event once, the poisoned one's writes rolled back,"+
			" and the record delivered like any event:\n%s", diff)
	}
}

func testSetAsideBatch(t *testing.T, s eventstore.Store) {
	createCounts(t, s, "storetest_aside_batch_counts")
	var positions []int64
	for i := range 10 {
		positions = append(positions, mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("aside-batch-%d", i%3),
			ExpectedVersion: eventstore.AnyVersion,
			Events:          []eventstore.NewEvent{withID(event("AsideBatch", i), fmt.Sprintf("ab-%d", i))}}).LastPosition)
	}
	var (
		mu      sync.Mutex
		batches [][]string // every call, failed ones included
	)
	h := func(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
		for _, e := range evs {
			if _, err := tx.Exec(ctx, `INSERT INTO storetest_aside_batch_counts (event_id, n) VALUES ($1, 1)
				ON CONFLICT (event_id) DO UPDATE SET n = storetest_aside_batch_counts.n + 1`, e.ID); err != nil {
				return fmt.Errorf("count %s: %w", e.ID, err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		batches = append(batches, ids(evs))
		if slices.Contains(ids(evs), "ab-3") {
			return errors.New("a batch holding ab-3 fails")
		}
		return nil
	}
	sub := subscribeBatch(t, s, "batch-asider", h, eventstore.SubscribeOptions{BatchSize: 4, PollInterval: 10 * time.Millisecond,
		MaxAttempts: 2, SetAside: SetAsideCodec{}})
	records, recs := waitSetAside(t, s, sub, "batch-asider", 1)
	sub.mustStop(t)

	if len(records) != 1 || records[0].EventID != "ab-3" || records[0].Position != positions[3] || records[0].Attempts != 2 ||
		records[0].Error != "a batch holding ab-3 fails" {
		t.Errorf("set-aside records = %+v, want ab-3 alone at position %d after 2 attempts", records, positions[3])
	}
	counts := readCounts(t, s, "storetest_aside_batch_counts")
	want := map[string]int{recs[0].ID: 1}
	for i := range 10 {
		if i != 3 {
			want[fmt.Sprintf("ab-%d", i)] = 1
		}
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("rows written by the batch handler (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	var with3, single3 int
	for _, b := range batches {
		if slices.Contains(b, "ab-3") {
			with3++
			if len(b) == 1 {
				single3++
			}
		}
	}
	if with3 != 4 || single3 != 2 {
		t.Errorf("calls with ab-3 = %d (%d alone), want 2 as part of its batch, then 2 alone: %v", with3, single3, batches)
	}
	for _, b := range batches {
		if slices.Contains(b, "ab-4") && len(b) < 2 {
			t.Errorf("batch with ab-4 = %v; after the failing batch is taken apart, batches are full again: %v", b, batches)
		}
	}
}

func testRetrySetAside(t *testing.T, s eventstore.Store) {
	var positions []int64
	for i := range 3 {
		positions = append(positions, mustAppend(t, s, eventstore.AppendRequest{Stream: "retried",
			ExpectedVersion: eventstore.AnyVersion,
			Events:          []eventstore.NewEvent{withID(event("Retryable", i), fmt.Sprintf("rt-%d", i))}}).LastPosition)
	}
	var (
		mu     sync.Mutex
		refuse = true
		seen   = map[string][]string{} // by subscriber, the ids its handler took in, failed calls included
	)
	take := func(name string, evs []eventstore.RecordedEvent) error {
		mu.Lock()
		defer mu.Unlock()
		seen[name] = append(seen[name], ids(evs)...)
		if refuse && slices.Contains(ids(evs), "rt-1") {
			return errors.New("rt-1 refused for now")
		}
		return nil
	}
	opts := eventstore.SubscribeOptions{BatchSize: 10, PollInterval: 10 * time.Millisecond, MaxAttempts: 2, SetAside: SetAsideCodec{}}
	one := subscribe(t, s, "retrier", func(_ context.Context, _ eventstore.Tx, e eventstore.RecordedEvent) error {
		return take("retrier", []eventstore.RecordedEvent{e})
	}, opts)
	typed := opts
	typed.Types = []string{"Retryable"}
	batch := subscribeBatch(t, s, "typed-retrier", func(_ context.Context, _ eventstore.Tx, evs []eventstore.RecordedEvent) error {
		return take("typed-retrier", evs)
	}, typed)
	var bystander recorder
	by := subscribe(t, s, "bystander", bystander.handler(), eventstore.SubscribeOptions{PollInterval: 10 * time.Millisecond, SetAside: SetAsideCodec{}})
	waitSetAside(t, s, one, "retrier", 1)
	waitSetAside(t, s, batch, "typed-retrier", 1)

	mu.Lock()
	refuse = false
	before := map[string]int{"retrier": len(seen["retrier"]), "typed-retrier": len(seen["typed-retrier"])}
	mu.Unlock()
	last := mustAppend(t, s, eventstore.AppendRequest{Stream: "operator", ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{
		retryRequest(t, "retrier", positions[1], "retry-1"),
		retryRequest(t, "typed-retrier", positions[1], "retry-2"),
	}}).LastPosition
	for name, sub := range map[string]*subscription{"retrier": one, "typed-retrier": batch, "bystander": by} {
		waitFor(t, name+" to pass the retry requests", func() bool {
			if err := sub.failed(); err != nil {
				t.Fatalf("Subscribe(%q) stopped: %v", name, err)
			}
			return mustReached(t, s, name, last)
		})
		sub.mustStop(t)
	}

	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"rt-1", "retry-1", "retry-2"}, retryIDs(seen["retrier"][before["retrier"]:])); diff != "" {
		t.Errorf("retrier after the requests (-want +got): the original, then the requests:\n%s", diff)
	}
	if diff := cmp.Diff([]string{"rt-1"}, seen["typed-retrier"][before["typed-retrier"]:]); diff != "" {
		t.Errorf("typed-retrier (Types: Retryable) after the requests (-want +got): the original only:\n%s", diff)
	}
	if diff := cmp.Diff([]string{"rt-0", "rt-1", "rt-2", "retry-1", "retry-2"}, retryIDs(ids(bystander.events()))); diff != "" {
		t.Errorf("bystander (-want +got): every event once, requests for others as plain events:\n%s", diff)
	}
}

// retryIDs keeps the ids of testRetrySetAside's events and requests (not
// the set-aside records, which every subscriber also gets).
func retryIDs(all []string) []string {
	var out []string
	for _, id := range all {
		if strings.HasPrefix(id, "rt-") || strings.HasPrefix(id, "retry-") {
			out = append(out, id)
		}
	}
	return out
}
