package graphsource

import (
	"context"
	"strings"
	"sync"
)

// Limiter keeps the requests to each mailbox within Exchange Online's
// MailboxConcurrency: at most MaxConcurrency at once per app and mailbox.
// The limit is Microsoft's per app, so one Limiter should serve every
// fetcher of a process; it is safe for concurrent use.
type Limiter struct {
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// NewLimiter returns a limiter with no request in flight.
func NewLimiter() *Limiter {
	return &Limiter{slots: map[string]chan struct{}{}}
}

// acquire waits for a free slot of the mailbox at baseURL and returns the
// func that frees it (safe to call more than once).
func (l *Limiter) acquire(ctx context.Context, baseURL, mailbox string) (release func(), _ error) {
	key := strings.ToLower(strings.TrimRight(baseURL, "/")) + " " + strings.ToLower(mailbox)
	l.mu.Lock()
	ch, ok := l.slots[key]
	if !ok {
		ch = make(chan struct{}, MaxConcurrency)
		l.slots[key] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-ch }) }, nil
}
