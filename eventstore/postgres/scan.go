package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// scanLogQuery is ReadAll from the first event without a limit, and with
// only the columns a fold of payloads needs; with prefixes, only the
// payloads of the streams that start with one of them.
func scanLogQuery(prefixes []string) (string, []any) {
	payload := "payload"
	var args []any
	if len(prefixes) > 0 {
		conds := make([]string, len(prefixes))
		for i, p := range prefixes {
			conds[i] = fmt.Sprintf("starts_with(stream, $%d)", i+1)
			args = append(args, p)
		}
		payload = "CASE WHEN " + strings.Join(conds, " OR ") + " THEN payload END"
	}
	return `SELECT position, stream, stream_version, event_type, schema_version, ` + payload + `, recorded_at
FROM events
WHERE transaction_id < ` + sqlHorizon + `
ORDER BY transaction_id, position`, args
}

// ScanLog reads the whole visible log from the first event in global order
// in one query, as consecutive ReadAll pages from position 0 would, and
// hands it to fn in batches of up to batch events; the batches are fn's to
// keep. It is the read path of a rebuild: one ordered index scan that the
// server streams while fn works, instead of a query per page. The events
// carry Position, Stream, StreamVersion, Type, SchemaVersion, Payload and
// RecordedAt only: ID and Metadata stay empty. The query holds its
// snapshot (not a transaction id) until the last row, so it delays no
// reader; events appended meanwhile are left for ReadAll after the last
// position fn saw. An error from fn stops the scan and is returned as is.
//
// payloadStreams, when not empty, lists prefixes of stream names: only the
// events of such streams carry their Payload, the others' stays nil and
// on the server (a fold of some streams reads the rest for their
// positions).
func (s *Store) ScanLog(ctx context.Context, batch int, payloadStreams []string, fn func([]eventstore.RecordedEvent) error) error {
	if s.isClosed() {
		return eventstore.ErrClosed
	}
	if batch <= 0 {
		return fmt.Errorf("eventstore/postgres: scan log: batch %d must be positive", batch)
	}
	query, args := scanLogQuery(payloadStreams)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("eventstore/postgres: scan log: %w", err)
	}
	defer rows.Close()
	sc := newLogScanner(rows.FieldDescriptions())
	evs := make([]eventstore.RecordedEvent, 0, batch)
	for rows.Next() {
		evs = evs[:len(evs)+1]
		e := &evs[len(evs)-1]
		if sc != nil {
			err = sc.scan(rows.RawValues(), e)
		} else {
			err = scanLogRow(rows, e)
		}
		if err != nil {
			return fmt.Errorf("eventstore/postgres: scan log after position %d: %w", lastPosition(evs[:len(evs)-1]), err)
		}
		if len(evs) == batch {
			if err := fn(evs); err != nil {
				return err
			}
			evs = make([]eventstore.RecordedEvent, 0, batch)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("eventstore/postgres: scan log: %w", err)
	}
	if len(evs) > 0 {
		return fn(evs)
	}
	return nil
}

func lastPosition(evs []eventstore.RecordedEvent) int64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Position
}

// scanLogRow is the portable way to read a row of scanLogQuery.
func scanLogRow(rows pgx.Rows, e *eventstore.RecordedEvent) error {
	var payload []byte
	if err := rows.Scan(&e.Position, &e.Stream, &e.StreamVersion, &e.Type, &e.SchemaVersion, &payload, &e.RecordedAt); err != nil {
		return err
	}
	if payload != nil {
		e.Payload = payload
	}
	e.RecordedAt = e.RecordedAt.UTC()
	return nil
}

// logScanner decodes the raw columns of scanLogQuery: a scan of the whole log
// spends less on them than on pgx's Scan with its per-value dispatch.
type logScanner struct {
	formats [7]int16
	types   map[string]string // event types, allocated once each
	slab    []byte            // payloads are carved from it
}

// slabSize is the allocation the payloads share.
const slabSize = 256 << 10

// copy returns a copy of b carved from the slab: one allocation for many
// payloads instead of one each.
func (sc *logScanner) copy(b []byte) []byte {
	if len(b) > slabSize/4 {
		return append([]byte(nil), b...)
	}
	if len(sc.slab)+len(b) > cap(sc.slab) {
		sc.slab = make([]byte, 0, slabSize)
	}
	n := len(sc.slab)
	sc.slab = append(sc.slab, b...)
	return sc.slab[n : n+len(b) : n+len(b)]
}

// newLogScanner returns a scanner for the wire formats the server chose,
// or nil when they are not the ones it reads (text timestamps, as with the
// simple protocol): then the rows go through scanLogRow.
func newLogScanner(fds []pgconn.FieldDescription) *logScanner {
	sc := &logScanner{types: map[string]string{}}
	if len(fds) != len(sc.formats) || fds[6].Format != pgx.BinaryFormatCode {
		return nil
	}
	for i, fd := range fds {
		sc.formats[i] = fd.Format
	}
	return sc
}

func (sc *logScanner) scan(vals [][]byte, e *eventstore.RecordedEvent) error {
	if len(vals) != len(sc.formats) {
		return fmt.Errorf("%d values, want %d", len(vals), len(sc.formats))
	}
	var err error
	if e.Position, err = sc.int(0, vals[0]); err != nil {
		return fmt.Errorf("position: %w", err)
	}
	if vals[1] == nil || vals[3] == nil {
		return errors.New("stream or event type is NULL")
	}
	e.Stream = string(vals[1])
	if e.StreamVersion, err = sc.int(2, vals[2]); err != nil {
		return fmt.Errorf("stream_version of %d: %w", e.Position, err)
	}
	t, ok := sc.types[string(vals[3])]
	if !ok {
		t = string(vals[3])
		sc.types[t] = t
	}
	e.Type = t
	v, err := sc.int(4, vals[4])
	if err != nil {
		return fmt.Errorf("schema_version of %d: %w", e.Position, err)
	}
	e.SchemaVersion = int(v)
	if vals[5] != nil { // json: the same bytes in text and binary format
		e.Payload = sc.copy(vals[5])
	}
	if e.RecordedAt, err = sc.time(6, vals[6]); err != nil {
		return fmt.Errorf("recorded_at of %d: %w", e.Position, err)
	}
	return nil
}

// int decodes an int8 or int4 column.
func (sc *logScanner) int(col int, b []byte) (int64, error) {
	if sc.formats[col] == pgx.TextFormatCode {
		return strconv.ParseInt(string(b), 10, 64)
	}
	switch len(b) {
	case 8:
		return int64(binary.BigEndian.Uint64(b)), nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b))), nil
	}
	return 0, fmt.Errorf("%d bytes for an integer", len(b))
}

// pgEpoch is PostgreSQL's zero time, 2000-01-01 UTC, in Unix microseconds.
const pgEpoch = 946_684_800_000_000

// time decodes a timestamptz column in UTC.
func (sc *logScanner) time(col int, b []byte) (time.Time, error) {
	if len(b) != 8 {
		return time.Time{}, fmt.Errorf("%d bytes for a timestamptz", len(b))
	}
	us := int64(binary.BigEndian.Uint64(b))
	if us == 1<<63-1 || us == -1<<63 {
		return time.Time{}, errors.New("infinite timestamptz")
	}
	return time.UnixMicro(pgEpoch + us).UTC(), nil
}
