package eventstore

import (
	"slices"
	"time"
)

// DefaultMaxAttempts is SubscribeOptions.MaxAttempts when it is zero: with
// the stores' back-off (the poll interval, doubling) five failures take a
// few seconds, long enough to ride out a passing fault of the handler's own,
// short enough that the events behind a poisoned one wait only briefly.
const DefaultMaxAttempts = 5

// SetAside is an event a subscriber's handler failed on MaxAttempts times
// while the store itself was healthy, as the store hands it to
// SetAsideCodec.SetAsideEvent.
type SetAside struct {
	// Subscriber is the subscription's name.
	Subscriber string
	// Event is the event the handler failed on; for a retry (see
	// SetAsideCodec) it is the original event, not the retry request.
	Event RecordedEvent
	// Attempts is how many times the handler failed on it.
	Attempts int
	// Err is the handler's last error.
	Err error
	// At is when the store set the event aside (its clock).
	At time.Time
}

// Retry is an operator's request that a subscriber handle the event at
// Position again (an event it set aside).
type Retry struct {
	Subscriber string
	Position   int64
}

// SetAsideCodec turns a set-aside event into the event of record that says
// so, and reads back the requests to retry one. The store knows neither
// event type: both belong to the domain, and the application wires them in
// (ticketing.SetAsideRecorder). A store
//
//   - appends SetAsideEvent's request in the transaction that moves the
//     subscriber's checkpoint past the set-aside event, so the record and
//     the skip commit together or not at all;
//   - delivers an event of RetryType that DecodeRetry says is for this
//     subscriber as the original event (read again by its position) followed
//     by the request itself; the original's failures count again, and it is
//     set aside again after MaxAttempts. Requests for other subscribers are
//     delivered as any other event.
type SetAsideCodec interface {
	SetAsideEvent(s SetAside) (AppendRequest, error)
	RetryType() string
	DecodeRetry(e RecordedEvent) (Retry, error)
}

// Failures applies SubscribeOptions.MaxAttempts for a backend's
// subscription. A delivery is one event (Subscribe) or one batch
// (SubscribeBatch), keyed by the position of its first event; the backend
// reports each failure it counts (a failure of the handler while the store
// was healthy, not one the store caused), and asks before each delivery
// whether an event is due to be set aside instead. A batch that failed
// MaxAttempts times is delivered again one event per batch, up to its last
// event, so that the event that fails it is found and set aside alone.
//
// Failures are counted per delivery, not only for the last one that
// failed: on PostgreSQL a batch rolls back whole, so an event set aside in
// a batch that a second poisoned event then fails is delivered again, and
// must still be due (else the two would reset each other's count for
// ever).
//
// A Failures belongs to one subscription goroutine; it is not safe for
// concurrent use.
type Failures struct {
	max int // 0: never set aside (no codec)

	failing map[int64]*failing // by the position of the delivery's first event
	singles []int64            // positions of a batch being delivered one by one
}

// failing is the failure count of one delivery.
type failing struct {
	n     int
	event RecordedEvent // the event the handler last failed on
	err   error
}

// maxFailing bounds how many failing deliveries a subscription remembers;
// past it, the oldest knowledge is dropped (counts start again).
const maxFailing = 1000

// NewFailures returns the failure count of a subscription with opts.
// Without opts.SetAside nothing is ever due: an event the store cannot
// record as set aside is delivered again for ever rather than dropped.
func NewFailures(opts SubscribeOptions) *Failures {
	f := &Failures{failing: map[int64]*failing{}}
	if opts.SetAside != nil {
		f.max = opts.MaxAttempts
		if f.max <= 0 {
			f.max = DefaultMaxAttempts
		}
	}
	return f
}

// Failed counts a failure of the delivery starting at key: the handler
// failed on event with err. batch lists the positions of a batch
// delivery's events (nil for a single event); once such a batch has failed
// MaxAttempts times its events are delivered one by one (Singles). It
// reports the failures in a row of this delivery.
func (f *Failures) Failed(key int64, event RecordedEvent, err error, batch []int64) int {
	c := f.failing[key]
	if c == nil {
		if len(f.failing) >= maxFailing {
			clear(f.failing)
		}
		c = &failing{}
		f.failing[key] = c
	}
	c.n++
	c.event, c.err = event, err
	if f.max > 0 && c.n >= f.max && len(batch) > 1 {
		f.singles = slices.Clone(batch)
		delete(f.failing, key)
		return f.max
	}
	return c.n
}

// Due reports whether the delivery starting at position is to be set
// aside now instead of handled, and how.
func (f *Failures) Due(subscriber string, position int64, at time.Time) (SetAside, bool) {
	c := f.failing[position]
	if f.max == 0 || c == nil || c.n < f.max {
		return SetAside{}, false
	}
	return SetAside{Subscriber: subscriber, Event: c.event, Attempts: c.n, Err: c.err, At: at}, true
}

// Passed tells that the delivery at position was handled or set aside.
// A handled delivery's failures are forgotten; a set-aside one stays due,
// in case its transaction does not commit and it comes again. A batch
// being delivered one by one is done after its last event.
func (f *Failures) Passed(position int64) {
	if c := f.failing[position]; c != nil && (f.max == 0 || c.n < f.max) {
		delete(f.failing, position)
	}
	if len(f.singles) > 0 && position == f.singles[len(f.singles)-1] {
		f.singles = nil
	}
}

// Singles reports whether events are to be delivered one per batch (a
// failing batch is being taken apart).
func (f *Failures) Singles() bool { return len(f.singles) > 0 }

// Wants reports whether the subscriber's handler takes events of type typ
// (Types is empty or holds it); for backends.
func (o SubscribeOptions) Wants(typ string) bool {
	return len(o.Types) == 0 || slices.Contains(o.Types, typ)
}

// SelectTypes returns the types a backend selects for the subscriber:
// none (all) without Types, else Types and the type of retry requests,
// which reach a subscriber whatever its Types.
func (o SubscribeOptions) SelectTypes() []string {
	if len(o.Types) == 0 || o.SetAside == nil || slices.Contains(o.Types, o.SetAside.RetryType()) {
		return o.Types
	}
	return append(slices.Clip(o.Types), o.SetAside.RetryType())
}
