// Package storetest is the conformance suite of the eventstore contract. Every
// backend (and any fake) runs it:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store { return openFresh(t) })
//	}
//
// The suite uses only portable SQL ($1 placeholders, CREATE TABLE IF NOT
// EXISTS, INSERT ... ON CONFLICT) in tables it creates itself, and never
// asserts on wall-clock time: it polls with a generous deadline only to wait
// for subscribers to finish.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// waitDeadline bounds how long the suite waits for subscribers to catch up.
// It is a ceiling for a loaded CI machine, not a performance expectation.
const waitDeadline = 30 * time.Second

// Run runs the whole suite. open must return a fresh, empty store (a new
// database on each call) and register its own cleanup with t.Cleanup; the
// suite may Close the store itself, so a second Close must be harmless.
func Run(t *testing.T, open func(t *testing.T) eventstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s eventstore.Store)
	}{
		{"appending to a new stream with NoStream starts it at version 1", testAppendNoStream},
		{"appending at a stale expected version is a version conflict", testVersionConflict},
		{"AnyVersion appends whatever version the stream is at", testAnyVersion},
		{"a conflict on one stream rolls back a multi-stream append entirely", testMultiStreamAtomic},
		{"invalid requests are rejected and store nothing", testInvalidRequests},
		{"ReadStream returns the whole stream, from a version, and up to a version", testReadStream},
		{"ReadStreams reads many streams at once, each in version order, in and outside a transaction", testReadStreams},
		{"StreamVersion counts the events of a stream", testStreamVersion},
		{"ReadAll pages through the global log in append order with positions as cursors", testReadAllPaging},
		{"Head is the last event ReadAll gives and CountAfter counts what follows a position", testLogInspector},
		{"ids, metadata, schema version and recorded-at round trip", testRoundTrip},
		{"a 1 MB payload round trips", testLargePayload},
		{"Update commits SQL writes and appends together and rolls both back on error", testUpdateOutbox},
		{"concurrent appenders and two subscribers agree on one global order", testConcurrentAppendersAndSubscribers},
		{"a failing handler's writes roll back and its event is delivered again", testHandlerRedelivery},
		{"a batch handler gets whole batches in order and a failing batch rolls back whole", testBatchHandler},
		{"a subscriber with Types gets only those types, in order, and its checkpoint passes the others", testTypeFilter},
		{"a subscriber resumes after its checkpoint and a new one starts from the first event", testResume},
		{"Checkpoint and Reached follow what a subscriber has processed", testCheckpointReached},
		{"a handler can append events in its transaction", testProcessManager},
		{"an event whose handler keeps failing is set aside after MaxAttempts and the subscriber goes on", testSetAside},
		{"a batch that keeps failing is taken apart and only its failing event is set aside", testSetAsideBatch},
		{"a retry request redelivers a set-aside event to its subscriber only", testRetrySetAside},
		{"a closed store returns ErrClosed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, open(t))
		})
	}
}

// event returns a valid event of type typ whose payload carries n.
func event(typ string, n int) eventstore.NewEvent {
	return eventstore.NewEvent{
		Type:          typ,
		SchemaVersion: 1,
		Payload:       json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
	}
}

// withID returns e with id set.
func withID(e eventstore.NewEvent, id string) eventstore.NewEvent {
	e.ID = id
	return e
}

func mustAppend(tb testing.TB, s eventstore.Store, reqs ...eventstore.AppendRequest) eventstore.AppendResult {
	tb.Helper()
	res, err := s.Append(context.Background(), reqs...)
	if err != nil {
		tb.Fatalf("Append() error = %v", err)
	}
	return res
}

func mustReadStream(tb testing.TB, s eventstore.Store, stream string, from, to int64) []eventstore.RecordedEvent {
	tb.Helper()
	evs, err := s.ReadStream(context.Background(), stream, from, to)
	if err != nil {
		tb.Fatalf("ReadStream(%q, %d, %d) error = %v", stream, from, to, err)
	}
	return evs
}

func mustStreamVersion(tb testing.TB, s eventstore.Store, stream string) int64 {
	tb.Helper()
	v, err := s.StreamVersion(context.Background(), stream)
	if err != nil {
		tb.Fatalf("StreamVersion(%q) error = %v", stream, err)
	}
	return v
}

