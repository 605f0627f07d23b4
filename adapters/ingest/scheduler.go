package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// ErrUnknownAccount is returned by PollNow for an account the scheduler does
// not run (unknown, disabled, or mailboxes are disabled).
var ErrUnknownAccount = errors.New("ingest: no such enabled inbound account")

// Account is one inbound account as the scheduler runs it.
type Account struct {
	ID           string
	Name         string
	PollInterval time.Duration
	// Revision changes whenever the account's configuration changes; the
	// scheduler then restarts the account's worker with the new Fetcher.
	Revision string
	Fetcher  mailsource.Fetcher
	// Server names the mail server the account's polls go to (ServerOf);
	// at most SchedulerConfig.MaxConcurrentPollsPerServer of them run at
	// once. Empty: the account counts as a server of its own.
	Server string
	// ImagesAsAttachments is recorded on the account's mails (SinkConfig).
	ImagesAsAttachments bool
	// Push asks for new mail to be pushed: when Fetcher is also a
	// mailsource.Watcher, each of its folders is watched (IMAP IDLE) and
	// a new mail polls the account at once; the poll on PollInterval goes
	// on as the safety net.
	Push bool
}

// DefaultPollInterval is RULES.md's default: every five minutes.
const DefaultPollInterval = 5 * time.Minute

// Defaults of SchedulerConfig.
const (
	DefaultMaxConcurrentPolls = 64
	DefaultPollTimeout        = 10 * time.Minute
)

// SchedulerConfig wires a Scheduler; cmd fills it in.
type SchedulerConfig struct {
	Store  eventstore.Store
	Blobs  Blobs
	Limits mimeparse.Limits
	Now    func() time.Time
	Logger *slog.Logger
	// Accounts returns the enabled accounts to poll; it is called at start
	// and every Refresh. An empty list while mailboxes_disabled is set.
	Accounts func(ctx context.Context) ([]Account, error)
	// Refresh is how often the account list is reloaded [10s].
	Refresh time.Duration
	// MaxBackoff caps the wait after repeated failures [30 min]; a server
	// that offers no push is asked again after this long.
	MaxBackoff time.Duration
	// MaxConcurrentPolls bounds the polls running at once over all
	// accounts [64], so that a thousand accounts do not open a thousand
	// connections (and sink transactions) in the same second.
	MaxConcurrentPolls int
	// MaxConcurrentPollsPerServer bounds the polls running at once
	// against one mail server (Account.Server) [half MaxConcurrentPolls]:
	// a server that accepts connections and never answers holds at most
	// this many until the fetchers' stall timeout, and the accounts on
	// other servers keep the rest.
	MaxConcurrentPollsPerServer int
	// PollTimeout bounds one poll from connect to logout [10 min]: a
	// server that answers one byte at a time never trips the fetchers'
	// stall timeout. A poll cut short keeps what it committed; the next
	// one goes on from there.
	PollTimeout time.Duration
	// Observer is told about polls, commits and the accounts' workers, for
	// the metrics; nil observes nothing.
	Observer Observer
	// IdleRenewal is how often a push watch renews its wait (IMAP IDLE)
	// [0: the watcher's default, imapsource.DefaultIdleRenewal].
	IdleRenewal time.Duration
	// PushRetry and PushRetryMax bound the jittered back-off between
	// attempts to re-establish a dropped watch [1 s, 5 min].
	PushRetry, PushRetryMax time.Duration
	// Leases, when several instances share the database, lets this one
	// poll only the accounts whose lease it holds (see Leases); nil polls
	// every account (the embedded store: one instance).
	Leases Leases
}

// ErrPollTimeout is the cause given to a poll that ran longer than
// SchedulerConfig.PollTimeout.
var ErrPollTimeout = errors.New("ingest: poll took longer than the poll timeout")

// Scheduler polls every enabled account on its own interval, one fetch per
// account at a time, with poll-now on demand and back-off on repeated
// errors. A poll's outcome is recorded as a MailboxPolled event when it
// tells something new (see PollOnce); that every poll ran is kept in
// memory (Liveness), so an idle account polled every second does not add
// 86,400 events a day to the log.
type Scheduler struct {
	cfg   SchedulerConfig
	slots *pollSlots

	mu      sync.Mutex
	workers map[string]*worker
	// started: the first account list has been loaded. The accounts found
	// then spread their first polls over their interval; those that come
	// later are new or changed and poll at once.
	started bool
	// looked is closed once Run has tried to load the accounts the first
	// time (see Ready).
	looked     chan struct{}
	lookedOnce sync.Once
	// reload carries Reload's requests to Run; each is answered with the
	// outcome of a reconcile that started after it was sent.
	reload chan chan error

	liveMu   sync.Mutex
	recorded map[string]domain.MailboxPolled // the last outcome recorded per account
	live     map[string]Liveness

	deliveryMu sync.Mutex
	delivery   map[string]domain.MailboxDeliveryChanged // the last delivery mode recorded per account
}

