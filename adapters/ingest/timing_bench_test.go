package ingest

import (
	"context"
	"io"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// timedSink measures where a benchmark's poll spends its wall time.
type timedSink struct {
	mailsource.Sink
	known, receive, commit time.Duration
}

func (t *timedSink) Known(ctx context.Context, keys []string) (map[string]mailsource.Status, error) {
	start := time.Now()
	defer func() { t.known += time.Since(start) }()
	return t.Sink.Known(ctx, keys)
}

func (t *timedSink) Receive(ctx context.Context, key string, size int64, r io.Reader) (mailsource.Outcome, error) {
	start := time.Now()
	defer func() { t.receive += time.Since(start) }()
	return t.Sink.Receive(ctx, key, size, r)
}

func (t *timedSink) Commit(ctx context.Context) error {
	start := time.Now()
	defer func() { t.commit += time.Since(start) }()
	return t.Sink.Commit(ctx)
}

// StartCommit forwards to the real sink's background commit; commit time
// counts only how long the fetcher waited for it.
func (t *timedSink) StartCommit(ctx context.Context) func() error {
	wait := t.Sink.(mailsource.AsyncCommitter).StartCommit(ctx)
	return func() error {
		start := time.Now()
		defer func() { t.commit += time.Since(start) }()
		return wait()
	}
}