// ReadAllPaged reads the whole log in pages of size limit, once
// ReadAll shows every committed event. ReadAll may hold back committed
// events for a moment while a transaction it cannot tell apart from its
// own database's is still open (on PostgreSQL, one of another database
// that is just ending, which parallel tests cause): the read is repeated
// until it returns as many events as the table holds, for at most 10 s.
func ReadAllPaged(tb testing.TB, s eventstore.Store, limit int) []eventstore.RecordedEvent {
	tb.Helper()
	var committed int
	if err := s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		return tx.QueryRow(ctx, `SELECT COUNT(*) FROM events`).Scan(&committed)
	}); err != nil {
		tb.Fatalf("count the events: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := readAllPaged(tb, s, limit)
		if len(all) >= committed || time.Now().After(deadline) {
			return all
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readAllPaged(tb testing.TB, s eventstore.Store, limit int) []eventstore.RecordedEvent {
	tb.Helper()
	var all []eventstore.RecordedEvent
	var after int64
	seen := map[int64]bool{}
	for {
		page, err := s.ReadAll(context.Background(), after, limit)
		if err != nil {
			tb.Fatalf("ReadAll(%d, %d) error = %v", after, limit, err)
		}
		if len(page) > limit {
			tb.Fatalf("ReadAll(%d, %d) returned %d events, more than the limit", after, limit, len(page))
		}
		if len(page) == 0 {
			return all
		}
		for _, e := range page {
			if seen[e.Position] {
				tb.Fatalf("ReadAll(%d, %d) returned position %d again", after, limit, e.Position)
			}
			seen[e.Position] = true
		}
		all = append(all, page...)
		after = page[len(page)-1].Position
	}
}

func mustCheckpoint(tb testing.TB, s eventstore.Store, name string) int64 {
	tb.Helper()
	p, err := s.Checkpoint(context.Background(), name)
	if err != nil {
		tb.Fatalf("Checkpoint(%q) error = %v", name, err)
	}
	return p
}

func mustReached(tb testing.TB, s eventstore.Store, name string, pos int64) bool {
	tb.Helper()
	ok, err := s.Reached(context.Background(), name, pos)
	if err != nil {
		tb.Fatalf("Reached(%q, %d) error = %v", name, pos, err)
	}
	return ok
}

func ids(evs []eventstore.RecordedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func versions(evs []eventstore.RecordedEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.StreamVersion
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes. It is the only
// place the suite looks at the clock, and only to give up.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up after %s waiting for %s", waitDeadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subscription is a running Subscribe call.
type subscription struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// subscribe runs Subscribe in the background until stop (or the test's end).
func subscribe(tb testing.TB, s eventstore.Store, name string, h eventstore.Handler, opts eventstore.SubscribeOptions) *subscription {
	tb.Helper()
	return startSubscription(tb, func(ctx context.Context) error { return s.Subscribe(ctx, name, h, opts) })
}

// subscribeBatch runs SubscribeBatch in the background as subscribe does.
func subscribeBatch(tb testing.TB, s eventstore.Store, name string, h eventstore.BatchHandler, opts eventstore.SubscribeOptions) *subscription {
	tb.Helper()
	return startSubscription(tb, func(ctx context.Context) error { return s.SubscribeBatch(ctx, name, h, opts) })
}

func startSubscription(tb testing.TB, run func(ctx context.Context) error) *subscription {
	ctx, cancel := context.WithCancel(context.Background())
	sub := &subscription{cancel: cancel, done: make(chan error, 1)}
	go func() { sub.done <- run(ctx) }()
	tb.Cleanup(func() { _ = sub.stop() })
	return sub
}

// stop cancels the subscription, waits for Subscribe to return and returns
// its error.
func (sub *subscription) stop() error {
	sub.once.Do(func() {
		sub.cancel()
		sub.err = <-sub.done
	})
	return sub.err
}

// mustStop stops sub and checks that Subscribe returned the context's error.
func (sub *subscription) mustStop(tb testing.TB) {
	tb.Helper()
	if err := sub.stop(); !errors.Is(err, context.Canceled) {
		tb.Errorf("Subscribe() after cancel = %v, want context.Canceled", err)
	}
}

// failed reports an error Subscribe returned before being stopped.
func (sub *subscription) failed() error {
	select {
	case err := <-sub.done:
		sub.once.Do(func() { sub.err = err })
		if sub.err == nil {
			return errors.New("subscribe returned nil")
		}
		return sub.err
	default:
		return nil
	}
}

// recorder collects what a handler saw, safely across goroutines.
type recorder struct {
	mu  sync.Mutex
	evs []eventstore.RecordedEvent
}

func (r *recorder) add(e eventstore.RecordedEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

func (r *recorder) events() []eventstore.RecordedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]eventstore.RecordedEvent(nil), r.evs...)
}

func (r *recorder) handler() eventstore.Handler {
	return func(_ context.Context, _ eventstore.Tx, e eventstore.RecordedEvent) error {
		r.add(e)
		return nil
	}
}

// waitCheckpoint waits until name's checkpoint is pos, failing early when the
// subscription has stopped on its own.
func waitCheckpoint(tb testing.TB, s eventstore.Store, sub *subscription, name string, pos int64) {
	tb.Helper()
	waitFor(tb, fmt.Sprintf("subscriber %q to reach position %d", name, pos), func() bool {
		if err := sub.failed(); err != nil {
			tb.Fatalf("Subscribe(%q) stopped: %v", name, err)
		}
		return mustCheckpoint(tb, s, name) == pos
	})
}

func testAppendNoStream(t *testing.T, s eventstore.Store) {
	res := mustAppend(t, s, eventstore.AppendRequest{
		Stream: "ticket-1", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{event("TicketOpened", 1), event("TicketAssigned", 2)},
	})
	if diff := cmp.Diff(map[string]int64{"ticket-1": 2}, res.StreamVersions); diff != "" {
		t.Errorf("Append() StreamVersions (-want +got):\n%s", diff)
	}
	got := mustReadStream(t, s, "ticket-1", 0, 0)
	if diff := cmp.Diff([]int64{1, 2}, versions(got)); diff != "" {
		t.Fatalf("ReadStream() versions (-want +got):\n%s", diff)
	}
	if res.LastPosition != got[1].Position {
		t.Errorf("Append() LastPosition = %d, want the position of the last event, %d", res.LastPosition, got[1].Position)
	}
	for _, e := range got {
		if e.Stream != "ticket-1" || e.ID == "" {
			t.Errorf("ReadStream() event = %+v, want stream ticket-1 and an id", e)
		}
	}

	_, err := s.Append(context.Background(), eventstore.AppendRequest{
		Stream: "ticket-1", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{event("TicketOpened", 3)},
	})
	if !errors.Is(err, eventstore.ErrVersionConflict) {
		t.Errorf("Append(NoStream) to an existing stream error = %v, want ErrVersionConflict", err)
	}
}

func testVersionConflict(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, eventstore.AppendRequest{
		Stream: "ticket-1", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{event("A", 1), event("B", 2)},
	})
	tests := []struct {
		name     string
		expected int64
	}{
		{"behind the stream", 1},
		{"ahead of the stream", 3},
		{"far ahead of the stream", 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(context.Background(), eventstore.AppendRequest{
				Stream: "ticket-1", ExpectedVersion: tc.expected, Events: []eventstore.NewEvent{event("C", 3)},
			})
			if !errors.Is(err, eventstore.ErrVersionConflict) {
				t.Fatalf("Append(expected %d) error = %v, want ErrVersionConflict", tc.expected, err)
			}
			var vc *eventstore.VersionConflictError
			if !errors.As(err, &vc) {
				t.Fatalf("Append(expected %d) error = %v, want a *VersionConflictError", tc.expected, err)
			}
			if vc.Stream != "ticket-1" || vc.Expected != tc.expected || (vc.Actual != 2 && vc.Actual != -1) {
				t.Errorf("VersionConflictError = %+v, want stream ticket-1, expected %d, actual 2 (or -1)", *vc, tc.expected)
			}
		})
	}
	if v := mustStreamVersion(t, s, "ticket-1"); v != 2 {
		t.Errorf("StreamVersion() after conflicts = %d, want 2", v)
	}
	mustAppend(t, s, eventstore.AppendRequest{Stream: "ticket-1", ExpectedVersion: 2, Events: []eventstore.NewEvent{event("C", 3)}})
	if v := mustStreamVersion(t, s, "ticket-1"); v != 3 {
		t.Errorf("StreamVersion() after an append at the right version = %d, want 3", v)
	}
}

func testAnyVersion(t *testing.T, s eventstore.Store) {
	for i := range 3 {
		res := mustAppend(t, s, eventstore.AppendRequest{
			Stream: "log", ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{event("Logged", i)},
		})
		if got := res.StreamVersions["log"]; got != int64(i+1) {
			t.Errorf("Append(AnyVersion) #%d StreamVersions[log] = %d, want %d", i, got, i+1)
		}
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, versions(mustReadStream(t, s, "log", 0, 0))); diff != "" {
		t.Errorf("ReadStream() versions (-want +got):\n%s", diff)
	}
}

func testMultiStreamAtomic(t *testing.T, s eventstore.Store) {
	mustAppend(t, s, eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{event("B", 1)}})

	_, err := s.Append(context.Background(),
		eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{event("A", 1)}},
		eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{event("B", 2)}},
		eventstore.AppendRequest{Stream: "c", ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{event("C", 1)}},
	)
	var vc *eventstore.VersionConflictError
	if !errors.As(err, &vc) || vc.Stream != "b" {
		t.Fatalf("Append() error = %v, want a *VersionConflictError on stream b", err)
	}
	for stream, want := range map[string]int64{"a": 0, "b": 1, "c": 0} {
		if got := mustStreamVersion(t, s, stream); got != want {
			t.Errorf("StreamVersion(%q) after a failed multi-stream append = %d, want %d", stream, got, want)
		}
	}
	if n := len(ReadAllPaged(t, s, 100)); n != 1 {
		t.Errorf("ReadAll() after a failed multi-stream append holds %d events, want 1", n)
	}

	res := mustAppend(t, s,
		eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.NoStream, Events: []eventstore.NewEvent{event("A", 1)}},
		eventstore.AppendRequest{Stream: "b", ExpectedVersion: 1, Events: []eventstore.NewEvent{event("B", 2), event("B", 3)}},
	)
	if diff := cmp.Diff(map[string]int64{"a": 1, "b": 3}, res.StreamVersions); diff != "" {
		t.Errorf("Append() StreamVersions (-want +got):\n%s", diff)
	}
}

