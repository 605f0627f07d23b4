package embedded

import (
	"context"
	"fmt"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

var (
	_ eventstore.LogInspector = (*Store)(nil)
	_ eventstore.Notifier     = (*Store)(nil)
)

// Head implements eventstore.LogInspector: every stored position is
// committed, so the end of the log is the largest.
func (s *Store) Head(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("embedded: head of the log: %w", eventstore.ErrClosed)
	}
	var pos int64
	if err := s.run(nil).scalar(ctx, &pos, `SELECT COALESCE(MAX(position), 0) FROM events`); err != nil {
		return 0, s.fail("head of the log", err)
	}
	return pos, nil
}

// CountAfter implements eventstore.LogInspector. An unknown position is
// eventstore.ErrUnknownPosition.
func (s *Store) CountAfter(ctx context.Context, after int64) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("embedded: count after %d: %w", after, eventstore.ErrClosed)
	}
	if after > 0 {
		var exists bool
		if err := s.run(nil).scalar(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM events WHERE position = $1)`, after); err != nil {
			return 0, s.fail("count after", err)
		}
		if !exists {
			return 0, fmt.Errorf("embedded: count after %d: %w", after, eventstore.ErrUnknownPosition)
		}
	}
	var n int64
	if err := s.run(nil).scalar(ctx, &n, `SELECT count(*) FROM events WHERE position > $1`, max(after, 0)); err != nil {
		return 0, s.fail("count after", err)
	}
	return n, nil
}

// Appended implements eventstore.Notifier: the channel closes after the
// next commit through this Store that appended (as subscribers are woken).
func (s *Store) Appended() <-chan struct{} { return s.woken() }