// Liveness is what the scheduler knows of an account's latest poll,
// whether or not it was recorded as an event. It lives in memory: after a
// restart an account has none until its first poll.
type Liveness struct {
	// CheckedAt is when the latest poll finished.
	CheckedAt time.Time
	// Failures counts the polls in a row that failed, the latest included;
	// 0 after a good poll. A repeated failure is recorded once, so the
	// events' count stops at the first one.
	Failures int
}

type worker struct {
	revision string
	pollNow  chan struct{}
	newMail  chan struct{} // a push watch saw new mail; see loop
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewScheduler validates cfg and returns a scheduler; Run starts it.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("no event store"))
	}
	if cfg.Blobs == nil {
		errs = append(errs, errors.New("no blob store"))
	}
	if cfg.Now == nil {
		errs = append(errs, errors.New("no clock"))
	}
	if cfg.Accounts == nil {
		errs = append(errs, errors.New("no account source"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingest: new scheduler: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Minute
	}
	if cfg.MaxConcurrentPolls <= 0 {
		cfg.MaxConcurrentPolls = DefaultMaxConcurrentPolls
	}
	if cfg.MaxConcurrentPollsPerServer <= 0 {
		cfg.MaxConcurrentPollsPerServer = max(1, cfg.MaxConcurrentPolls/2)
	}
	if cfg.PollTimeout <= 0 {
		cfg.PollTimeout = DefaultPollTimeout
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.PushRetry <= 0 {
		cfg.PushRetry = time.Second
	}
	if cfg.PushRetryMax < cfg.PushRetry {
		cfg.PushRetryMax = max(cfg.PushRetry, 5*time.Minute)
	}
	return &Scheduler{cfg: cfg, slots: newPollSlots(cfg.MaxConcurrentPolls, cfg.MaxConcurrentPollsPerServer),
		workers: map[string]*worker{}, reload: make(chan chan error), looked: make(chan struct{}),
		recorded: map[string]domain.MailboxPolled{}, live: map[string]Liveness{},
		delivery: map[string]domain.MailboxDeliveryChanged{}}, nil
}

// Run polls until ctx is done, then waits for running polls to stop. It
// reloads the accounts every Refresh and on Reload.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.stopAll()
	if s.cfg.Leases != nil {
		go s.forwardedPollNows(ctx)
	}
	defer s.lookedOnce.Do(func() { close(s.looked) })
	var waiting []chan error
	for {
		err := s.reconcile(ctx)
		s.lookedOnce.Do(func() { close(s.looked) })
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("load inbound accounts", "err", err)
		}
		for _, w := range waiting {
			w <- err
		}
		waiting = waiting[:0]
		timer := time.NewTimer(s.cfg.Refresh)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		case w := <-s.reload:
			timer.Stop()
			waiting = append(waiting, w)
		}
		// Requests that came meanwhile share the next reconcile.
		for more := true; more; {
			select {
			case w := <-s.reload:
				waiting = append(waiting, w)
			default:
				more = false
			}
		}
	}
}

// Ready is closed once Run has loaded the accounts the first time (or
// failed to). The accounts found then spread their first polls over their
// interval, so an account created before Ready may wait for its first poll
// that long: serve answers requests only after Ready.
func (s *Scheduler) Ready() <-chan struct{} { return s.looked }

// Reload has Run load the accounts again now and returns once it has
// started, changed and stopped the accounts' workers accordingly: an
// account written through the API before Reload is polled (PollNow
// works) when Reload returns, and a disabled or deleted one has stopped,
// its push connections closed. It waits for Run while ctx allows.
func (s *Scheduler) Reload(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case s.reload <- done:
	case <-ctx.Done():
		return fmt.Errorf("ingest: reload accounts: %w", ctx.Err())
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("ingest: reload accounts: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ingest: reload accounts: %w", ctx.Err())
	}
}