func testInvalidRequests(t *testing.T, s eventstore.Store) {
	valid := eventstore.AppendRequest{Stream: "ok", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{event("Fine", 1)}}
	tests := []struct {
		name string
		req  eventstore.AppendRequest
	}{
		{"empty stream name", eventstore.AppendRequest{Stream: "", ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{event("A", 1)}}},
		{"expected version below AnyVersion", eventstore.AppendRequest{Stream: "x", ExpectedVersion: -2,
			Events: []eventstore.NewEvent{event("A", 1)}}},
		{"event without a type", eventstore.AppendRequest{Stream: "x", ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{event("", 1)}}},
		{"schema version zero", eventstore.AppendRequest{Stream: "x", ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{{Type: "A", SchemaVersion: 0, Payload: json.RawMessage(`{}`)}}}},
		{"payload that is not JSON", eventstore.AppendRequest{Stream: "x", ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{{Type: "A", SchemaVersion: 1, Payload: json.RawMessage(`{"n":`)}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(context.Background(), valid, tc.req)
			if err == nil {
				t.Fatalf("Append(%+v) error = nil, want a validation error", tc.req)
			}
			if errors.Is(err, eventstore.ErrVersionConflict) {
				t.Errorf("Append(%+v) error = %v, want a validation error, not a version conflict", tc.req, err)
			}
			err = s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
				_, err := tx.Append(ctx, tc.req)
				return err
			})
			if err == nil {
				t.Errorf("Tx.Append(%+v) error = nil, want a validation error", tc.req)
			}
		})
	}
	if evs := ReadAllPaged(t, s, 100); len(evs) != 0 {
		t.Errorf("ReadAll() after rejected appends = %d events, want none (the valid request must roll back too)", len(evs))
	}
}

func testReadStream(t *testing.T, s eventstore.Store) {
	for i := 1; i <= 5; i++ {
		mustAppend(t, s,
			eventstore.AppendRequest{Stream: "ticket-1", ExpectedVersion: int64(i - 1),
				Events: []eventstore.NewEvent{withID(event("Step", i), fmt.Sprintf("t1-%d", i))}},
			eventstore.AppendRequest{Stream: "other", ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{event("Noise", i)}},
		)
	}
	tests := []struct {
		name     string
		from, to int64
		want     []string
	}{
		{"whole stream", 0, 0, []string{"t1-1", "t1-2", "t1-3", "t1-4", "t1-5"}},
		{"whole stream from version 1", 1, 0, []string{"t1-1", "t1-2", "t1-3", "t1-4", "t1-5"}},
		{"from a version", 3, 0, []string{"t1-3", "t1-4", "t1-5"}},
		{"up to a version (as it stood then)", 0, 2, []string{"t1-1", "t1-2"}},
		{"a window", 2, 4, []string{"t1-2", "t1-3", "t1-4"}},
		{"one version", 4, 4, []string{"t1-4"}},
		{"past the end", 6, 0, []string{}},
		{"up to beyond the end", 0, 99, []string{"t1-1", "t1-2", "t1-3", "t1-4", "t1-5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustReadStream(t, s, "ticket-1", tc.from, tc.to)
			if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
				t.Errorf("ReadStream(ticket-1, %d, %d) ids (-want +got):\n%s", tc.from, tc.to, diff)
			}
			for i, e := range got {
				if i > 0 && e.StreamVersion != got[i-1].StreamVersion+1 {
					t.Errorf("ReadStream() versions %v are not consecutive", versions(got))
				}
			}
		})
	}
	if got := mustReadStream(t, s, "no-such-stream", 0, 0); len(got) != 0 {
		t.Errorf("ReadStream(unknown) = %d events, want none", len(got))
	}
}

func testStreamVersion(t *testing.T, s eventstore.Store) {
	if v := mustStreamVersion(t, s, "ticket-1"); v != 0 {
		t.Errorf("StreamVersion(empty) = %d, want 0", v)
	}
	mustAppend(t, s, eventstore.AppendRequest{Stream: "ticket-1", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{event("A", 1), event("B", 2), event("C", 3)}})
	mustAppend(t, s, eventstore.AppendRequest{Stream: "ticket-2", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{event("A", 1)}})
	for stream, want := range map[string]int64{"ticket-1": 3, "ticket-2": 1, "ticket-3": 0} {
		if got := mustStreamVersion(t, s, stream); got != want {
			t.Errorf("StreamVersion(%q) = %d, want %d", stream, got, want)
		}
	}
}

