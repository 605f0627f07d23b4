package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/dovecottest"
	"github.com/ledgerdesk/ledgerdesk/adapters/faultproxy"
	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// addedAfterStart is an account source that has no accounts at the
// scheduler's first look and accs from then on: accounts created while it
// runs, which are polled at once rather than spread over their interval.
func addedAfterStart(accs ...Account) func(context.Context) ([]Account, error) {
	var calls atomic.Int64
	return func(context.Context) ([]Account, error) {
		if calls.Add(1) == 1 {
			return nil, nil
		}
		return accs, nil
	}
}

// startScheduler runs a scheduler with cfg's accounts until the test ends.
func startScheduler(t *testing.T, cfg SchedulerConfig) *Scheduler {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = openBenchStore(t, "embedded")
	}
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Blobs, cfg.Now, cfg.Logger = blobs, time.Now, slog.New(slog.DiscardHandler)
	s, err := NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run stopped with %v, want the cancellation", err)
		}
	})
	return s
}

// firstPollClock records when each account was first polled.
type firstPollClock struct {
	mu    sync.Mutex
	first map[string]time.Time
}

type clockedFetcher struct {
	id    string
	clock *firstPollClock
}

func (f clockedFetcher) Poll(context.Context, mailsource.Sink) (mailsource.PollResult, error) {
	f.clock.mu.Lock()
	defer f.clock.mu.Unlock()
	if _, seen := f.clock.first[f.id]; !seen {
		f.clock.first[f.id] = time.Now()
	}
	return mailsource.PollResult{}, nil
}

func (clockedFetcher) Check(context.Context) error { return nil }