// reconcile starts a worker for each new or changed account and stops the
// workers of accounts that are gone or changed.
func (s *Scheduler) reconcile(ctx context.Context) error {
	accounts, err := s.cfg.Accounts(ctx)
	if err != nil {
		return err
	}
	want := make(map[string]Account, len(accounts))
	ids := make([]string, 0, len(accounts))
	for _, a := range accounts {
		want[a.ID] = a
		ids = append(ids, a.ID)
	}
	if s.cfg.Leases != nil {
		s.cfg.Leases.Want(ids)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	spread := !s.started
	s.started = true
	for id, w := range s.workers {
		if a, ok := want[id]; !ok || a.Revision != w.revision {
			w.cancel()
			<-w.done
			delete(s.workers, id)
			s.cfg.Observer.Stopped(id)
			if ctx.Err() == nil {
				s.noteDelivery(ctx, id, domain.DeliveryPolled, "") // its push connections are closed
			}
		}
	}
	for id, a := range want {
		if _, running := s.workers[id]; running {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &worker{revision: a.Revision, pollNow: make(chan struct{}, 1), newMail: make(chan struct{}, 1), cancel: cancel,
			done: make(chan struct{})}
		s.workers[id] = w
		var firstIn time.Duration
		if spread {
			firstIn = firstPollDelay(a.PollInterval)
		}
		s.cfg.Observer.Mode(id, false)
		go func() {
			defer close(w.done)
			var watches sync.WaitGroup
			defer watches.Wait()
			s.startPush(wctx, a, w.newMail, &watches)
			s.loop(wctx, a, w.pollNow, w.newMail, firstIn)
		}()
	}
	return nil
}

func (s *Scheduler) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, w := range s.workers {
		w.cancel()
		<-w.done
		delete(s.workers, id)
		s.cfg.Observer.Stopped(id)
	}
}

// PollNow asks for a poll of the account as soon as its current one, if
// any, is done. With Leases, an account whose lease another instance holds
// is polled there: the request is forwarded to it.
func (s *Scheduler) PollNow(accountID string) error {
	s.mu.Lock()
	_, ok := s.workers[accountID]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownAccount, accountID)
	}
	if s.cfg.Leases != nil {
		if l, held := s.cfg.Leases.Hold(accountID); held {
			l.Done()
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			defer cancel()
			return s.cfg.Leases.ForwardPollNow(ctx, accountID)
		}
	}
	return s.pollNowLocal(accountID)
}

// forwardTimeout bounds the NOTIFY that forwards a poll-now.
const forwardTimeout = 10 * time.Second

// forwardedPollNows runs the poll-now requests other instances forwarded.
func (s *Scheduler) forwardedPollNows(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-s.cfg.Leases.PollNowRequests():
			_ = s.pollNowLocal(id) // an account this instance no longer runs: nothing to poll
		}
	}
}

// pollNowLocal wakes this instance's worker of the account.
func (s *Scheduler) pollNowLocal(accountID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[accountID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownAccount, accountID)
	}
	select {
	case w.pollNow <- struct{}{}:
	default: // a poll-now is already pending
	}
	return nil
}

// firstPollDelay spreads the first polls of the accounts found at start
// evenly at random over their interval: a thousand accounts polled in the
// same second would queue for the poll slots and hit their servers (and
// the database) at once, and then again every interval.
func firstPollDelay(interval time.Duration) time.Duration {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	return rand.N(interval) //nolint:gosec // spreading load, not a secret
}

