package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
}

// DefaultPollInterval is RULES.md's default: every five minutes.
const DefaultPollInterval = 5 * time.Minute

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
	// MaxBackoff caps the wait after repeated failures [30 min].
	MaxBackoff time.Duration
	// Leases, when several instances share the database, lets this one
	// poll only the accounts whose lease it holds (see Leases); nil polls
	// every account (the embedded store: one instance).
	Leases Leases
}

// Scheduler polls every enabled account on its own interval, one fetch per
// account at a time, with poll-now on demand and back-off on repeated
// errors. A poll's outcome is recorded as a MailboxPolled event when it
// tells something new (see PollOnce); that every poll ran is kept in
// memory (Liveness), so an idle account polled every second does not add
// 86,400 events a day to the log.
type Scheduler struct {
	cfg SchedulerConfig

	mu      sync.Mutex
	workers map[string]*worker

	liveMu   sync.Mutex
	recorded map[string]domain.MailboxPolled // the last outcome recorded per account
	live     map[string]Liveness
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
	return &Scheduler{cfg: cfg, workers: map[string]*worker{}, recorded: map[string]domain.MailboxPolled{},
		live: map[string]Liveness{}}, nil
}

// Run polls until ctx is done, then waits for running polls to stop.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.stopAll()
	if s.cfg.Leases != nil {
		go s.forwardedPollNows(ctx)
	}
	for {
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("load inbound accounts", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.Refresh):
		}
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
	for id, w := range s.workers {
		if a, ok := want[id]; !ok || a.Revision != w.revision {
			w.cancel()
			<-w.done
			delete(s.workers, id)
		}
	}
	for id, a := range want {
		if _, running := s.workers[id]; running {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &worker{revision: a.Revision, pollNow: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
		s.workers[id] = w
		go func() {
			defer close(w.done)
			s.loop(wctx, a, w.pollNow)
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

// loop is one account's worker: poll at once, then every interval, sooner
// on PollNow, later after failures.
func (s *Scheduler) loop(ctx context.Context, a Account, pollNow <-chan struct{}) {
	interval := a.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	failures := 0
	for {
		lease, held := s.waitLease(ctx, a.ID, pollNow)
		if !held {
			return
		}
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
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-pollNow:
			timer.Stop()
		case <-timer.C:
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
func (s *Scheduler) PollOnce(ctx context.Context, a Account, failuresBefore int) (mailsource.PollResult, error) {
	return s.pollOnce(ctx, a, failuresBefore, nil)
}

func (s *Scheduler) pollOnce(ctx context.Context, a Account, failuresBefore int, lease Lease) (mailsource.PollResult, error) {
	started := s.cfg.Now().UTC()
	sink, err := NewSink(SinkConfig{Store: s.cfg.Store, Blobs: s.cfg.Blobs, Limits: s.cfg.Limits, AccountID: a.ID,
		Now: s.cfg.Now, Logger: s.cfg.Logger, Lease: lease})
	if err != nil {
		return mailsource.PollResult{}, err
	}
	res, pollErr := s.pollRecovered(ctx, a, sink)
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
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = s.cfg.Store.Append(ctx, eventstore.AppendRequest{
		Stream: MailboxStream(ev.AccountID), ExpectedVersion: eventstore.AnyVersion,
		Events: []eventstore.NewEvent{{Type: ev.EventName(), SchemaVersion: domain.MailboxPolledSchemaVersion,
			Payload: payload, Metadata: eventstore.Metadata{Actor: "mailbox:" + ev.AccountID, OccurredAt: ev.FinishedAt}}},
	})
	return err
}
