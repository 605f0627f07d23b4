package embedded

import (
	"testing"
	"time"
)

func TestParseRecordedAt_SameAsTimeParse(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"2026-01-02T03:04:05.000006Z", "1999-12-31T23:59:59.999999Z", "2024-02-29T00:00:00.000000Z",
		"2023-02-29T00:00:00.000000Z", "2026-13-01T00:00:00.000000Z", "2026-01-02T24:00:00.000000Z",
		"2026-01-02T03:04:05.00000xZ", "2026-01-02T03:04:05Z", "", "2026-04-31T00:00:00.000000Z", "0000-01-01T00:00:00.000000Z",
	} {
		want, wantErr := time.Parse(recordedAtLayout, s)
		got, err := parseRecordedAt([]byte(s))
		if (err != nil) != (wantErr != nil) || got != want {
			t.Errorf("parseRecordedAt(%q) = %v, %v; want %v, %v", s, got, err, want, wantErr)
		}
	}
}