func testReadAllPaging(t *testing.T, s eventstore.Store) {
	if evs, err := s.ReadAll(context.Background(), 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("ReadAll() on an empty store = %d events, %v; want none, nil", len(evs), err)
	}
	var want []string
	n := 0
	next := func(stream string) eventstore.NewEvent {
		n++
		id := fmt.Sprintf("%s-%02d", stream, n)
		want = append(want, id)
		return withID(event("E", n), id)
	}
	for i := range 8 {
		mustAppend(t, s, eventstore.AppendRequest{Stream: "a", ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{next("a")}})
		mustAppend(t, s,
			eventstore.AppendRequest{Stream: "b", ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{next("b"), next("b")}},
			eventstore.AppendRequest{Stream: fmt.Sprintf("c%d", i%3), ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{next("c")}},
		)
	}
	for _, limit := range []int{1, 3, 10, 1000} {
		t.Run(fmt.Sprintf("pages of %d", limit), func(t *testing.T) {
			if diff := cmp.Diff(want, ids(ReadAllPaged(t, s, limit))); diff != "" {
				t.Errorf("ReadAll() ids (-want +got):\n%s", diff)
			}
		})
	}
	all := ReadAllPaged(t, s, 1000)
	first, err := s.ReadAll(context.Background(), 0, 5)
	if err != nil {
		t.Fatalf("ReadAll(0, 5) error = %v", err)
	}
	if diff := cmp.Diff(want[:5], ids(first)); diff != "" {
		t.Errorf("ReadAll(0, 5) ids (-want +got):\n%s", diff)
	}
	mid, err := s.ReadAll(context.Background(), all[9].Position, 2)
	if err != nil {
		t.Fatalf("ReadAll(after the 10th, 2) error = %v", err)
	}
	if diff := cmp.Diff(want[10:12], ids(mid)); diff != "" {
		t.Errorf("ReadAll(after the 10th, 2) ids (-want +got):\n%s", diff)
	}
	last, err := s.ReadAll(context.Background(), all[len(all)-1].Position, 10)
	if err != nil || len(last) != 0 {
		t.Errorf("ReadAll(after the last) = %d events, %v; want none, nil", len(last), err)
	}
	var maxPos int64
	for _, e := range all {
		maxPos = max(maxPos, e.Position)
	}
	if _, err := s.ReadAll(context.Background(), maxPos+1_000_003, 10); !errors.Is(err, eventstore.ErrUnknownPosition) {
		t.Errorf("ReadAll(a position no event has) error = %v, want ErrUnknownPosition", err)
	}
}

func testRoundTrip(t *testing.T, s eventstore.Store) {
	occurred := time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	meta := eventstore.Metadata{CorrelationID: "corr-1", CausationID: "cause-1", Actor: "agent:alice", OccurredAt: occurred}
	in := []eventstore.NewEvent{
		{ID: "evt-given", Type: "MailReceived", SchemaVersion: 3,
			Payload: json.RawMessage(`{"subject":"Grüße \u2013 ünïcödé","n":[1,2,3],"nested":{"ok":true}}`), Metadata: meta},
		{Type: "TicketOpened", SchemaVersion: 1, Payload: json.RawMessage(`{"ticket":1001}`),
			Metadata: eventstore.Metadata{OccurredAt: occurred.Add(time.Second)}},
		{Type: "TicketOpened", SchemaVersion: 1, Payload: json.RawMessage(`{"ticket":1002}`)},
	}
	res := mustAppend(t, s, eventstore.AppendRequest{Stream: "mail-1", ExpectedVersion: eventstore.NoStream, Events: in})
	got := mustReadStream(t, s, "mail-1", 0, 0)
	if len(got) != len(in) {
		t.Fatalf("ReadStream() = %d events, want %d", len(got), len(in))
	}
	if got[0].ID != "evt-given" {
		t.Errorf("ID = %q, want the given id evt-given", got[0].ID)
	}
	if got[1].ID == "" || got[2].ID == "" || got[1].ID == got[2].ID {
		t.Errorf("ids made by the store = %q, %q; want two distinct non-empty ids", got[1].ID, got[2].ID)
	}
	for i, e := range got {
		if e.Type != in[i].Type || e.SchemaVersion != in[i].SchemaVersion || e.Stream != "mail-1" || e.StreamVersion != int64(i+1) {
			t.Errorf("event %d = type %q schema %d stream %q version %d; want %q %d mail-1 %d",
				i, e.Type, e.SchemaVersion, e.Stream, e.StreamVersion, in[i].Type, in[i].SchemaVersion, i+1)
		}
		if diff := cmp.Diff(in[i].Metadata, e.Metadata); diff != "" {
			t.Errorf("event %d metadata (-want +got):\n%s", i, diff)
		}
		assertSameJSON(t, in[i].Payload, e.Payload)
		if e.RecordedAt.IsZero() {
			t.Errorf("event %d RecordedAt is zero, want the time the store recorded it", i)
		}
	}
	if res.LastPosition != got[2].Position {
		t.Errorf("Append() LastPosition = %d, want %d", res.LastPosition, got[2].Position)
	}
	all := ReadAllPaged(t, s, 10)
	if diff := cmp.Diff(got, all); diff != "" {
		t.Errorf("ReadAll() and ReadStream() disagree (-ReadStream +ReadAll):\n%s", diff)
	}
}

// assertSameJSON compares JSON by value: backends may normalise whitespace
// and key order (PostgreSQL's jsonb does).
func assertSameJSON(tb testing.TB, want, got json.RawMessage) {
	tb.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		tb.Fatalf("bad test payload %s: %v", want, err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		tb.Errorf("stored payload is not JSON: %v", err)
		return
	}
	if diff := cmp.Diff(w, g); diff != "" {
		tb.Errorf("payload (-want +got):\n%s", diff)
	}
}

func testLargePayload(t *testing.T, s eventstore.Store) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	payload, err := json.Marshal(map[string]string{"body": big})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, eventstore.AppendRequest{Stream: "blob", ExpectedVersion: eventstore.NoStream,
		Events: []eventstore.NewEvent{{Type: "BlobStored", SchemaVersion: 1, Payload: payload}}})
	got := mustReadStream(t, s, "blob", 0, 0)
	if len(got) != 1 {
		t.Fatalf("ReadStream() = %d events, want 1", len(got))
	}
	var back map[string]string
	if err := json.Unmarshal(got[0].Payload, &back); err != nil {
		t.Fatalf("stored payload is not JSON: %v", err)
	}
	if back["body"] != big {
		t.Errorf("payload body has %d bytes after the round trip, want the same %d bytes", len(back["body"]), len(big))
	}
}