// loop is one account's worker: poll after firstIn (at once for an
// account created or changed while running), then every interval from
// the start of the last poll, sooner on PollNow or new mail, later after
// failures. After a failed poll new mail polls again no sooner than a
// back-off of its own (doubling from PushRetry, never longer than the
// regular wait), so a mailbox or store that keeps failing is not polled
// at the pace mail arrives; PollNow is always at once.
func (s *Scheduler) loop(ctx context.Context, a Account, pollNow, newMail <-chan struct{}, firstIn time.Duration) {
	interval := a.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	if firstIn > 0 && !s.waitForPoll(ctx, firstIn, 0, pollNow, newMail) {
		return
	}
	failures := 0
	for {
		lease, held := s.waitLease(ctx, a.ID, pollNow)
		if !held {
			return
		}
		// Intervals run from start to start, so that a mail that arrives
		// just after a poll's listing waits one interval, not one
		// interval plus the poll.
		began := time.Now()
		res, err := s.pollLeased(ctx, a, failures, lease)
		if ctx.Err() != nil {
			return
		}
		wait := interval
		failures = failureStreak(failures, res, err)
		if err != nil {
			wait = backoff(interval, failures, s.cfg.MaxBackoff)
			s.cfg.Logger.Warn("poll failed", "account", a.ID, "name", a.Name, "failures", failures,
				"retry_in", wait, "err", err, "server_reply", mailsource.ServerReply(err))
		} else {
			if res.Fetched+res.Failed+res.Oversize > 0 {
				s.cfg.Logger.Info("poll", "account", a.ID, "fetched", res.Fetched, "failed", res.Failed,
					"oversize", res.Oversize, "finished", res.Skipped, "deleted", res.Deleted)
			}
		}
		if !s.waitForPoll(ctx, time.Until(began.Add(wait)), failures, pollNow, newMail) {
			return
		}
	}
}

// waitForPoll waits until the next poll is due (see loop); false when ctx
// ended.
func (s *Scheduler) waitForPoll(ctx context.Context, wait time.Duration, failures int, pollNow, newMail <-chan struct{}) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	mail := newMail
	var cooled <-chan time.Time
	if failures > 0 {
		cool := time.NewTimer(backoff(s.cfg.PushRetry, failures, wait))
		defer cool.Stop()
		mail, cooled = nil, cool.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-pollNow:
			return true
		case <-mail:
			return true
		case <-cooled:
			mail, cooled = newMail, nil
		case <-timer.C:
			return true
		}
	}
}

// waitLease returns once this instance holds the account's lease (at once
// without Leases); false when ctx ended first. Poll-nows that arrive
// meanwhile are dropped: the holder of the lease runs them.
func (s *Scheduler) waitLease(ctx context.Context, accountID string, pollNow <-chan struct{}) (Lease, bool) {
	if s.cfg.Leases == nil {
		return nil, ctx.Err() == nil
	}
	for {
		changed := s.cfg.Leases.Changed()
		if l, ok := s.cfg.Leases.Hold(accountID); ok {
			return l, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-changed:
		case <-pollNow:
		}
	}
}

// pollLeased is PollOnce under a lease: the poll stops when the lease may
// be lost, and the sink fences its commits and the fetcher its deletes.
func (s *Scheduler) pollLeased(ctx context.Context, a Account, failuresBefore int, lease Lease) (mailsource.PollResult, error) {
	if lease == nil {
		return s.PollOnce(ctx, a, failuresBefore)
	}
	defer lease.Done()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(lease.Context(), cancel)
	defer stop()
	return s.pollOnce(pctx, a, failuresBefore, lease)
}

// failureStreak returns how many polls in a row have failed after a poll
// that ended with err, given the count before it. A poll that committed or
// removed mail before it failed starts a new streak: the back-off is for a
// mailbox that gets nowhere, not for one whose import a restarted database
// or a cut connection interrupted after progress (a large mailbox would
// otherwise wait up to MaxBackoff between polls that each import
// thousands of mails).
func failureStreak(before int, res mailsource.PollResult, err error) int {
	switch {
	case err == nil:
		return 0
	case res.Fetched+res.Failed+res.Oversize+res.Deleted > 0:
		return 1
	}
	return before + 1
}

// backoff doubles the wait with every failure in a row, from the interval
// up to max (but never below the interval).
func backoff(interval time.Duration, failures int, maxWait time.Duration) time.Duration {
	wait := interval
	for i := 1; i < failures && wait < maxWait; i++ {
		wait *= 2
	}
	return max(interval, min(wait, maxWait))
}

// PollOnce runs one poll of a and records its outcome when it is worth
// recording: the first poll of this process, a poll that committed,
// finished or deleted mails, and a poll whose error (or success) differs
// from the last recorded outcome. An idle poll, or the same failure again,
// only updates Liveness. failuresBefore is the number of failed polls in
// a row before this one.
//
// It waits for a poll slot first (see MaxConcurrentPolls), and the poll
// itself is cut off after PollTimeout.
func (s *Scheduler) PollOnce(ctx context.Context, a Account, failuresBefore int) (mailsource.PollResult, error) {
	return s.pollOnce(ctx, a, failuresBefore, nil)
}

