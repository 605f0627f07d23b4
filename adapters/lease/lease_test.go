package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/lease"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
	"github.com/ledgerdesk/ledgerdesk/eventstore/pgtest"
	"github.com/ledgerdesk/ledgerdesk/eventstore/postgres"
	"github.com/ledgerdesk/ledgerdesk/migrations"
)

// Short times keep the tests quick; the ratios are the defaults' (a tick
// a sixth of the TTL).
const (
	testTTL  = 1200 * time.Millisecond
	testTick = 200 * time.Millisecond
)

// database returns the URL of a migrated database of the test's own.
func database(t *testing.T) string {
	t.Helper()
	u := pgtest.NewDatabase(t)
	pool := newPool(t, u)
	if err := migrations.ApplyPostgres(context.Background(), pool); err != nil {
		t.Fatalf("ApplyPostgres() error = %v", err)
	}
	return u
}

func newPool(t *testing.T, u string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// member is one instance: its own pool (closing it is the instance's
// death as the database sees it: no heartbeat, no renewal, no release).
type member struct {
	c    *lease.Coordinator
	pool *pgxpool.Pool
	stop context.CancelFunc
	done chan struct{}
}

func startMember(t *testing.T, u, id string, accounts []string) *member {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	c, err := lease.New(lease.Options{Pool: pool, Instance: id, TTL: testTTL, Tick: testTick})
	if err != nil {
		t.Fatal(err)
	}
	c.Want(accounts)
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{c: c, pool: pool, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		m.stop()
		<-m.done
		pool.Close()
	})
	return m
}

// kill ends the member as a SIGKILL would for the database: its
// connections close without a word.
func (m *member) kill() {
	m.pool.Close()
	m.stop()
	<-m.done
}

func accountIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("acc-%03d", i)
	}
	return ids
}

// holders reads mailbox_leases: the live holder of each account.
func holders(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT account_id, holder FROM mailbox_leases WHERE expires_at > now()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var a, h string
		if err := rows.Scan(&a, &h); err != nil {
			t.Fatal(err)
		}
		out[a] = h
	}
	return out
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// everyAccountHeldOnce says whether each account is held by exactly one of
// the members, as both the database and the members see it.
func everyAccountHeldOnce(t *testing.T, pool *pgxpool.Pool, accounts []string, ms ...*member) bool {
	t.Helper()
	db := holders(t, pool)
	seen := map[string]int{}
	for _, m := range ms {
		for _, a := range m.c.Held() {
			seen[a]++
			if db[a] != m.c.Instance() {
				return false
			}
		}
	}
	for _, a := range accounts {
		if seen[a] != 1 {
			return false
		}
	}
	return true
}

func TestLeases_SpreadOverTheLiveInstances(t *testing.T) {
	u := database(t)
	pool := newPool(t, u)
	accounts := accountIDs(90)
	a := startMember(t, u, "a", accounts)
	b := startMember(t, u, "b", accounts)
	c := startMember(t, u, "c", accounts)
	// The first instance to tick sees itself alone and takes everything;
	// the others' shares move to them as they appear. Rendezvous hashing
	// over three instances gives about 30 each (a binomial spread; 15..45
	// is beyond 3 standard deviations): none idle, none with nearly all.
	balanced := func() bool {
		if !everyAccountHeldOnce(t, pool, accounts, a, b, c) {
			return false
		}
		for _, m := range []*member{a, b, c} {
			if n := len(m.c.Held()); n < 15 || n > 45 {
				return false
			}
		}
		return true
	}
	took := waitFor(t, 15*time.Second, "every account held by one instance, 15..45 of 90 each", balanced)
	t.Logf("90 accounts spread over 3 instances in %s: %d, %d, %d", took.Round(time.Millisecond),
		len(a.c.Held()), len(b.c.Held()), len(c.c.Held()))
}