func testUpdateOutbox(t *testing.T, s eventstore.Store) {
	ctx := context.Background()
	errBoom := errors.New("boom")
	if err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS storetest_outbox (id TEXT PRIMARY KEY, body TEXT NOT NULL)`)
		return err
	}); err != nil {
		t.Fatalf("Update(create table) error = %v", err)
	}

	// rowBody returns the body of row id, or "" when there is none.
	rowBody := func(id string) string {
		t.Helper()
		var body string
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			return tx.QueryRow(ctx, `SELECT body FROM storetest_outbox WHERE id = $1`, id).Scan(&body)
		})
		if errors.Is(err, eventstore.ErrNoRows) {
			return ""
		}
		if err != nil {
			t.Fatalf("select row %q: %v", id, err)
		}
		return body
	}

	t.Run("a nil return commits the row and the events", func(t *testing.T) {
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			n, err := tx.Exec(ctx, `INSERT INTO storetest_outbox (id, body) VALUES ($1, $2)`, "a", "hello")
			if err != nil {
				return err
			}
			if n != 1 {
				t.Errorf("Exec(insert) rows affected = %d, want 1", n)
			}
			if _, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "outbox-1", ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{event("Sent", 1), event("Sent", 2)}}); err != nil {
				return err
			}
			inTx, err := tx.ReadStream(ctx, "outbox-1", 0, 0)
			if err != nil {
				return err
			}
			if len(inTx) != 2 {
				t.Errorf("Tx.ReadStream() inside the transaction = %d events, want its own 2", len(inTx))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Update() error = %v", err)
		}
		if got := rowBody("a"); got != "hello" {
			t.Errorf("row a body = %q, want hello", got)
		}
		if v := mustStreamVersion(t, s, "outbox-1"); v != 2 {
			t.Errorf("StreamVersion(outbox-1) = %d, want 2", v)
		}
	})

	t.Run("PlanEachCall is accepted by Exec, Query and QueryRow", func(t *testing.T) {
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO storetest_outbox (id, body) VALUES ($1, $2)`, eventstore.PlanEachCall, "p", "planned"); err != nil {
				return err
			}
			var body string
			if err := tx.QueryRow(ctx, `SELECT body FROM storetest_outbox WHERE id = $1`, eventstore.PlanEachCall, "p").Scan(&body); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT id FROM storetest_outbox WHERE id >= $1 AND id <= $2`, eventstore.PlanEachCall, "p", "p")
			if err != nil {
				return err
			}
			var ids []string
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			if body != "planned" || len(ids) != 1 || ids[0] != "p" {
				t.Errorf("read back %q and %v, want planned and [p]", body, ids)
			}
			return errBoom // leave the table as the other cases expect it
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update() error = %v, want the function's", err)
		}
	})

	t.Run("an error rolls back the row and the events", func(t *testing.T) {
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO storetest_outbox (id, body) VALUES ($1, $2)`, "b", "lost"); err != nil {
				return err
			}
			if _, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "outbox-2", ExpectedVersion: eventstore.NoStream,
				Events: []eventstore.NewEvent{event("Sent", 1)}}); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update() error = %v, want the function's error", err)
		}
		if got := rowBody("b"); got != "" {
			t.Errorf("row b body = %q after a rollback, want no row", got)
		}
		if v := mustStreamVersion(t, s, "outbox-2"); v != 0 {
			t.Errorf("StreamVersion(outbox-2) after a rollback = %d, want 0", v)
		}
	})

	t.Run("a version conflict inside rolls back the row", func(t *testing.T) {
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO storetest_outbox (id, body) VALUES ($1, $2)`, "c", "lost"); err != nil {
				return err
			}
			_, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "outbox-1", ExpectedVersion: 1,
				Events: []eventstore.NewEvent{event("Sent", 3)}})
			return err
		})
		if !errors.Is(err, eventstore.ErrVersionConflict) {
			t.Fatalf("Update() error = %v, want ErrVersionConflict", err)
		}
		if got := rowBody("c"); got != "" {
			t.Errorf("row c body = %q after a conflict, want no row", got)
		}
	})

	t.Run("Query iterates rows", func(t *testing.T) {
		var got []string
		err := s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
			rows, err := tx.Query(ctx, `SELECT id FROM storetest_outbox WHERE body <> $1 ORDER BY id`, "")
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				got = append(got, id)
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatalf("Update(query) error = %v", err)
		}
		if diff := cmp.Diff([]string{"a"}, got); diff != "" {
			t.Errorf("rows (-want +got):\n%s", diff)
		}
	})

	if n := len(ReadAllPaged(t, s, 100)); n != 2 {
		t.Errorf("ReadAll() = %d events, want only the 2 committed ones", n)
	}
}

func testConcurrentAppendersAndSubscribers(t *testing.T, s eventstore.Store) {
	const appenders = 8
	perAppender := 1000
	if testing.Short() {
		perAppender = 100
	}
	total := appenders * perAppender

	var subA, subB recorder
	runA := subscribe(t, s, "concurrent-a", subA.handler(), eventstore.SubscribeOptions{})
	runB := subscribe(t, s, "concurrent-b", subB.handler(), eventstore.SubscribeOptions{BatchSize: 7, PollInterval: 20 * time.Millisecond})

	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for a := range appenders {
		wg.Go(func() {
			stream := fmt.Sprintf("load-%d", a)
			for i := range perAppender {
				_, err := s.Append(context.Background(), eventstore.AppendRequest{
					Stream: stream, ExpectedVersion: int64(i),
					Events: []eventstore.NewEvent{withID(event("Loaded", i), fmt.Sprintf("%s-%d", stream, i))},
				})
				if err != nil {
					errs <- fmt.Errorf("appender %d, event %d: %w", a, i, err)
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
	if t.Failed() {
		return
	}

	waitFor(t, fmt.Sprintf("both subscribers to see %d events", total), func() bool {
		for _, sub := range []*subscription{runA, runB} {
			if err := sub.failed(); err != nil {
				t.Fatalf("Subscribe stopped: %v", err)
			}
		}
		return subA.len() >= total && subB.len() >= total
	})
	runA.mustStop(t)
	runB.mustStop(t)

	all := ReadAllPaged(t, s, 250)
	if len(all) != total {
		t.Fatalf("ReadAll() = %d events, want %d", len(all), total)
	}
	perStream := map[string]int64{}
	for _, e := range all {
		perStream[e.Stream]++
		if e.StreamVersion != perStream[e.Stream] {
			t.Fatalf("ReadAll() has %s version %d where version %d was due", e.Stream, e.StreamVersion, perStream[e.Stream])
		}
	}
	want := ids(all)
	for name, rec := range map[string]*recorder{"concurrent-a": &subA, "concurrent-b": &subB} {
		if diff := cmp.Diff(want, ids(rec.events())); diff != "" {
			t.Errorf("subscriber %s saw a different sequence than ReadAll (-ReadAll +subscriber):\n%s", name, diff)
		}
		if cp := mustCheckpoint(t, s, name); cp != all[len(all)-1].Position {
			t.Errorf("Checkpoint(%s) = %d, want the last position %d", name, cp, all[len(all)-1].Position)
		}
	}
}

func testHandlerRedelivery(t *testing.T, s eventstore.Store) {
	createCounts(t, s, "storetest_counts")
	var evs []eventstore.NewEvent
	for i := range 20 {
		evs = append(evs, withID(event("Counted", i), fmt.Sprintf("count-%02d", i)))
	}
	mustAppend(t, s, eventstore.AppendRequest{Stream: "counted", ExpectedVersion: eventstore.NoStream, Events: evs})
	var last int64
	for i := 20; i < 30; i++ {
		last = mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("counted-%d", i), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{withID(event("Counted", i), fmt.Sprintf("count-%02d", i))}}).LastPosition
	}

	var mu sync.Mutex
	deliveries := map[string]int{}
	failFor := map[string]int{"count-07": 2, "count-22": 1}
	h := func(ctx context.Context, tx eventstore.Tx, e eventstore.RecordedEvent) error {
		if _, err := tx.Exec(ctx, `INSERT INTO storetest_counts (event_id, n) VALUES ($1, 1)
			ON CONFLICT (event_id) DO UPDATE SET n = storetest_counts.n + 1`, e.ID); err != nil {
			return fmt.Errorf("count %s: %w", e.ID, err)
		}
		mu.Lock()
		defer mu.Unlock()
		deliveries[e.ID]++
		if failFor[e.ID] > 0 {
			failFor[e.ID]--
			return fmt.Errorf("handler fails on purpose for %s", e.ID)
		}
		return nil
	}
	sub := subscribe(t, s, "counter", h, eventstore.SubscribeOptions{BatchSize: 5, PollInterval: 10 * time.Millisecond})
	waitCheckpoint(t, s, sub, "counter", last)
	sub.mustStop(t)

	counts := readCounts(t, s, "storetest_counts")
	want := map[string]int{}
	for i := range 30 {
		want[fmt.Sprintf("count-%02d", i)] = 1
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("counts written by the handler (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if deliveries["count-07"] != 3 || deliveries["count-22"] != 2 {
		t.Errorf("deliveries of count-07, count-22 = %d, %d; want 3, 2 (each failure redelivers)",
			deliveries["count-07"], deliveries["count-22"])
	}
}

// createCounts creates a handler's count table of (event_id, n) rows.
func createCounts(tb testing.TB, s eventstore.Store, table string) {
	tb.Helper()
	if err := s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (event_id TEXT PRIMARY KEY, n INTEGER NOT NULL)`)
		return err
	}); err != nil {
		tb.Fatalf("create %s: %v", table, err)
	}
}

