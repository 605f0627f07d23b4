package embedded

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

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
//
// payloadStreams, when not empty, lists prefixes of stream names: only the
// events of such streams carry their Payload, the others' stays nil and
// in the table (a fold of some streams reads the rest for their positions).
func (s *Store) ScanLog(ctx context.Context, batch int, payloadStreams []string, fn func([]eventstore.RecordedEvent) error) error {
	if s.closed.Load() {
		return fmt.Errorf("embedded: scan log: %w", eventstore.ErrClosed)
	}
	if batch <= 0 {
		return fmt.Errorf("embedded: scan log: batch %d, want > 0", batch)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return s.fail("scan log", err)
	}
	defer func() { _ = conn.Close() }()
	// Straight from the driver: database/sql would copy each payload twice
	// more (into RawBytes, then into the event), a third of the scan's
	// time; the driver's values are fresh for each row, the events' to keep.
	var fnErr, decodeErr error
	err = conn.Raw(func(dc any) error {
		q, ok := dc.(driver.QueryerContext)
		if !ok {
			return fmt.Errorf("driver connection %T cannot query", dc)
		}
		query, args := scanLogQuery(payloadStreams)
		rows, err := q.QueryContext(ctx, query, args)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		types := map[string]string{} // event types, allocated once each
		evs := make([]eventstore.RecordedEvent, 0, batch)
		vals := make([]driver.Value, len(rows.Columns()))
		if len(vals) != scanLogColumns {
			return fmt.Errorf("%d columns, want %d", len(vals), scanLogColumns)
		}
		for {
			if err := rows.Next(vals); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
			evs = evs[:len(evs)+1]
			if decodeErr = scanLogRow(vals, types, &evs[len(evs)-1]); decodeErr != nil {
				return decodeErr
			}
			if len(evs) == batch {
				if fnErr = fn(evs); fnErr != nil {
					return fnErr
				}
				evs = make([]eventstore.RecordedEvent, 0, batch)
			}
		}
		if len(evs) > 0 {
			fnErr = fn(evs)
		}
		return fnErr
	})
	switch {
	case fnErr != nil:
		return fnErr
	case decodeErr != nil:
		return fmt.Errorf("embedded: scan log: %w", decodeErr)
	case err != nil:
		return s.fail("scan log", err)
	}
	return nil
}

// scanLogQuery reads what a fold needs, the payload as a BLOB (the driver
// hands a BLOB over as a []byte of its own, and TEXT as a string that
// would take one more copy to become bytes), and only for the streams that
// start with one of prefixes when there are any.
func scanLogQuery(prefixes []string) (string, []driver.NamedValue) {
	payload := "CAST(payload AS BLOB)"
	var args []driver.NamedValue
	if len(prefixes) > 0 {
		conds := make([]string, len(prefixes))
		for i, p := range prefixes {
			conds[i] = fmt.Sprintf("substr(stream, 1, %d) = ?", utf8.RuneCountInString(p))
			args = append(args, driver.NamedValue{Ordinal: i + 1, Value: p})
		}
		payload = "CASE WHEN " + strings.Join(conds, " OR ") + " THEN " + payload + " END"
	}
	return `SELECT position, stream, stream_version, type, schema_version, ` + payload + `, recorded_at
	FROM events ORDER BY position`, args
}

// scanLogColumns is how many columns scanLogQuery selects.
const scanLogColumns = 7

// scanLogRow decodes the driver's values of a scanLogQuery row into e.
func scanLogRow(vals []driver.Value, types map[string]string, e *eventstore.RecordedEvent) error {
	var (
		evType, recordedAt string
		schema             int64
	)
	if err := errors.Join(column(vals, 0, &e.Position), column(vals, 1, &e.Stream), column(vals, 2, &e.StreamVersion),
		column(vals, 3, &evType), column(vals, 4, &schema), column(vals, 6, &recordedAt)); err != nil {
		return fmt.Errorf("event after position %d: %w", e.Position, err)
	}
	t, known := types[evType]
	if !known {
		t = evType
		types[t] = t
	}
	e.Type, e.SchemaVersion = t, int(schema)
	switch p := vals[5].(type) {
	case []byte:
		e.Payload = p
	case nil:
	default:
		return fmt.Errorf("event %d: payload is %T", e.Position, vals[5])
	}
	var err error
	if e.RecordedAt, err = parseRecordedAt(recordedAt); err != nil {
		return fmt.Errorf("decode recorded_at of event %d: %w", e.Position, err)
	}
	return nil
}

// column sets *dst to value i, which must be a T.
func column[T any](vals []driver.Value, i int, dst *T) error {
	v, ok := vals[i].(T)
	if !ok {
		return fmt.Errorf("column %d is %T", i+1, vals[i])
	}
	*dst = v
	return nil
}

// parseRecordedAt reads recordedAtLayout ("2006-01-02T15:04:05.000000Z")
// without time.Parse's general machinery, and with it for anything else.
func parseRecordedAt[T string | []byte](b T) (time.Time, error) {
	if len(b) == len(recordedAtLayout) && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' &&
		b[19] == '.' && b[26] == 'Z' {
		num := func(lo, hi int) (int, bool) {
			n := 0
			for i := lo; i < hi; i++ {
				c := b[i]
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
