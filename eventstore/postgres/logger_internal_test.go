package postgres

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

// The fields of With, which the logger keeps until something is logged,
// are in every line logged, as the fields of the call.
func TestWatermillLogger_keepsWithFields(t *testing.T) {
	var buf bytes.Buffer
	aborted := false
	l := watermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), func() bool { return aborted })
	w := l.With(watermill.LogFields{"topic": "events"}).With(watermill.LogFields{"msg_uuid": "u1"})
	w.Info("acked", watermill.LogFields{"n": 1})
	w.Error("failed", errors.New("boom"), nil)
	aborted = true
	w.Error("rolled back", errors.New("aborted"), nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3:\n%s", len(lines), buf.String())
	}
	for i, want := range [][]string{
		{"level=DEBUG", "msg=acked", "topic=events", "msg_uuid=u1", "n=1"},
		{"level=ERROR", "msg=failed", "topic=events", "msg_uuid=u1", "boom"},
		{"level=DEBUG", `msg="rolled back"`, "topic=events", "msg_uuid=u1", "aborted"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d = %s, want it to hold %s", i+1, lines[i], w)
			}
		}
	}
}
