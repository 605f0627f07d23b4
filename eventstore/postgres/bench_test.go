package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// benchPayload is a mail-like JSON payload of about 2 KB.
var benchPayload = func() json.RawMessage {
	b, _ := json.Marshal(map[string]string{"subject": "Printer does not print",
		"body": strings.Repeat("A line of a customer's message about a printer. ", 40)})
	return b
}()

func benchEvents(prefix string, n int) []eventstore.NewEvent {
	evs := make([]eventstore.NewEvent, n)
	for i := range evs {
		evs[i] = eventstore.NewEvent{ID: fmt.Sprintf("%s-%d", prefix, i), Type: "MailReceived", SchemaVersion: 1,
			Payload: benchPayload}
	}
	return evs
}

func benchmarkAppend(b *testing.B, perTx int) {
	s := newStore(b)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		stream := fmt.Sprintf("bench-%d", i)
		if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream,
			Events: benchEvents(stream, perTx)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i*perTx)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkAppendSingle(b *testing.B)   { benchmarkAppend(b, 1) }
func BenchmarkAppendBatch100(b *testing.B) { benchmarkAppend(b, 100) }

// BenchmarkReadAll measures catch-up reads of 10,000 events in pages of 1,000.
func BenchmarkReadAll(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	const total = 10_000
	for i := 0; i < total; i += 100 {
		stream := fmt.Sprintf("bench-%d", i)
		if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, ExpectedVersion: eventstore.NoStream,
			Events: benchEvents(stream, 100)}); err != nil {
			b.Fatal(err)
		}
	}
	read := 0
	b.ReportAllocs()
	for b.Loop() {
		var after int64
		for {
			evs, err := s.ReadAll(ctx, after, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			read += len(evs)
			after = evs[len(evs)-1].Position
		}
	}
	if read%total != 0 {
		b.Fatalf("read %d events, want multiples of %d", read, total)
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "events/s")
}