// readCounts reads the (event_id, n) rows of a handler's count table.
func readCounts(tb testing.TB, s eventstore.Store, table string) map[string]int {
	tb.Helper()
	counts := map[string]int{}
	err := s.Update(context.Background(), func(ctx context.Context, tx eventstore.Tx) error {
		rows, err := tx.Query(ctx, `SELECT event_id, n FROM `+table)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				return err
			}
			counts[id] = n
		}
		return rows.Err()
	})
	if err != nil {
		tb.Fatalf("read counts from %s: %v", table, err)
	}
	return counts
}

func testBatchHandler(t *testing.T, s eventstore.Store) {
	createCounts(t, s, "storetest_batch_counts")
	var ids []string
	var last int64
	for i := range 23 {
		id := fmt.Sprintf("batch-%02d", i)
		ids = append(ids, id)
		last = mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("batched-%d", i%4), ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{withID(event("Batched", i), id)}}).LastPosition
	}

	var (
		mu        sync.Mutex
		committed []string // the events of the batches that succeeded, in delivery order
		sizes     []int
		failures  = 2 // the batch holding batch-07 fails twice, after writing its rows
		retried   []string
	)
	h := func(ctx context.Context, tx eventstore.Tx, evs []eventstore.RecordedEvent) error {
		holds07 := false
		for _, e := range evs {
			if _, err := tx.Exec(ctx, `INSERT INTO storetest_batch_counts (event_id, n) VALUES ($1, 1)
				ON CONFLICT (event_id) DO UPDATE SET n = storetest_batch_counts.n + 1`, e.ID); err != nil {
				return fmt.Errorf("count %s: %w", e.ID, err)
			}
			holds07 = holds07 || e.ID == "batch-07"
		}
		mu.Lock()
		defer mu.Unlock()
		if holds07 && failures > 0 {
			failures--
			retried = append(retried, evs[0].ID)
			return errors.New("batch handler fails on purpose")
		}
		for _, e := range evs {
			committed = append(committed, e.ID)
		}
		sizes = append(sizes, len(evs))
		return nil
	}
	sub := subscribeBatch(t, s, "batcher", h, eventstore.SubscribeOptions{BatchSize: 5, PollInterval: 10 * time.Millisecond})
	waitCheckpoint(t, s, sub, "batcher", last)
	sub.mustStop(t)

	counts := readCounts(t, s, "storetest_batch_counts")
	want := map[string]int{}
	for _, id := range ids {
		want[id] = 1
	}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("rows written by the batch handler (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(ids, committed); diff != "" {
		t.Errorf("events of the committed batches, in order (-want +got):\n%s", diff)
	}
	if len(sizes) == 0 || sizes[0] != 5 {
		t.Errorf("batch sizes = %v, want the first batch full (5 of the 23 waiting events)", sizes)
	}
	for _, n := range sizes {
		if n < 1 || n > 5 {
			t.Errorf("batch sizes = %v, want 1 to 5 events each", sizes)
			break
		}
	}
	if len(retried) != 2 || retried[0] != retried[1] {
		t.Errorf("failed batches started at %v, want the same event twice", retried)
	}
}