func TestLeases_DeadInstanceMailboxesAreTakenOver(t *testing.T) {
	u := database(t)
	pool := newPool(t, u)
	accounts := accountIDs(30)
	a := startMember(t, u, "a", accounts)
	b := startMember(t, u, "b", accounts)
	waitFor(t, 15*time.Second, "accounts spread over a and b", func() bool {
		return everyAccountHeldOnce(t, pool, accounts, a, b) && len(a.c.Held()) > 0 && len(b.c.Held()) > 0
	})
	var hadByA []ingest.Lease
	for _, id := range a.c.Held() {
		l, ok := a.c.Hold(id)
		if !ok {
			t.Fatalf("Hold(%s) on its holder = false", id)
		}
		hadByA = append(hadByA, l)
	}
	a.kill()
	took := waitFor(t, 4*testTTL, "b holds every account after a died", func() bool {
		return everyAccountHeldOnce(t, pool, accounts, b)
	})
	t.Logf("takeover of %d mailboxes: %s (TTL %s, tick %s)", len(hadByA), took.Round(time.Millisecond), testTTL, testTick)
	for _, l := range hadByA {
		if l.Context().Err() == nil {
			t.Errorf("a lease of the dead instance still has a live context")
		}
		if err := l.StillHeld(context.Background()); err == nil {
			t.Errorf("StillHeld() of the dead instance's lease = nil, want an error")
		}
	}
}

