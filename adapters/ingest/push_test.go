package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/blobstore"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// watchingFetcher is a scriptedFetcher whose folders can be watched: each
// Watch fails with the next of failFirst, else runs until ctx ends.
type watchingFetcher struct {
	scriptedFetcher
	folders []string

	wmu       sync.Mutex
	failFirst []error
	watches   int // Watch calls
	running   map[string]func()
	blockPoll chan struct{} // when set, each Poll waits for it to be closed
	blocked   int           // polls that waited in blockPoll
}

func (f *watchingFetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	f.wmu.Lock()
	block := f.blockPoll
	if block != nil {
		f.blocked++
	}
	f.wmu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return mailsource.PollResult{}, ctx.Err()
		}
	}
	return f.scriptedFetcher.Poll(ctx, sink)
}

func (f *watchingFetcher) WatchFolders() []string { return f.folders }

func (f *watchingFetcher) Watch(ctx context.Context, folder string, o mailsource.WatchOptions) error {
	f.wmu.Lock()
	f.watches++
	if len(f.failFirst) > 0 {
		err := f.failFirst[0]
		f.failFirst = f.failFirst[1:]
		f.wmu.Unlock()
		return err
	}
	if f.running == nil {
		f.running = map[string]func(){}
	}
	f.running[folder] = o.NewMail
	f.wmu.Unlock()
	o.Established()
	<-ctx.Done()
	f.wmu.Lock()
	delete(f.running, folder)
	f.wmu.Unlock()
	return ctx.Err()
}

// announce plays the server announcing new mail in folder.
func (f *watchingFetcher) announce(folder string) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if newMail := f.running[folder]; newMail != nil {
		newMail()
	}
}

func (f *watchingFetcher) watching() int {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return len(f.running)
}

func (f *watchingFetcher) watchCalls() int {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.watches
}

// pushRig runs a scheduler over one account whose list the test can change.
type pushRig struct {
	s     *Scheduler
	store eventstore.Store

	mu       sync.Mutex
	accounts []Account
}

func startPushRig(t *testing.T, cfg SchedulerConfig, accounts ...Account) *pushRig {
	t.Helper()
	r := &pushRig{store: openBenchStore(t, "embedded"), accounts: accounts}
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Blobs, cfg.Now, cfg.Logger = r.store, blobs, fixedNow, slog.New(slog.DiscardHandler)
	cfg.Refresh = time.Hour // only Reload reloads
	looked := false
	cfg.Accounts = func(context.Context) ([]Account, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !looked { // the accounts come after start, so they are polled at once, not spread over the hour
			looked = true
			return nil, nil
		}
		return append([]Account(nil), r.accounts...), nil
	}
	if r.s, err = NewScheduler(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	})
	r.setAccounts(t, accounts...)
	return r
}

func (r *pushRig) setAccounts(t *testing.T, accounts ...Account) {
	t.Helper()
	r.mu.Lock()
	r.accounts = accounts
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
}

