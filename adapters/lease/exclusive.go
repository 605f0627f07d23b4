package lease

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ExclusiveRetry is how often a waiting instance tries the locks of the
// parts it does not run, and how often the holder checks its connection:
// the failover time once PostgreSQL has seen the holder's connection close.
const ExclusiveRetry = 500 * time.Millisecond

// Exclusive runs named parts (a projection, the intake, the outbound saga)
// on one instance at a time. Each part is held by a session advisory lock
// taken on one dedicated connection per instance: PostgreSQL frees the lock
// when that connection ends, which a killed process's does at once, so
// another instance takes the part over within ExclusiveRetry. The holder
// checks its connection as often; when it breaks, the parts held through
// it are stopped (their contexts end) before another instance can have
// taken them for longer than that.
type Exclusive struct {
	pool     *pgxpool.Pool
	instance string
	logger   *slog.Logger

	mu      sync.Mutex
	waiting map[string]*claim // parts asking for their lock
	held    map[string]*claim
	wake    chan struct{}
}

type claim struct {
	key     int64
	granted chan context.Context // receives the part's context when the lock is taken
	cancel  context.CancelFunc
	release bool // the part stopped: unlock
}

// NewExclusive returns the single-active runner of an instance; Run keeps
// its connection, which names the instance in pg_stat_activity's
// application_name (ExclusiveApplicationName).
func NewExclusive(pool *pgxpool.Pool, instance string, logger *slog.Logger) *Exclusive {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Exclusive{pool: pool, instance: instance, logger: logger, waiting: map[string]*claim{}, held: map[string]*claim{},
		wake: make(chan struct{}, 1)}
}

// ExclusiveApplicationName is the application_name of an instance's lock
// connection: an operator sees in pg_locks and pg_stat_activity which
// instance runs which part.
func ExclusiveApplicationName(instance string) string { return "ledgerdesk single-active " + instance }

// lockKey is the advisory lock of a part: a 64-bit hash of its name in a
// namespace of ours.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("ledgerdesk single-active\x00" + name))
	return int64(h.Sum64()) //nolint:gosec // a lock key: any 64 bits do
}

// Wrap returns run as a part that waits for its lock, runs while it holds
// it (its context ends if the lock is lost) and frees the lock when run
// returns.
func (x *Exclusive) Wrap(name string, run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		c := &claim{key: lockKey(name), granted: make(chan context.Context, 1)}
		x.mu.Lock()
		if _, dup := x.waiting[name]; dup {
			x.mu.Unlock()
			return fmt.Errorf("lease: part %q is already waiting for its lock", name)
		}
		// Advisory locks nest within a session: a second run of a part that
		// still runs here would get the lock again.
		if h, dup := x.held[name]; dup && !h.release {
			x.mu.Unlock()
			return fmt.Errorf("lease: part %q already runs", name)
		}
		x.waiting[name] = c
		x.mu.Unlock()
		x.poke()
		var partCtx context.Context
		select {
		case <-ctx.Done():
			x.mu.Lock()
			if x.waiting[name] == c {
				delete(x.waiting, name)
				x.mu.Unlock()
				return ctx.Err()
			}
			x.mu.Unlock()
			partCtx = <-c.granted // granted meanwhile: free it below
		case partCtx = <-c.granted:
			x.logger.Info("single-active: running here", "part", name)
		}
		defer func() {
			x.mu.Lock()
			c.release = true
			x.mu.Unlock()
			c.cancel()
			x.poke()
		}()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		stop := context.AfterFunc(ctx, c.cancel)
		defer stop()
		err := run(partCtx)
		if ctx.Err() == nil && partCtx.Err() != nil {
			return fmt.Errorf("lease: part %q lost its lock: %w", name, errors.Join(err, partCtx.Err()))
		}
		return err
	}
}

func (x *Exclusive) poke() {
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// Run keeps the dedicated connection until ctx ends: it takes the locks
// of waiting parts, frees those of stopped ones and checks the connection,
// every ExclusiveRetry or when a part asks.
func (x *Exclusive) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		x.dropAll()
		if conn != nil {
			_ = conn.Close(context.Background()) // frees every lock held through it
		}
	}()
	t := time.NewTicker(ExclusiveRetry)
	defer t.Stop()
	for {
		if conn == nil {
			cfg := x.pool.Config().ConnConfig.Copy()
			cfg.RuntimeParams["application_name"] = ExclusiveApplicationName(x.instance)
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil && ctx.Err() == nil {
				x.logger.Warn("single-active: connect", "err", err)
			}
			conn = c
		}
		if conn != nil {
			if err := x.step(ctx, conn); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				x.logger.Warn("single-active: connection lost; stopping the parts held through it", "err", err)
				x.dropAll()
				_ = conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-x.wake:
		}
	}
}

// step frees the locks of stopped parts, checks the connection and tries
// the locks of waiting parts.
func (x *Exclusive) step(ctx context.Context, conn *pgx.Conn) error {
	x.mu.Lock()
	var free []int64
	for name, c := range x.held {
		if c.release {
			free = append(free, c.key)
			delete(x.held, name)
		}
	}
	waiting := make(map[string]*claim, len(x.waiting))
	for name, c := range x.waiting {
		waiting[name] = c
	}
	x.mu.Unlock()
	for _, key := range free {
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			return err
		}
	}
	if len(waiting) == 0 {
		_, err := conn.Exec(ctx, `SELECT 1`) // the connection still answers
		return err
	}
	// One statement tries every waiting part's lock (and checks the
	// connection): a waiting instance costs the database two statements a
	// second, however many parts it waits for.
	names := make([]string, 0, len(waiting))
	keys := make([]int64, 0, len(waiting))
	for name, c := range waiting {
		names = append(names, name)
		keys = append(keys, c.key)
	}
	rows, err := conn.Query(ctx, `SELECT pg_try_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i`, keys)
	if err != nil {
		return err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return err
	}
	for i, ok := range got {
		if !ok || i >= len(names) {
			continue
		}
		c := waiting[names[i]]
		partCtx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		x.mu.Lock()
		withdrawn := x.waiting[names[i]] != c // its run stopped waiting meanwhile
		if !withdrawn {
			delete(x.waiting, names[i])
			x.held[names[i]] = c
		}
		x.mu.Unlock()
		if withdrawn {
			cancel()
			if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, c.key); err != nil {
				return err
			}
			continue
		}
		c.granted <- partCtx
	}
	return nil
}

// dropAll stops every part held through the connection: its locks are
// gone with it (or are about to be).
func (x *Exclusive) dropAll() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, c := range x.held {
		c.cancel()
		delete(x.held, name)
	}
}
