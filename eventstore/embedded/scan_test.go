package embedded

import (
	"database/sql/driver"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

func TestParseRecordedAt_SameAsTimeParse(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"2026-01-02T03:04:05.000006Z", "1999-12-31T23:59:59.999999Z", "2024-02-29T00:00:00.000000Z",
		"2023-02-29T00:00:00.000000Z", "2026-13-01T00:00:00.000000Z", "2026-01-02T24:00:00.000000Z",
		"2026-01-02T03:04:05.00000xZ", "2026-01-02T03:04:05Z", "", "2026-04-31T00:00:00.000000Z", "0000-01-01T00:00:00.000000Z",
	} {
		want, wantErr := time.Parse(recordedAtLayout, s)
		gotB, errB := parseRecordedAt([]byte(s))
		gotS, errS := parseRecordedAt(s)
		if (errB != nil) != (wantErr != nil) || gotB != want || (errS != nil) != (wantErr != nil) || gotS != want {
			t.Errorf("parseRecordedAt(%q) = %v, %v (bytes), %v, %v (string); want %v, %v", s, gotB, errB, gotS, errS, want, wantErr)
		}
	}
}

// TestScanLogRow_RefusesValuesOfOtherTypes wants an error, not a panic, for
// a row whose values are not what the events table holds.
func TestScanLogRow_RefusesValuesOfOtherTypes(t *testing.T) {
	t.Parallel()
	good := []driver.Value{int64(7), "ticket-1", int64(2), "TicketCreated", int64(1), []byte(`{}`), "2026-01-02T03:04:05.000006Z"}
	var e eventstore.RecordedEvent
	if err := scanLogRow(good, map[string]string{}, &e); err != nil || e.Position != 7 || string(e.Payload) != "{}" ||
		e.RecordedAt != time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC) {
		t.Fatalf("scanLogRow(good) = %v, %+v", err, e)
	}
	for col, bad := range []driver.Value{"7", int64(1), "2", int64(3), "1", "{}", time.Time{}} {
		vals := append([]driver.Value(nil), good...)
		vals[col] = bad
		if err := scanLogRow(vals, map[string]string{}, &eventstore.RecordedEvent{}); err == nil {
			t.Errorf("scanLogRow() with column %d = %#v: no error", col+1, bad)
		}
	}
	vals := append([]driver.Value(nil), good...)
	vals[5] = nil
	e = eventstore.RecordedEvent{}
	if err := scanLogRow(vals, map[string]string{}, &e); err != nil || e.Payload != nil {
		t.Errorf("scanLogRow() with a NULL payload = %v, %q; want no error and no payload", err, e.Payload)
	}
}
