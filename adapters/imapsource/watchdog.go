package imapsource

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStalled is the cause recorded when the connection made no progress for
// longer than Config.Timeout.
var ErrStalled = errors.New("imapsource: connection stalled")

// watchdog stands in for the context go-imap lacks: it closes the raw
// connection when ctx is done or when no byte moved for longer than the
// timeout while we were waiting for the server. Closing the raw connection
// (not the imapclient.Client) makes every pending read fail, so the code
// waiting on the server returns and drains its commands; only then is the
// client closed, which avoids go-imap's hang on an unread literal.
type watchdog struct {
	conn    net.Conn
	timeout time.Duration
	last    atomic.Int64 // unix nanoseconds of the last progress
	paused  atomic.Int32 // > 0 while our own code (the sink) is working

	once    sync.Once
	cause   error // set before conn is closed, read after fired
	fired   atomic.Bool
	aborted atomic.Bool
	stop    chan struct{}
	done    chan struct{}
}

// watch starts a watchdog over conn and returns conn wrapped so that every
// read and write counts as progress.
func watch(ctx context.Context, conn net.Conn, timeout time.Duration) (*watchdog, net.Conn) {
	w := &watchdog{conn: conn, timeout: timeout, stop: make(chan struct{}), done: make(chan struct{})}
	w.touch()
	tick := timeout / 4
	if tick < 10*time.Millisecond {
		tick = 10 * time.Millisecond
	}
	go w.run(ctx, tick)
	return w, &progressConn{Conn: conn, w: w}
}

func (w *watchdog) run(ctx context.Context, tick time.Duration) {
	defer close(w.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			w.fire(fmt.Errorf("imapsource: connection closed: %w", context.Cause(ctx)))
			return
		case <-t.C:
			if w.paused.Load() > 0 {
				continue
			}
			idle := time.Since(time.Unix(0, w.last.Load()))
			if idle > w.timeout {
				w.fire(fmt.Errorf("%w: no progress for %s", ErrStalled, idle.Round(time.Millisecond)))
				return
			}
		}
	}
}

func (w *watchdog) fire(cause error) {
	w.once.Do(func() {
		w.cause = cause
		w.fired.Store(true)
		_ = w.conn.Close()
	})
}

// abort closes the connection on our own initiative (the poll already has
// its error); err stays nil.
func (w *watchdog) abort() {
	w.once.Do(func() {
		w.aborted.Store(true)
		_ = w.conn.Close()
	})
}

// broken says whether the connection was closed by fire or abort.
func (w *watchdog) broken() bool { return w.fired.Load() || w.aborted.Load() }

func (w *watchdog) touch() { w.last.Store(time.Now().UnixNano()) }

// pause stops the stall clock while our own code works (a slow database
// commit is not a stalled server); the returned func resumes it.
func (w *watchdog) pause() func() {
	w.paused.Add(1)
	return func() {
		w.touch()
		w.paused.Add(-1)
	}
}

// err returns why the watchdog closed the connection, or nil.
func (w *watchdog) err() error {
	if w.fired.Load() {
		return w.cause
	}
	return nil
}

// close stops the watchdog goroutine.
func (w *watchdog) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

type progressConn struct {
	net.Conn
	w *watchdog
}

func (c *progressConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.w.touch()
	}
	return n, err
}

func (c *progressConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.w.touch()
	}
	return n, err
}
