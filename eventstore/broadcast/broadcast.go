// Package broadcast follows the global log of an event store once per
// process and hands each new event to any number of live readers (the
// API's event stream), none of which can hold the others or the store
// back.
//
// The Broadcaster reads the log from its end (eventstore.LogInspector)
// with ReadAll, woken by the store's commits where it can tell
// (eventstore.Notifier) and otherwise every PollInterval, and keeps the
// latest events in a ring bounded in events and bytes. A Cursor reads from
// the ring; one that starts behind the ring (a client resuming after a
// disconnect) reads the store until it meets the ring. A cursor that falls
// so far behind that the ring has dropped its next event gets ErrLagged and
// its position, from which it can resume: a slow reader costs its own
// connection, never the ring's writer or another reader.
package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// ErrLagged is returned by Cursor.Read when the reader fell so far behind
// that the ring no longer holds its next event. Resume from Cursor.Position.
var ErrLagged = errors.New("broadcast: reader fell behind the live buffer")

// Defaults of Options.
const (
	DefaultPollInterval = 100 * time.Millisecond
	DefaultBufferEvents = 4096
	DefaultBufferBytes  = 16 << 20
	// readPage is how many events one read of the store returns.
	readPage = 500
)

// Options tune a Broadcaster; zero values take the defaults.
type Options struct {
	// PollInterval is how often the log is read when the store sends no
	// wake-up (PostgreSQL, or another process appending).
	PollInterval time.Duration
	// BufferEvents and BufferBytes bound the ring: the events (and their
	// payloads' bytes) a reader may fall behind before ErrLagged.
	BufferEvents int
	BufferBytes  int
	Logger       *slog.Logger
}

// Store is what the Broadcaster reads.
type Store interface {
	ReadAll(ctx context.Context, after int64, limit int) ([]eventstore.RecordedEvent, error)
	eventstore.LogInspector
}

// Broadcaster follows the log; Run drives it, Cursor reads from it.
type Broadcaster struct {
	store Store
	opts  Options

	ready     chan struct{} // closed once the end of the log is known
	readyOnce sync.Once

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever events are added
	last    int64         // position of the newest event read
	// base is the position just before ring[0]; seq of ring[i] is first+i.
	base  int64
	first uint64
	ring  []eventstore.RecordedEvent
	bytes int
	index map[int64]uint64 // position -> seq, for the events in the ring
}

// New returns a Broadcaster on store; it reads nothing until Run.
func New(store Store, opts Options) *Broadcaster {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.BufferEvents <= 0 {
		opts.BufferEvents = DefaultBufferEvents
	}
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = DefaultBufferBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Broadcaster{store: store, opts: opts, ready: make(chan struct{}), changed: make(chan struct{}),
		index: map[int64]uint64{}}
}