func testReadStreams(t *testing.T, s eventstore.Store) {
	ctx := context.Background()
	for stream, n := range map[string]int{"many-a": 3, "many-b": 2, "many-c": 1} {
		var evs []eventstore.NewEvent
		for i := range n {
			evs = append(evs, withID(event("E", i), fmt.Sprintf("%s-%d", stream, i+1)))
		}
		mustAppend(t, s, eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream, Events: evs})
	}
	// ids by stream, in the order read
	byStream := func(evs []eventstore.RecordedEvent) map[string][]string {
		out := map[string][]string{}
		for i, e := range evs {
			if i > 0 && evs[i-1].Stream != e.Stream && out[e.Stream] != nil {
				t.Errorf("ReadStreams() interleaves stream %s with others: %v", e.Stream, evs)
			}
			out[e.Stream] = append(out[e.Stream], fmt.Sprintf("%s@%d", e.ID, e.StreamVersion))
		}
		return out
	}
	want := map[string][]string{"many-a": {"many-a-1@1", "many-a-2@2", "many-a-3@3"}, "many-b": {"many-b-1@1", "many-b-2@2"}}
	got, err := s.ReadStreams(ctx, []string{"many-b", "many-a", "many-missing", "many-a"})
	if err != nil {
		t.Fatalf("ReadStreams() error = %v", err)
	}
	if diff := cmp.Diff(want, byStream(got)); diff != "" {
		t.Errorf("ReadStreams() (-want +got):\n%s", diff)
	}
	if got, err := s.ReadStreams(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("ReadStreams(nil) = %v, %v; want nothing", got, err)
	}
	// inside a transaction, its own appends are visible
	err = s.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		if _, err := tx.Append(ctx, eventstore.AppendRequest{Stream: "many-c", ExpectedVersion: 1,
			Events: []eventstore.NewEvent{withID(event("E", 9), "many-c-2")}}); err != nil {
			return err
		}
		got, err := tx.ReadStreams(ctx, []string{"many-c", "many-b"})
		if err != nil {
			return err
		}
		want := map[string][]string{"many-b": {"many-b-1@1", "many-b-2@2"}, "many-c": {"many-c-1@1", "many-c-2@2"}}
		if diff := cmp.Diff(want, byStream(got)); diff != "" {
			t.Errorf("Tx.ReadStreams() (-want +got):\n%s", diff)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update() error = %v", err)
	}
}

func testTypeFilter(t *testing.T, s eventstore.Store) {
	types := []string{"Wanted", "Other", "Wanted", "AlsoWanted", "Other", "Wanted", "Other"}
	var want []string
	var end int64
	for i, typ := range types {
		id := fmt.Sprintf("typed-%02d", i)
		end = mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("typed-%d", i%3), ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{withID(event(typ, i), id)}}).LastPosition
		if typ != "Other" {
			want = append(want, id)
		}
	}
	var (
		mu  sync.Mutex
		got []string
	)
	h := func(_ context.Context, _ eventstore.Tx, evs []eventstore.RecordedEvent) error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			got = append(got, e.ID)
		}
		return nil
	}
	sub := subscribeBatch(t, s, "typed", h, eventstore.SubscribeOptions{BatchSize: 2, PollInterval: 10 * time.Millisecond,
		Types: []string{"Wanted", "AlsoWanted"}})
	// the checkpoint passes the events of other types too, up to the end
	waitCheckpoint(t, s, sub, "typed", end)
	mustAppend(t, s, eventstore.AppendRequest{Stream: "typed-1", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{withID(event("Wanted", 91), "typed-91")}})
	end = mustAppend(t, s, eventstore.AppendRequest{Stream: "typed-0", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{withID(event("Other", 92), "typed-92")}}).LastPosition
	waitCheckpoint(t, s, sub, "typed", end)
	if ok, err := s.Reached(context.Background(), "typed", end); err != nil || !ok {
		t.Errorf("Reached(typed, %d) = %v, %v; want true past an event of another type", end, ok, err)
	}
	sub.mustStop(t)
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(append(want, "typed-91"), got); diff != "" {
		t.Errorf("delivered events (-want +got):\n%s", diff)
	}
}

func testResume(t *testing.T, s eventstore.Store) {
	appendN := func(from, to int) int64 {
		var last int64
		for i := from; i < to; i++ {
			last = mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("resume-%d", i%3), ExpectedVersion: eventstore.AnyVersion,
				Events: []eventstore.NewEvent{withID(event("E", i), fmt.Sprintf("e-%02d", i))}}).LastPosition
		}
		return last
	}
	idsFrom := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("e-%02d", i))
		}
		return out
	}

	last := appendN(0, 10)
	var first recorder
	sub := subscribe(t, s, "resumer", first.handler(), eventstore.SubscribeOptions{BatchSize: 4})
	waitCheckpoint(t, s, sub, "resumer", last)
	sub.mustStop(t)
	if diff := cmp.Diff(idsFrom(0, 10), ids(first.events())); diff != "" {
		t.Fatalf("first run saw (-want +got):\n%s", diff)
	}

	last = appendN(10, 15)
	var second recorder
	sub = subscribe(t, s, "resumer", second.handler(), eventstore.SubscribeOptions{BatchSize: 4})
	waitCheckpoint(t, s, sub, "resumer", last)
	sub.mustStop(t)
	if diff := cmp.Diff(idsFrom(10, 15), ids(second.events())); diff != "" {
		t.Errorf("restart with the same name saw (-want +got):\n%s", diff)
	}

	var fresh recorder
	sub = subscribe(t, s, "newcomer", fresh.handler(), eventstore.SubscribeOptions{})
	waitCheckpoint(t, s, sub, "newcomer", last)
	sub.mustStop(t)
	if diff := cmp.Diff(idsFrom(0, 15), ids(fresh.events())); diff != "" {
		t.Errorf("a new name saw (-want +got):\n%s", diff)
	}
}

