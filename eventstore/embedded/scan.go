package embedded

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// ScanLog reads the whole log from the first event in global (position)
// order in one query, as consecutive ReadAll pages from position 0 would,
// and hands it to fn in batches of up to batch events; the batches are fn's
// to keep. It is the read path of a rebuild: one read of the table instead
// of a query per page. The events carry Position, Stream, StreamVersion,
// Type, SchemaVersion, Payload and RecordedAt only: ID and Metadata stay
// empty, which spares decoding the metadata's JSON. The read transaction
// sees the log as it was at its start; events appended meanwhile are left
// for ReadAll after the last position fn saw. An error from fn stops the
// scan and is returned as is.
func (s *Store) ScanLog(ctx context.Context, batch int, fn func([]eventstore.RecordedEvent) error) error {
	if s.closed.Load() {
		return fmt.Errorf("embedded: scan log: %w", eventstore.ErrClosed)
	}
	if batch <= 0 {
		return fmt.Errorf("embedded: scan log: batch %d, want > 0", batch)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT position, stream, stream_version, type, schema_version, payload, recorded_at
		FROM events ORDER BY position`)
	if err != nil {
		return s.fail("scan log", err)
	}
	defer func() { _ = rows.Close() }()
	types := map[string]string{} // event types, allocated once each
	evs := make([]eventstore.RecordedEvent, 0, batch)
	var (
		evType, payload, recordedAt sql.RawBytes
		schemaVersion               int64
	)
	for rows.Next() {
		var e eventstore.RecordedEvent
		if err := rows.Scan(&e.Position, &e.Stream, &e.StreamVersion, &evType, &schemaVersion, &payload, &recordedAt); err != nil {
			return s.fail("scan log", fmt.Errorf("scan event: %w", err))
		}
		t, ok := types[string(evType)]
		if !ok {
			t = string(evType)
			types[t] = t
		}
		e.Type, e.SchemaVersion = t, int(schemaVersion)
		if len(payload) > 0 {
			e.Payload = append([]byte(nil), payload...)
		}
		if e.RecordedAt, err = parseRecordedAt(recordedAt); err != nil {
			return fmt.Errorf("embedded: scan log: decode recorded_at of event %d: %w", e.Position, err)
		}
		evs = append(evs, e)
		if len(evs) == batch {
			if err := fn(evs); err != nil {
				return err
			}
			evs = make([]eventstore.RecordedEvent, 0, batch)
		}
	}
	if err := rows.Err(); err != nil {
		return s.fail("scan log", err)
	}
	if len(evs) > 0 {
		return fn(evs)
	}
	return nil
}

// parseRecordedAt reads recordedAtLayout ("2006-01-02T15:04:05.000000Z")
// without time.Parse's general machinery, and with it for anything else.
func parseRecordedAt(b []byte) (time.Time, error) {
	if len(b) == len(recordedAtLayout) && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' &&
		b[19] == '.' && b[26] == 'Z' {
		num := func(lo, hi int) (int, bool) {
			n := 0
			for _, c := range b[lo:hi] {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + int(c-'0')
			}
			return n, true
		}
		y, ok1 := num(0, 4)
		mo, ok2 := num(5, 7)
		d, ok3 := num(8, 10)
		h, ok4 := num(11, 13)
		mi, ok5 := num(14, 16)
		sec, ok6 := num(17, 19)
		us, ok7 := num(20, 26)
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && mo >= 1 && mo <= 12 && d >= 1 && (d <= 28 || d <= daysIn(mo, y)) &&
			h < 24 && mi < 60 && sec < 60 {
			return time.Date(y, time.Month(mo), d, h, mi, sec, us*1000, time.UTC), nil
		}
	}
	return time.Parse(recordedAtLayout, string(b))
}

func daysIn(month, year int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