func TestLeases_FenceRefusesACommitAfterTheLeasePassed(t *testing.T) {
	u := database(t)
	pool := newPool(t, u)
	a := startMember(t, u, "a", []string{"x"})
	waitFor(t, 10*time.Second, "a holds x", func() bool { return len(a.c.Held()) == 1 })
	l, ok := a.c.Hold("x")
	if !ok {
		t.Fatal("Hold(x) = false")
	}
	defer l.Done()
	store, err := postgres.New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// While a commit holds the fence, the lease cannot change hands, even
	// once it expired: the takeover waits for the commit.
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error {
		if err := l.Fence(ctx, tx); err != nil {
			return fmt.Errorf("Fence() of the holder: %w", err)
		}
		_, err := pool.Exec(ctx, `SET lock_timeout = '300ms'; UPDATE mailbox_leases SET holder = 'b', token = token + 1 WHERE account_id = 'x'`)
		if err == nil {
			return errors.New("a takeover went through while the holder's commit held the fence")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Once it passed (here by hand, as a takeover does), the old holder's
	// commit and deletes are refused.
	if _, err := pool.Exec(ctx, `UPDATE mailbox_leases SET holder = 'b', token = token + 1 WHERE account_id = 'x'`); err != nil {
		t.Fatal(err)
	}
	err = store.Update(ctx, func(ctx context.Context, tx eventstore.Tx) error { return l.Fence(ctx, tx) })
	if !errors.Is(err, ingest.ErrLeaseLost) {
		t.Errorf("Fence() after the takeover = %v, want ErrLeaseLost", err)
	}
	if err := l.StillHeld(ctx); !errors.Is(err, ingest.ErrLeaseLost) {
		t.Errorf("StillHeld() after the takeover = %v, want ErrLeaseLost", err)
	}
	waitFor(t, 5*time.Second, "a notices the lost lease", func() bool { return l.Context().Err() != nil })
}

func TestLeases_PollNowIsForwardedToTheHolder(t *testing.T) {
	u := database(t)
	pool := newPool(t, u)
	accounts := accountIDs(10)
	a := startMember(t, u, "a", accounts)
	b := startMember(t, u, "b", accounts)
	waitFor(t, 15*time.Second, "accounts spread", func() bool {
		return everyAccountHeldOnce(t, pool, accounts, a, b) && len(a.c.Held()) > 0
	})
	target := a.c.Held()[0]
	time.Sleep(300 * time.Millisecond) // a's listener is connected by now
	if err := b.c.ForwardPollNow(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-a.c.PollNowRequests():
		if got != target {
			t.Errorf("holder got a poll-now for %s, want %s", got, target)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the holder got no forwarded poll-now")
	}
	select {
	case got := <-b.c.PollNowRequests():
		t.Errorf("an instance not holding %s got its poll-now (%s)", target, got)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestExclusive_OnePartRunsAndAnotherInstanceTakesOver(t *testing.T) {
	u := database(t)
	admin := newPool(t, u)
	var running atomic.Int32
	var maxRunning atomic.Int32
	started := make(chan string, 4)
	part := func(who string) func(context.Context) error {
		return func(ctx context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				if m := maxRunning.Load(); n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			started <- who
			<-ctx.Done()
			return ctx.Err()
		}
	}
	type inst struct {
		x    *lease.Exclusive
		stop context.CancelFunc
		wg   sync.WaitGroup
	}
	start := func(who string) *inst {
		pool := newPool(t, u)
		in := &inst{x: lease.NewExclusive(pool, who, nil)}
		ctx, cancel := context.WithCancel(context.Background())
		in.stop = cancel
		in.wg.Add(2)
		go func() { defer in.wg.Done(); _ = in.x.Run(ctx) }()
		go func() {
			defer in.wg.Done()
			for ctx.Err() == nil { // as cmd's supervise does
				_ = in.x.Wrap("projection", part(who))(ctx)
			}
		}()
		t.Cleanup(func() { cancel(); in.wg.Wait() })
		return in
	}
	a := start("a")
	first := <-started
	b := start("b")
	select {
	case who := <-started:
		t.Fatalf("%s started the part while %s ran it", who, first)
	case <-time.After(3 * lease.ExclusiveRetry):
	}
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("%d instances ran the part at once, want 1", m)
	}
	// The holder's lock connection dies (as with a SIGKILL, PostgreSQL
	// ends the session): the other instance takes over, the holder stops.
	killed := time.Now()
	// Only this test's database: the cluster is shared with the other
	// packages' tests, which run at the same time and hold advisory locks.
	if _, err := admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
		  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`); err != nil {
		t.Fatal(err)
	}
	select {
	case who := <-started:
		if who == first {
			// the holder reconnected first: still one at a time
			t.Logf("%s took the part back first", who)
		}
		t.Logf("failover after the lock session ended: %s", time.Since(killed).Round(time.Millisecond))
	case <-time.After(10 * lease.ExclusiveRetry):
		t.Fatal("no instance took the part over")
	}
	waitFor(t, 5*time.Second, "one part running", func() bool { return running.Load() == 1 })
	a.stop()
	b.stop()
	a.wg.Wait()
	b.wg.Wait()
	if running.Load() != 0 {
		t.Errorf("%d parts still run after both instances stopped", running.Load())
	}
}

// TestLeases_AnImportUnderALostLeaseCommitsNothing drives a real sink
// under a lease that passes to another instance between the mail's
// download and its commit: the commit fails, nothing is recorded, and the
// fetcher's check before deleting says no.
func TestLeases_AnImportUnderALostLeaseCommitsNothing(t *testing.T) {
	u := database(t)
	pool := newPool(t, u)
	a := startMember(t, u, "a", []string{"x"})
	waitFor(t, 10*time.Second, "a holds x", func() bool { return len(a.c.Held()) == 1 })
	l, ok := a.c.Hold("x")
	if !ok {
		t.Fatal("Hold(x) = false")
	}
	defer l.Done()
	store, err := postgres.New(pool, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sink := func() *ingest.Sink {
		s, err := ingest.NewSink(ingest.SinkConfig{Store: store, Blobs: blobs, Limits: mimeparse.DefaultLimits(),
			AccountID: "x", Now: time.Now, Lease: l})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	mail := func(n int) string {
		return fmt.Sprintf("From: c@example.com\r\nTo: s@example.com\r\nSubject: %d\r\nMessage-ID: <m%d@example.com>\r\n\r\nbody\r\n", n, n)
	}
	// While the lease is ours, the import commits.
	s := sink()
	if _, err := s.Receive(ctx, "imap/INBOX/1/1", -1, strings.NewReader(mail(1))); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatalf("Commit() under the held lease = %v", err)
	}
	if err := s.StillHeld(ctx); err != nil {
		t.Fatalf("StillHeld() under the held lease = %v", err)
	}
	// The lease passes (as a takeover does) after the next mail's download.
	s = sink()
	if _, err := s.Receive(ctx, "imap/INBOX/1/2", -1, strings.NewReader(mail(2))); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE mailbox_leases SET holder = 'b', token = token + 1 WHERE account_id = 'x'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); !errors.Is(err, ingest.ErrLeaseLost) {
		t.Errorf("Commit() after the lease passed = %v, want ErrLeaseLost", err)
	}
	if err := s.StillHeld(ctx); !errors.Is(err, ingest.ErrLeaseLost) {
		t.Errorf("StillHeld() after the lease passed = %v, want ErrLeaseLost", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM mail_sources WHERE account_id = 'x'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d mails recorded, want 1 (the one committed while the lease was held)", n)
	}
}