func testCheckpointReached(t *testing.T, s eventstore.Store) {
	if cp := mustCheckpoint(t, s, "watcher"); cp != 0 {
		t.Errorf("Checkpoint(unknown subscriber) = %d, want 0", cp)
	}
	var pos []int64
	for i := range 3 {
		pos = append(pos, mustAppend(t, s, eventstore.AppendRequest{Stream: "watched", ExpectedVersion: int64(i),
			Events: []eventstore.NewEvent{event("W", i)}}).LastPosition)
	}
	if mustReached(t, s, "watcher", pos[0]) {
		t.Errorf("Reached(unknown subscriber, first position) = true, want false")
	}

	var mu sync.Mutex
	attemptsOnThird := 0
	h := func(_ context.Context, _ eventstore.Tx, e eventstore.RecordedEvent) error {
		if e.Position != pos[2] {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		attemptsOnThird++
		return errors.New("the third event always fails")
	}
	sub := subscribe(t, s, "watcher", h, eventstore.SubscribeOptions{BatchSize: 1, PollInterval: 10 * time.Millisecond})
	waitCheckpoint(t, s, sub, "watcher", pos[1])
	waitFor(t, "the third event to be retried", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return attemptsOnThird >= 2
	})
	sub.mustStop(t)
	if cp := mustCheckpoint(t, s, "watcher"); cp != pos[1] {
		t.Errorf("Checkpoint() with a failing third event = %d, want the second position %d", cp, pos[1])
	}
	for i, want := range []bool{true, true, false} {
		if got := mustReached(t, s, "watcher", pos[i]); got != want {
			t.Errorf("Reached(watcher, event %d) = %v, want %v", i+1, got, want)
		}
	}

	var rec recorder
	sub = subscribe(t, s, "watcher", rec.handler(), eventstore.SubscribeOptions{})
	waitCheckpoint(t, s, sub, "watcher", pos[2])
	sub.mustStop(t)
	for i := range pos {
		if !mustReached(t, s, "watcher", pos[i]) {
			t.Errorf("Reached(watcher, event %d) = false after processing all, want true", i+1)
		}
	}
	next := mustAppend(t, s, eventstore.AppendRequest{Stream: "watched", ExpectedVersion: 3,
		Events: []eventstore.NewEvent{event("W", 4)}}).LastPosition
	if mustReached(t, s, "watcher", next) {
		t.Errorf("Reached(watcher, an unprocessed event) = true, want false")
	}
	if mustReached(t, s, "someone-else", pos[0]) {
		t.Errorf("Reached(another subscriber, first event) = true, want false")
	}
}

func testProcessManager(t *testing.T, s eventstore.Store) {
	const orders = 5
	for i := range orders {
		mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("order-%d", i), ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{withID(event("OrderPlaced", i), fmt.Sprintf("order-placed-%d", i))}})
	}

	var mu sync.Mutex
	failedOnce := false
	var shipments recorder
	h := func(ctx context.Context, tx eventstore.Tx, e eventstore.RecordedEvent) error {
		switch e.Type {
		case "ShipmentRequested":
			shipments.add(e)
			return nil
		case "OrderPlaced":
		default:
			return nil
		}
		order, err := tx.ReadStream(ctx, e.Stream, 0, 0)
		if err != nil {
			return err
		}
		if len(order) != 1 {
			return fmt.Errorf("order stream %s has %d events, want 1", e.Stream, len(order))
		}
		shipment := "shipment-" + strings.TrimPrefix(e.Stream, "order-")
		_, err = tx.Append(ctx, eventstore.AppendRequest{Stream: shipment, ExpectedVersion: eventstore.NoStream,
			Events: []eventstore.NewEvent{{Type: "ShipmentRequested", SchemaVersion: 1, Payload: json.RawMessage(`{}`),
				Metadata: eventstore.Metadata{CausationID: e.ID, CorrelationID: e.Stream}}}})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if e.Stream == "order-2" && !failedOnce {
			failedOnce = true
			return errors.New("fail after appending, once")
		}
		return nil
	}
	sub := subscribe(t, s, "shipping", h, eventstore.SubscribeOptions{BatchSize: 2})
	waitFor(t, "the process manager to see its own shipments", func() bool {
		if err := sub.failed(); err != nil {
			t.Fatalf("Subscribe stopped: %v", err)
		}
		return shipments.len() >= orders
	})
	sub.mustStop(t)

	if got := shipments.len(); got != orders {
		t.Errorf("ShipmentRequested deliveries = %d, want %d", got, orders)
	}
	for i := range orders {
		got := mustReadStream(t, s, fmt.Sprintf("shipment-%d", i), 0, 0)
		if len(got) != 1 {
			t.Errorf("shipment-%d has %d events, want 1", i, len(got))
			continue
		}
		if want := fmt.Sprintf("order-placed-%d", i); got[0].Metadata.CausationID != want {
			t.Errorf("shipment-%d causation id = %q, want %q", i, got[0].Metadata.CausationID, want)
		}
	}
	all := ReadAllPaged(t, s, 100)
	if len(all) != 2*orders {
		t.Errorf("ReadAll() = %d events, want %d orders and %d shipments", len(all), orders, orders)
	}
}

func testClosed(t *testing.T, s eventstore.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping() on an open store error = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	_, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: "x", ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{event("A", 1)}})
	if !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append() after Close error = %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(context.Background(), 0, 10); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("ReadAll() after Close error = %v, want ErrClosed", err)
	}
}

// testLogInspector checks Head and CountAfter against ReadAll, for the
// stores that implement eventstore.LogInspector.
func testLogInspector(t *testing.T, s eventstore.Store) {
	li, ok := s.(eventstore.LogInspector)
	if !ok {
		t.Skip("the store does not implement eventstore.LogInspector")
	}
	ctx := context.Background()
	if head, err := li.Head(ctx); err != nil || head != 0 {
		t.Fatalf("Head() of an empty log = %d, %v; want 0, nil", head, err)
	}
	for i := range 5 {
		mustAppend(t, s, eventstore.AppendRequest{Stream: fmt.Sprintf("s%d", i%2), ExpectedVersion: eventstore.AnyVersion,
			Events: []eventstore.NewEvent{event("E", 2*i), event("E", 2*i+1)}})
	}
	all := ReadAllPaged(t, s, 100)
	head, err := li.Head(ctx)
	if err != nil || head != all[len(all)-1].Position {
		t.Errorf("Head() = %d, %v; want %d (the last event ReadAll gives)", head, err, all[len(all)-1].Position)
	}
	for i, after := range append([]int64{0}, positions(all)...) {
		n, err := li.CountAfter(ctx, after)
		if want := int64(len(all) - i); err != nil || n != want {
			t.Errorf("CountAfter(%d) = %d, %v; want %d", after, n, err, want)
		}
	}
	if _, err := li.CountAfter(ctx, head+1000); !errors.Is(err, eventstore.ErrUnknownPosition) {
		t.Errorf("CountAfter(unknown) error = %v, want ErrUnknownPosition", err)
	}
}

func positions(evs []eventstore.RecordedEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Position
	}
	return out
}
