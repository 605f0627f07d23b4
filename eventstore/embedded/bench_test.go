package embedded_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// benchEvent is a small event of the size of a typical ticket change.
func benchEvent(n int) eventstore.NewEvent {
	return eventstore.NewEvent{
		Type:          "TicketCommented",
		SchemaVersion: 1,
		Payload:       json.RawMessage(fmt.Sprintf(`{"ticket":%d,"author":"agent:alice","body":"Thanks, we are looking into it."}`, n)),
		Metadata:      eventstore.Metadata{CorrelationID: "corr", Actor: "agent:alice"},
	}
}

// BenchmarkAppendSingle appends one event per transaction (one commit, one
// fsync each); ns/op is the cost of one event.
func BenchmarkAppendSingle(b *testing.B) {
	s := openStore(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		_, err := s.Append(ctx, eventstore.AppendRequest{Stream: fmt.Sprintf("ticket-%d", i%64),
			ExpectedVersion: eventstore.AnyVersion, Events: []eventstore.NewEvent{benchEvent(i)}})
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

// BenchmarkAppendBatch100 appends 100 events to one stream per transaction.
func BenchmarkAppendBatch100(b *testing.B) {
	s := openStore(b)
	ctx := context.Background()
	batch := make([]eventstore.NewEvent, 100)
	for i := range batch {
		batch[i] = benchEvent(i)
	}
	i := 0
	for b.Loop() {
		_, err := s.Append(ctx, eventstore.AppendRequest{Stream: fmt.Sprintf("import-%d", i),
			ExpectedVersion: eventstore.NoStream, Events: batch})
		if err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
}

// BenchmarkReadAll reads a 10,000-event log in pages of 500, as a projection
// rebuild does; ns/op is one full pass.
func BenchmarkReadAll(b *testing.B) {
	s := openStore(b)
	ctx := context.Background()
	const total, page = 10_000, 500
	batch := make([]eventstore.NewEvent, 100)
	for i := 0; i < total/len(batch); i++ {
		for j := range batch {
			batch[j] = benchEvent(i*len(batch) + j)
		}
		if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: fmt.Sprintf("ticket-%d", i),
			ExpectedVersion: eventstore.NoStream, Events: batch}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		var after int64
		n := 0
		for {
			evs, err := s.ReadAll(ctx, after, page)
			if err != nil {
				b.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			n += len(evs)
			after = evs[len(evs)-1].Position
		}
		if n != total {
			b.Fatalf("read %d events, want %d", n, total)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/event")
}
