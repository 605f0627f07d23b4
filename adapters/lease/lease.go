// Package lease lets several serve processes share one PostgreSQL database
// (README "Running several instances"):
//
//   - an instance registry: each process has a row in instances whose
//     heartbeat it renews every Tick; an instance whose heartbeat is older
//     than TTL is gone;
//   - mailbox leases (mailbox_leases): each inbound account is polled by
//     the one live instance that rendezvous hashing over the live instances
//     names, under a lease that expires TTL after its last renewal and
//     carries a fencing token that grows each time it changes hands; the
//     import commit checks holder and token in its own transaction;
//   - poll-now forwarding: a request that reaches an instance not holding
//     the account goes to the holder through NOTIFY;
//   - single-active parts (Exclusive): the intake, the projections and the
//     outbound saga each run on one instance at a time, under a session
//     advisory lock on a dedicated connection.
//
// Takeover: a killed instance's mailboxes are taken over once its leases
// expire, at most TTL after its last renewal plus one Tick (7s with the
// defaults); its single-active parts as soon as PostgreSQL sees its
// connection close (a SIGKILL closes it at once) plus one lock attempt
// (ExclusiveRetry, 500ms). A graceful stop releases everything at once.
//
// The embedded store has one instance by construction (one process owns
// the SQLite file): cmd wires none of this there, and every lease is
// trivially local.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// Defaults of Options.
const (
	DefaultTTL  = 6 * time.Second
	DefaultTick = time.Second
)

// pollNowChannel is the NOTIFY channel of forwarded poll-now requests.
const pollNowChannel = "ledgerdesk_poll_now"

// Options configure a Coordinator.
type Options struct {
	Pool *pgxpool.Pool
	// Instance names this process in the registry; NewInstanceID gives a
	// fresh one per start, so a restarted process is a new instance.
	Instance string
	Logger   *slog.Logger
	// TTL is how long a lease and a heartbeat hold without renewal [6s].
	TTL time.Duration
	// Tick is how often heartbeats and leases are renewed and the
	// accounts rebalanced [1s]. It must be well under TTL/2: a lease is
	// given up locally 2 Ticks before it expires in the database.
	Tick time.Duration
}

// NewInstanceID returns a random instance name.
func NewInstanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// Coordinator is one instance's member of the registry and holder of its
// mailbox leases. It implements ingest.Leases.
type Coordinator struct {
	o Options

	mu      sync.Mutex
	want    []string
	held    map[string]*mailboxLease
	changed chan struct{}

	pollNow chan string
}

var _ ingest.Leases = (*Coordinator)(nil)