// Run follows the log until ctx ends. A failing read is logged and tried
// again; a second Run (after a restart by a supervisor) goes on where the
// first stopped.
func (b *Broadcaster) Run(ctx context.Context) error {
	select {
	case <-b.ready:
	default:
		head, err := b.store.Head(ctx)
		if err != nil {
			return fmt.Errorf("broadcast: end of the log: %w", err)
		}
		b.mu.Lock()
		b.last, b.base = head, head
		b.mu.Unlock()
		b.readyOnce.Do(func() { close(b.ready) })
	}
	notifier, _ := b.store.(eventstore.Notifier)
	ticker := time.NewTicker(b.opts.PollInterval)
	defer ticker.Stop()
	for {
		var wake <-chan struct{}
		if notifier != nil {
			wake = notifier.Appended() // taken before the read, so no commit after it is missed
		}
		b.mu.Lock()
		after := b.last
		b.mu.Unlock()
		evs, err := b.store.ReadAll(ctx, after, readPage)
		if err != nil && ctx.Err() == nil {
			b.opts.Logger.Warn("live event stream: read the log", "after", after, "err", err)
		}
		if len(evs) > 0 {
			b.add(evs)
			if len(evs) == readPage {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-ticker.C:
		}
	}
}

// add appends evs to the ring, drops what no longer fits, and wakes the
// readers.
func (b *Broadcaster) add(evs []eventstore.RecordedEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range evs {
		b.index[e.Position] = b.first + uint64(len(b.ring))
		b.ring = append(b.ring, e)
		b.bytes += len(e.Payload)
	}
	b.last = evs[len(evs)-1].Position
	drop := 0
	for len(b.ring)-drop > b.opts.BufferEvents || (b.bytes > b.opts.BufferBytes && len(b.ring)-drop > 1) {
		e := b.ring[drop]
		delete(b.index, e.Position)
		b.bytes -= len(e.Payload)
		b.base = e.Position
		drop++
	}
	if drop > 0 {
		// Copy rather than reslice, so the dropped events' memory is freed.
		b.ring = append(make([]eventstore.RecordedEvent, 0, len(b.ring)-drop+len(evs)), b.ring[drop:]...)
		b.first += uint64(drop)
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// Head returns the position of the newest event the Broadcaster has read,
// after waiting for Run to find the end of the log.
func (b *Broadcaster) Head(ctx context.Context) (int64, error) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, nil
}

// nextSeq returns the seq of the event after position, when the ring has
// it or it is the next to come.
func (b *Broadcaster) nextSeq(position int64) (uint64, bool) {
	if position == b.base {
		return b.first, true
	}
	if seq, ok := b.index[position]; ok {
		return seq + 1, true
	}
	return 0, false
}

// Cursor reads the events after one position, from the ring or, while it
// is behind the ring, from the store. It is used by one goroutine.
type Cursor struct {
	b      *Broadcaster
	pos    int64  // the last event returned (or the start)
	seq    uint64 // the next event in the ring, when inRing
	inRing bool
}

// Cursor returns a cursor after position (0: from the first event of the
// log). It waits for Run to find the end of the log. A position the store
// does not know is eventstore.ErrUnknownPosition.
func (b *Broadcaster) Cursor(ctx context.Context, after int64) (*Cursor, error) {
	if _, err := b.Head(ctx); err != nil {
		return nil, err
	}
	c := &Cursor{b: b, pos: after}
	b.mu.Lock()
	c.seq, c.inRing = b.nextSeq(after)
	b.mu.Unlock()
	if !c.inRing && after > 0 {
		if _, err := b.store.ReadAll(ctx, after, 1); err != nil {
			return nil, fmt.Errorf("broadcast: cursor after %d: %w", after, err)
		}
	}
	return c, nil
}

// Position is the position of the last event Read returned, or the start.
func (c *Cursor) Position() int64 { return c.pos }

// Changed returns a channel that is closed when the Broadcaster has read
// new events. Take it before Read, so that events added after the Read
// still wake the caller.
func (c *Cursor) Changed() <-chan struct{} {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.b.changed
}

// Read returns up to limit of the events after the cursor that are there
// now, possibly none, and moves the cursor past them. ErrLagged means the
// ring dropped the cursor's next event; the cursor stays where it was.
func (c *Cursor) Read(ctx context.Context, limit int) ([]eventstore.RecordedEvent, error) {
	b := c.b
	b.mu.Lock()
	if !c.inRing {
		c.seq, c.inRing = b.nextSeq(c.pos)
	}
	if c.inRing {
		defer b.mu.Unlock()
		if c.seq < b.first {
			return nil, ErrLagged
		}
		from := int(c.seq - b.first)
		n := min(limit, len(b.ring)-from)
		if n <= 0 {
			return nil, nil
		}
		out := make([]eventstore.RecordedEvent, n)
		copy(out, b.ring[from:from+n])
		c.seq += uint64(n)
		c.pos = out[n-1].Position
		return out, nil
	}
	b.mu.Unlock()
	// Behind the ring: read the store; the next Read goes on in the ring
	// once the cursor has reached an event the ring holds.
	evs, err := b.store.ReadAll(ctx, c.pos, limit)
	if err != nil {
		return nil, fmt.Errorf("broadcast: read after %d: %w", c.pos, err)
	}
	if len(evs) > 0 {
		c.pos = evs[len(evs)-1].Position
	}
	return evs, nil
}