func (s *Scheduler) pollOnce(ctx context.Context, a Account, failuresBefore int, lease Lease) (mailsource.PollResult, error) {
	release, err := s.slots.acquire(ctx, serverKey(a))
	if err != nil {
		return mailsource.PollResult{}, err
	}
	defer release()
	started := s.cfg.Now().UTC()
	sink, err := NewSink(SinkConfig{Store: s.cfg.Store, Blobs: s.cfg.Blobs, Limits: s.cfg.Limits, AccountID: a.ID,
		Now: s.cfg.Now, Logger: s.cfg.Logger, Observer: s.cfg.Observer, ImagesAsAttachments: a.ImagesAsAttachments,
		Lease: lease})
	if err != nil {
		return mailsource.PollResult{}, err
	}
	pollCtx, cancel := context.WithTimeoutCause(ctx, s.cfg.PollTimeout,
		fmt.Errorf("%w (%s)", ErrPollTimeout, s.cfg.PollTimeout))
	res, pollErr := s.pollRecovered(pollCtx, a, sink)
	cancel()
	if ctx.Err() != nil {
		// Shutting down: the outcome of an interrupted poll says nothing about
		// the mailbox, and the store may be closing.
		return res, pollErr
	}
	ev := domain.MailboxPolled{AccountID: a.ID, StartedAt: started, FinishedAt: s.cfg.Now().UTC(),
		Fetched: res.Fetched, Failed: res.Failed, Oversize: res.Oversize, Skipped: res.Skipped, Deleted: res.Deleted}
	if pollErr != nil {
		ev.Error = pollErr.Error()
		ev.ServerReply = mailsource.ServerReply(pollErr)
		ev.Failures = failureStreak(failuresBefore, res, pollErr)
	}
	s.cfg.Observer.Polled(PollReport{AccountID: a.ID, FinishedAt: ev.FinishedAt, Took: ev.FinishedAt.Sub(started),
		Result: res, Err: pollErr, Failures: ev.Failures})
	s.liveMu.Lock()
	s.live[a.ID] = Liveness{CheckedAt: ev.FinishedAt, Failures: ev.Failures}
	prev, seen := s.recorded[a.ID]
	s.liveMu.Unlock()
	if seen && !newsIn(prev, ev) {
		return res, pollErr
	}
	if err := s.recordPoll(ctx, ev); err != nil {
		s.cfg.Logger.Error("record poll outcome", "account", a.ID, "err", err)
		return res, pollErr // tried again with the next poll
	}
	s.liveMu.Lock()
	s.recorded[a.ID] = ev
	s.liveMu.Unlock()
	return res, pollErr
}

// pollRecovered runs one poll of a and turns a panic into the poll's
// error, logging the stack. The account's worker is a goroutine of its
// own, so a fetcher bug met by one mailbox's reply would otherwise end the
// process; this way it is a failed poll, shown in the mailbox status and
// retried with the back-off.
func (s *Scheduler) pollRecovered(ctx context.Context, a Account, sink *Sink) (res mailsource.PollResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Logger.Error("poll panicked; counted as a failed poll", "account", a.ID, "panic", fmt.Sprint(v),
				"stack", string(debug.Stack()))
			err = fmt.Errorf("ingest: poll panic: %v", v)
		}
	}()
	return a.Fetcher.Poll(ctx, sink)
}

// newsIn says whether a poll's outcome tells something the last recorded
// one does not: mails were committed, finished or removed, or the poll
// failed differently, or recovered.
func newsIn(prev, ev domain.MailboxPolled) bool {
	if ev.Fetched+ev.Failed+ev.Oversize+ev.Skipped+ev.Deleted > 0 {
		return true
	}
	return ev.Error != prev.Error || ev.ServerReply != prev.ServerReply
}

// Liveness returns what is known of the account's latest poll; false
// before its first poll in this process.
func (s *Scheduler) Liveness(accountID string) (Liveness, bool) {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	l, ok := s.live[accountID]
	return l, ok
}

// MailboxStream holds an account's poll outcomes.
func MailboxStream(accountID string) string { return "mailbox-" + accountID }

// recordPoll appends the outcome to the account's mailbox stream.
func (s *Scheduler) recordPoll(ctx context.Context, ev domain.MailboxPolled) error {
	return s.recordMailboxEvent(ctx, MailboxStream(ev.AccountID), ev.AccountID, ev, ev.FinishedAt)
}