// New checks o and returns a coordinator; Run starts it.
func New(o Options) (*Coordinator, error) {
	var errs []error
	if o.Pool == nil {
		errs = append(errs, errors.New("no pool"))
	}
	if o.Instance == "" {
		errs = append(errs, errors.New("no instance id"))
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	if o.Tick*3 > o.TTL {
		errs = append(errs, fmt.Errorf("tick %s must be at most a third of the TTL %s", o.Tick, o.TTL))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Coordinator{o: o, held: map[string]*mailboxLease{}, changed: make(chan struct{}),
		pollNow: make(chan string, 64)}, nil
}

// Instance is this coordinator's instance id.
func (c *Coordinator) Instance() string { return c.o.Instance }

// Run keeps the heartbeat and the leases until ctx ends, then releases
// them (a graceful stop hands the mailboxes over at once). A database
// error is logged and retried at the next tick.
func (c *Coordinator) Run(ctx context.Context) error {
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		c.listen(ctx)
	}()
	defer func() {
		<-listenDone
		c.releaseAll()
	}()
	t := time.NewTicker(c.o.Tick)
	defer t.Stop()
	for {
		// A tick that hangs (an overloaded database) renews nothing; the
		// leases' own timers then give them up in time.
		tctx, cancel := context.WithTimeout(ctx, c.o.TTL/2)
		err := c.tick(tctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			c.o.Logger.Warn("lease: renew", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Want implements ingest.Leases.
func (c *Coordinator) Want(accountIDs []string) {
	ids := slices.Clone(accountIDs)
	slices.Sort(ids)
	c.mu.Lock()
	c.want = ids
	c.mu.Unlock()
}

// Changed implements ingest.Leases.
func (c *Coordinator) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// signalLocked wakes the waiters of Changed; c.mu is held.
func (c *Coordinator) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Hold implements ingest.Leases.
func (c *Coordinator) Hold(accountID string) (ingest.Lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.held[accountID]
	if !ok || l.ctx.Err() != nil || l.handover {
		return nil, false
	}
	l.uses++
	return use{l}, true
}

// Held returns the accounts whose leases this instance holds, sorted.
func (c *Coordinator) Held() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, l := range c.held {
		if l.ctx.Err() == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// ForwardPollNow implements ingest.Leases.
func (c *Coordinator) ForwardPollNow(ctx context.Context, accountID string) error {
	if _, err := c.o.Pool.Exec(ctx, `SELECT pg_notify($1, $2)`, pollNowChannel, accountID); err != nil {
		return fmt.Errorf("lease: forward poll-now of %s: %w", accountID, err)
	}
	return nil
}

// PollNowRequests implements ingest.Leases.
func (c *Coordinator) PollNowRequests() <-chan string { return c.pollNow }

// listen passes on the forwarded poll-now requests of the accounts this
// instance holds, over a dedicated connection (LISTEN needs one session).
func (c *Coordinator) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := c.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		c.o.Logger.Warn("lease: poll-now listener stopped; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(c.o.Tick):
		}
	}
}

func (c *Coordinator) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, c.o.Pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pollNowChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		c.mu.Lock()
		_, mine := c.held[n.Payload]
		c.mu.Unlock()
		if !mine {
			continue
		}
		select {
		case c.pollNow <- n.Payload:
		default: // the scheduler is behind; a poll-now is pending anyway
		}
	}
}

// Alive returns the instances whose heartbeat is fresh, this one included.
func (c *Coordinator) Alive(ctx context.Context) (map[string]bool, error) {
	return alive(ctx, c.o.Pool, c.o.TTL)
}

func alive(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, ttl time.Duration) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT id FROM instances WHERE heartbeat_at > now() - $1::interval`, ttl.String())
	if err != nil {
		return nil, fmt.Errorf("lease: read live instances: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("lease: read live instances: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// OwnersGone reports which of owners are not live instances (the outbound
// saga's recovery takes back only their claims).
func (c *Coordinator) OwnersGone(ctx context.Context, owners []string) (map[string]bool, error) {
	live, err := c.Alive(ctx)
	if err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, o := range owners {
		if !live[o] {
			gone[o] = true
		}
	}
	return gone, nil
}

// preferred is the live instance that rendezvous hashing names for the
// account: each instance scores hash(instance, account) and the highest
// wins, so accounts spread evenly and an instance joining or leaving moves
// only its share.
func preferred(live []string, accountID string) string {
	var best string
	var bestScore uint64
	for _, id := range live {
		h := fnv.New64a()
		_, _ = h.Write([]byte(id))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(accountID))
		if s := mix(h.Sum64()); best == "" || s > bestScore || (s == bestScore && id < best) {
			best, bestScore = id, s
		}
	}
	return best
}

// mix is splitmix64's finaliser: FNV's low bits alone spread poorly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// tick beats the heart, renews the held leases, gives up those another
// instance should hold (once no poll uses them) and takes the ones this
// instance should hold and nobody holds.
func (c *Coordinator) tick(ctx context.Context) error {
	sent := time.Now()
	if _, err := c.o.Pool.Exec(ctx, `INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, now(), now())
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()`, c.o.Instance); err != nil {
		c.expireLocal(sent)
		return fmt.Errorf("heartbeat: %w", err)
	}
	liveSet, err := c.Alive(ctx)
	if err != nil {
		c.expireLocal(sent)
		return err
	}
	live := make([]string, 0, len(liveSet))
	for id := range liveSet {
		live = append(live, id)
	}
	slices.Sort(live)

	c.mu.Lock()
	want := c.want
	var renew, release, acquire []string
	for _, id := range want {
		mine := preferred(live, id) == c.o.Instance
		l, held := c.held[id]
		if held && l.handover != !mine {
			// Another instance should poll it: no new poll starts here,
			// and the lease goes once the running one ends; a push watch
			// holding it hears of it through Changed and ends.
			l.handover = !mine
			c.signalLocked()
		}
		switch {
		case held && !mine && l.uses == 0:
			release = append(release, id)
		case held:
			renew = append(renew, id)
		case mine:
			acquire = append(acquire, id)
		}
	}
	for id, l := range c.held {
		if !slices.Contains(want, id) && l.uses == 0 {
			release = append(release, id)
		}
	}
	c.mu.Unlock()

	err = errors.Join(c.renew(ctx, renew, sent), c.release(ctx, release), c.acquire(ctx, acquire, sent))
	c.expireLocal(time.Now())
	return err
}

// renew extends the held leases. A lease row locked by this instance's own
// import commit (its fence) is skipped and renewed at the next tick; a
// lease found in another holder's hands is dropped.
func (c *Coordinator) renew(ctx context.Context, ids []string, sent time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := c.o.Pool.Query(ctx, `UPDATE mailbox_leases SET expires_at = now() + $2::interval
		WHERE account_id IN (SELECT account_id FROM mailbox_leases WHERE account_id = ANY($1) AND holder = $3
			FOR UPDATE SKIP LOCKED)
		RETURNING account_id, token`, ids, c.o.TTL.String(), c.o.Instance)
	if err != nil {
		return fmt.Errorf("renew %d leases: %w", len(ids), err)
	}
	renewed := map[string]int64{}
	for rows.Next() {
		var id string
		var token int64
		if err := rows.Scan(&id, &token); err != nil {
			rows.Close()
			return fmt.Errorf("renew leases: %w", err)
		}
		renewed[id] = token
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	var missing []string
	c.mu.Lock()
	for _, id := range ids {
		l, ok := c.held[id]
		if !ok {
			continue
		}
		if tok, ok := renewed[id]; ok && tok == l.token {
			l.extend(c.localDeadline(sent))
		} else if !ok {
			missing = append(missing, id)
		} else {
			c.dropLocked(id, "the lease's token changed")
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	// Skipped (locked) or lost: a plain read tells which.
	rows, err = c.o.Pool.Query(ctx, `SELECT account_id, holder, token FROM mailbox_leases WHERE account_id = ANY($1)`, missing)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	type row struct {
		holder string
		token  int64
	}
	now := map[string]row{}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.holder, &r.token); err != nil {
			rows.Close()
			return fmt.Errorf("read leases: %w", err)
		}
		now[id] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range missing {
		l, ok := c.held[id]
		if !ok {
			continue
		}
		if r := now[id]; r.holder != c.o.Instance || r.token != l.token {
			c.dropLocked(id, "another instance holds the lease")
		}
	}
	return nil
}

// acquire takes the leases of ids that nobody holds or whose holder let
// them expire, with a new token each; also those this instance gave up
// locally (renewals failed while the database was away) and still holds in
// the table: the new token fences off the polls it stopped.
func (c *Coordinator) acquire(ctx context.Context, ids []string, sent time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := c.o.Pool.Query(ctx, `INSERT INTO mailbox_leases (account_id, holder, token, expires_at)
		SELECT id, $2, 1, now() + $3::interval FROM unnest($1::text[]) AS id
		ON CONFLICT (account_id) DO UPDATE SET holder = EXCLUDED.holder, token = mailbox_leases.token + 1,
			expires_at = EXCLUDED.expires_at
		WHERE mailbox_leases.expires_at < now() OR mailbox_leases.holder = EXCLUDED.holder
		RETURNING account_id, token`, ids, c.o.Instance, c.o.TTL.String())
	if err != nil {
		return fmt.Errorf("acquire %d leases: %w", len(ids), err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var id string
		var token int64
		if err := rows.Scan(&id, &token); err != nil {
			rows.Close()
			return fmt.Errorf("acquire leases: %w", err)
		}
		got[id] = token
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("acquire leases: %w", err)
	}
	if len(got) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, token := range got {
		lctx, cancel := context.WithCancel(context.Background())
		l := &mailboxLease{c: c, accountID: id, token: token, ctx: lctx, cancel: cancel}
		l.timer = time.AfterFunc(time.Hour, l.expire)
		l.extend(c.localDeadline(sent))
		c.held[id] = l
		c.o.Logger.Info("lease: took mailbox", "account", id, "token", token)
	}
	c.signalLocked()
	return nil
}

// release gives leases up: they expire now, for the preferred instance to
// take at its next tick.
func (c *Coordinator) release(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	c.mu.Lock()
	tokens := make([]int64, 0, len(ids))
	var names []string
	for _, id := range ids {
		if l, ok := c.held[id]; ok && l.uses == 0 {
			names = append(names, id)
			tokens = append(tokens, l.token)
			c.dropLocked(id, "")
		}
	}
	c.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	if _, err := c.o.Pool.Exec(ctx, `UPDATE mailbox_leases AS l SET expires_at = now() - interval '1 millisecond'
		FROM unnest($1::text[], $2::bigint[]) AS r(id, token)
		WHERE l.account_id = r.id AND l.token = r.token AND l.holder = $3`, names, tokens, c.o.Instance); err != nil {
		return fmt.Errorf("release %d leases: %w", len(names), err)
	}
	return nil
}

// releaseAll is the graceful stop: every lease and the registry row go at
// once, so that the other instances take over at their next tick.
func (c *Coordinator) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.mu.Lock()
	for id := range c.held {
		c.dropLocked(id, "")
	}
	c.mu.Unlock()
	if _, err := c.o.Pool.Exec(ctx, `UPDATE mailbox_leases SET expires_at = now() - interval '1 millisecond'
		WHERE holder = $1`, c.o.Instance); err != nil {
		c.o.Logger.Warn("lease: release on stop", "err", err)
	}
	if _, err := c.o.Pool.Exec(ctx, `DELETE FROM instances WHERE id = $1`, c.o.Instance); err != nil {
		c.o.Logger.Warn("lease: leave the registry on stop", "err", err)
	}
}

// localDeadline is when this instance stops using a lease renewed at sent:
// two ticks before it can expire in the database, whatever the clocks say.
func (c *Coordinator) localDeadline(sent time.Time) time.Time {
	return sent.Add(c.o.TTL - 2*c.o.Tick)
}

// expireLocal drops the leases whose local deadline passed: renewals
// failed (the database is unreachable, say) and another instance may take
// them soon. Each lease's timer does the same on its own (expire), even
// while a tick hangs.
func (c *Coordinator) expireLocal(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, l := range c.held {
		if !now.Before(l.deadline) {
			c.dropLocked(id, "not renewed in time")
		}
	}
}

// dropLocked forgets a lease and ends its polls; c.mu is held.
func (c *Coordinator) dropLocked(id, why string) {
	l, ok := c.held[id]
	if !ok {
		return
	}
	l.cancel()
	l.timer.Stop()
	delete(c.held, id)
	if why != "" {
		c.o.Logger.Warn("lease: lost mailbox", "account", id, "token", l.token, "why", why)
	}
	c.signalLocked()
}

// mailboxLease is a held lease.
type mailboxLease struct {
	c         *Coordinator
	accountID string
	token     int64
	ctx       context.Context
	cancel    context.CancelFunc
	deadline  time.Time // guarded by c.mu
	uses      int       // guarded by c.mu
	handover  bool      // guarded by c.mu: held, but another instance should hold it
	timer     *time.Timer
}

// extend moves the lease's local deadline; c.mu is held.
func (l *mailboxLease) extend(deadline time.Time) {
	l.deadline = deadline
	l.timer.Reset(time.Until(deadline))
}

// expire is the timer's: the lease was not renewed by its local deadline.
func (l *mailboxLease) expire() {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.c.held[l.accountID] == l && !time.Now().Before(l.deadline) {
		l.c.dropLocked(l.accountID, "not renewed in time")
	}
}

// use is one poll's hold on a lease (ingest.Lease).
type use struct{ l *mailboxLease }

func (u use) Context() context.Context { return u.l.ctx }

func (u use) Done() {
	u.l.c.mu.Lock()
	u.l.uses--
	u.l.c.mu.Unlock()
}

// fenceQuery locks the lease row (FOR SHARE) for the rest of the
// transaction: a takeover's UPDATE waits until the commit ends, and then
// finds the lease renewed or expired as it is.
const fenceQuery = `SELECT count(*) FROM (SELECT 1 FROM mailbox_leases
	WHERE account_id = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp() FOR SHARE) AS held`

func (u use) Fence(ctx context.Context, q eventstore.Querier) error {
	var n int64
	if err := q.QueryRow(ctx, fenceQuery, u.l.accountID, u.l.c.o.Instance, u.l.token).Scan(&n); err != nil {
		return fmt.Errorf("lease: fence of %s: %w", u.l.accountID, err)
	}
	return u.verdict(n)
}

func (u use) StillHeld(ctx context.Context) error {
	var n int64
	if err := u.l.c.o.Pool.QueryRow(ctx, fenceQuery, u.l.accountID, u.l.c.o.Instance, u.l.token).Scan(&n); err != nil {
		return fmt.Errorf("lease: fence of %s: %w", u.l.accountID, err)
	}
	return u.verdict(n)
}

func (u use) verdict(n int64) error {
	if n == 0 || u.l.ctx.Err() != nil {
		return fmt.Errorf("%w (account %s, token %d)", ingest.ErrLeaseLost, u.l.accountID, u.l.token)
	}
	return nil
}