// deliveries returns the delivery modes recorded for the account.
func (r *pushRig) deliveries(t *testing.T, id string) []domain.MailboxDeliveryChanged {
	t.Helper()
	evs, err := r.store.ReadStream(context.Background(), DeliveryStream(id), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]domain.MailboxDeliveryChanged, len(evs))
	for i, ev := range evs {
		if err := json.Unmarshal(ev.Payload, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func (r *pushRig) lastDelivery(t *testing.T, id string) domain.MailboxDeliveryChanged {
	t.Helper()
	d := r.deliveries(t, id)
	if len(d) == 0 {
		return domain.MailboxDeliveryChanged{}
	}
	return d[len(d)-1]
}

func TestScheduler_NewMailPollsAtOnceCoalesced(t *testing.T) {
	t.Parallel()
	f := &watchingFetcher{folders: []string{"INBOX", "Support"}}
	r := startPushRig(t, SchedulerConfig{}, Account{ID: "a", PollInterval: time.Hour, Fetcher: f, Push: true})
	waitFor(t, func() bool { return f.count() == 1 && f.watching() == 2 })
	waitFor(t, func() bool { return r.lastDelivery(t, "a").Delivery == domain.DeliveryPushed })

	f.announce("Support")
	waitFor(t, func() bool { return f.count() == 2 })

	// A burst while a poll runs gives one more poll, not one per mail.
	block := make(chan struct{})
	f.wmu.Lock()
	f.blockPoll = block
	f.wmu.Unlock()
	f.announce("INBOX")
	waitFor(t, func() bool { // the third poll waits in block
		f.wmu.Lock()
		defer f.wmu.Unlock()
		return f.blocked == 1
	})
	for i := range 50 {
		f.announce(f.folders[i%2])
	}
	f.wmu.Lock()
	f.blockPoll = nil
	f.wmu.Unlock()
	close(block)
	waitFor(t, func() bool { return f.count() == 4 })
	time.Sleep(100 * time.Millisecond)
	if n := f.count(); n != 4 {
		t.Errorf("%d polls after a burst of 50 announcements during a poll, want 4 (the burst coalesced into one)", n)
	}
	if d := r.deliveries(t, "a"); len(d) != 1 {
		t.Errorf("delivery modes recorded = %+v, want pushed once", d)
	}
}

func TestScheduler_DroppedWatchIsReestablishedAndShown(t *testing.T) {
	t.Parallel()
	cut := errors.New("imapsource: IDLE in \"INBOX\": connection closed by the server")
	f := &watchingFetcher{folders: []string{"INBOX"}, failFirst: []error{cut, cut, cut}}
	r := startPushRig(t, SchedulerConfig{PushRetry: 5 * time.Millisecond, PushRetryMax: 20 * time.Millisecond},
		Account{ID: "a", PollInterval: time.Hour, Fetcher: f, Push: true})
	waitFor(t, func() bool { return f.watching() == 1 })
	waitFor(t, func() bool { return r.lastDelivery(t, "a").Delivery == domain.DeliveryPushed })
	d := r.deliveries(t, "a")
	// The same failure three times is recorded once.
	want := []string{domain.DeliveryPolled, domain.DeliveryPushed}
	if len(d) != 2 || d[0].Delivery != want[0] || d[0].Reason != "INBOX: "+cut.Error() || d[1].Delivery != want[1] {
		t.Errorf("delivery modes recorded = %+v, want polled with the reason once, then pushed", d)
	}
	if n := f.watchCalls(); n != 4 {
		t.Errorf("Watch called %d times, want 4 (three failures, then the one that runs)", n)
	}
	f.announce("INBOX")
	waitFor(t, func() bool { return f.count() == 2 })
}

func TestScheduler_ServerWithoutPushIsPolled(t *testing.T) {
	t.Parallel()
	f := &watchingFetcher{folders: []string{"INBOX"}, failFirst: []error{mailsource.ErrPushUnsupported}}
	r := startPushRig(t, SchedulerConfig{PushRetry: time.Millisecond, MaxBackoff: time.Hour},
		Account{ID: "a", PollInterval: time.Hour, Fetcher: f, Push: true})
	waitFor(t, func() bool { return r.lastDelivery(t, "a").Reason != "" })
	time.Sleep(50 * time.Millisecond)
	if n := f.watchCalls(); n != 1 {
		t.Errorf("Watch called %d times on a server without push, want 1 (asked again after MaxBackoff)", n)
	}
	if got := r.lastDelivery(t, "a"); got.Delivery != domain.DeliveryPolled {
		t.Errorf("delivery = %+v, want polled", got)
	}
}

func TestScheduler_PushOffAndReload(t *testing.T) {
	t.Parallel()
	f := &watchingFetcher{folders: []string{"INBOX"}}
	r := startPushRig(t, SchedulerConfig{}, Account{ID: "a", Revision: "1", PollInterval: time.Hour, Fetcher: f})
	waitFor(t, func() bool { return f.count() == 1 })
	if got := r.lastDelivery(t, "a"); got.Delivery != domain.DeliveryPolled || got.Reason != "" {
		t.Errorf("push off: delivery = %+v, want polled without a reason", got)
	}
	if f.watchCalls() != 0 {
		t.Errorf("push off: Watch called %d times, want 0", f.watchCalls())
	}

	// Reload returns once the change is taken on: a new account answers
	// PollNow, the changed one is watched, a removed one stops.
	g := &scriptedFetcher{}
	r.setAccounts(t, Account{ID: "a", Revision: "2", PollInterval: time.Hour, Fetcher: f, Push: true},
		Account{ID: "b", PollInterval: time.Hour, Fetcher: g})
	if err := r.s.PollNow("b"); err != nil {
		t.Errorf("PollNow(new account) right after Reload = %v, want nil", err)
	}
	waitFor(t, func() bool { return f.watching() == 1 && r.lastDelivery(t, "a").Delivery == domain.DeliveryPushed })

	r.setAccounts(t, Account{ID: "b", PollInterval: time.Hour, Fetcher: g})
	if n := f.watching(); n != 0 {
		t.Errorf("%d watches still run after the account was removed and Reload returned, want 0", n)
	}
	if err := r.s.PollNow("a"); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("PollNow(removed account) = %v, want ErrUnknownAccount", err)
	}
	if got := r.lastDelivery(t, "a"); got.Delivery != domain.DeliveryPolled {
		t.Errorf("a removed account's delivery = %+v, want polled", got)
	}
}

func TestPushRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		failures int
		lo, hi   time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{4, 4 * time.Second, 8 * time.Second},
		{20, 150 * time.Second, 5 * time.Minute},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			got := pushRetry(tc.failures, time.Second, 5*time.Minute)
			if got < tc.lo || got > tc.hi {
				t.Fatalf("pushRetry(%d) = %v, want within [%v, %v]", tc.failures, got, tc.lo, tc.hi)
			}
			seen[got] = true
		}
		if len(seen) < 10 {
			t.Errorf("pushRetry(%d) gave %d distinct waits in 200 draws, want jitter", tc.failures, len(seen))
		}
	}
}

// TestScheduler_NewMailDoesNotHammerAFailingMailbox: after a failed poll,
// new mail waits for the push back-off (here an hour) instead of polling
// at the pace mail arrives; poll-now is still at once, and once a poll
// succeeds new mail polls at once again.
func TestScheduler_NewMailDoesNotHammerAFailingMailbox(t *testing.T) {
	t.Parallel()
	f := &watchingFetcher{folders: []string{"INBOX"}}
	f.err = errors.New("blobstore: write blob: no space left on device")
	r := startPushRig(t, SchedulerConfig{PushRetry: time.Hour}, Account{ID: "a", PollInterval: time.Hour, Fetcher: f, Push: true})
	waitFor(t, func() bool { return f.count() == 1 && f.watching() == 1 })
	for range 20 {
		f.announce("INBOX")
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.count(); n != 1 {
		t.Fatalf("%d polls after new mail following a failed poll, want 1 (the push back-off holds the next)", n)
	}
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	if err := r.s.PollNow("a"); err != nil {
		t.Fatal(err)
	}
	// Poll-now's poll succeeds, and the mail that waited is polled next.
	waitFor(t, func() bool { return f.count() >= 3 })
	n := f.count()
	f.announce("INBOX")
	waitFor(t, func() bool { return f.count() == n+1 })
}
