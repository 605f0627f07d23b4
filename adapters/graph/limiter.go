package graph

import (
	"context"
	"strings"
	"sync"
)

// MailboxConcurrency is Exchange Online's MailboxConcurrency limit: at
// most 4 concurrent requests per app and mailbox; more are answered 429.
// See https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits.
const MailboxConcurrency = 4

// DefaultMailboxLimiter is the process's limiter, MailboxConcurrency per
// mailbox. The limit is Microsoft's per app and mailbox, not per adapter:
// the inbound fetchers of a mailbox (two folders, say) and the outbound
// sender of the same mailbox must take their slots from one limiter, and
// they use this one unless given another.
var DefaultMailboxLimiter = NewMailboxLimiter(MailboxConcurrency)

// MailboxLimiter keeps the requests to each mailbox within a number at
// once. It is safe for concurrent use.
type MailboxLimiter struct {
	perMailbox int

	mu    sync.Mutex
	slots map[string]chan struct{}
}

// NewMailboxLimiter returns a limiter of perMailbox requests at once per
// mailbox (MailboxConcurrency when perMailbox is not positive) with none in
// flight.
func NewMailboxLimiter(perMailbox int) *MailboxLimiter {
	if perMailbox <= 0 {
		perMailbox = MailboxConcurrency
	}
	return &MailboxLimiter{perMailbox: perMailbox, slots: map[string]chan struct{}{}}
}

// Acquire waits for a free slot of mailbox at Graph's baseURL (its root,
// without /v1.0) and returns the func that frees it, which is safe to call
// more than once. Base URL and mailbox compare without case and trailing
// slashes. It returns ctx.Err() when ctx ends first.
func (l *MailboxLimiter) Acquire(ctx context.Context, baseURL, mailbox string) (release func(), _ error) {
	key := strings.ToLower(strings.TrimRight(baseURL, "/")) + " " + strings.ToLower(mailbox)
	l.mu.Lock()
	ch, ok := l.slots[key]
	if !ok {
		ch = make(chan struct{}, l.perMailbox)
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
