package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSupervise_APanickingPartIsRestarted(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs atomic.Int32
	restarted := make(chan struct{})
	part := func(ctx context.Context) error {
		if runs.Add(1) == 1 {
			var parts map[string]func()
			parts["projection"]() // a nil func: a bug met by one event
		}
		close(restarted)
		<-ctx.Done()
		return ctx.Err()
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		supervise(ctx, "tickets projection", part, logger)
	}()
	select {
	case <-restarted:
	case <-time.After(20 * time.Second):
		t.Fatalf("the part was not restarted after its panic (%d runs)", runs.Load())
	}
	cancel()
	<-stopped
	log := logs.String()
	for _, want := range []string{"background part panicked", `"part":"tickets projection"`, "goroutine ", "supervise_test.go"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