func TestScheduler_SpreadsTheFirstPollsOfTheAccountsFoundAtStartOverTheirInterval(t *testing.T) {
	t.Parallel()
	const accounts, interval = 200, 2 * time.Second
	clock := &firstPollClock{first: map[string]time.Time{}}
	var accs []Account
	for i := range accounts {
		id := fmt.Sprintf("a%03d", i)
		accs = append(accs, Account{ID: id, PollInterval: interval, Fetcher: clockedFetcher{id: id, clock: clock}})
	}
	start := time.Now()
	startScheduler(t, SchedulerConfig{Refresh: time.Hour,
		Accounts: func(context.Context) ([]Account, error) { return accs, nil }})
	deadline := time.Now().Add(30 * time.Second)
	for {
		clock.mu.Lock()
		n := len(clock.first)
		clock.mu.Unlock()
		if n == accounts {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accounts polled within 30 s", n, accounts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Uniform over 2 s: about 20 in the first 200 ms and 100 in the second
	// half; all at once, as before, would put all 200 in the first 200 ms.
	var early, late int
	for _, at := range clock.first {
		switch since := at.Sub(start); {
		case since < interval/10:
			early++
		case since >= interval/2:
			late++
		}
	}
	if early > accounts/4 || late < accounts/4 {
		t.Errorf("first polls: %d of %d in the first tenth of the interval, %d in its second half; want them spread over it",
			early, accounts, late)
	}
}

func TestPollSlots_BoundPollsOverallAndPerServer(t *testing.T) {
	t.Parallel()
	slots := newPollSlots(3, 2)
	ctx := context.Background()
	a1, _ := slots.acquire(ctx, "a")
	a2, _ := slots.acquire(ctx, "a")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := slots.acquire(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third slot of server a = %v, want to wait (per-server limit 2)", err)
	}
	b1, err := slots.acquire(ctx, "b")
	if err != nil {
		t.Fatalf("server b with a at its limit: %v", err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := slots.acquire(short2, "c"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fourth slot overall = %v, want to wait (limit 3)", err)
	}
	a1()
	c1, err := slots.acquire(ctx, "c")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	for _, r := range []func(){a2, b1, c1} {
		r()
	}
	slots.mu.Lock()
	left := len(slots.servers)
	slots.mu.Unlock()
	if left != 0 {
		t.Errorf("%d servers still tracked after every release, want none", left)
	}
}

func imapAccount(t *testing.T, id, addr, user string, interval time.Duration) Account {
	t.Helper()
	h, p := hostPort(t, addr)
	f, err := imapsource.New(imapsource.Config{Host: h, Port: p, Security: mailsource.SecurityNone, AllowPlaintextAuth: true,
		Username: user, Password: "pw", Folders: []string{"INBOX"}, AfterImport: mailsource.AfterImportDelete,
		Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Account{ID: id, PollInterval: interval, Fetcher: f, Server: "imap:" + addr}
}

// TestScheduler_AServerThatNeverAnswersDelaysNoOtherServer puts more
// accounts on a server that accepts and never answers than there are poll
// slots, lets their polls hang, and then adds healthy accounts on a real
// Dovecot: the hung server holds only its share of the slots, so every
// healthy account's mail is imported while the others still hang.
func TestScheduler_AServerThatNeverAnswersDelaysNoOtherServer(t *testing.T) {
	t.Parallel()
	const slots, perServer, dead, healthy = 6, 3, 10, 12
	hole := faultproxy.StartBlackhole(t)
	dv := dovecottest.Start(t)
	var accs []Account
	for i := range dead {
		a := imapAccount(t, fmt.Sprintf("dead%02d", i), hole.Addr(), "nobody", time.Hour)
		// Pushed too: the IDLE connections it tries take the same slots.
		a.Push = true
		accs = append(accs, a)
	}
	var (
		mu      sync.Mutex
		current []Account // none at the first look: added while running, polled at once
		looks   int
	)
	store := openBenchStore(t, "embedded")
	startScheduler(t, SchedulerConfig{Store: store, Refresh: 10 * time.Millisecond, MaxConcurrentPolls: slots,
		MaxConcurrentPollsPerServer: perServer,
		Accounts: func(context.Context) ([]Account, error) {
			mu.Lock()
			defer mu.Unlock()
			if looks++; looks == 2 {
				current = slices.Clone(accs)
			}
			return slices.Clone(current), nil
		}})
	waitForCond(t, "the dead server's polls to hang", func() bool {
		open, _ := hole.Counts()
		return open >= perServer
	})
	for i := range healthy {
		user := fmt.Sprintf("user%02d", i)
		dv.AddUser(t, user, "pw")
		dv.Deliver(t, user, []byte(testMail(i)))
		mu.Lock()
		current = append(current, imapAccount(t, fmt.Sprintf("ok%02d", i), dv.IMAPAddr, user, time.Hour))
		mu.Unlock()
	}
	waitForCond(t, "every healthy account's mail to be imported", func() bool {
		for i := range healthy {
			if dv.Count(t, fmt.Sprintf("user%02d", i)) != 0 {
				return false
			}
		}
		return true
	})
	if n := len(mailEvents(t, store)[domain.MailReceivedName]); n != healthy {
		t.Errorf("%d mails committed, want %d", n, healthy)
	}
	if open, maxOpen := hole.Counts(); open != perServer || maxOpen != perServer {
		t.Errorf("the dead server has %d connections open (at most %d), want its %d slots held throughout",
			open, maxOpen, perServer)
	}
}

// waitForCond waits up to 30 s for cond, naming what it waits for.
func waitForCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hangingFetcher stands for a server that keeps sending a byte now and
// then: no stall timeout fires, the poll only ends when its context does.
type hangingFetcher struct{}

func (hangingFetcher) Poll(ctx context.Context, _ mailsource.Sink) (mailsource.PollResult, error) {
	<-ctx.Done()
	return mailsource.PollResult{}, fmt.Errorf("hanging: %w", context.Cause(ctx))
}

func (hangingFetcher) Check(context.Context) error { return nil }

func TestScheduler_APollLongerThanThePollTimeoutIsCutOffAndRecorded(t *testing.T) {
	t.Parallel()
	store := openBenchStore(t, "embedded")
	startScheduler(t, SchedulerConfig{Store: store, Refresh: 10 * time.Millisecond, PollTimeout: 50 * time.Millisecond,
		Accounts: addedAfterStart(Account{ID: "slow", PollInterval: time.Hour, Fetcher: hangingFetcher{}})})
	var polled domain.MailboxPolled
	waitForCond(t, "the cut-off poll's outcome", func() bool {
		evs, err := store.ReadStream(context.Background(), MailboxStream("slow"), 1, 0)
		if err != nil || len(evs) == 0 {
			return false
		}
		return json.Unmarshal(evs[0].Payload, &polled) == nil
	})
	if !strings.Contains(polled.Error, ErrPollTimeout.Error()) || polled.Failures != 1 {
		t.Errorf("recorded outcome = %+v, want a failure naming the poll timeout", polled)
	}
}

func TestScheduler_ReadyOnceTheAccountsAreLoaded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	s := startScheduler(t, SchedulerConfig{Refresh: time.Hour, Accounts: func(ctx context.Context) ([]Account, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}})
	select {
	case <-s.Ready():
		t.Fatal("Ready before the accounts were loaded")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-s.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("not Ready 20 s after the accounts were loaded")
	}
}
